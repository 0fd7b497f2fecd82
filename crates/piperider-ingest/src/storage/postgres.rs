//! PostgreSQL: a few async writer tasks overlapping their transactions,
//! each updating the rollups in the transaction that stores the events.
//! Each has its own queue, and a request goes to the one its user hashes
//! to, so one user's rollup rows are updated by one writer at a time; each
//! adds to counters of its own shard (concurrent transactions updating one
//! row would take turns, each waiting for the other's commit). Rows travel
//! as one binary array per column (`UNNEST`). Deletions run straight on
//! the pool, within the request.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::error::StorageError;
use super::group::{CommitMetrics, Group, Job, QUEUE, Written, gather, isolate, outcomes, settle};
use super::rollup::Aggregate;
use super::rows::{Cell, owner_rows};
use super::schema::{
    DELETE_USER, DELETE_USER_QUARANTINE, EVENTS, OWNER_KEYS, PRUNE_QUARANTINE, QUARANTINE,
    QUARANTINE_KEEP, REMEMBER_DELETED_USER, Upsert,
};

/// PostgreSQL transactions in flight at once.
pub(crate) const WRITERS: usize = 4;

/// Connects and runs the embedded migrations.
pub(crate) async fn connect(url: &str) -> Result<PgPool, StorageError> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// Starts the writer tasks; they stop once their queues are closed and drained.
pub(crate) fn start(
    pool: &PgPool,
    metrics: &CommitMetrics,
) -> (Vec<mpsc::Sender<Job>>, Vec<tokio::task::JoinHandle<()>>) {
    let mut queues = Vec::new();
    let mut handles = Vec::new();
    for shard in 0..WRITERS {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE / WRITERS);
        queues.push(tx);
        handles.push(tokio::spawn(serve(
            pool.clone(),
            shard as i64,
            rx,
            metrics.clone(),
        )));
    }
    (queues, handles)
}

async fn serve(pool: PgPool, shard: i64, mut rx: mpsc::Receiver<Job>, metrics: CommitMetrics) {
    let mut carried: Option<Job> = None;
    loop {
        let job = match carried.take() {
            Some(job) => Some(job),
            None => rx.recv().await,
        };
        let first = match job {
            Some(Job::Store(batch)) => batch,
            // Every group that began before this job has committed.
            Some(Job::Barrier(reply)) => {
                let _ = reply.send(());
                continue;
            }
            Some(Job::Stop) | None => return,
            // Flushes and deletions go straight to PostgreSQL.
            Some(_) => continue,
        };
        let (jobs, next) = gather(first, || rx.try_recv().ok());
        let group = Group::of(&jobs);
        let result = write(&pool, shard, &group).await;
        let (size, started) = (group.events.len(), group.started);
        drop(group);
        if isolate(&jobs, &result) {
            for job in jobs {
                let jobs = vec![job];
                let group = Group::of(&jobs);
                let result = write(&pool, shard, &group).await;
                let (size, started) = (group.events.len(), group.started);
                drop(group);
                settle(jobs, result, &metrics, size, started);
            }
        } else {
            settle(jobs, result, &metrics, size, started);
        }
        carried = next;
    }
}

/// `SELECT` of typed columns from one array parameter per column
/// (PostgreSQL's `UNNEST`): a multi-row statement takes its rows as a fixed
/// number of parameters, so its text never changes (it stays prepared in
/// the statement cache), and the arrays travel in PostgreSQL's binary
/// format, with no text to parse.
fn array_sql(upsert: &Upsert) -> String {
    let columns: Vec<String> = upsert
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, t))| {
            let pg = if *t == "int" { "BIGINT[]" } else { "TEXT[]" };
            format!("CAST(${} AS {pg})", i + 1)
        })
        .collect();
    // `WHERE true` keeps a following `ON CONFLICT` from being read as a join's `ON`.
    upsert.sql(&format!(
        "SELECT * FROM UNNEST({}) WHERE true",
        columns.join(", ")
    ))
}

/// The rows as the parameters of [`array_sql`]: one array per column.
fn column_arrays<'a, R: AsRef<[Cell<'a>]>>(
    upsert: &Upsert,
    rows: &'a [R],
) -> Result<PgArguments, StorageError> {
    use sqlx::Arguments;
    let mut args = PgArguments::default();
    for (i, (_, kind)) in upsert.columns.iter().enumerate() {
        let added = if *kind == "int" {
            let column: Vec<Option<i64>> = rows.iter().map(|r| r.as_ref()[i].int()).collect();
            args.add(column)
        } else {
            let column: Vec<Option<&str>> = rows.iter().map(|r| r.as_ref()[i].text()).collect();
            args.add(column)
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// Runs one upsert of `rows` in `tx` (nothing when there are none).
async fn upsert<'a, R: AsRef<[Cell<'a>]>>(
    tx: &mut sqlx::PgConnection,
    upsert: &Upsert,
    rows: &'a [R],
) -> Result<(), StorageError> {
    if !rows.is_empty() {
        sqlx::query_with(&array_sql(upsert), column_arrays(upsert, rows)?)
            .execute(tx)
            .await?;
    }
    Ok(())
}

/// Stores a group of events in one transaction: the events of deleted
/// users are dropped, the rest inserted once each (`event_id` is unique),
/// the rollups updated for what was new, and the invalid events
/// quarantined. Nothing is acknowledged before `COMMIT`.
async fn write(pool: &PgPool, shard: i64, group: &Group<'_>) -> Result<Vec<Written>, StorageError> {
    let mut tx = pool.begin().await?;
    let wanted: BTreeSet<&str> = group
        .events
        .iter()
        .filter_map(|e| group.hashes.get(e.user_id.as_str()).copied())
        .collect();
    let found: Vec<String> = if wanted.is_empty() {
        Vec::new()
    } else {
        let list: Vec<&str> = wanted.into_iter().collect();
        sqlx::query_scalar("SELECT user_hash FROM deleted_users WHERE user_hash = ANY($1)")
            .bind(list)
            .fetch_all(&mut *tx)
            .await?
    };
    let deleted: HashSet<&str> = found.iter().map(String::as_str).collect();
    let is_deleted = |e: &super::rows::EventRow| group.is_deleted(e, &deleted);

    let mut seen_in_group = HashSet::new();
    let fresh: Vec<_> = group
        .events
        .iter()
        .copied()
        .filter(|e| !is_deleted(e) && seen_in_group.insert(e.event_id.as_str()))
        .collect();
    let ids: Vec<String> = if fresh.is_empty() {
        Vec::new()
    } else {
        let rows: Vec<[Cell<'_>; 28]> = fresh.iter().map(|e| e.cells()).collect();
        sqlx::query_scalar_with(
            &format!("{} RETURNING event_id", array_sql(&EVENTS)),
            column_arrays(&EVENTS, &rows)?,
        )
        .fetch_all(&mut *tx)
        .await?
    };
    let inserted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut rollup = Aggregate::default();
    for e in fresh
        .iter()
        .filter(|e| inserted.contains(e.event_id.as_str()))
    {
        rollup.add(e);
    }
    for (table, rows) in rollup.tables(shard) {
        upsert(&mut tx, table, &rows).await?;
    }
    let bound = owner_rows(
        fresh
            .iter()
            .filter(|e| inserted.contains(e.event_id.as_str()))
            .map(|e| &***e),
    );
    if !bound.is_empty() {
        upsert(&mut tx, &OWNER_KEYS, &bound).await?;
    }
    if !group.quarantine.is_empty() {
        let rows: Vec<Vec<Cell<'_>>> = group.quarantine.iter().map(|q| q.cells()).collect();
        upsert(&mut tx, &QUARANTINE, &rows).await?;
        sqlx::query(PRUNE_QUARANTINE)
            .bind(QUARANTINE_KEEP)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(outcomes(&group.events, is_deleted, &inserted))
}

/// Deletes everything stored about one user and remembers the salted hash
/// of the id, so later events for it are dropped. Returns whether anything
/// was stored.
pub(crate) async fn delete_user(
    pool: &PgPool,
    user_id: &str,
    user_hash: &str,
    now_ms: i64,
) -> Result<bool, StorageError> {
    let mut tx = pool.begin().await?;
    sqlx::query(REMEMBER_DELETED_USER)
        .bind(user_hash)
        .bind(now_ms)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let mut found = 0;
    for sql in DELETE_USER {
        found += sqlx::query(sql)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    sqlx::query(DELETE_USER_QUARANTINE)
        .bind(user_hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(found > 0)
}
