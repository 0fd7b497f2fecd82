//! The SQLite writer: one thread owning one connection. It takes every job
//! queued (group commit), binds each row to a cached prepared statement in
//! one `BEGIN IMMEDIATE` transaction, and answers each request only after
//! `COMMIT` and an `fdatasync` of the WAL, done by syncer threads for
//! every commit made meanwhile while the writer goes on with the next group.
//!
//! Rollups are held back in memory and written about once a second, in the
//! transaction of a group, so that a user seen a thousand times in that
//! second costs one upsert, not a thousand. The `rollup_watermark` setting,
//! written with them, names the last event they include; events are given
//! increasing rowids by this writer, so after a crash the events past the
//! watermark are rolled up again at start. Reads of the rollups and
//! deletions go through this writer ([`Job::Flush`], [`Job::DeleteUser`]),
//! which writes what it holds back first.
//!
//! The schema and migrations belong to the sqlx pool, which opens the file
//! first; reads and retention go through that pool, and SQLite's lock
//! orders them with this writer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior, params_from_iter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::store::{
    Aggregate, Cell, DELETE_USER, EVENTS, EventRow, PRUNE_QUARANTINE, QUARANTINE, QUARANTINE_KEEP,
    QuarantineRow, REMEMBER_DELETED_USER, Written, event_cells,
};
use crate::writer::{Group, Job, events_in, gather, gather_into, settle};

/// WAL frames after which the checkpointer holds the writer back for a
/// moment to finish a checkpoint, so that the WAL starts over instead of
/// growing without end under a steady load.
const WAL_RESTART_FRAMES: i64 = 16_384;
/// Threads syncing the WAL, so that syncs overlap.
const SYNCERS: usize = 3;
/// How often the checkpointer copies committed pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// A group of fewer events than this, on a busy writer, waits [`HOLD`]
/// for more before its transaction starts: under a stream of single-event
/// requests a commit (its WAL writes and `fdatasync`) then serves several
/// times more events, for about the same cost.
const HOLD_BELOW_EVENTS: usize = 32;
const HOLD: Duration = Duration::from_micros(300);
/// The writer counts as busy when its previous group started this recently;
/// an idle writer never holds a request back.
const BUSY_WITHIN: Duration = Duration::from_millis(2);

/// How long rollups are held back at most (while events keep coming).
const ROLLUP_EVERY: Duration = Duration::from_secs(1);
/// How many events' rollups are held back at most.
const ROLLUP_MAX_EVENTS: usize = 200_000;
const WATERMARK: &str = "rollup_watermark";

/// Opens a connection to an existing store file, for the writer or the checkpointer.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Commits are made durable by the syncer threads (`fdatasync` of the
    // WAL) before they are acknowledged, so the writer need not wait for
    // the disk; SQLite still syncs before each checkpoint.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Index pages stay in memory instead of being read back per insert.
    conn.pragma_update(None, "cache_size", -32768)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (`checkpointer`); this is only a
    // backstop should that thread fall behind.
    conn.pragma_update(None, "wal_autocheckpoint", 262_144)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

pub(crate) struct SqliteWriter {
    path: PathBuf,
    conn: Option<Connection>,
    /// Rollups of committed events not yet written.
    pending: Aggregate,
    since: Instant,
    /// The rowid the next stored event gets.
    next_rowid: i64,
    /// Whether `pending` must be rebuilt from the stored events first.
    recover: bool,
}

impl SqliteWriter {
    /// Opens the writer's connection and rolls up any events a crash left
    /// past the watermark.
    pub(crate) fn open(path: &Path) -> anyhow::Result<SqliteWriter> {
        let mut writer = SqliteWriter {
            path: path.to_path_buf(),
            conn: None,
            pending: Aggregate::default(),
            since: Instant::now(),
            next_rowid: 1,
            recover: true,
        };
        writer.transact(|_, _| Ok(()))?;
        if writer.pending.events() > 0 {
            let events = writer.pending.events();
            writer.transact(|w, tx| w.write_pending(tx))?;
            tracing::info!(events, "rolled up events stored before an unclean stop");
        }
        Ok(writer)
    }

    /// Holds back the rollups of every event past the stored watermark
    /// (after a start, or a failed transaction that may have dropped some).
    fn recover(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let watermark: i64 = conn
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                [WATERMARK],
                |r| r.get::<_, String>(0),
            )
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let last: i64 = conn.query_row("SELECT COALESCE(MAX(rowid), 0) FROM events", [], |r| {
            r.get(0)
        })?;
        self.next_rowid = last.max(watermark) + 1;
        let mut pending = Aggregate::default();
        each_event_after(conn, watermark, |e| pending.add(&e))?;
        self.pending = pending;
        self.recover = false;
        Ok(())
    }

    /// Serves the queue until every sender is gone, then writes what it
    /// holds back. After a failed transaction the connection is opened
    /// afresh for the next one.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Job>, metrics: Arc<Metrics>) {
        // Held while a transaction runs; the checkpointer takes it to finish a checkpoint.
        let gate = Arc::new(Mutex::new(()));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let checkpoints = {
            let (gate, path) = (gate.clone(), self.path.clone());
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || checkpointer(&path, &gate, &stopped))
                .ok()
        };
        let (to_sync, syncing) = std::sync::mpsc::channel::<Settle>();
        let syncing = Arc::new(Mutex::new(syncing));
        let syncers: Vec<_> = (0..SYNCERS)
            .filter_map(|_| {
                let (wal, syncing) = (wal_path(&self.path), syncing.clone());
                std::thread::Builder::new()
                    .name("sqlite-sync".into())
                    .spawn(move || syncer(&wal, &syncing))
                    .ok()
            })
            .collect();
        let mut carried: Option<Job> = None;
        let mut last_group: Option<Instant> = None;
        loop {
            let Some(job) = carried.take().or_else(|| rx.blocking_recv()) else {
                break;
            };
            let _writing = gate.lock().unwrap_or_else(|e| e.into_inner());
            match job {
                Job::Store(first) => {
                    let (mut jobs, mut next) = gather(first, || rx.try_recv().ok());
                    if next.is_none()
                        && events_in(&jobs) < HOLD_BELOW_EVENTS
                        && last_group.is_some_and(|t| t.elapsed() < BUSY_WITHIN)
                    {
                        std::thread::sleep(HOLD);
                        next = gather_into(&mut jobs, || rx.try_recv().ok());
                    }
                    last_group = Some(Instant::now());
                    carried = next;
                    let group = Group::of(&jobs);
                    let result = self
                        .transact(|w, tx| {
                            w.store(tx, &group.events, &group.hashes, &group.quarantine)
                        })
                        .map_err(|e| e.to_string());
                    let (size, started) = (group.events.len(), group.started);
                    drop(group);
                    let metrics = metrics.clone();
                    let _ = to_sync.send(Box::new(move |synced| {
                        let result = result.and_then(|w| synced.map(|()| w));
                        settle(jobs, result, &metrics, size, started);
                    }));
                }
                Job::Flush(reply) => {
                    let result = self.transact(|w, tx| w.write_pending(tx));
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                }
                Job::DeleteUser {
                    user_id,
                    hash,
                    now_ms,
                    reply,
                } => {
                    let result = self
                        .transact(|w, tx| {
                            w.write_pending(tx)?;
                            let mut found = 0;
                            for sql in DELETE_USER {
                                found += tx.execute(sql, [&user_id])?;
                            }
                            tx.execute(REMEMBER_DELETED_USER, rusqlite::params![hash, now_ms])?;
                            Ok(found > 0)
                        })
                        .map_err(|e| e.to_string());
                    let _ = to_sync.send(Box::new(move |synced| {
                        let _ = reply.send(result.and_then(|found| synced.map(|()| found)));
                    }));
                }
            }
        }
        if self.pending.events() > 0
            && let Err(e) = self.transact(|w, tx| w.write_pending(tx))
        {
            tracing::warn!(error = %e, "rollups not written at stop; they are rebuilt at the next start");
        }
        drop(to_sync);
        for thread in syncers {
            let _ = thread.join();
        }
        drop(stop);
        if let Some(thread) = checkpoints {
            let _ = thread.join();
        }
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction and commits it. On
    /// failure the connection is opened afresh next time and the held-back
    /// rollups are rebuilt from what was stored.
    fn transact<T>(
        &mut self,
        body: impl FnOnce(&mut Self, &Transaction<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => connect(&self.path)?,
        };
        let result = (|| {
            if self.recover {
                self.recover(&conn)?;
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = body(self, &tx)?;
            tx.commit()?;
            Ok(out)
        })();
        match result {
            Ok(out) => {
                self.conn = Some(conn);
                Ok(out)
            }
            Err(e) => {
                self.recover = true;
                Err(e)
            }
        }
    }

    /// Writes the held-back rollups and the watermark (everything stored so far).
    fn write_pending(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        write_aggregate(tx, &self.pending)?;
        tx.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![WATERMARK, (self.next_rowid - 1).to_string()],
        )?;
        // Forgotten here: were the commit to fail, the events past the
        // watermark are rolled up again when the writer next opens.
        self.pending = Aggregate::default();
        self.since = Instant::now();
        Ok(())
    }

    /// Stores a group of events: the events of deleted users are dropped,
    /// the rest inserted once each (`event_id` is unique), and the invalid
    /// events quarantined. The rollups of the new events are held back, or
    /// written with the held-back ones when those are due.
    fn store(
        &mut self,
        tx: &Transaction<'_>,
        events: &[&Arc<EventRow>],
        hashes: &HashMap<&str, &str>,
        quarantine: &[QuarantineRow],
    ) -> rusqlite::Result<Vec<Written>> {
        let mut deleted: HashSet<&str> = HashSet::new();
        {
            let mut lookup =
                tx.prepare_cached("SELECT 1 FROM deleted_users WHERE user_hash = ?1")?;
            for &hash in hashes.values() {
                if lookup.exists([hash])? {
                    deleted.insert(hash);
                }
            }
        }
        let is_deleted = |e: &EventRow| {
            !deleted.is_empty()
                && hashes
                    .get(e.user_id.as_str())
                    .is_some_and(|h| deleted.contains(h))
        };

        // Each event in input order: dropped for a deleted user, accepted
        // when its id is inserted (the first time), otherwise a duplicate.
        let mut outcomes = Vec::with_capacity(events.len());
        {
            let mut insert = tx.prepare_cached(&INSERT_EVENT)?;
            for &e in events {
                let outcome = if is_deleted(e) {
                    Written::DeletedUser
                } else {
                    let row =
                        std::iter::once(Cell::Int(Some(self.next_rowid))).chain(event_cells(e));
                    if insert.execute(params_from_iter(row))? == 1 {
                        self.next_rowid += 1;
                        // Forgotten with the rest should the commit fail (`transact`).
                        self.pending.add(e);
                        Written::Accepted
                    } else {
                        Written::Duplicate
                    }
                };
                outcomes.push(outcome);
            }
        }
        if !quarantine.is_empty() {
            let mut statement = tx.prepare_cached(&QUARANTINE.row_sql())?;
            for row in quarantine {
                statement.execute(params_from_iter(row.cells()))?;
            }
            tx.execute(PRUNE_QUARANTINE, [QUARANTINE_KEEP])?;
        }
        if self.since.elapsed() >= ROLLUP_EVERY || self.pending.events() >= ROLLUP_MAX_EVENTS {
            self.write_pending(tx)?;
        }
        Ok(outcomes)
    }
}

/// `INSERT` of one event with the rowid this writer gives it (made once:
/// the statement cache is looked up by this text for every group).
static INSERT_EVENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(insert_event_sql);

fn insert_event_sql() -> String {
    let names: Vec<&str> = EVENTS.columns.iter().map(|(n, _)| *n).collect();
    let marks: Vec<String> = (1..=names.len() + 1).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO events (rowid, {}) VALUES ({}) {}",
        names.join(", "),
        marks.join(", "),
        EVENTS.on_conflict
    )
}

fn write_aggregate(tx: &Transaction<'_>, aggregate: &Aggregate) -> rusqlite::Result<()> {
    // One writer: one shard.
    for (upsert, rows) in aggregate.tables(0) {
        if rows.is_empty() {
            continue;
        }
        let mut statement = tx.prepare_cached(&upsert.row_sql())?;
        for row in &rows {
            statement.execute(params_from_iter(row))?;
        }
    }
    Ok(())
}

/// Hands each stored event past `rowid` to `f`, in order, one at a time.
fn each_event_after(
    conn: &Connection,
    rowid: i64,
    mut f: impl FnMut(Arc<EventRow>),
) -> rusqlite::Result<()> {
    let names: Vec<&str> = EVENTS.columns.iter().map(|(n, _)| *n).collect();
    let mut statement = conn.prepare(&format!(
        "SELECT {} FROM events WHERE rowid > ?1 ORDER BY rowid",
        names.join(", ")
    ))?;
    let rows = statement.query_map([rowid], |r| {
        let stats: [Option<i64>; 7] = [
            r.get(17)?,
            r.get(18)?,
            r.get(19)?,
            r.get(20)?,
            r.get(21)?,
            r.get(22)?,
            r.get(23)?,
        ];
        Ok(Arc::new(EventRow {
            event_id: r.get(0)?,
            received_at: r.get(1)?,
            ts: r.get(2)?,
            day: r.get(3)?,
            event_type: r.get(4)?,
            user_id: r.get(5)?,
            device_id: r.get(6)?,
            os: r.get(7)?,
            arch: r.get(8)?,
            os_version: r.get(9)?,
            runtime_name: r.get(10)?,
            runtime_version: r.get(11)?,
            app_version: r.get(12)?,
            initial_version: r.get(13)?,
            ci: r.get(14)?,
            project_id: r.get(15)?,
            datasource_type: r.get(16)?,
            stats: if stats.iter().all(Option::is_some) {
                Some(stats.map(|v| v.unwrap_or(0)))
            } else {
                None
            },
            status: r.get(24)?,
            duration_ms: r.get(25)?,
            country: r.get(26)?,
            region: r.get(27)?,
        }))
    })?;
    for row in rows {
        f(row?);
    }
    Ok(())
}

/// What to do once a commit is on disk (or the sync failed).
type Settle = Box<dyn FnOnce(Result<(), String>) + Send>;

fn wal_path(db: &Path) -> PathBuf {
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
fn syncer(wal: &Path, commits: &Mutex<std::sync::mpsc::Receiver<Settle>>) {
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
            .map_err(|e| format!("syncing {}: {e}", wal.display()));
        for settle in batch {
            settle(synced.clone());
        }
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
            None => match connect(path) {
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
