//! Group commit: request handlers hand their events to writer tasks, which
//! take everything queued, store it in one transaction, and answer each
//! request only after `COMMIT`. Concurrent requests share a transaction, so
//! durable acknowledgement does not cost a disk flush per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{EventRow, QuarantineRow, Store, Written};

/// Most requests one transaction takes.
const MAX_GROUP_REQUESTS: usize = 256;
/// Most events one transaction takes (a request is never split).
const MAX_GROUP_EVENTS: usize = 20_000;

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
    /// Starts `tasks` writers sharing one queue. They stop once every
    /// `Writer` is dropped and the queue is drained.
    pub(crate) fn start(
        store: Store,
        tasks: usize,
        metrics: Arc<Metrics>,
    ) -> (Writer, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel::<Job>(4096);
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..tasks.max(1))
            .map(|_| {
                let (rx, store, metrics) = (rx.clone(), store.clone(), metrics.clone());
                tokio::spawn(async move { run(rx, store, metrics).await })
            })
            .collect();
        (Writer { tx }, handles)
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

async fn run(rx: Arc<Mutex<mpsc::Receiver<Job>>>, store: Store, metrics: Arc<Metrics>) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut events = first.events.len();
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.events.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        let started = Instant::now();
        let events: Vec<&EventRow> = jobs.iter().flat_map(|j| j.events.iter()).collect();
        let mut hashes = HashMap::new();
        for job in &jobs {
            hashes.extend(job.hashes.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let quarantine: Vec<QuarantineRow> = jobs
            .iter()
            .flat_map(|j| j.quarantine.iter().cloned())
            .collect();
        let result = store.write(&events, &hashes, &quarantine).await;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.commit_events.observe(events.len() as f64);
        metrics.commit_requests.observe(jobs.len() as f64);
        match result {
            Ok(written) => {
                let mut rest = written.into_iter();
                for job in jobs {
                    let mine: Vec<Written> = rest.by_ref().take(job.events.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "group commit failed; nothing stored");
                for job in jobs {
                    let _ = job.reply.send(Err(()));
                }
            }
        }
    }
}
