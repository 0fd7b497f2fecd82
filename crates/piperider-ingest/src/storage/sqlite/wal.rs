//! The SQLite writer's helpers around the WAL: syncer threads that make
//! commits durable before they are acknowledged, and a checkpointer that
//! copies committed pages into the database off the writer's thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

/// WAL frames after which the checkpointer holds the writer back for a
/// moment to finish a checkpoint, so that the WAL starts over instead of
/// growing without end under a steady load.
const WAL_RESTART_FRAMES: i64 = 16_384;
/// How often the checkpointer copies committed pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// What to do once a commit is on disk (or the sync failed, with why).
pub(super) type Settle = Box<dyn FnOnce(Result<(), String>) + Send>;

pub(super) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Acknowledges commits once they are on disk: takes every commit made
/// since the last one taken, `fdatasync`s the WAL once for all of them, and
/// only then answers. The writer meanwhile goes on with the next group, so
/// the disk's latency is paid in parallel. Several syncers share the queue:
/// commits made while one sync runs start the next at once instead of
/// waiting for it (any `fdatasync` begun after a commit covers it).
pub(super) fn syncer(wal: &Path, commits: &Mutex<Receiver<Settle>>) {
    loop {
        let batch = {
            let commits = commits.lock().unwrap_or_else(|e| e.into_inner());
            let Ok(first) = commits.recv() else { return };
            let mut batch = vec![first];
            batch.extend(commits.try_iter());
            batch
        };
        let synced = std::fs::File::open(wal)
            .and_then(|f| f.sync_data())
            .map_err(|e| e.to_string());
        for settle in batch {
            settle(synced.clone());
        }
    }
}

/// Copies committed pages from the WAL into the database off the writer's
/// thread, every [`CHECKPOINT_EVERY`]; once the WAL is long, it finishes a
/// checkpoint with the writer held back (`gate`), so that the next write
/// starts the WAL over. Ends with a full checkpoint when `stopped`
/// disconnects.
pub(super) fn checkpointer(path: &Path, gate: &Mutex<()>, stopped: &Receiver<()>) {
    let mut conn: Option<Connection> = None;
    loop {
        let last = !matches!(
            stopped.recv_timeout(CHECKPOINT_EVERY),
            Err(RecvTimeoutError::Timeout)
        );
        let c = match conn.take() {
            Some(c) => c,
            None => match super::connect(path) {
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
