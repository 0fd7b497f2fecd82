//! What the databases do alone, measured in the same run as the service,
//! with the rows the service stored: the figures the service's rates are
//! divided by.
//!
//! - PostgreSQL, single rows: `pgbench` inserting one event per
//!   transaction (`synchronous_commit` on, as the service), at its best of
//!   16, 64 and 96 clients (`max_connections` is 100).
//! - PostgreSQL, bulk: `pgbench` with one client inserting 100 events per
//!   statement (`INSERT ... SELECT` of 100 rows), each its own transaction.
//! - SQLite: rusqlite inserting 100 events per transaction, WAL with
//!   `synchronous=FULL` (a sync of the WAL at every commit, as the
//!   service's acknowledgement has), the service's cache size.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Result;

/// pgbench's client counts; the best one is the ceiling.
const PG_CLIENTS: [usize; 3] = [16, 64, 96];
/// Events per statement or transaction in the bulk figures.
const BULK: usize = 100;

/// PostgreSQL's ceilings in database `db`, whose `events` table the service
/// has filled: single-row inserts per second (best of [`PG_CLIENTS`]) and
/// rows per second in 100-row statements from one client.
pub(crate) async fn postgres(db: &str, work: &Path, phase: Duration) -> Result<(f64, f64)> {
    let row = template_row(db).await?;
    let single = work.join("pg-single.sql");
    let bulk = work.join("pg-bulk.sql");
    std::fs::write(
        &single,
        format!("INSERT INTO events VALUES (gen_random_uuid()::text, {row});\n"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        &bulk,
        format!(
            "INSERT INTO events SELECT gen_random_uuid()::text, {row} FROM generate_series(1, {BULK});\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut best: f64 = 0.0;
    for clients in PG_CLIENTS {
        let tps = pgbench(db, &single, clients, phase)?;
        eprintln!("bench ceiling postgres single-row inserts, {clients} clients: {tps:.0}/s");
        best = best.max(tps);
    }
    let rows = pgbench(db, &bulk, 1, phase)? * BULK as f64;
    eprintln!("bench ceiling postgres {BULK}-row inserts, 1 client: {rows:.0} rows/s");
    Ok((best, rows))
}

/// One stored event's columns after `event_id`, as SQL literals.
async fn template_row(db: &str) -> Result<String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn =
        sqlx::AnyConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{db}"))
            .await
            .map_err(|e| format!("PostgreSQL: {e}"))?;
    // `quote_nullable` of each column, in table order, after the first (`event_id`).
    let literals: String = sqlx::query_scalar(
        "SELECT string_agg(format('quote_nullable(e.%I)', column_name), ' || '', '' || ' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_name = 'events' AND column_name <> 'event_id'",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| format!("reading the events table's columns: {e}"))?;
    let row: String = sqlx::query_scalar(&format!("SELECT {literals} FROM events e LIMIT 1"))
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("reading a stored event: {e}"))?;
    conn.close().await.map_err(|e| e.to_string())?;
    Ok(row)
}

/// `pgbench` with `script` at `clients` clients for `phase`: transactions per second.
fn pgbench(db: &str, script: &Path, clients: usize, phase: Duration) -> Result<f64> {
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-M",
            "prepared",
        ])
        .args(["-c", &clients.to_string(), "-j", "2"])
        .args(["-T", &phase.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(script)
        .arg(db)
        .output()
        .map_err(|e| format!("starting pgbench: {e} (apt-get install -y postgresql-client)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // "tps = 9650.123456 (without initial connection time)"
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench's output: {stdout}"))
}

/// SQLite's ceiling: rows per second inserted by rusqlite into a new
/// database with the service's `events` table (its schema and one of its
/// rows read from `service_db`), [`BULK`] rows per transaction.
pub(crate) fn sqlite(service_db: &Path, work: &Path, phase: Duration) -> Result<f64> {
    use rusqlite::{Connection, params_from_iter, types::Value};
    let e = |e: rusqlite::Error| format!("SQLite ceiling: {e}");
    let service =
        Connection::open_with_flags(service_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(e)?;
    let schema: Vec<String> = service
        .prepare("SELECT sql FROM sqlite_master WHERE tbl_name = 'events' AND sql IS NOT NULL ORDER BY type DESC")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(e)?;
    let columns: Vec<String> = service
        .prepare("SELECT name FROM pragma_table_info('events') ORDER BY cid")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(e)?;
    let id_column = columns
        .iter()
        .position(|c| c == "event_id")
        .ok_or("SQLite ceiling: no event_id column")?;
    let template: Vec<Value> = service
        .query_row("SELECT * FROM events LIMIT 1", [], |r| {
            (0..columns.len()).map(|i| r.get::<_, Value>(i)).collect()
        })
        .map_err(e)?;
    drop(service);

    let path = work.join("ceiling.db");
    let mut conn = Connection::open(&path).map_err(e)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
    conn.pragma_update(None, "cache_size", "-32768")
        .map_err(e)?;
    for sql in &schema {
        conn.execute(sql, []).map_err(e)?;
    }
    let insert = format!(
        "INSERT INTO events VALUES ({})",
        vec!["?"; columns.len()].join(", ")
    );
    let started = Instant::now();
    let mut rows = 0u64;
    let mut values = template;
    while started.elapsed() < phase {
        let tx = conn.transaction().map_err(e)?;
        {
            let mut statement = tx.prepare_cached(&insert).map_err(e)?;
            for _ in 0..BULK {
                values[id_column] = Value::Text(uuid::Uuid::now_v7().to_string());
                statement
                    .execute(params_from_iter(values.iter()))
                    .map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        rows += BULK as u64;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    eprintln!("bench ceiling sqlite {BULK}-row transactions: {rate:.0} rows/s");
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(rate)
}
