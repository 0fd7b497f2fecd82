//! The storage layer: the one way to read or write the telemetry database,
//! on SQLite (embedded default) or PostgreSQL (production).
//!
//! A [`Store`] owns its writers: [`Store::connect`] runs the migrations and
//! starts them, every clone shares them, and [`Store::close`] drains them.
//! Writes are group-committed (`group`) by the backend's own writer
//! (`sqlite`, `postgres`) and acknowledged only once durable; reads of
//! the rollups ([`reports`]) first make them include every acknowledged
//! event.
//!
//! Dependencies run one way: `schema` and `rows` know no other module;
//! `rollup` builds on them; `group` on `rows`; the two backends on all of
//! those; this file on the backends; `reports` and `cloud` only on this
//! file's pools.

mod cloud;
pub mod consent_chain;
pub mod cube;
mod error;
mod group;
pub mod insights;
mod partitions;
mod postgres;
pub mod public;
mod queue;
pub mod reports;
mod rollup;
mod rows;
mod schema;
mod sketch;
mod sqlite;
pub mod transfer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

pub use error::StorageError;
pub(crate) use group::CommitMetrics;
pub use group::Written;
pub use queue::{CONSUMER, QueueConfig, STREAM, StreamState, run_writers};
pub use rows::Figures;
pub(crate) use rows::{EventRow, QuarantineRow};
pub use schema::TEXT_BOUNDS;
pub use sqlite::RollupHold;

use group::{Batch, Job};

/// Whose a user id is, as far as the proof of ownership goes.
#[derive(Debug)]
pub(crate) enum Owner {
    /// Bound to this key by the first stored event that carried one.
    Bound(piperider_event::OwnerKey),
    /// Deleted; this key proved the deletion (a repeat is answered as done).
    Deleted(piperider_event::OwnerKey),
    /// No key: nothing stored with one (CI pseudonyms, older clients).
    Unknown,
}

/// The telemetry database and its writers. Cloning is cheap: clones share
/// the pool and the writers.
#[derive(Debug, Clone)]
pub struct Store(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    backend: Backend,
    /// The writers' queues: one on SQLite, one per writer task on PostgreSQL.
    queues: Box<[mpsc::Sender<Job>]>,
    /// The writers (and the roller), awaited by [`Store::close`].
    writers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// PostgreSQL's roller, which writes the rollups of queued events.
    roller: Option<mpsc::Sender<Job>>,
    metrics: CommitMetrics,
    /// Salt of the hashes that remember deleted users (read when first
    /// needed by a node in queue mode, which starts without its database).
    salt: tokio::sync::OnceCell<String>,
    /// Queue mode: writes go to the stream, not to the database.
    queue: Option<Arc<queue::Queue>>,
    /// Where the dashboard's reads go when `--read-database-url` is given.
    replica: std::sync::OnceLock<Replica>,
    /// When the last readiness probe passed ([`Store::ready`]); held by
    /// the probe under way, so that one runs at a time.
    probe: Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
}

/// How long a passed readiness probe answers for the probes after it
/// (unless a commit fails meanwhile).
const READY_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A streaming replica of the PostgreSQL database for the dashboard's
/// reads ([`Store::read`]). After a failed read the primary takes the
/// reads for [`REPLICA_REST`].
#[derive(Debug)]
struct Replica {
    backend: Backend,
    /// Until when reads skip the replica.
    resting_until: Mutex<Option<std::time::Instant>>,
}

/// How long the primary takes the reads after the replica failed one.
const REPLICA_REST: std::time::Duration = std::time::Duration::from_secs(30);

impl Replica {
    fn resting(&self) -> bool {
        let until = *self.resting_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| std::time::Instant::now() < t)
    }

    fn rest(&self) {
        *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now() + REPLICA_REST);
    }
}

#[derive(Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has: for
/// statements both databases take as they are.
macro_rules! on_pool {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            $crate::storage::Backend::Sqlite($pool) => $body,
            $crate::storage::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Makes the partitions of PostgreSQL's `events` for every month of
/// `from..=to` in the database at `url` (migrated first), for a bulk load
/// of past events; see `partitions.rs`. Returns the partitions made.
pub async fn prepare_event_months(
    url: &str,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<Vec<String>, StorageError> {
    let pool = postgres::connect(url).await?;
    let made = partitions::prepare_range(&pool, from, to).await;
    pool.close().await;
    made
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The database at `url` through sqlx alone (migrations run, no writers):
/// for tools that read or write beside a running service.
async fn open_backend(url: &str) -> Result<Backend, StorageError> {
    if is_postgres_url(url) {
        Ok(Backend::Postgres(postgres::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite(sqlite::connect_pool(url).await?.0))
    } else {
        Err(StorageError::UnsupportedUrl)
    }
}

/// The salted hash by which a deleted user is remembered.
fn hash_user(salt: &str, user_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update([0])
        .chain_update(user_id.as_bytes())
        .finalize();
    hex(&digest)
}

/// Bytes as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// A setting of the database, created with `make()` the first time it is asked for.
async fn setting(
    backend: &Backend,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<String, StorageError> {
    let value = make();
    on_pool!(backend, pool => {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(&value)
            .execute(pool)
            .await?;
        Ok(sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(pool)
            .await?)
    })
}

/// The salt of the users' hashes, made the first time.
async fn user_hash_salt(backend: &Backend) -> Result<String, StorageError> {
    setting(backend, "user_hash_salt", || {
        uuid::Uuid::new_v4().simple().to_string()
    })
    .await
}

impl Store {
    /// Connects (creating an SQLite file if needed), runs the embedded
    /// migrations and starts the writers. Must run within a tokio runtime.
    pub async fn connect(url: &str) -> Result<Store, StorageError> {
        Store::connect_with(url, RollupHold::SERVING).await
    }

    /// [`Store::connect`], the SQLite writer holding rollups back as
    /// `hold` says (PostgreSQL's roller works from its queue either way).
    pub async fn connect_with(url: &str, hold: RollupHold) -> Result<Store, StorageError> {
        let metrics = CommitMetrics::default();
        let backend = open_backend(url).await?;
        let salt = user_hash_salt(&backend).await?;
        let (queues, writers, roller) = match &backend {
            Backend::Postgres(pool) => {
                let recent = Arc::new(postgres::Recent::default());
                let (queues, mut writers) = postgres::start(pool, &metrics, &recent);
                let (roller, rolling) = postgres::start_roller(pool, &salt, &metrics, recent);
                writers.push(rolling);
                (queues, writers, Some(roller))
            }
            Backend::Sqlite(pool) => {
                let path = sqlite::path_of(pool);
                let (queue, writer) = sqlite::start(&path, &salt, &metrics, hold)?;
                (vec![queue], vec![writer], None)
            }
        };
        Ok(Store(Arc::new(Inner {
            backend,
            queues: queues.into(),
            writers: Mutex::new(writers),
            roller,
            metrics,
            salt: tokio::sync::OnceCell::new_with(Some(salt)),
            queue: None,
            replica: std::sync::OnceLock::new(),
            probe: Arc::default(),
        })))
    }

    /// A node in queue mode: events and deletions go to the stream of
    /// `queue` (the writers store them), reads to the PostgreSQL database
    /// at `url`, which need not answer (nor be migrated) for the node to
    /// start and take events.
    pub async fn connect_node(url: &str, queue: &QueueConfig) -> Result<Store, StorageError> {
        if !is_postgres_url(url) {
            return Err(StorageError::QueueNeedsPostgres);
        }
        let backend = Backend::Postgres(postgres::connect_lazy(url)?);
        let metrics = CommitMetrics::default();
        let queue = Arc::new(queue::Queue::connect(queue, &metrics).await?);
        queue::Queue::watch(&queue);
        Ok(Store(Arc::new(Inner {
            backend,
            queues: Box::new([]),
            writers: Mutex::new(Vec::new()),
            roller: None,
            metrics,
            salt: tokio::sync::OnceCell::new(),
            queue: Some(queue),
            replica: std::sync::OnceLock::new(),
            probe: Arc::default(),
        })))
    }

    /// Sends the dashboard's reads (figures, charts, the public page, Cloud
    /// figures, the consent records' export) to the streaming
    /// replica at `url` (PostgreSQL, with a PostgreSQL primary). Its pool
    /// connects when first used and runs no migrations: the primary's
    /// reach the replica through replication. A second call changes
    /// nothing.
    pub fn use_replica(&self, url: &str) -> Result<(), StorageError> {
        if !matches!(self.0.backend, Backend::Postgres(_)) || !is_postgres_url(url) {
            return Err(StorageError::ReplicaNeedsPostgres);
        }
        let backend = Backend::Postgres(postgres::connect_replica(url)?);
        let _ = self.0.replica.set(Replica {
            backend,
            resting_until: Mutex::new(None),
        });
        Ok(())
    }

    /// The database the dashboard's reads go to now: the replica, unless
    /// there is none or it is resting after a failure; else the primary.
    fn reader(&self) -> &Backend {
        match self.0.replica.get() {
            Some(r) if !r.resting() => &r.backend,
            _ => &self.0.backend,
        }
    }

    /// Runs `read` (whose statements go to [`Store::reader`]); when it
    /// fails on the replica, the replica rests and `read` runs again on
    /// the primary. Only reads that may lag behind the acknowledged events
    /// by the replication delay take this path: the dashboard's figures
    /// and charts, the public page, the Cloud figures and the consent
    /// records' export.
    pub(crate) async fn read<T, F, R>(&self, read: F) -> Result<T, StorageError>
    where
        F: Fn() -> R,
        R: std::future::Future<Output = Result<T, StorageError>>,
    {
        let replica = self.0.replica.get().filter(|r| !r.resting());
        match (read().await, replica) {
            (Err(e), Some(replica)) => {
                replica.rest();
                self.0.metrics.replica_failures.inc();
                tracing::warn!(
                    error = %e,
                    "a read on the replica failed; the primary takes the reads for {} s",
                    REPLICA_REST.as_secs()
                );
                read().await
            }
            (result, _) => result,
        }
    }

    /// Whether events go to a queue (a node in queue mode).
    pub fn is_queue_node(&self) -> bool {
        self.0.queue.is_some()
    }

    /// The queue's stream state (queue mode).
    pub async fn queue_state(&self) -> Option<Result<StreamState, StorageError>> {
        Some(self.0.queue.as_ref()?.state().await)
    }

    /// The salt of the users' hashes, read from the database the first time.
    async fn salt(&self) -> Result<&str, StorageError> {
        self.0
            .salt
            .get_or_try_init(|| user_hash_salt(&self.0.backend))
            .await
            .map(String::as_str)
    }

    /// The writers' figures (commit sizes and times, failing storage).
    pub(crate) fn commit_metrics(&self) -> &CommitMetrics {
        &self.0.metrics
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.0.backend, Backend::Sqlite(_))
    }

    /// Whether the database answers and a write could start now
    /// (SQLite's write lock can be taken, and is given back at once; for
    /// PostgreSQL an answer is enough). One probe runs at a time, in a task
    /// of its own that finishes (and rolls back) even when the caller stops
    /// waiting; a probe that passed answers for a second unless a
    /// commit fails meanwhile, so that a flood of readiness requests
    /// neither piles up probes nor keeps the writer from the lock.
    pub async fn ready(&self) -> Result<(), StorageError> {
        let mut passed = Arc::clone(&self.0.probe).lock_owned().await;
        if passed.is_some_and(|at| at.elapsed() < READY_FRESH) && !self.failing() {
            return Ok(());
        }
        let store = self.clone();
        tokio::spawn(async move {
            let outcome = store.probe().await;
            *passed = outcome.is_ok().then(std::time::Instant::now);
            outcome
        })
        .await
        .unwrap_or(Err(StorageError::WriterStopped))
    }

    async fn probe(&self) -> Result<(), StorageError> {
        // A node in queue mode takes events while the database is away.
        if let Some(queue) = &self.0.queue {
            return queue.state().await.map(drop);
        }
        on_pool!(&self.0.backend, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        if let Backend::Sqlite(pool) = &self.0.backend {
            pool.begin_with("BEGIN IMMEDIATE").await?.rollback().await?;
        }
        self.0.metrics.failing.set(0);
        Ok(())
    }

    /// Whether the last group commit failed (until a commit or a readiness probe succeeds).
    pub(crate) fn failing(&self) -> bool {
        self.0.metrics.failing.get() != 0
    }

    /// Lets the writers finish what was queued before this call, waits for
    /// them, and closes the pool. Writes made after it fail with
    /// [`StorageError::WriterStopped`].
    pub async fn close(&self) {
        for queue in self.0.queues.iter().chain(&self.0.roller) {
            let _ = queue.send(Job::Stop).await;
        }
        let writers =
            std::mem::take(&mut *self.0.writers.lock().unwrap_or_else(|e| e.into_inner()));
        for writer in writers {
            let _ = writer.await;
        }
        if let Some(queue) = &self.0.queue {
            queue.close().await;
        }
        on_pool!(&self.0.backend, pool => pool.close().await)
    }

    /// A setting, created with `make()` the first time it is asked for.
    pub(crate) async fn setting(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StorageError> {
        setting(&self.0.backend, key, make).await
    }

    /// The queue of `user_id`'s writer: one user's rollup rows are updated
    /// by one writer at a time.
    fn queue_of(&self, user_id: Option<&str>) -> &mpsc::Sender<Job> {
        let queues = &self.0.queues;
        match user_id {
            Some(user) if queues.len() > 1 => {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(user, &mut hasher);
                let n = std::hash::Hasher::finish(&hasher) % queues.len() as u64;
                &queues[n as usize]
            }
            _ => &queues[0],
        }
    }

    /// Stores valid events (each once: `event_id` is unique) and keeps the
    /// invalid ones in the quarantine, in one group commit; returns what
    /// became of each event, in order, once it is durable. Events of users
    /// who asked for deletion are dropped. On `Err` nothing was stored.
    pub(crate) async fn write(
        &self,
        events: Vec<EventRow>,
        mut quarantine: Vec<QuarantineRow>,
    ) -> Result<Vec<Written>, StorageError> {
        if let Some(queue) = &self.0.queue {
            // The writer that stores them hashes the quarantined user ids.
            return queue.write(events, quarantine).await;
        }
        let salt = self.salt().await?;
        for q in &mut quarantine {
            q.hash_user(|user| hash_user(salt, user));
        }
        let hashes: HashMap<String, String> = events
            .iter()
            .map(|e| (e.user_id.clone(), hash_user(salt, &e.user_id)))
            .collect();
        // A request is mostly one user's events: the first one's queue.
        let queue = self.queue_of(events.first().map(|e| e.user_id.as_str()));
        let (reply, answer) = oneshot::channel();
        let batch = Batch {
            events: events.into_iter().map(Arc::new).collect(),
            hashes,
            quarantine,
            reply,
        };
        queue
            .send(Job::Store(batch))
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        answer.await.map_err(|_| StorageError::WriterStopped)?
    }

    /// Makes the rollups include every event acknowledged so far (SQLite's
    /// writer holds them back for up to five seconds, PostgreSQL's roller
    /// for about one).
    pub(crate) async fn flush(&self) -> Result<(), StorageError> {
        if self.0.queue.is_some() {
            // The writers' rollers write them within about a second.
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.0
            .roller
            .as_ref()
            .unwrap_or_else(|| self.queue_of(None))
            .send(Job::Flush(reply))
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        answer.await.map_err(|_| StorageError::WriterStopped)?
    }

    /// Deletes everything stored about a user and remembers the salted
    /// hash of the id, so later events for it are dropped; whether
    /// anything was stored. A node in queue mode publishes the deletion
    /// for the writers instead (and answers false: it does not know).
    pub(crate) async fn delete_user(
        &self,
        user_id: &str,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        if let Some(queue) = &self.0.queue {
            // A writer carries it out, after every event queued before it.
            queue.delete_user(user_id, now_ms).await?;
            return Ok(false);
        }
        let hash = hash_user(self.salt().await?, user_id);
        if let Backend::Postgres(pool) = &self.0.backend {
            // A group already past its check of the tombstones may still
            // commit the user's events after the first pass: the second
            // pass runs once every writer has finished what it held. The
            // whole of it runs on its own task, so a request that gives up
            // (a timeout) leaves it done, not half done.
            let (pool, store, user_id) = (pool.clone(), self.clone(), user_id.to_string());
            return tokio::spawn(async move {
                let first = postgres::delete_user(&pool, &user_id, &hash, now_ms).await?;
                store.barrier().await?;
                let second = postgres::delete_user(&pool, &user_id, &hash, now_ms).await?;
                Ok(first || second)
            })
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        }
        let (reply, answer) = oneshot::channel();
        self.queue_of(None)
            .send(Job::DeleteUser {
                user_id: user_id.to_string(),
                hash,
                now_ms,
                reply,
            })
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        answer.await.map_err(|_| StorageError::WriterStopped)?
    }

    /// The salted hash of a user id, as deleted users are remembered by.
    pub(crate) async fn user_hash(&self, user_id: &str) -> Result<String, StorageError> {
        Ok(hash_user(self.salt().await?, user_id))
    }

    /// Waits until every writer has committed what was queued to it before.
    async fn barrier(&self) -> Result<(), StorageError> {
        for queue in self.0.queues.iter() {
            let (reply, done) = oneshot::channel();
            queue
                .send(Job::Barrier(reply))
                .await
                .map_err(|_| StorageError::WriterStopped)?;
            done.await.map_err(|_| StorageError::WriterStopped)?;
        }
        Ok(())
    }

    /// PostgreSQL: creates the partitions of `events` this month and the
    /// next need, and moves rows out of the default partition
    /// ([`partitions::prepare`]). SQLite has no partitions.
    pub(crate) async fn prepare_partitions(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        if let Backend::Postgres(pool) = &self.0.backend {
            partitions::prepare(pool, now).await?;
        }
        Ok(())
    }

    /// Deletes raw events older than `before_ms` (the rollups stay). On
    /// PostgreSQL the partitions of months wholly before it are dropped
    /// first ([`partitions::drop_expired`]); the rows of the month it falls
    /// in are deleted. The day bound lets SQLite find them by its index on
    /// the day instead of reading every event while it holds the write
    /// lock, and PostgreSQL look in that month's partition alone. Returns
    /// the rows deleted (a dropped partition's are not counted).
    pub(crate) async fn prune_events(&self, before_ms: i64) -> Result<u64, StorageError> {
        if let Backend::Postgres(pool) = &self.0.backend {
            partitions::drop_expired(pool, before_ms).await?;
        }
        let last_day = chrono::DateTime::from_timestamp_millis(before_ms)
            .map(rows::day)
            .unwrap_or_default();
        on_pool!(&self.0.backend, pool => Ok(sqlx::query("DELETE FROM events WHERE day <= $2 AND ts < $1")
            .bind(before_ms)
            .bind(last_day)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// The owner key `user_id` is bound to: live, or kept by its tombstone
    /// once the user was deleted.
    pub(crate) async fn owner(&self, user_id: &str) -> Result<Owner, StorageError> {
        let key = |k: Option<String>| k.and_then(|k| piperider_event::OwnerKey::try_from(k).ok());
        let live: Option<String> = on_pool!(&self.0.backend, pool => {
            sqlx::query_scalar("SELECT owner_key FROM owner_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        if let Some(k) = key(live) {
            return Ok(Owner::Bound(k));
        }
        let hash = self.user_hash(user_id).await?;
        let deleted: Option<Option<String>> = on_pool!(&self.0.backend, pool => {
            sqlx::query_scalar("SELECT owner_key FROM deleted_users WHERE user_hash = $1")
                .bind(&hash)
                .fetch_optional(pool)
                .await?
        });
        Ok(key(deleted.flatten()).map_or(Owner::Unknown, Owner::Deleted))
    }

    /// Deletes quarantined events received before `before_ms`.
    pub(crate) async fn prune_quarantine(&self, before_ms: i64) -> Result<u64, StorageError> {
        on_pool!(&self.0.backend, pool => Ok(sqlx::query(schema::PRUNE_QUARANTINE_BEFORE).bind(before_ms).execute(pool).await?.rows_affected()))
    }

    /// `SELECT COUNT(*)` of a table (operations and tests).
    async fn count(&self, table: &str) -> Result<i64, StorageError> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        on_pool!(&self.0.backend, pool => Ok(sqlx::query_scalar(&sql).fetch_one(pool).await?))
    }

    pub async fn count_events(&self) -> Result<i64, StorageError> {
        self.count("events").await
    }

    pub async fn count_cloud_events(&self) -> Result<i64, StorageError> {
        self.count("cloud_events").await
    }

    pub async fn count_consent_decisions(&self) -> Result<i64, StorageError> {
        self.count("consent_audit").await
    }

    pub async fn count_quarantined(&self) -> Result<i64, StorageError> {
        self.count("quarantine").await
    }

    /// Every row of a table as text, for audits such as "no address is
    /// stored anywhere" (PostgreSQL; an SQLite database is a file to read).
    pub async fn table_as_text(&self, table: &str) -> Result<String, StorageError> {
        if !table.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(sqlx::Error::Protocol("not a table name".into()).into());
        }
        match &self.0.backend {
            Backend::Postgres(pool) => {
                let sql =
                    format!("SELECT COALESCE(string_agg(t::text, E'\\n'), '') FROM {table} t");
                Ok(sqlx::query_scalar(&sql).fetch_one(pool).await?)
            }
            Backend::Sqlite(_) => {
                Err(sqlx::Error::Protocol("read the SQLite file instead".into()).into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_user_is_remembered_by_the_salted_sha256_in_hex() {
        // sha256(b"salt\0" + user id), as computed by Python's hashlib.
        assert_eq!(
            hash_user("salt", "0123456789abcdef0123456789abcdef"),
            "a34fa5a6d765f7c8289522649018124c4372a69816aea7a8c0fe7511cb34ccb8"
        );
    }
}
