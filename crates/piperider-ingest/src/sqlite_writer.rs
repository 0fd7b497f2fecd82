//! The SQLite writer: one thread owning one connection. It takes every job
//! queued (group commit), binds each row to a cached prepared statement in
//! one `BEGIN IMMEDIATE` transaction, and answers each request only after
//! `COMMIT` (with `synchronous = FULL` the WAL is on disk by then).
//!
//! The schema and migrations belong to the sqlx pool, which opens the file
//! first; reads and the rare other writes (deletions, retention) go through
//! that pool, and SQLite's lock orders them with this writer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params_from_iter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::store::{
    EVENTS, PRUNE_QUARANTINE, QUARANTINE, QUARANTINE_KEEP, QuarantineRow, Rollup, event_cells,
    outcomes,
};
use crate::store::{EventRow, Written};
use crate::writer::{Group, Job, gather, settle};

/// WAL frames after which the checkpointer holds the writer back for a
/// moment to finish a checkpoint, so that the WAL starts over instead of
/// growing without end under a steady load.
const WAL_RESTART_FRAMES: i64 = 16_384;
/// How often the checkpointer copies committed pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Opens a connection to an existing store file, for the writer or the checkpointer.
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Every commit reaches the disk before it is acknowledged.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Index pages stay in memory instead of being read back per insert.
    conn.pragma_update(None, "cache_size", -32768)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (`checkpointer`); this is only a
    // backstop should that thread fall behind.
    conn.pragma_update(None, "wal_autocheckpoint", 262_144)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Serves the queue until every sender is gone. After a failed commit the
/// connection is opened afresh for the next group.
pub(crate) fn run(
    mut rx: mpsc::Receiver<Job>,
    conn: Connection,
    path: PathBuf,
    metrics: Arc<Metrics>,
) {
    // Held while a group is written; the checkpointer takes it to finish a checkpoint.
    let gate = Arc::new(Mutex::new(()));
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let checkpoints = {
        let (gate, path) = (gate.clone(), path.clone());
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(&path, &gate, &stopped))
            .ok()
    };
    let mut conn = Some(conn);
    while let Some(first) = rx.blocking_recv() {
        let jobs = gather(first, || rx.try_recv().ok());
        let group = Group::of(&jobs);
        let result = {
            let _writing = gate.lock().unwrap_or_else(|e| e.into_inner());
            match conn.take() {
                Some(c) => Ok(c),
                None => open(&path),
            }
            .and_then(|mut c| {
                let written = write(&mut c, &group.events, &group.hashes, &group.quarantine)?;
                conn = Some(c);
                Ok(written)
            })
            .map_err(|e| e.to_string())
        };
        let (size, started) = (group.events.len(), group.started);
        drop(group);
        settle(jobs, result, &metrics, size, started);
    }
    drop(stop);
    if let Some(thread) = checkpoints {
        let _ = thread.join();
    }
}

/// Copies committed pages from the WAL into the database off the writer's
/// thread, every [`CHECKPOINT_EVERY`]; once the WAL is long, it finishes a
/// checkpoint with the writer held back, so that the next write starts the
/// WAL over. Ends with a full checkpoint when `stopped` disconnects.
fn checkpointer(path: &Path, gate: &Mutex<()>, stopped: &std::sync::mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    loop {
        let last = !matches!(
            stopped.recv_timeout(CHECKPOINT_EVERY),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        );
        let c = match conn.take() {
            Some(c) => c,
            None => match open(path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "checkpointer: cannot open the database");
                    if last {
                        return;
                    }
                    continue;
                }
            },
        };
        let checkpoint = |mode: &str| {
            c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
        };
        let result = if last {
            checkpoint("TRUNCATE").map(drop)
        } else {
            checkpoint("PASSIVE").and_then(|(log, done)| {
                if log >= WAL_RESTART_FRAMES && done < log {
                    let _held = gate.lock().unwrap_or_else(|e| e.into_inner());
                    checkpoint("PASSIVE").map(drop)
                } else {
                    Ok(())
                }
            })
        };
        match result {
            Ok(()) => conn = Some(c),
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; trying again"),
        }
        if last {
            return;
        }
    }
}

/// Stores a group of events in one transaction: the events of deleted
/// users are dropped, the rest inserted once each (`event_id` is unique),
/// the rollups updated for what was new, and the invalid events
/// quarantined.
fn write(
    conn: &mut Connection,
    events: &[&EventRow],
    hashes: &HashMap<String, String>,
    quarantine: &[QuarantineRow],
) -> rusqlite::Result<Vec<Written>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut deleted: HashSet<&str> = HashSet::new();
    {
        let mut lookup = tx.prepare_cached("SELECT 1 FROM deleted_users WHERE user_hash = ?1")?;
        for hash in hashes.values() {
            if lookup.exists([hash])? {
                deleted.insert(hash);
            }
        }
    }
    let is_deleted = |e: &EventRow| {
        hashes
            .get(&e.user_id)
            .is_some_and(|h| deleted.contains(h.as_str()))
    };

    let mut inserted: HashSet<&str> = HashSet::new();
    {
        let mut insert = tx.prepare_cached(&EVENTS.row_sql())?;
        for e in events.iter().copied().filter(|e| !is_deleted(e)) {
            if inserted.contains(e.event_id.as_str()) {
                continue;
            }
            if insert.execute(params_from_iter(event_cells(e)))? == 1 {
                inserted.insert(&e.event_id);
            }
        }
    }
    let mut seen = HashSet::new();
    let new: Vec<&EventRow> = events
        .iter()
        .copied()
        .filter(|e| inserted.contains(e.event_id.as_str()) && seen.insert(e.event_id.as_str()))
        .collect();
    let rollup = Rollup::of(&new);
    for (upsert, rows) in rollup.tables() {
        if rows.is_empty() {
            continue;
        }
        let mut statement = tx.prepare_cached(&upsert.row_sql())?;
        for row in rows {
            statement.execute(params_from_iter(row))?;
        }
    }
    if !quarantine.is_empty() {
        let mut statement = tx.prepare_cached(&QUARANTINE.row_sql())?;
        for row in quarantine {
            statement.execute(params_from_iter(row.cells()))?;
        }
        tx.execute(PRUNE_QUARANTINE, [QUARANTINE_KEEP])?;
    }
    tx.commit()?;
    Ok(outcomes(events, is_deleted, &inserted))
}
