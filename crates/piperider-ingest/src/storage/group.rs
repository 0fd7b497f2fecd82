//! Group commit, shared by both databases: request tasks queue their
//! events, a writer takes everything queued (up to a limit) into one
//! transaction, and each request is answered with its own events' outcomes
//! only after `COMMIT` (and, on SQLite, the WAL's `fdatasync`). Concurrent
//! requests share a transaction, so durable acknowledgement does not cost
//! a disk flush per request. When the database refuses one request's data,
//! the group is written again one request at a time ([`isolate`]), so a
//! request can fail only itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::oneshot;

use super::error::StorageError;
use super::rows::{EventRow, QuarantineRow};

/// Most requests one transaction takes.
const MAX_GROUP_REQUESTS: usize = 1024;
/// Most events one transaction takes (a request is never split).
const MAX_GROUP_EVENTS: usize = 20_000;
/// Requests queued for the writers at most (then senders wait).
pub(crate) const QUEUE: usize = 4096;

/// What became of one event handed to the store's `write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Accepted,
    Duplicate,
    /// Its user asked for deletion: dropped.
    DeletedUser,
}

/// One request's events.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) events: Vec<Arc<EventRow>>,
    pub(crate) hashes: HashMap<String, String>,
    pub(crate) quarantine: Vec<QuarantineRow>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Written>, StorageError>>,
}

/// What a writer is asked to do.
#[derive(Debug)]
pub(crate) enum Job {
    Store(Batch),
    /// Write the rollups held back so far, before they are read (the SQLite
    /// writer, PostgreSQL's roller).
    Flush(oneshot::Sender<Result<(), StorageError>>),
    /// Delete a user, after writing the rollups held back (SQLite).
    DeleteUser {
        user_id: String,
        hash: String,
        now_ms: i64,
        reply: oneshot::Sender<Result<bool, StorageError>>,
    },
    /// Answer once every group queued before has committed (PostgreSQL:
    /// the second pass of a deletion waits for it).
    Barrier(oneshot::Sender<()>),
    /// Finish what was queued before, then stop ([`super::Store::close`]).
    Stop,
}

/// The writers' figures, registered with the service's metrics.
#[derive(Debug, Clone)]
pub(crate) struct CommitMetrics {
    pub(crate) events: Histogram,
    pub(crate) requests: Histogram,
    pub(crate) seconds: Histogram,
    /// 1 from a failed group commit until a commit (or a readiness probe) succeeds.
    pub(crate) failing: Gauge,
    /// PostgreSQL: events stored and not yet in the rollups, after the
    /// roller's last roll-up.
    pub(crate) rollup_backlog: Gauge,
    /// Queue mode: messages and bytes in the stream, and its byte limit.
    pub(crate) queue_messages: Gauge,
    pub(crate) queue_bytes: Gauge,
    pub(crate) queue_max_bytes: Gauge,
    /// Queue mode, a writer: messages no writer has acknowledged yet.
    pub(crate) queue_pending: Gauge,
    /// Reads that failed on the read replica (then read on the primary).
    pub(crate) replica_failures: Counter,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        CommitMetrics {
            events: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            requests: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            failing: Gauge::default(),
            rollup_backlog: Gauge::default(),
            queue_messages: Gauge::default(),
            queue_bytes: Gauge::default(),
            queue_max_bytes: Gauge::default(),
            queue_pending: Gauge::default(),
            replica_failures: Counter::default(),
        }
    }
}

impl CommitMetrics {
    /// Adds the figures to `registry` (under the service's prefix).
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "commit_events",
            "Events per group commit",
            self.events.clone(),
        );
        registry.register(
            "commit_requests",
            "Requests per group commit",
            self.requests.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time of one group commit",
            self.seconds.clone(),
        );
        registry.register(
            "storage_failing",
            "1 while storage is failing: the last group commit failed and no later commit or readiness probe succeeded",
            self.failing.clone(),
        );
        registry.register(
            "rollup_backlog",
            "PostgreSQL: events stored and not yet in the rollups (rollup_queue) after the last roll-up; one that keeps growing means no roller runs",
            self.rollup_backlog.clone(),
        );
        registry.register(
            "queue_messages",
            "Queue mode: messages in the stream (events not yet stored by a writer)",
            self.queue_messages.clone(),
        );
        registry.register(
            "queue_bytes",
            "Queue mode: bytes in the stream; at queue_max_bytes nodes answer 503",
            self.queue_bytes.clone(),
        );
        registry.register(
            "queue_max_bytes",
            "Queue mode: the stream's byte limit (--queue-max-bytes)",
            self.queue_max_bytes.clone(),
        );
        registry.register(
            "queue_pending",
            "Queue mode, writers: messages not yet acknowledged by a writer (the writers' lag)",
            self.queue_pending.clone(),
        );
        registry.register(
            "replica_read_failures",
            "Dashboard reads that failed on the read replica (--read-database-url) and were read on the primary, which takes the reads for 30 s after each",
            self.replica_failures.clone(),
        );
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

    /// The salted hashes of the group's users, each once, in order.
    pub(crate) fn user_hashes(&self) -> Vec<&'a str> {
        let distinct: std::collections::BTreeSet<&'a str> = self.hashes.values().copied().collect();
        distinct.into_iter().collect()
    }

    /// The events `keep` takes, each event id once (its first time in the
    /// group): the rows one insert stores.
    pub(crate) fn first_of_each(&self, keep: impl Fn(&EventRow) -> bool) -> Vec<&'a Arc<EventRow>> {
        let mut seen = HashSet::new();
        self.events
            .iter()
            .copied()
            .filter(|e| keep(e) && seen.insert(e.event_id.as_str()))
            .collect()
    }

    /// Whether an event's user asked for deletion, given the hashes found
    /// in `deleted_users`.
    pub(crate) fn is_deleted(&self, e: &EventRow, deleted: &HashSet<&str>) -> bool {
        !deleted.is_empty()
            && self
                .hashes
                .get(e.user_id.as_str())
                .is_some_and(|h| deleted.contains(h))
    }
}

/// What became of each event of a group, in input order: dropped for a
/// deleted user, accepted the first time its id was inserted, otherwise a
/// duplicate.
pub(crate) fn outcomes(
    events: &[&Arc<EventRow>],
    is_deleted: impl Fn(&EventRow) -> bool,
    inserted: &HashSet<&str>,
) -> Vec<Written> {
    let mut first = HashSet::new();
    events
        .iter()
        .map(|e| {
            if is_deleted(e) {
                Written::DeletedUser
            } else if inserted.contains(e.event_id.as_str()) && first.insert(e.event_id.as_str()) {
                Written::Accepted
            } else {
                Written::Duplicate
            }
        })
        .collect()
}

/// Whether a failed group is retried one request at a time: the database
/// refused some request's data, and there are others in the group that
/// should not fail with it. (A storage fault fails them all at once.)
pub(crate) fn isolate(jobs: &[Batch], result: &Result<Vec<Written>, StorageError>) -> bool {
    jobs.len() > 1 && result.as_ref().is_err_and(StorageError::is_data)
}

/// Records the commit in the metrics and answers each request with the
/// outcomes of its own events, or with the failure (nothing was stored).
pub(crate) fn settle(
    jobs: Vec<Batch>,
    result: Result<Vec<Written>, StorageError>,
    metrics: &CommitMetrics,
    events: usize,
    started: Instant,
) {
    metrics.seconds.observe(started.elapsed().as_secs_f64());
    metrics.events.observe(events as f64);
    metrics.requests.observe(jobs.len() as f64);
    // Refused data is the request's fault, not storage's.
    metrics
        .failing
        .set(i64::from(result.as_ref().is_err_and(|e| !e.is_data())));
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
            let e = Arc::new(e);
            for job in jobs {
                let _ = job.reply.send(Err(e.shared()));
            }
        }
    }
}
