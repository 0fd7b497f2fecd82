//! Queue mode: a replicated NATS JetStream stream between the HTTP nodes
//! and the writers.
//!
//! A node validates a batch as always, then publishes its valid events
//! (and its refused ones, for the quarantine) as messages of up to
//! [`CHUNK_EVENTS`] events, and answers once JetStream has acknowledged
//! every message: "accepted" then means stored in the stream on a majority
//! of its replicas. A message's `Nats-Msg-Id` is a digest of its events'
//! ids, so the stream's duplicate window drops a resent batch whole, and
//! its events are answered "duplicate"; any other resend is dropped by the
//! database (`event_id` is unique). One message per event (the event id as
//! its `Nats-Msg-Id`) was measured first: three replicas on this project's
//! two-core machine took at most about 23,500 messages a second, with no
//! writer running, so a request's events travel together. Deletion
//! requests travel the same stream, in order with the events.
//!
//! Writers ([`run_writers`]) share one durable pull consumer with explicit
//! acknowledgements: they store what they fetch through the PostgreSQL
//! store (the same schema, rollups and idempotent inserts: `event_id` is
//! unique) and acknowledge each message only after its commit, so a
//! crashed writer's messages go to another once their ack wait is over,
//! and are stored once whichever writer stores them.
//!
//! The stream keeps only what no writer has acknowledged yet (work-queue
//! retention) up to `--queue-max-bytes` and `--queue-max-age-hours`; when
//! it is full, publishing fails and nodes answer 503, so clients keep their
//! events and send them later, rather than the stream dropping any.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use serde::{Deserialize, Serialize};

use super::error::StorageError;
use super::group::{CommitMetrics, Written};
use super::rows::{EventRow, QuarantineRow};

/// The stream's name and the subject its messages are published on.
pub const STREAM: &str = "PIPERIDER_TELEMETRY";
const SUBJECT: &str = "piperider.telemetry";
/// The writers' durable consumer.
pub const CONSUMER: &str = "piperider-writers";
/// How long the stream remembers message ids for dropping resends. Later
/// resends reach a writer and are dropped there (`event_id` is unique).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a writer may hold a message before it goes to another writer;
/// a writer waiting for the database says it is still working on it.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Most events in one message (a request's events, cut in chunks: a
/// message stays well under NATS's default 1 MiB payload limit, as each
/// stored event is at most a few KiB).
const CHUNK_EVENTS: usize = 200;
/// Messages one writer task takes at a time (one group commit).
const FETCH: usize = 20;
/// Writer tasks per writer process, each with its own fetch and commit.
const TASKS: usize = 2;
/// Messages all writers together may hold unacknowledged (a hundred
/// writer processes' worth of fetches).
const MAX_ACK_PENDING: i64 = (FETCH * TASKS * 100) as i64;

/// What queue mode connects to and how the stream is kept.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The NATS servers, `nats://host:port` (several: any one of a cluster).
    pub urls: Vec<String>,
    /// Copies of the stream; `None`: 3 when the cluster has three servers
    /// or more, else 1.
    pub replicas: Option<usize>,
    /// Most bytes the stream holds before publishing fails.
    pub max_bytes: i64,
    /// Oldest a message may become before the stream drops it.
    pub max_age: Duration,
}

/// One message of the stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Entry {
    /// Events of one request, and refused events kept for the quarantine.
    Events {
        events: Vec<EventRow>,
        quarantine: Vec<QuarantineRow>,
    },
    /// A user asked for deletion at `at_ms`.
    Deletion { user_id: String, at_ms: i64 },
}

/// How full the stream is.
#[derive(Debug, Clone, Copy)]
pub struct StreamState {
    pub messages: u64,
    pub bytes: u64,
    pub max_bytes: i64,
}

/// A connection to the stream.
#[derive(Debug)]
pub(crate) struct Queue {
    client: async_nats::Client,
    js: jetstream::Context,
    config: QueueConfig,
    /// Whether the stream is known to exist with this configuration.
    stream_made: AtomicBool,
    metrics: CommitMetrics,
}

/// How full the stream may get before each look at it logs a warning.
const WARN_AT_FULL: f64 = 0.8;
/// How often the stream's state is read for the metrics.
const WATCH_EVERY: Duration = Duration::from_secs(5);

fn queue_error(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Queue(format!("{what}: {e}"))
}

impl Queue {
    /// Connects to the servers (retrying in the background while none
    /// answers) and makes the stream when one does.
    pub(crate) async fn connect(
        config: &QueueConfig,
        metrics: &CommitMetrics,
    ) -> Result<Queue, StorageError> {
        let addrs: Vec<async_nats::ServerAddr> = config
            .urls
            .iter()
            .map(|u| u.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| queue_error("the queue's URL", e))?;
        let client = async_nats::ConnectOptions::new()
            .name("piperider-ingest")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(addrs)
            .await
            .map_err(|e| queue_error("connecting to the queue", e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(client.clone());
        let queue = Queue {
            client,
            js,
            config: config.clone(),
            stream_made: AtomicBool::new(false),
            metrics: metrics.clone(),
        };
        if let Err(e) = queue.make_stream().await {
            tracing::warn!(error = %e, "the queue's stream is not reachable yet");
        }
        Ok(queue)
    }

    /// The stream's configuration: work-queue retention (a message leaves
    /// once a writer acknowledges it), new messages refused when full.
    fn stream_config(&self) -> stream::Config {
        let servers = self
            .config
            .urls
            .len()
            .max(self.client.server_info().connect_urls.len());
        let replicas = self
            .config
            .replicas
            .unwrap_or(if servers >= 3 { 3 } else { 1 });
        stream::Config {
            name: STREAM.to_string(),
            subjects: vec![SUBJECT.to_string()],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_bytes: self.config.max_bytes,
            max_age: self.config.max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }
    }

    /// Makes the stream, or brings an existing one's limits to the configured ones.
    async fn make_stream(&self) -> Result<(), StorageError> {
        if self.stream_made.load(Ordering::Relaxed) {
            return Ok(());
        }
        let config = self.stream_config();
        let stream = self
            .js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| queue_error("making the queue's stream", e))?;
        let info = stream.cached_info();
        if info.config.max_bytes != config.max_bytes || info.config.max_age != config.max_age {
            self.js
                .update_stream(stream::Config {
                    max_bytes: config.max_bytes,
                    max_age: config.max_age,
                    ..info.config.clone()
                })
                .await
                .map_err(|e| queue_error("updating the queue's stream limits", e))?;
        }
        self.stream_made.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes `entries` and waits until JetStream has stored each;
    /// for each, whether the stream had seen its id before.
    async fn publish(
        &self,
        entries: Vec<(Option<String>, Entry)>,
    ) -> Result<Vec<bool>, StorageError> {
        self.make_stream().await?;
        let published = self.send(entries).await;
        if published.is_err() {
            // Look for the stream again before the next publish: it may
            // have been deleted (publishing to no stream fails).
            self.stream_made.store(false, Ordering::Relaxed);
        }
        published
    }

    /// [`Self::publish`] once the stream is known to exist.
    async fn send(&self, entries: Vec<(Option<String>, Entry)>) -> Result<Vec<bool>, StorageError> {
        let mut acks = Vec::new();
        for (id, entry) in entries {
            let payload = serde_json::to_vec(&entry).map_err(|e| queue_error("encoding", e))?;
            let mut message = jetstream::message::PublishMessage::build().payload(payload.into());
            if let Some(id) = id {
                message = message.message_id(id);
            }
            let ack = self
                .js
                .send_publish(SUBJECT, message)
                .await
                .map_err(|e| queue_error("publishing to the queue", e))?;
            acks.push(ack);
        }
        let mut duplicates = Vec::with_capacity(acks.len());
        for ack in futures_util::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            let ack = ack.map_err(|e| queue_error("the queue did not store a message", e))?;
            duplicates.push(ack.duplicate);
        }
        Ok(duplicates)
    }

    /// Publishes a batch's valid events and refused ones; what became of
    /// each event (accepted, or a duplicate of a message the stream had
    /// seen) once the stream holds them all.
    pub(crate) async fn write(
        &self,
        events: Vec<EventRow>,
        mut quarantine: Vec<QuarantineRow>,
    ) -> Result<Vec<Written>, StorageError> {
        let mut entries = Vec::new();
        let mut sizes = Vec::new();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() || !quarantine.is_empty() {
            let chunk: Vec<EventRow> = events.by_ref().take(CHUNK_EVENTS).collect();
            let id = (!chunk.is_empty()).then(|| chunk_id(&chunk));
            sizes.push(chunk.len());
            entries.push((
                id,
                Entry::Events {
                    events: chunk,
                    quarantine: std::mem::take(&mut quarantine),
                },
            ));
        }
        let duplicates = self.publish(entries).await?;
        let mut written = Vec::new();
        for (size, duplicate) in sizes.into_iter().zip(duplicates) {
            let outcome = if duplicate {
                Written::Duplicate
            } else {
                Written::Accepted
            };
            written.extend(std::iter::repeat_n(outcome, size));
        }
        Ok(written)
    }

    /// Publishes a deletion request, ordered after every event published
    /// before it.
    pub(crate) async fn delete_user(&self, user_id: &str, at_ms: i64) -> Result<(), StorageError> {
        let entry = Entry::Deletion {
            user_id: user_id.to_string(),
            at_ms,
        };
        self.publish(vec![(None, entry)]).await.map(drop)
    }

    /// The stream's state, read from the servers (readiness and metrics).
    pub(crate) async fn state(&self) -> Result<StreamState, StorageError> {
        let stream = self.stream().await?;
        let info = stream.cached_info();
        let state = StreamState {
            messages: info.state.messages,
            bytes: info.state.bytes,
            max_bytes: info.config.max_bytes,
        };
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.metrics.queue_messages.set(gauge(state.messages));
        self.metrics.queue_bytes.set(gauge(state.bytes));
        self.metrics.queue_max_bytes.set(state.max_bytes);
        if state.max_bytes > 0 && state.bytes as f64 >= WARN_AT_FULL * state.max_bytes as f64 {
            tracing::warn!(
                bytes = state.bytes,
                max_bytes = state.max_bytes,
                "the queue's stream is over 80% full: are the writers running and the database up? \
                 Once full, nodes answer 503"
            );
        }
        Ok(state)
    }

    /// Reads the stream's state every [`WATCH_EVERY`] while `queue` is
    /// held elsewhere (for the metrics and the warning before it is full).
    pub(crate) fn watch(queue: &std::sync::Arc<Queue>) {
        let queue = std::sync::Arc::downgrade(queue);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(queue) = queue.upgrade() else {
                    return;
                };
                if let Err(e) = queue.state().await {
                    tracing::warn!(error = %e, "the queue's stream is not reachable");
                }
            }
        });
    }

    /// Sends what is buffered to the server.
    pub(crate) async fn close(&self) {
        let _ = self.client.flush().await;
    }

    /// The stream (made if missing), with its state as the servers have it now.
    async fn stream(&self) -> Result<stream::Stream, StorageError> {
        self.make_stream().await?;
        self.js.get_stream(STREAM).await.map_err(|e| {
            self.stream_made.store(false, Ordering::Relaxed);
            queue_error("reading the queue's stream", e)
        })
    }

    /// The writers' consumer, made if missing.
    async fn consumer(&self) -> Result<jetstream::consumer::PullConsumer, StorageError> {
        self.stream()
            .await?
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| queue_error("making the writers' consumer", e))
    }
}

/// Runs the writer tasks of this process until `stop` resolves: each
/// fetches up to 20 messages, stores them through `store` (which
/// must be on PostgreSQL) in order, deletions between events as they came,
/// and acknowledges them after the commit.
pub async fn run_writers(
    store: super::Store,
    config: &QueueConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StorageError> {
    let metrics = store.commit_metrics().clone();
    let queue = std::sync::Arc::new(Queue::connect(config, &metrics).await?);
    Queue::watch(&queue);
    let (stopping, _) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    {
        // The writers' lag, for the metrics.
        let (queue, mut stopped) = (queue.clone(), stopping.subscribe());
        tasks.push(tokio::spawn(async move {
            loop {
                if let Ok(mut consumer) = queue.consumer().await
                    && let Ok(info) = consumer.info().await
                {
                    let pending = info.num_pending.saturating_add(info.num_ack_pending as u64);
                    metrics
                        .queue_pending
                        .set(i64::try_from(pending).unwrap_or(i64::MAX));
                }
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = stopped.changed() => return,
                }
            }
        }));
    }
    for _ in 0..TASKS {
        let (store, queue, mut stopped) = (store.clone(), queue.clone(), stopping.subscribe());
        tasks.push(tokio::spawn(async move {
            loop {
                if *stopped.borrow() {
                    return;
                }
                let consumer = match queue.consumer().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "the writers' consumer is not reachable");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = stopped.changed() => return,
                        }
                    }
                };
                if let Err(e) = write_from(&consumer, &store, &mut stopped).await {
                    tracing::warn!(error = %e, "fetching from the queue failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    stop.await;
    let _ = stopping.send(true);
    for task in tasks {
        let _ = task.await;
    }
    queue.close().await;
    Ok(())
}

/// Fetches and stores until `stopped` turns true or fetching fails.
async fn write_from(
    consumer: &jetstream::consumer::PullConsumer,
    store: &super::Store,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), StorageError> {
    use futures_util::StreamExt;
    while !*stopped.borrow() {
        let mut batch = consumer
            .batch()
            .max_messages(FETCH)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| queue_error("fetching from the queue", e))?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|e| queue_error("fetching from the queue", e))?);
        }
        if !messages.is_empty() {
            store_messages(store, messages, stopped).await;
        }
    }
    Ok(())
}

/// The `Nats-Msg-Id` of a message of `events`: a digest of their ids.
fn chunk_id(events: &[EventRow]) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for e in events {
        digest.update(e.event_id.as_bytes());
        digest.update(b"\n");
    }
    super::hex(&digest.finalize())
}

/// A run of events and refused events between deletions, with their messages.
#[derive(Default)]
struct Run {
    events: Vec<EventRow>,
    quarantine: Vec<QuarantineRow>,
    messages: Vec<jetstream::Message>,
}

/// Stores `messages` in order (a run of events, a deletion, the next run)
/// and acknowledges each after its commit. A failing database is retried
/// until it answers or the writer stops (what is left unacknowledged then
/// goes to another writer); an undecodable message is logged and
/// terminated (never redelivered).
async fn store_messages(
    store: &super::Store,
    messages: Vec<jetstream::Message>,
    stopped: &tokio::sync::watch::Receiver<bool>,
) {
    let mut run = Run::default();
    for message in messages {
        match serde_json::from_slice::<Entry>(&message.payload) {
            Ok(Entry::Events { events, quarantine }) => {
                run.events.extend(events);
                run.quarantine.extend(quarantine);
                run.messages.push(message);
            }
            Ok(Entry::Deletion { user_id, at_ms }) => {
                if !store_run(store, std::mem::take(&mut run), stopped).await {
                    return;
                }
                let messages = [message];
                let mut wait = Backoff::new(stopped);
                while let Err(e) = store.delete_user(&user_id, at_ms).await {
                    if !wait.after(e, &messages).await {
                        return;
                    }
                }
                ack(&messages).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "a message of the queue is not an entry; dropped");
                let _ = message
                    .ack_with(jetstream::AckKind::Term)
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "terminating a message"));
            }
        }
    }
    store_run(store, run, stopped).await;
}

/// Stores a run and acknowledges its messages; false when the writer
/// stopped first.
async fn store_run(
    store: &super::Store,
    run: Run,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> bool {
    if run.messages.is_empty() {
        return true;
    }
    let Run {
        events,
        quarantine,
        messages,
    } = run;
    let mut wait = Backoff::new(stopped);
    while let Err(e) = store_events(store, &events, &quarantine).await {
        if !wait.after(e, &messages).await {
            return false;
        }
    }
    ack(&messages).await;
    true
}

/// Stores a run's events and refused events in one commit. Refused data
/// (validated by the node, so not expected) is tried event by event, and
/// an event still refused is logged and left out.
async fn store_events(
    store: &super::Store,
    events: &[EventRow],
    quarantine: &[QuarantineRow],
) -> Result<(), StorageError> {
    match store.write(events.to_vec(), quarantine.to_vec()).await {
        Err(e) if e.is_data() => {}
        other => return other.map(drop),
    }
    for event in events {
        if let Err(e) = store.write(vec![event.clone()], Vec::new()).await {
            if !e.is_data() {
                return Err(e);
            }
            tracing::error!(error = %e, "the database refused a queued event; dropped");
        }
    }
    if !quarantine.is_empty() {
        store.write(Vec::new(), quarantine.to_vec()).await?;
    }
    Ok(())
}

/// Waits between attempts to store messages while the database fails,
/// telling the stream that they are still being worked on (so they are
/// not given to another writer meanwhile), until the writer stops.
struct Backoff {
    wait: Duration,
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl Backoff {
    fn new(stopped: &tokio::sync::watch::Receiver<bool>) -> Backoff {
        Backoff {
            wait: Duration::from_millis(100),
            stopped: stopped.clone(),
        }
    }

    /// Waits before the next attempt; false when the writer stops instead.
    async fn after(&mut self, error: StorageError, messages: &[jetstream::Message]) -> bool {
        tracing::warn!(error = %error, "storing queued messages failed; retrying");
        for m in messages {
            let _ = m.ack_with(jetstream::AckKind::Progress).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.wait) => {}
            _ = self.stopped.wait_for(|stop| *stop) => return false,
        }
        self.wait = (self.wait * 2).min(Duration::from_secs(2));
        !*self.stopped.borrow()
    }
}

/// Acknowledges each message (after its commit).
async fn ack(messages: &[jetstream::Message]) {
    for m in messages {
        if let Err(e) = m.ack().await {
            // Redelivered after the ack wait, then stored as a duplicate.
            tracing::warn!(error = %e, "acknowledging a queued message failed");
        }
    }
}
