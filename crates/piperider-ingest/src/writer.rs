//! Group commit: request handlers hand their events to a writer, which
//! takes everything queued, stores it in one transaction, and answers each
//! request only after `COMMIT`. Concurrent requests share a transaction, so
//! durable acknowledgement does not cost a disk flush per request.
//!
//! PostgreSQL gets a few async writer tasks overlapping their transactions,
//! each updating the rollups in the transaction that stores the events.
//! Each has its own queue, and a request goes to the one its user hashes
//! to, so one user's rollup rows are updated by one writer at a time;
//! each adds to counters of its own shard. Concurrent transactions
//! updating one row would take turns, each waiting for the other's commit.
//! SQLite takes one writer at a time: it gets one thread owning one
//! connection ([`crate::sqlite_writer`]), which binds rows to cached
//! prepared statements and writes the rollups about once a second; reads
//! of the rollups and deletions go through it, so they see everything
//! acknowledged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{EventRow, QuarantineRow, Store, Written};

/// Most requests one transaction takes.
const MAX_GROUP_REQUESTS: usize = 1024;
/// Most events one transaction takes (a request is never split).
const MAX_GROUP_EVENTS: usize = 20_000;
/// PostgreSQL transactions in flight at once.
const POSTGRES_WRITERS: usize = 4;
/// Requests queued for a writer at most (then senders wait).
const QUEUE: usize = 4096;

/// One request's events.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) events: Vec<Arc<EventRow>>,
    pub(crate) hashes: HashMap<String, String>,
    pub(crate) quarantine: Vec<QuarantineRow>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Written>, ()>>,
}

/// What the SQLite writer is asked to do.
#[derive(Debug)]
pub(crate) enum Job {
    Store(Batch),
    /// Write the rollups held back so far (before they are read).
    Flush(oneshot::Sender<Result<(), String>>),
    /// Delete a user, after writing the rollups held back.
    DeleteUser {
        user_id: String,
        hash: String,
        now_ms: i64,
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// The SQLite writers running in this process, by database file.
static SQLITE_WRITERS: std::sync::Mutex<Vec<(PathBuf, mpsc::WeakSender<Job>)>> =
    std::sync::Mutex::new(Vec::new());

#[derive(Debug, Clone)]
pub(crate) struct Writer {
    /// The writers' queues: one on SQLite, one per writer task on PostgreSQL.
    queues: Arc<[mpsc::Sender<Job>]>,
    /// PostgreSQL (deletions go straight to it); `None` on SQLite.
    postgres: Option<sqlx::PgPool>,
}

impl Writer {
    /// Starts the writers for `store`. They stop once every `Writer` is
    /// dropped and the queue is drained.
    pub(crate) fn start(
        store: Store,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Writer, Vec<tokio::task::JoinHandle<()>>)> {
        match store {
            Store::Sqlite(pool) => {
                let (tx, rx) = mpsc::channel::<Job>(QUEUE);
                let path: PathBuf = pool.connect_options().get_filename().to_path_buf();
                let path = path.canonicalize().unwrap_or(path);
                // One writer per SQLite file: service instances in one
                // process share it; another process is refused.
                let mut running = SQLITE_WRITERS.lock().unwrap_or_else(|e| e.into_inner());
                running.retain(|(_, w)| w.strong_count() > 0);
                if let Some(tx) = running
                    .iter()
                    .find(|(p, _)| *p == path)
                    .and_then(|(_, w)| w.upgrade())
                {
                    return Ok((Writer::sqlite(tx), Vec::new()));
                }
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
                    .map_err(|e| anyhow::anyhow!("{}: {e}", lock_path.display()))?;
                if lock.try_lock().is_err() {
                    anyhow::bail!(
                        "another process is writing to {}: an SQLite store takes one piperider-ingest at a time (run several on PostgreSQL)",
                        path.display()
                    );
                }
                running.push((path.clone(), tx.downgrade()));
                drop(running);
                let writer = crate::sqlite_writer::SqliteWriter::open(&path)?;
                // Its own thread, not the runtime's blocking pool: a runtime
                // shut down while a `Writer` is still held must not wait for it.
                let (done, finished) = oneshot::channel::<()>();
                std::thread::Builder::new()
                    .name("sqlite-writer".into())
                    .spawn(move || {
                        writer.run(rx, metrics);
                        // Unlocked once the last commit is done.
                        drop(lock);
                        let _ = done.send(());
                    })?;
                let handle = tokio::spawn(async move {
                    let _ = finished.await;
                });
                Ok((Writer::sqlite(tx), vec![handle]))
            }
            Store::Postgres(pool) => {
                let mut queues = Vec::new();
                let mut handles = Vec::new();
                for shard in 0..POSTGRES_WRITERS {
                    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE / POSTGRES_WRITERS);
                    queues.push(tx);
                    let (pool, metrics) = (pool.clone(), metrics.clone());
                    handles.push(tokio::spawn(async move {
                        loop {
                            let first = match rx.recv().await {
                                Some(Job::Store(batch)) => batch,
                                // Flushes and deletions go straight to PostgreSQL.
                                Some(_) => continue,
                                None => return,
                            };
                            let (jobs, _) = gather(first, || rx.try_recv().ok());
                            let group = Group::of(&jobs);
                            let result = Store::write_postgres(
                                &pool,
                                shard as i64,
                                &group.events,
                                &group.hashes,
                                &group.quarantine,
                            )
                            .await
                            .map_err(|e| e.to_string());
                            let (size, started) = (group.events.len(), group.started);
                            drop(group);
                            settle(jobs, result, &metrics, size, started);
                        }
                    }));
                }
                Ok((
                    Writer {
                        queues: queues.into(),
                        postgres: Some(pool),
                    },
                    handles,
                ))
            }
        }
    }

    fn sqlite(tx: mpsc::Sender<Job>) -> Writer {
        Writer {
            queues: Arc::new([tx]),
            postgres: None,
        }
    }

    /// The SQLite writer's queue (flushes and deletions).
    fn sqlite_queue(&self) -> &mpsc::Sender<Job> {
        &self.queues[0]
    }

    /// Stores the events; `Err` when storage failed (nothing was stored).
    pub(crate) async fn write(
        &self,
        events: Vec<EventRow>,
        hashes: HashMap<String, String>,
        quarantine: Vec<QuarantineRow>,
    ) -> Result<Vec<Written>, ()> {
        // The queue of the first event's user (a request is mostly one
        // user's events).
        let queue = match events.first() {
            Some(e) if self.queues.len() > 1 => {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&e.user_id, &mut hasher);
                let n = std::hash::Hasher::finish(&hasher) % self.queues.len() as u64;
                &self.queues[n as usize]
            }
            _ => &self.queues[0],
        };
        let (reply, answer) = oneshot::channel();
        queue
            .send(Job::Store(Batch {
                events: events.into_iter().map(Arc::new).collect(),
                hashes,
                quarantine,
                reply,
            }))
            .await
            .map_err(drop)?;
        answer.await.map_err(drop)?
    }

    /// Makes the rollups include every event acknowledged so far (SQLite
    /// holds them back for up to a second; PostgreSQL never does).
    pub(crate) async fn flush(&self) -> Result<(), String> {
        if self.postgres.is_some() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.sqlite_queue()
            .send(Job::Flush(reply))
            .await
            .map_err(|_| "the writer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the writer has stopped".to_string())?
    }

    /// Deletes everything stored about a user and remembers the salted
    /// hash; whether anything was stored.
    pub(crate) async fn delete_user(
        &self,
        user_id: &str,
        hash: &str,
        now_ms: i64,
    ) -> Result<bool, String> {
        if let Some(pool) = &self.postgres {
            return Store::delete_user_postgres(pool, user_id, hash, now_ms)
                .await
                .map_err(|e| e.to_string());
        }
        let (reply, answer) = oneshot::channel();
        self.sqlite_queue()
            .send(Job::DeleteUser {
                user_id: user_id.to_string(),
                hash: hash.to_string(),
                now_ms,
                reply,
            })
            .await
            .map_err(|_| "the writer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the writer has stopped".to_string())?
    }
}

/// A group: `first` and the store jobs queued behind it (see [`gather_into`]).
pub(crate) fn gather(first: Batch, next: impl FnMut() -> Option<Job>) -> (Vec<Batch>, Option<Job>) {
    let mut jobs = vec![first];
    let other = gather_into(&mut jobs, next);
    (jobs, other)
}

/// Adds the store jobs queued (from `next`) to `jobs`, up to the group
/// limits; a job of another kind ends the group and is handed back.
pub(crate) fn gather_into(
    jobs: &mut Vec<Batch>,
    mut next: impl FnMut() -> Option<Job>,
) -> Option<Job> {
    let mut events = events_in(jobs);
    while jobs.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
        match next() {
            Some(Job::Store(batch)) => {
                events += batch.events.len();
                jobs.push(batch);
            }
            other => return other,
        }
    }
    None
}

/// Events in a group of jobs.
pub(crate) fn events_in(jobs: &[Batch]) -> usize {
    jobs.iter().map(|j| j.events.len()).sum()
}

/// The events, user hashes and quarantined events of a group of jobs, as
/// one transaction takes them.
pub(crate) struct Group<'a> {
    pub(crate) events: Vec<&'a Arc<EventRow>>,
    pub(crate) hashes: HashMap<&'a str, &'a str>,
    pub(crate) quarantine: Vec<QuarantineRow>,
    pub(crate) started: Instant,
}

impl<'a> Group<'a> {
    pub(crate) fn of(jobs: &'a [Batch]) -> Group<'a> {
        let mut hashes = HashMap::new();
        for job in jobs {
            hashes.extend(job.hashes.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        Group {
            events: jobs.iter().flat_map(|j| j.events.iter()).collect(),
            hashes,
            quarantine: jobs
                .iter()
                .flat_map(|j| j.quarantine.iter().cloned())
                .collect(),
            started: Instant::now(),
        }
    }
}

/// Records the commit in the metrics and answers each request with the
/// outcomes of its own events, or with the failure (nothing was stored).
pub(crate) fn settle(
    jobs: Vec<Batch>,
    result: Result<Vec<Written>, String>,
    metrics: &Metrics,
    events: usize,
    started: Instant,
) {
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.commit_events.observe(events as f64);
    metrics.commit_requests.observe(jobs.len() as f64);
    metrics.storage_failing.set(i64::from(result.is_err()));
    match result {
        Ok(written) => {
            let mut rest = written.into_iter();
            for job in jobs {
                let mine: Vec<Written> = rest.by_ref().take(job.events.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, events, "group commit failed; nothing stored");
            for job in jobs {
                let _ = job.reply.send(Err(()));
            }
        }
    }
}
