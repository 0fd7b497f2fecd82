//! SQLite: one writer thread owning one connection. It takes every job
//! queued (group commit), binds each row to a cached prepared statement in
//! one `BEGIN IMMEDIATE` transaction, and answers each request only after
//! `COMMIT` and an `fdatasync` of the WAL, done by syncer threads for every
//! commit made meanwhile while the writer goes on with the next group
//! ([`wal`]); the group's requests are then answered from one task on the
//! runtime ([`Answers`]).
//!
//! Rollups are held back in memory, so that a user seen a thousand times
//! meanwhile costs one upsert, not a thousand; a thread of their own adds
//! each stored event to them and to the dashboard's cube ([`roller`]), so
//! that the writer's thread, which sets the pace of a bulk load, only runs
//! SQL. They are written in a
//! transaction of their own once the writer finds its queue empty (at
//! most once a second), off the path of any acknowledgement; a writer
//! that never runs out of work writes them with a group every five
//! seconds, in fewer, larger upserts of the same rows. The
//! `rollup_watermark` setting, written with them, names the last event
//! they include; events are given increasing rowids by this writer, so
//! after a crash the events past the watermark are rolled up again at
//! start. Reads of the rollups and
//! deletions go through this writer ([`Job::Flush`], [`Job::DeleteUser`]),
//! which writes what it holds back first.
//!
//! The schema and migrations belong to the sqlx pool, which opens the file
//! first; reads, settings, Cloud events and retention go through that pool,
//! and SQLite's lock orders them with this writer. One process writes a
//! file: a lock file beside it keeps a second process out.

mod roller;
mod wal;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params_from_iter,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

use super::cube::{self, Cube, CubeRows, Segment};
use super::error::StorageError;
use super::group::{
    CommitMetrics, Group, Job, QUEUE, Written, events_in, gather, gather_into, isolate, settle,
};
use super::rows::{Cell, EventRow, QuarantineRow, owner_rows};
use super::schema::{
    DELETE_USER, DELETE_USER_EVENTS_SQLITE, DELETE_USER_QUARANTINE, EVENTS, OWNER_KEYS, PROJECTS,
    PROJECTS_LATER_SQLITE, PRUNE_QUARANTINE, QUARANTINE, QUARANTINE_KEEP, REMEMBER_DELETED_USER,
    SQLITE_BUSY_TIMEOUT, SQLITE_PRAGMAS, USERS, USERS_LATER_SQLITE, sqlite_synchronous,
};
use roller::{AddTo, Gone, Roller};
use wal::{Settle, WAL_RESTART_FRAMES, checkpointer, syncer, wal_path};

/// Threads syncing the WAL, so that syncs overlap.
const SYNCERS: usize = 3;
/// A group of fewer events than this, on a busy writer, waits [`HOLD`]
/// for more before its transaction starts: under a stream of single-event
/// requests a commit (its WAL writes and `fdatasync`) then serves several
/// times more events, for about the same cost.
const HOLD_BELOW_EVENTS: usize = 32;
const HOLD: Duration = Duration::from_micros(300);
/// The writer counts as busy when its previous group started this recently;
/// an idle writer never holds a request back.
const BUSY_WITHIN: Duration = Duration::from_millis(2);
const WATERMARK: &str = "rollup_watermark";

/// How long, and for how many events, the SQLite writer holds back the
/// rollups of stored events and the dashboard's cube before writing them.
/// Held longer, each user, day and segment is written once for more
/// events, at the cost of memory that grows with the events held. Reads
/// and deletions always write them first, so no reader sees a lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupHold {
    /// Before a writer with nothing queued writes them.
    idle: Duration,
    /// At most, on a writer that stays busy.
    busy: Duration,
    /// At most this many events' rollups.
    events: usize,
    /// The cube's rows are read, merged and written back, one or more
    /// per event of a sparse segment; held longer, a row takes many
    /// events' worth at once.
    cube: Duration,
    cube_events: usize,
    /// The writer's page cache, KiB. SQLite (3.46) walks every cached
    /// page at the commit of a transaction that split an index page out
    /// of order, and under single events nearly every commit does: at
    /// 32 MiB that walk was a twentieth of the backend's time. A live
    /// service commits hundreds of times a second and keeps it small; a
    /// bulk load commits rarely, and its rollups touch far more pages.
    cache_kib: u32,
}

impl RollupHold {
    /// A service taking events: rollups at most a second behind when the
    /// writer has time, five seconds when it has none.
    pub const SERVING: RollupHold = RollupHold {
        idle: Duration::from_secs(1),
        busy: Duration::from_secs(5),
        events: 200_000,
        cube: Duration::from_secs(15),
        cube_events: 200_000,
        cache_kib: 8 * 1024,
    };
    /// A new database filled with history (an import, a replay, the
    /// benchmark's data set): two million events held (a minute at
    /// most), so a user active all along is written a few times instead
    /// of once every five seconds, while the cube's rows of each hold are
    /// worked out beside the next one's events (held whole, they would
    /// all be worked out at the end, and on one core). Memory: 3.5 GB at
    /// most while the benchmark's data set is built.
    pub const BULK_LOAD: RollupHold = RollupHold {
        idle: Duration::from_secs(60),
        busy: Duration::from_secs(60),
        events: 2_000_000,
        cube: Duration::from_secs(60),
        cube_events: 2_000_000,
        cache_kib: 32 * 1024,
    };
}

/// The last event (rowid) the cube holds.
const CUBE_WATERMARK: &str = "cube_watermark";
/// Events per transaction when the cube is built from stored events.
const BACKFILL_EVENTS: i64 = 100_000;
/// Events handed to the roller at a time when the held rollups are
/// rebuilt from stored events.
const RECOVER_CHUNK: usize = 10_000;

/// The roller's thread stopped: the transaction fails, and the held
/// rollups are rebuilt from the stored events (by a new roller).
fn gone(_: Gone) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure("the rollups' thread stopped".into())
}

/// Opens (creating if needed) the store file through sqlx and runs the
/// embedded migrations; returns the pool and the file's path.
pub(crate) async fn connect_pool(url: &str) -> Result<(SqlitePool, PathBuf), StorageError> {
    // The writer thread opens the same file: an in-memory database would be a different one.
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(StorageError::InMemorySqlite);
    }
    let synchronous = SqliteSynchronous::from_str(sqlite_synchronous(false))
        .map_err(|e| StorageError::Database(sqlx::Error::Configuration(e.into())))?;
    let mut options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    for (name, value) in SQLITE_PRAGMAS {
        options = options.pragma(name, value);
    }
    // One connection alone first: opening the file after an unclean stop
    // recovers its WAL, which takes as long as the WAL is large (a
    // gigabyte read from disk takes longer than the pool below waits for
    // a connection, and the service would not start).
    {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect_with(&options)
            .await?
            .close()
            .await?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    let path = path_of(&pool);
    Ok((pool, path))
}

/// The file of the pool's database.
pub(crate) fn path_of(pool: &SqlitePool) -> PathBuf {
    let path = pool.connect_options().get_filename().to_path_buf();
    path.canonicalize().unwrap_or(path)
}

/// Starts the writer thread of the file at `path`; it stops once its queue
/// is closed and drained, and the returned task ends with it.
pub(crate) fn start(
    path: &Path,
    salt: &str,
    metrics: &CommitMetrics,
    hold: RollupHold,
) -> Result<(mpsc::Sender<Job>, tokio::task::JoinHandle<()>), StorageError> {
    let lock_path = {
        let mut name = path.as_os_str().to_owned();
        name.push("-writer.lock");
        PathBuf::from(name)
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StorageError::File {
            path: lock_path.clone(),
            source,
        })?;
    if lock.try_lock().is_err() {
        return Err(StorageError::SqliteBusy(path.to_path_buf()));
    }
    let writer = SqliteWriter::open(path, salt, hold)?;
    let (tx, rx) = mpsc::channel::<Job>(QUEUE);
    let metrics = metrics.clone();
    // Its own thread, not the runtime's blocking pool: a runtime shut down
    // while a `Store` is still held must not wait for it.
    let (done, finished) = oneshot::channel::<()>();
    let answers = Answers::on_current_runtime();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            raise_priority();
            writer.run(rx, &metrics, &answers);
            // Unlocked once the last commit is done.
            drop(lock);
            let _ = done.send(());
        })
        .map_err(StorageError::Thread)?;
    let handle = tokio::spawn(async move {
        let _ = finished.await;
    });
    Ok((tx, handle))
}

/// The writer thread's nice value: ahead of the request threads.
#[cfg(target_os = "linux")]
const WRITER_NICE: i32 = -10;

/// Puts the calling thread (the writer) ahead of the request threads,
/// with the threads it starts (the syncers, the checkpointer, the cube's
/// rows). Every single-event request waits for the writer's next commit,
/// and on a busy machine the writer would otherwise wait for a core
/// behind the request threads it serves; ahead of them it commits
/// sooner, and more requests are answered a second. Raising a priority needs
/// `CAP_SYS_NICE` (or an `RLIMIT_NICE` that allows it); without it the
/// writer runs at the default priority, and says so once. Linux alone:
/// there a priority is a thread's; elsewhere `setpriority` would raise the
/// whole process, request threads included.
fn raise_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, WRITER_NICE) {
        tracing::info!(
            error = %e,
            nice = WRITER_NICE,
            "the SQLite writer runs at the default priority (raising it needs CAP_SYS_NICE)"
        );
    }
}

/// Where a group's requests are answered once its commit is on disk: in
/// one task on the runtime the store was started on, which wakes each
/// request's task on its own thread, instead of the syncer thread waking
/// every request's task from outside the runtime (a push to the runtime's
/// shared queue and a worker to rouse, per request). Without a runtime
/// whose own workers run its tasks, on the syncer's thread: a
/// current-thread runtime runs them only while its thread waits in it.
#[derive(Clone)]
struct Answers(Option<tokio::runtime::Handle>);

impl Answers {
    fn on_current_runtime() -> Answers {
        Answers(
            tokio::runtime::Handle::try_current()
                .ok()
                .filter(|r| r.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread),
        )
    }

    /// Runs `answer`, on the runtime if there is one. A runtime that has
    /// shut down drops the task unrun; the answer is then given where it
    /// is dropped, so a request is never left without one.
    fn answer(&self, answer: impl FnOnce() + Send + 'static) {
        match &self.0 {
            Some(runtime) => {
                let answer = OnDrop(Some(answer));
                drop(runtime.spawn(async move { drop(answer) }));
            }
            None => answer(),
        }
    }
}

/// Runs its closure once, when dropped.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Opens a connection to an existing store file, for the writer or the checkpointer.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", sqlite_synchronous(true))?;
    for (name, value) in SQLITE_PRAGMAS {
        conn.pragma_update(None, name, value)?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// The threads beside the writer: syncers and the checkpointer.
struct Helpers {
    /// Held while a transaction runs; the checkpointer takes it to finish a checkpoint.
    gate: Arc<Mutex<()>>,
    to_sync: std::sync::mpsc::Sender<Settle>,
    syncers: Vec<std::thread::JoinHandle<()>>,
    stop: std::sync::mpsc::Sender<()>,
    checkpoints: Option<std::thread::JoinHandle<()>>,
}

impl Helpers {
    fn start(path: &Path) -> Helpers {
        let gate = Arc::new(Mutex::new(()));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let checkpoints = {
            let (gate, path) = (gate.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || checkpointer(&path, &gate, &stopped, WAL_RESTART_FRAMES))
                .ok()
        };
        let (to_sync, syncing) = std::sync::mpsc::channel::<Settle>();
        let syncing = Arc::new(Mutex::new(syncing));
        let syncers = (0..SYNCERS)
            .filter_map(|_| {
                let (wal, syncing) = (wal_path(path), syncing.clone());
                std::thread::Builder::new()
                    .name("sqlite-sync".into())
                    .spawn(move || syncer(&wal, &syncing))
                    .ok()
            })
            .collect();
        Helpers {
            gate,
            to_sync,
            syncers,
            stop,
            checkpoints,
        }
    }

    /// Runs `then` with the outcome once everything committed so far is on disk.
    fn after_sync(&self, wal: &Path, then: impl FnOnce(Result<(), StorageError>) + Send + 'static) {
        let wal = wal.to_path_buf();
        let _ = self.to_sync.send(Box::new(move |synced| {
            then(synced.map_err(|message| StorageError::Sync { path: wal, message }));
        }));
    }

    /// Waits for the syncers to answer every commit, then for a last checkpoint.
    fn stop(self) {
        drop(self.to_sync);
        for thread in self.syncers {
            let _ = thread.join();
        }
        drop(self.stop);
        if let Some(thread) = self.checkpoints {
            let _ = thread.join();
        }
    }
}

struct SqliteWriter {
    path: PathBuf,
    conn: Option<Connection>,
    /// Adds committed events to the rollups and the cube held back, on a
    /// thread of its own.
    roller: Roller,
    since: Instant,
    /// How long the rollups and the cube are held back.
    hold: RollupHold,
    /// The rowid the next stored event gets.
    next_rowid: i64,
    /// Whether the held rollups must be rebuilt from the stored events first.
    recover: bool,
    /// Salt of the cube's sketches.
    salt: String,
    /// The cube's segment ids known to be committed.
    segment_ids: HashMap<Segment, i64>,
    /// Since the roller's cube (of events whose other rollups are
    /// written, and those held) was started.
    cube_since: Instant,
    /// The cube held back before the roller's, its rows being worked out on a
    /// thread of their own while the writer goes on storing events.
    cube_job: Option<CubeJob>,
    /// The first day stored for each user of `cube` whose rollup was
    /// written since (what the cube needs to tell new users).
    first_days: HashMap<String, String>,
}

/// A held-back cube's rows, worked out on their own thread (the writer's
/// other work is SQL, so the two share no lock and use two cores), and
/// the cube watermark once they are written.
struct CubeJob {
    watermark: i64,
    rows: std::thread::JoinHandle<CubeRows>,
}

fn setting_i64(conn: &Connection, key: &str) -> Option<i64> {
    conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
        r.get::<_, String>(0)
    })
    .ok()
    .and_then(|v| v.parse().ok())
}

fn set_setting(tx: &Transaction<'_>, key: &str, value: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        rusqlite::params![key, value.to_string()],
    )?;
    Ok(())
}

/// The first day of each of the cube's users, as the `users` rollup holds
/// it: those `known` as written, the others read.
fn first_days(
    tx: &Transaction<'_>,
    cube: &Cube,
    mut known: HashMap<String, String>,
) -> rusqlite::Result<HashMap<String, String>> {
    let mut read = tx.prepare_cached("SELECT first_day FROM users WHERE user_id = ?1")?;
    for u in cube.users() {
        if known.contains_key(u) {
            continue;
        }
        if let Some(d) = read.query_row([u], |r| r.get::<_, String>(0)).optional()? {
            known.insert(u.to_string(), d);
        }
    }
    Ok(known)
}

impl SqliteWriter {
    /// Opens the writer's connection and rolls up any events a crash left
    /// past the watermark.
    fn open(path: &Path, salt: &str, hold: RollupHold) -> Result<SqliteWriter, StorageError> {
        let mut writer = SqliteWriter {
            salt: salt.to_string(),
            segment_ids: HashMap::new(),
            path: path.to_path_buf(),
            conn: None,
            roller: Roller::start(),
            since: Instant::now(),
            hold,
            next_rowid: 1,
            recover: true,
            cube_since: Instant::now(),
            cube_job: None,
            first_days: HashMap::new(),
        };
        writer.backfill()?;
        writer.transact(|_, _| Ok(()))?;
        if writer.roller.aggregate_events() > 0 {
            let events = writer.roller.aggregate_events();
            writer.transact(|w, tx| w.write_pending(tx))?;
            tracing::info!(events, "rolled up events stored before an unclean stop");
        }
        Ok(writer)
    }

    /// Builds the cube from the stored events it does not hold yet (a
    /// database from before the cube, or one whose writer stopped with
    /// much held back), in transactions of [`BACKFILL_EVENTS`] events.
    fn backfill(&mut self) -> Result<(), StorageError> {
        let mut built = 0usize;
        // Not the recovery of held-back rollups (which would hold these
        // events in memory, then count them a second time): that follows.
        self.recover = false;
        loop {
            let done = self.transact(|w, tx| {
                let watermark = setting_i64(tx, WATERMARK).unwrap_or(0);
                let from = setting_i64(tx, CUBE_WATERMARK).unwrap_or(0);
                if from >= watermark {
                    return Ok(true);
                }
                let to = watermark.min(from + BACKFILL_EVENTS);
                let mut cube = Cube::default();
                {
                    let mut statement = tx.prepare(&format!(
                        "SELECT {} FROM events WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid",
                        EVENTS.names()
                    ))?;
                    let mut rows = statement.query([from, to])?;
                    while let Some(row) = rows.next()? {
                        cube.add(&EventRow::from_sqlite(row)?);
                    }
                }
                built += cube.events();
                w.write_cube_rows(tx, cube, HashMap::new())?;
                set_setting(tx, CUBE_WATERMARK, to)?;
                Ok(false)
            })?;
            if done {
                break;
            }
        }
        // Now the held-back rollups, and the next rowid, from what was stored.
        self.recover = true;
        if built > 0 {
            tracing::info!(
                events = built,
                "built the dashboard's cube from stored events"
            );
        }
        Ok(())
    }

    /// Holds back the rollups of every event past the stored watermark,
    /// and the cube of those past the cube's (after a start, or a failed
    /// transaction that may have dropped some).
    fn recover(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let watermark = setting_i64(conn, WATERMARK).unwrap_or(0);
        let cube_from = setting_i64(conn, CUBE_WATERMARK)
            .unwrap_or(0)
            .min(watermark);
        let last: i64 = conn.query_row("SELECT COALESCE(MAX(rowid), 0) FROM events", [], |r| {
            r.get(0)
        })?;
        self.next_rowid = last.max(watermark) + 1;
        // A roller whose thread stopped is started afresh.
        if self.roller.reset().is_err() {
            self.roller = Roller::start();
        }
        let mut statement = conn.prepare(&format!(
            "SELECT rowid, {} FROM events WHERE rowid > ?1 ORDER BY rowid",
            EVENTS.names()
        ))?;
        let mut rows = statement.query([cube_from])?;
        let mut events = Vec::new();
        let mut into = AddTo::Cube;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let event = Arc::new(EventRow::from_sqlite(row)?);
            let now = if rowid > watermark {
                AddTo::Both
            } else {
                AddTo::Cube
            };
            if now != into || events.len() >= RECOVER_CHUNK {
                self.roller
                    .add(std::mem::take(&mut events), into)
                    .map_err(gone)?;
                into = now;
            }
            events.push(event);
        }
        self.roller.add(events, into).map_err(gone)?;
        // Its events are past the cube watermark, so in the roller's cube again.
        self.cube_job = None;
        self.first_days.clear();
        self.recover = false;
        Ok(())
    }

    /// Serves the queue until every sender is gone, then writes what it
    /// holds back. After a failed transaction the connection is opened
    /// afresh for the next one.
    fn run(mut self, mut rx: mpsc::Receiver<Job>, metrics: &CommitMetrics, answers: &Answers) {
        let helpers = Helpers::start(&self.path);
        let wal = wal_path(&self.path);
        let mut carried: Option<Job> = None;
        let mut last_group: Option<Instant> = None;
        loop {
            let Some(job) = carried.take().or_else(|| rx.blocking_recv()) else {
                break;
            };
            let _writing = helpers.gate.lock().unwrap_or_else(|e| e.into_inner());
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
                    let result = self.transact(|w, tx| w.store(tx, &group));
                    let (size, started) = (group.events.len(), group.started);
                    drop(group);
                    // Refused data: each request again on its own.
                    let settled: Vec<_> = if isolate(&jobs, &result) {
                        jobs.into_iter()
                            .map(|job| {
                                let jobs = vec![job];
                                let group = Group::of(&jobs);
                                let result = self.transact(|w, tx| w.store(tx, &group));
                                let (size, started) = (group.events.len(), group.started);
                                drop(group);
                                (jobs, result, size, started)
                            })
                            .collect()
                    } else {
                        vec![(jobs, result, size, started)]
                    };
                    let (metrics, answers) = (metrics.clone(), answers.clone());
                    helpers.after_sync(&wal, move |synced| {
                        answers.answer(move || {
                            let synced = synced.map_err(std::sync::Arc::new);
                            for (jobs, result, size, started) in settled {
                                let synced = synced.clone().map_err(|e| e.shared());
                                let result = result.and_then(|w| synced.map(|()| w));
                                settle(jobs, result, &metrics, size, started);
                            }
                        });
                    });
                }
                Job::Flush(reply) => {
                    let _ = reply.send(self.transact(|w, tx| w.write_all(tx)));
                }
                Job::DeleteUser {
                    user_id,
                    hash,
                    now_ms,
                    reply,
                } => {
                    let result = self.transact(|w, tx| w.delete_user(tx, &user_id, &hash, now_ms));
                    helpers.after_sync(&wal, move |synced| {
                        let _ = reply.send(result.and_then(|found| synced.map(|()| found)));
                    });
                }
                Job::Barrier(reply) => {
                    let _ = reply.send(());
                }
                Job::Stop => break,
            }
            // Nothing waiting: the held-back rollups, in a transaction of
            // their own (no request waits for it; a failure is only logged,
            // they are rebuilt from the stored events).
            if carried.is_none()
                && rx.is_empty()
                && self.roller.aggregate_events() > 0
                && self.since.elapsed() >= self.hold.idle
                && let Err(e) = self.transact(|w, tx| w.write_pending(tx))
            {
                tracing::warn!(error = %e, "rollups not written; they are rebuilt from the stored events");
            }
        }
        if (self.roller.aggregate_events() > 0
            || self.roller.cube_events() > 0
            || self.cube_job.is_some())
            && let Err(e) = self.transact(|w, tx| w.write_all(tx))
        {
            tracing::warn!(error = %e, "rollups not written at stop; they are rebuilt at the next start");
        }
        helpers.stop();
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction and commits it. On
    /// failure the connection is opened afresh next time and the held-back
    /// rollups are rebuilt from what was stored.
    fn transact<T>(
        &mut self,
        body: impl FnOnce(&mut Self, &Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let conn = connect(&self.path)?;
                conn.pragma_update(None, "cache_size", -i64::from(self.hold.cache_kib))?;
                conn
            }
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
                // A cube whose rows were not written is held again by `recover`.
                self.cube_job = None;
                // Ids of segments added by the failed transaction are gone with it.
                self.segment_ids.clear();
                Err(StorageError::Sqlite(e))
            }
        }
    }

    /// Writes the held-back rollups and the watermark (everything stored
    /// so far), and the cube's too when they are due.
    fn write_pending(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        self.write_rollups(tx, false)
    }

    /// [`Self::write_pending`], the cube's always included when `cube`.
    /// The cube's rows need only its users' first days: its thread is
    /// started as soon as the users are written, and works them out while
    /// the writer writes the other rollups.
    fn write_rollups(&mut self, tx: &Transaction<'_>, cube: bool) -> rusqlite::Result<()> {
        let pending = self.roller.take_aggregate().map_err(gone)?;
        let mut cube = cube
            || self.cube_since.elapsed() >= self.hold.cube
            || self.roller.cube_events() >= self.hold.cube_events;
        // One writer: one shard. `tables()` gives the users first.
        for (upsert, rows) in pending.tables() {
            if cube && upsert.table != USERS.table {
                self.write_cube(tx)?;
                cube = false;
            }
            if rows.is_empty() {
                continue;
            }
            if upsert.table == USERS.table {
                // Each user's first day as now stored, for the cube.
                let mut later = tx.prepare_cached(&USERS_LATER_SQLITE)?;
                let mut any =
                    tx.prepare_cached(&format!("{} RETURNING first_day", upsert.row_sql()))?;
                for row in &rows {
                    let first_day: String = match later
                        .query_row(params_from_iter(row), |r| r.get(0))
                        .optional()?
                    {
                        Some(day) => day,
                        None => any.query_row(params_from_iter(row), |r| r.get(0))?,
                    };
                    if let Some(user) = row[0].text() {
                        self.first_days.insert(user.to_string(), first_day);
                    }
                }
                continue;
            }
            if upsert.table == PROJECTS.table {
                let mut later = tx.prepare_cached(&PROJECTS_LATER_SQLITE)?;
                let mut any = tx.prepare_cached(&upsert.row_sql())?;
                for row in &rows {
                    if later.execute(params_from_iter(row))? == 0 {
                        any.execute(params_from_iter(row))?;
                    }
                }
                continue;
            }
            let mut statement = tx.prepare_cached(&upsert.row_sql())?;
            for row in &rows {
                statement.execute(params_from_iter(row))?;
            }
        }
        tx.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![WATERMARK, (self.next_rowid - 1).to_string()],
        )?;
        // Forgotten here: were the commit to fail, the events past the
        // watermark are rolled up again when the writer next opens.
        if cube {
            self.write_cube(tx)?;
        }
        self.roller.free(pending);
        self.since = Instant::now();
        Ok(())
    }

    /// Writes every held-back rollup, the cube's too (for a read).
    fn write_all(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        self.write_rollups(tx, true)?;
        self.write_cube_job(tx)
    }

    /// Writes the rows of the cube held back before (waiting for them),
    /// then hands the held-back cube to a thread that works out its rows;
    /// called by [`Self::write_rollups`] once its users are written, so
    /// that cube holds every stored event past those before and the users'
    /// first days are known.
    fn write_cube(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        self.write_cube_job(tx)?;
        let cube = self.roller.take_cube().map_err(gone)?;
        self.cube_since = Instant::now();
        let watermark = self.next_rowid - 1;
        if cube.is_empty() {
            return set_setting(tx, CUBE_WATERMARK, watermark);
        }
        let first_days = first_days(tx, &cube, std::mem::take(&mut self.first_days))?;
        let salt = self.salt.clone();
        // Taken by the thread, or back here should there be no thread.
        let work = Arc::new(Mutex::new(Some((cube, first_days))));
        let taken = work.clone();
        let spawned = std::thread::Builder::new()
            .name("cube-rows".into())
            .spawn(move || {
                let (cube, first_days) = taken
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                cube.rows(&salt, &first_days)
            });
        match spawned {
            Ok(rows) => {
                self.cube_job = Some(CubeJob { watermark, rows });
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "no thread for the cube's rows; the writer works them out");
                let (cube, first_days) = work
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                self.write_cube_rows(tx, cube, first_days)?;
                set_setting(tx, CUBE_WATERMARK, watermark)
            }
        }
    }

    /// Writes the rows of the cube held back before, if any, and moves the
    /// cube watermark past its events.
    fn write_cube_job(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let Some(job) = self.cube_job.take() else {
            return Ok(());
        };
        let rows = job.rows.join().map_err(|_| {
            rusqlite::Error::ToSqlConversionFailure("the cube's rows thread panicked".into())
        })?;
        cube::write_sqlite(tx, rows, &mut self.segment_ids)?;
        set_setting(tx, CUBE_WATERMARK, job.watermark)
    }

    /// Writes the rows of `cube`, given the first days of those of its
    /// users already `known`.
    fn write_cube_rows(
        &mut self,
        tx: &Transaction<'_>,
        cube: Cube,
        known: HashMap<String, String>,
    ) -> rusqlite::Result<()> {
        if cube.is_empty() {
            return Ok(());
        }
        let first_days = first_days(tx, &cube, known)?;
        cube::write_sqlite(
            tx,
            cube.rows(&self.salt, &first_days),
            &mut self.segment_ids,
        )
    }

    /// Deletes one user after writing the held-back rollups; whether anything was stored.
    fn delete_user(
        &mut self,
        tx: &Transaction<'_>,
        user_id: &str,
        hash: &str,
        now_ms: i64,
    ) -> rusqlite::Result<bool> {
        self.write_all(tx)?;
        tx.execute(
            REMEMBER_DELETED_USER,
            rusqlite::params![hash, now_ms, user_id],
        )?;
        let mut found = 0;
        for sql in std::iter::once(DELETE_USER_EVENTS_SQLITE).chain(DELETE_USER) {
            found += tx.execute(sql, [user_id])?;
        }
        tx.execute(DELETE_USER_QUARANTINE, [hash])?;
        Ok(found > 0)
    }

    /// Stores a group of events: the events of deleted users are dropped,
    /// the rest inserted once each (`event_id` is unique), and the invalid
    /// events quarantined. The rollups of the new events are held back, or
    /// written with the held-back ones when those are due.
    fn store(&mut self, tx: &Transaction<'_>, group: &Group<'_>) -> rusqlite::Result<Vec<Written>> {
        let mut deleted: HashSet<&str> = HashSet::new();
        {
            let mut lookup =
                tx.prepare_cached("SELECT 1 FROM deleted_users WHERE user_hash = ?1")?;
            for &hash in group.hashes.values() {
                if lookup.exists([hash])? {
                    deleted.insert(hash);
                }
            }
        }
        // Each event in input order: dropped for a deleted user, accepted
        // when its id is inserted (the first time), otherwise a duplicate.
        let mut outcomes = Vec::with_capacity(group.events.len());
        let mut accepted = Vec::with_capacity(group.events.len());
        {
            let mut insert = tx.prepare_cached(&INSERT_EVENT)?;
            for &e in &group.events {
                let outcome = if group.is_deleted(e, &deleted) {
                    Written::DeletedUser
                } else {
                    let row = std::iter::once(Cell::Int(Some(self.next_rowid))).chain(e.cells());
                    if insert.execute(params_from_iter(row))? == 1 {
                        self.next_rowid += 1;
                        accepted.push(Arc::clone(e));
                        Written::Accepted
                    } else {
                        Written::Duplicate
                    }
                };
                outcomes.push(outcome);
            }
        }
        let bound = owner_rows(accepted.iter().map(|e| &**e));
        if !bound.is_empty() {
            let mut statement = tx.prepare_cached(&OWNER_KEYS.row_sql())?;
            for row in &bound {
                statement.execute(params_from_iter(row))?;
            }
        }
        quarantine(tx, &group.quarantine)?;
        // Forgotten with the rest should the commit fail (`transact`).
        self.roller.add(accepted, AddTo::Both).map_err(gone)?;
        if self.since.elapsed() >= self.hold.busy
            || self.roller.aggregate_events() >= self.hold.events
        {
            self.write_pending(tx)?;
        }
        Ok(outcomes)
    }
}

fn quarantine(tx: &Transaction<'_>, rows: &[QuarantineRow]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut statement = tx.prepare_cached(&QUARANTINE.row_sql())?;
    for row in rows {
        statement.execute(params_from_iter(row.cells()))?;
    }
    tx.execute(PRUNE_QUARANTINE, [QUARANTINE_KEEP])?;
    Ok(())
}

/// `INSERT` of one event with the rowid this writer gives it (made once:
/// the statement cache is looked up by this text for every group).
static INSERT_EVENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let marks: Vec<String> = (1..=EVENTS.columns.len() + 1)
        .map(|i| format!("?{i}"))
        .collect();
    EVENTS
        .sql(&format!("VALUES ({})", marks.join(", ")))
        .replacen("INSERT INTO events (", "INSERT INTO events (rowid, ", 1)
});

#[cfg(test)]
mod tests {
    use piperider_event::{CliEvent, WireEvent};

    use super::*;

    /// Only the calling thread's priority is raised, not the process's
    /// (the request threads stay where they are), and to the writer's
    /// value wherever the service may raise it.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_raises_its_own_thread_alone() {
        use rustix::process::getpriority_process;
        let before = getpriority_process(None).unwrap();
        let inside = std::thread::spawn(|| {
            raise_priority();
            getpriority_process(None).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(
            getpriority_process(None).unwrap(),
            before,
            "the process was raised"
        );
        let may_raise = rustix::process::geteuid().is_root();
        if may_raise {
            assert_eq!(inside, WRITER_NICE);
        } else {
            assert!(inside == WRITER_NICE || inside == before, "{inside}");
        }
    }

    /// A commit's requests are answered even when the runtime they were
    /// to be answered on has shut down (its task dropped unrun), and on
    /// the runtime while it runs.
    #[test]
    fn answers_are_given_on_the_runtime_or_where_the_task_is_dropped() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("answers-test")
            .build()
            .unwrap();
        let answers = runtime.block_on(async { Answers::on_current_runtime() });
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = tx.clone();
        answers.answer(move || {
            let _ = sent.send(std::thread::current().name().map(String::from));
        });
        let on = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(on.as_deref(), Some("answers-test"));
        drop(runtime);
        answers.answer(move || {
            let _ = tx.send(None);
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(None),
            "no answer once the runtime had shut down"
        );
        // A current-thread runtime nobody waits in would never run the
        // task: the answer is given at once instead.
        let idle = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answers = idle.block_on(async { Answers::on_current_runtime() });
        let (tx, rx) = std::sync::mpsc::channel();
        answers.answer(move || {
            let _ = tx.send(());
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(()),
            "no answer from an idle current-thread runtime"
        );
    }

    /// Whether the `users` rollup holds `user`, read from the file itself
    /// (not through the store, whose reads would have the writer flush).
    fn rolled_up(path: &Path, user: &str) -> bool {
        let file = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        file.query_row(
            "SELECT COUNT(*) FROM users WHERE user_id = ?1",
            [user],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    }

    const IDLE_USER: &str = "0123456789abcdef0123456789abcdef";

    /// A store on a new file in `dir` (and the file) whose writer holds
    /// rollups as `hold` says, given one event of [`IDLE_USER`] once the
    /// time a serving writer, idle, holds rollups back has passed (an idle
    /// writer writes them once the job it was given is done).
    async fn one_event_after_the_idle_hold(
        dir: &Path,
        hold: RollupHold,
    ) -> (crate::Store, PathBuf) {
        let path = dir.join("t.db");
        let url = format!("sqlite:{}", path.display());
        let store = crate::Store::connect_with(&url, hold).await.unwrap();
        tokio::time::sleep(RollupHold::SERVING.idle + Duration::from_millis(200)).await;
        let now = chrono::Utc::now();
        let raw = piperider_testkit::cli_event(IDLE_USER, &"a".repeat(32)).to_string();
        let event = CliEvent::parse(raw.as_bytes(), now).unwrap();
        let row = EventRow::new(event, None, None, now.timestamp_millis());
        let written = store.write(vec![row], Vec::new()).await.unwrap();
        assert!(matches!(written[..], [Written::Accepted]), "{written:?}");
        (store, path)
    }

    #[tokio::test]
    async fn an_idle_writer_writes_the_held_back_rollups_without_being_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = one_event_after_the_idle_hold(dir.path(), RollupHold::SERVING).await;
        // Nothing else comes: the writer, its queue empty, writes them
        // itself, sooner than a busy one would.
        let deadline = Instant::now() + RollupHold::SERVING.busy - Duration::from_secs(1);
        while !rolled_up(&path, IDLE_USER) {
            assert!(
                Instant::now() < deadline,
                "the rollups were still held back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_bulk_loading_writer_holds_the_rollups_until_a_read_asks() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = one_event_after_the_idle_hold(dir.path(), RollupHold::BULK_LOAD).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !rolled_up(&path, IDLE_USER),
            "a bulk load wrote its rollups early"
        );
        // A read has them written first.
        store.flush().await.unwrap();
        assert!(rolled_up(&path, IDLE_USER));
        store.close().await;
    }
}
