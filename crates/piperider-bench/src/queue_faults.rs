//! The queue-mode fault case, on release binaries: a three-server NATS
//! JetStream cluster, two nodes and two writers on a throwaway PostgreSQL
//! database, 50,000 events from four senders; one node, one writer and
//! one NATS server SIGKILLed (and started again) during the load, then
//! PostgreSQL refusing connections for 30 s while the load goes on. Every
//! event a node acknowledged must be stored exactly once; every event is
//! resent by its sender until acknowledged, so every event is stored.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use piperider_testkit::nats;

use crate::Result;
use crate::backend::pg_admin;
use crate::launcher::{Backend, Log, request};

const SENDERS: usize = 4;
const BATCH_EVENTS: usize = 100;
const EVENTS: usize = 50_000;
/// Each sender's pause between batches: about 1,000 events a second in
/// all, so that the load lasts through the kills and the outage.
const PACE: Duration = Duration::from_millis(400);
/// How long PostgreSQL refuses connections.
const OUTAGE: Duration = Duration::from_secs(30);
/// The longest the writers may take to store what was acknowledged once
/// the load has stopped.
const DRAIN: Duration = Duration::from_secs(120);

/// What one sender sent: every event id, and those a node acknowledged.
#[derive(Default)]
struct Sent {
    ids: HashSet<uuid::Uuid>,
    acknowledged: HashSet<uuid::Uuid>,
    /// Answers other than 200 and failed requests, each followed by a resend.
    refused: u64,
}

/// Posts `bodies` in turn, each to one node and then the other until one
/// answers 200, pausing [`PACE`] between batches.
fn send(nodes: [SocketAddr; 2], bodies: Vec<String>, stop: &AtomicBool) -> Result<Sent> {
    let mut sent = Sent::default();
    for (i, body) in bodies.iter().enumerate() {
        sent.ids.extend(crate::faults::event_ids(body)?);
        let mut attempt = 0usize;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err("a sender gave up: its batch was never acknowledged".into());
            }
            let node = nodes[(i + attempt) % 2];
            match request(node, "", "POST", "/v1/batch", body) {
                Ok((200, answer)) => {
                    let answer: piperider_event::BatchResponse = serde_json::from_str(&answer)
                        .map_err(|e| format!("the answer to a batch: {e}: {answer}"))?;
                    use piperider_event::ResultStatus::{Accepted, Duplicate};
                    for r in &answer.results {
                        match (r.status, r.event_id) {
                            (Accepted | Duplicate, Some(id)) => {
                                sent.acknowledged.insert(id);
                            }
                            _ => return Err(format!("an event was refused: {r:?}")),
                        }
                    }
                    break;
                }
                _ => {
                    sent.refused += 1;
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        std::thread::sleep(PACE);
    }
    Ok(sent)
}

/// The text rows of `sql` on the PostgreSQL database `url`.
async fn pg_text(url: &str, sql: &str) -> Result<Vec<String>> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    let rows: Vec<(String,)> = sqlx::query_as(sql)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("{sql}: {e}"))?;
    conn.close().await.map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

/// How many events the PostgreSQL database `url` holds.
pub(crate) async fn pg_count(url: &str) -> Result<i64> {
    pg_text(url, "SELECT CAST(COUNT(*) AS TEXT) FROM events")
        .await?
        .first()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "no count".to_string())
}

/// The case (see the module's text); `work` holds the NATS servers' stores.
pub(crate) fn nodes_writers_and_servers_killed_and_the_database_away(work: &Path) -> Result {
    if !nats::installed() {
        if std::env::var_os("CI").is_some() {
            return Err("nats-server is missing, and CI must run this case".into());
        }
        eprintln!("faults: SKIPPED the queue-mode case (no nats-server)");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let name = format!("piperider_faults_{}", uuid::Uuid::new_v4().simple());
    runtime.block_on(pg_admin(&format!("CREATE DATABASE {name}")))?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let result = run(&runtime, work, &name, &url);
    let dropped = runtime.block_on(pg_admin(&format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )));
    result.and(dropped)
}

fn run(runtime: &tokio::runtime::Runtime, work: &Path, name: &str, url: &str) -> Result {
    let mut cluster = nats::Cluster::start(3, &work.join("nats")).map_err(|e| e.to_string())?;
    let queue = cluster.urls().join(",");
    let writer = ["--queue", queue.as_str(), "--role", "writer"];
    // Writers first: they migrate the database.
    let mut writers = [
        Backend::start_with(url, Log::Silent, &writer)?,
        Backend::start_with(url, Log::Silent, &writer)?,
    ];
    let node = ["--queue", queue.as_str()];
    let mut nodes = [
        Backend::start_with(url, Log::Silent, &node)?,
        Backend::start_with(url, Log::Silent, &node)?,
    ];
    let addrs = [nodes[0].addr, nodes[1].addr];
    let batches = EVENTS / BATCH_EVENTS;
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let bodies: Vec<String> = (s..batches)
                .step_by(SENDERS)
                .map(|n| crate::events::body(n as u64, BATCH_EVENTS))
                .collect();
            let stop = stop.clone();
            std::thread::spawn(move || send(addrs, bodies, &stop))
        })
        .collect();
    let started = Instant::now();
    let at = |secs: u64| {
        let due = Duration::from_secs(secs);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    };
    at(3);
    nodes[0].kill();
    std::thread::sleep(Duration::from_secs(1));
    nodes[0].restart()?;
    at(6);
    writers[0].kill();
    std::thread::sleep(Duration::from_secs(1));
    writers[0].restart()?;
    at(9);
    cluster.kill(1);
    std::thread::sleep(Duration::from_secs(3));
    cluster.restart(1).map_err(|e| e.to_string())?;
    at(15);
    runtime.block_on(pg_admin(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false"
    )))?;
    runtime.block_on(pg_admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )))?;
    std::thread::sleep(OUTAGE);
    runtime.block_on(pg_admin(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
    )))?;
    let in_outage = started.elapsed();
    // Senders that cannot get a batch acknowledged within this give up.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut sent = Sent::default();
    for sender in senders {
        while !sender.is_finished() {
            if Instant::now() > deadline {
                stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let s = sender
            .join()
            .map_err(|_| "a sender panicked".to_string())??;
        sent.ids.extend(s.ids);
        sent.acknowledged.extend(s.acknowledged);
        sent.refused += s.refused;
    }
    let load_ended = started.elapsed();
    if load_ended < in_outage {
        return Err(
            "the load ended before the database came back: the case tested too little".into(),
        );
    }
    let drain_started = Instant::now();
    let count = || runtime.block_on(pg_count(url));
    let acknowledged = sent.acknowledged.len() as i64;
    while count()? < acknowledged {
        if drain_started.elapsed() > DRAIN {
            return Err(format!(
                "the writers stored {} of {acknowledged} acknowledged events within {} s",
                count()?,
                DRAIN.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let lag = drain_started.elapsed();
    let stored = runtime.block_on(pg_text(url, "SELECT CAST(event_id AS TEXT) FROM events"))?;
    let rows = stored.len();
    let ids: HashSet<uuid::Uuid> = stored
        .iter()
        .map(|id| uuid::Uuid::parse_str(id).map_err(|e| format!("event id {id:?}: {e}")))
        .collect::<Result<_>>()?;
    let duplicates = rows - ids.len();
    let lost = sent.acknowledged.difference(&ids).count();
    let foreign = ids.difference(&sent.ids).count();
    eprintln!(
        "faults: queue mode: {} events sent, {acknowledged} acknowledged ({} requests refused and resent), \
         {rows} stored, {duplicates} duplicates stored; writers drained in {:.1} s after the load",
        sent.ids.len(),
        sent.refused,
        lag.as_secs_f64()
    );
    if lost > 0 || duplicates > 0 || foreign > 0 {
        return Err(format!(
            "{lost} acknowledged events not stored, {duplicates} stored twice, {foreign} never sent"
        ));
    }
    if sent.acknowledged.len() != sent.ids.len() {
        return Err("not every event was acknowledged".into());
    }
    if sent.refused == 0 {
        return Err(
            "no request was refused: the faults reached no sender, the case tested too little"
                .into(),
        );
    }
    // Counted once by the rollups too (through a writer's admin API).
    let (status, body) = writers[1].get("/v1/admin/stats")?;
    let counted = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["totals"]["events"].as_i64());
    if status != 200 || counted != Some(rows as i64) {
        return Err(format!(
            "{rows} events stored but the rollups count {counted:?} ({status})"
        ));
    }
    for backend in nodes.iter_mut().chain(writers.iter_mut()) {
        backend.terminate()?;
    }
    Ok(())
}
