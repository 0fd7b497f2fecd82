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
pub(super) const WAL_RESTART_FRAMES: i64 = 16_384;
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
/// thread, every [`CHECKPOINT_EVERY`]; once the WAL holds `restart_frames`
/// frames, it finishes a checkpoint with the writer held back (`gate`), so
/// that the next write starts the WAL over. Ends with a full checkpoint
/// when `stopped` disconnects.
///
/// The WAL starts over only when a write transaction begins with every
/// frame already copied. A checkpoint that copied everything without the
/// gate does not make that happen under a steady load: the writer commits
/// again before it next begins, so the WAL would go on growing (to
/// hundreds of megabytes in a minute of single-event requests, each sync
/// then also writing the file's new size). So a long WAL always gets the
/// gated checkpoint, which copies only what was committed since the first.
pub(super) fn checkpointer(
    path: &Path,
    gate: &Mutex<()>,
    stopped: &Receiver<()>,
    restart_frames: i64,
) {
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
            checkpoint("PASSIVE").and_then(|(log, _)| {
                if log >= restart_frames {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::{checkpointer, wal_path};

    /// The WAL header's checkpoint sequence number, which SQLite adds one
    /// to each time a write starts the WAL over.
    fn restarts(wal: &std::path::Path) -> u32 {
        let header = std::fs::read(wal).unwrap_or_default();
        header
            .get(12..16)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A writer that never pauses, as under a steady stream of requests:
    /// the WAL must still start over once it is long, again and again,
    /// instead of growing for as long as the load lasts.
    #[test]
    fn a_busy_writer_still_gets_its_wal_started_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
                .unwrap();
        }
        let gate = Arc::new(Mutex::new(()));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let checkpoints = {
            let (gate, path) = (gate.clone(), path.clone());
            std::thread::spawn(move || checkpointer(&path, &gate, &stopped, 64))
        };
        let mut conn = super::super::connect(&path).unwrap();
        let wal = wal_path(&path);
        let first = restarts(&wal);
        let started = Instant::now();
        let mut transactions = 0;
        while started.elapsed() < Duration::from_millis(1500) {
            let _writing = gate.lock().unwrap();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            tx.execute("INSERT INTO t (body) VALUES (zeroblob(3000))", [])
                .unwrap();
            tx.commit().unwrap();
            transactions += 1;
        }
        let seen = restarts(&wal) - first;
        drop(stop);
        checkpoints.join().unwrap();
        // A checkpoint every 100 ms: about fifteen in the time, each past
        // 64 frames (two or more per transaction) once the writer is warm.
        assert!(
            seen >= 5,
            "the WAL started over {seen} times in 1.5 s of {transactions} back-to-back transactions"
        );
    }
}
