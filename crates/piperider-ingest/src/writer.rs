//! Group commit: request handlers hand their events to a writer, which
//! takes everything queued, stores it in one transaction, and answers each
//! request only after `COMMIT`. Concurrent requests share a transaction, so
//! durable acknowledgement does not cost a disk flush per request.
//!
//! PostgreSQL gets a few async writer tasks overlapping their transactions.
//! SQLite takes one writer at a time: it gets one thread owning one
//! connection ([`crate::sqlite_writer`]), which binds rows to cached
//! prepared statements without a round trip per statement.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{EventRow, QuarantineRow, Store, Written};

/// Most requests one transaction takes.
const MAX_GROUP_REQUESTS: usize = 1024;
/// Most events one transaction takes (a request is never split).
const MAX_GROUP_EVENTS: usize = 20_000;
/// PostgreSQL transactions in flight at once.
const POSTGRES_WRITERS: usize = 4;

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) events: Vec<EventRow>,
    pub(crate) hashes: HashMap<String, String>,
    pub(crate) quarantine: Vec<QuarantineRow>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Written>, ()>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writers for `store`. They stop once every `Writer` is
    /// dropped and the queue is drained.
    pub(crate) fn start(
        store: Store,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Writer, Vec<tokio::task::JoinHandle<()>>)> {
        let (tx, rx) = mpsc::channel::<Job>(4096);
        let handles = match store {
            Store::Sqlite(pool) => {
                let path: PathBuf = pool.connect_options().get_filename().to_path_buf();
                let conn = crate::sqlite_writer::open(&path)?;
                // Its own thread, not the runtime's blocking pool: a runtime
                // shut down while a `Writer` is still held must not wait for it.
                let (done, finished) = oneshot::channel::<()>();
                std::thread::Builder::new()
                    .name("sqlite-writer".into())
                    .spawn(move || {
                        crate::sqlite_writer::run(rx, conn, path, metrics);
                        let _ = done.send(());
                    })?;
                vec![tokio::spawn(async move {
                    let _ = finished.await;
                })]
            }
            Store::Postgres(pool) => {
                let rx = Arc::new(Mutex::new(rx));
                (0..POSTGRES_WRITERS)
                    .map(|_| {
                        let (rx, pool, metrics) = (rx.clone(), pool.clone(), metrics.clone());
                        tokio::spawn(async move {
                            loop {
                                let jobs = {
                                    let mut rx = rx.lock().await;
                                    let Some(first) = rx.recv().await else { return };
                                    gather(first, || rx.try_recv().ok())
                                };
                                let group = Group::of(&jobs);
                                let result = Store::write_postgres(
                                    &pool,
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
                        })
                    })
                    .collect()
            }
        };
        Ok((Writer { tx }, handles))
    }

    /// Stores the events; `Err` when storage failed (nothing was stored).
    pub(crate) async fn write(
        &self,
        events: Vec<EventRow>,
        hashes: HashMap<String, String>,
        quarantine: Vec<QuarantineRow>,
    ) -> Result<Vec<Written>, ()> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                events,
                hashes,
                quarantine,
                reply,
            })
            .await
            .map_err(drop)?;
        answer.await.map_err(drop)?
    }
}

/// `first` and whatever else is queued (from `next`), up to the group limits.
pub(crate) fn gather(first: Job, mut next: impl FnMut() -> Option<Job>) -> Vec<Job> {
    let mut events = first.events.len();
    let mut jobs = vec![first];
    while jobs.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
        match next() {
            Some(job) => {
                events += job.events.len();
                jobs.push(job);
            }
            None => break,
        }
    }
    jobs
}

/// The events, user hashes and quarantined events of a group of jobs, as
/// one transaction takes them.
pub(crate) struct Group<'a> {
    pub(crate) events: Vec<&'a EventRow>,
    pub(crate) hashes: HashMap<String, String>,
    pub(crate) quarantine: Vec<QuarantineRow>,
    pub(crate) started: Instant,
}

impl<'a> Group<'a> {
    pub(crate) fn of(jobs: &'a [Job]) -> Group<'a> {
        let mut hashes = HashMap::new();
        for job in jobs {
            hashes.extend(job.hashes.iter().map(|(k, v)| (k.clone(), v.clone())));
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
    jobs: Vec<Job>,
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
