//! The backend's speed figures, measured in one run on this machine:
//! the HTTP ceiling (a no-op axum endpoint), single-event requests with
//! durable acknowledgement, 100-event batches, latency at half the maximum
//! rate, peak memory, and the stats query over a million stored events.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::events::body;
use crate::launcher::{Backend, Log, Process};
use crate::load::{self, BodyFn};
use crate::{Result, median, round};
/// Connections of the latency phase.
const CONNECTIONS: usize = 64;
/// The no-op endpoint and single-event requests are each measured at these
/// many connections, and each keeps its best rate: its capacity. The no-op
/// endpoint peaks at either (it is bound by CPU), while a durable request
/// waits for a disk sync, so its capacity shows only with more requests in
/// flight, as a service reached by many CLIs at once has.
const SWEEP: [usize; 2] = [64, 256];
/// Alternating rounds of the no-op and single-event measurements.
const ROUNDS: usize = 3;
const BATCH_CONNECTIONS: usize = 16;
/// Requests a second at which the CPU time of one request is measured:
/// well under either endpoint's capacity here, the same for both, so that
/// the figure does not move with how saturated the machine was.
const COST_RATE: f64 = 8_000.0;

/// `piperider-bench noop-server`: an axum endpoint that reads the body and answers
/// 200 with a fixed JSON body. Prints its address on stdout.
pub(crate) fn noop_server() -> Result {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        println!("{}", listener.local_addr().map_err(|e| e.to_string())?);
        let app = axum::Router::new().route(
            "/v1/batch",
            axum::routing::post(|body: axum::body::Bytes| async move {
                let _ = body.len();
                axum::Json(json!({"results": []}))
            }),
        );
        axum::serve(listener, app).await.map_err(|e| e.to_string())
    })
}

fn single() -> BodyFn {
    Arc::new(|n| body(n, 1))
}

/// A CLI flushing its spool: 100 events of one user (`n`).
fn batch100() -> BodyFn {
    Arc::new(|n| body(n, 100))
}

pub(crate) fn postgres_reachable() -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], 5432)),
        Duration::from_secs(2),
    )
    .is_ok()
}

pub(crate) async fn pg_admin(sql: &str) -> Result {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .map_err(|e| format!("{sql}: {e}"))?;
    conn.close().await.map_err(|e| e.to_string())
}

pub(crate) fn run(quick: bool) -> Result<Map<String, Value>> {
    let phase = Duration::from_secs(if quick { 3 } else { 6 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let work = crate::work_dir("bench-backend")?;
    let result = runtime.block_on(measure(phase, &work, quick));
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// `PIPERIDER_BENCH_ONLY=single,batch` runs only the named phases (for
/// investigating one figure; the report then lacks the others).
fn wanted(name: &str) -> bool {
    match std::env::var("PIPERIDER_BENCH_ONLY") {
        Ok(only) => only.split(',').any(|p| p.trim() == name),
        Err(_) => true,
    }
}

/// The backend's peak memory in each phase, reset between phases.
#[derive(Default)]
struct PhaseMemory(Map<String, Value>);

impl PhaseMemory {
    fn start(&self, backend: &Backend) -> Result {
        backend.reset_peak_rss()
    }

    fn end(&mut self, backend: &Backend, phase: &str) -> Result {
        let rss = backend
            .peak_rss_mb()
            .ok_or("cannot read the backend's memory use")?;
        eprintln!("bench {phase}: the backend's peak RSS {rss:.1} MB");
        self.0.insert(phase.into(), json!(round(rss, 1)));
        Ok(())
    }

    /// `peak_rss_mb` (the highest of every phase) and `peak_rss_mb_by_phase`.
    fn report(self, report: &mut Map<String, Value>) {
        let most = self
            .0
            .values()
            .filter_map(Value::as_f64)
            .fold(0.0, f64::max);
        if !self.0.is_empty() {
            report.insert("peak_rss_mb".into(), json!(most));
            report.insert("peak_rss_mb_by_phase".into(), Value::Object(self.0));
        }
    }
}

async fn measure(phase: Duration, work: &Path, quick: bool) -> Result<Map<String, Value>> {
    let mut report = Map::new();
    let mut memory = PhaseMemory::default();

    // SQLite: one backend process for all its phases, so the stats query
    // runs over what the others stored too.
    if wanted("single") || wanted("cost") || wanted("latency") || wanted("batch") || wanted("stats")
    {
        let db: PathBuf = work.join("bench.db");
        let backend = Backend::start(&format!("sqlite:{}", db.display()), Log::Warnings)?;
        if wanted("single") || wanted("latency") {
            memory.start(&backend)?;
            let (_, single_rps) = single_rounds(&backend, phase, &mut report).await?;
            memory.end(&backend, "sqlite_single")?;
            if wanted("latency") {
                memory.start(&backend)?;
                latency(&backend, single_rps, phase, &mut report).await;
                memory.end(&backend, "sqlite_latency")?;
            }
        }
        if wanted("cost") {
            cost(&backend, phase, &mut report).await?;
        }
        if wanted("batch") {
            memory.start(&backend)?;
            let batch_rps = phase_rps(
                backend.addr,
                "batch100 sqlite",
                BATCH_CONNECTIONS,
                phase,
                batch100(),
            )
            .await?;
            memory.end(&backend, "sqlite_batch100")?;
            let events_per_s = batch_rps * 100.0;
            let ceiling = crate::ceilings::sqlite(&db, work, phase)?;
            report.insert(
                "batch100_events_per_s_sqlite".into(),
                json!(round(events_per_s, 0)),
            );
            report.insert("ceiling_sqlite_rows_per_s".into(), json!(round(ceiling, 0)));
            report.insert(
                "batch100_ratio_sqlite".into(),
                json!(round(events_per_s / ceiling, 3)),
            );
        }
        if wanted("stats") {
            memory.start(&backend)?;
            stats_query(&backend, &mut report).await?;
            memory.end(&backend, "sqlite_stats")?;
        }
    }

    if wanted("dashboard") {
        crate::dashboard::run(&mut report, quick).await?;
    }

    if wanted("hostile") {
        hostile(work, phase, &mut report).await?;
    }

    // PostgreSQL, when a server answers.
    if wanted("postgres") && postgres_reachable() {
        let name = format!("piperider_bench_{}", std::process::id());
        pg_admin(&format!("DROP DATABASE IF EXISTS {name}")).await?;
        pg_admin(&format!("CREATE DATABASE {name}")).await?;
        let result = async {
            let backend = Backend::start(
                &format!("postgres://postgres@127.0.0.1:5432/{name}"),
                Log::Warnings,
            )?;
            memory.start(&backend)?;
            let single_rps = best_rps(backend.addr, "single postgres", phase).await?;
            memory.end(&backend, "postgres_single")?;
            memory.start(&backend)?;
            let batch_rps = phase_rps(
                backend.addr,
                "batch100 postgres",
                BATCH_CONNECTIONS,
                phase,
                batch100(),
            )
            .await?;
            memory.end(&backend, "postgres_batch100")?;
            drop(backend);
            let (ceiling_single, ceiling_bulk) =
                crate::ceilings::postgres(&name, work, phase).await?;
            Ok::<_, String>((single_rps, batch_rps * 100.0, ceiling_single, ceiling_bulk))
        }
        .await;
        pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        let (single_rps, batch_events, ceiling_single, ceiling_bulk) = result?;
        report.insert(
            "single_event_rps_postgres".into(),
            json!(round(single_rps, 0)),
        );
        report.insert(
            "ceiling_postgres_single_rows_per_s".into(),
            json!(round(ceiling_single, 0)),
        );
        report.insert(
            "single_event_ratio_postgres".into(),
            json!(round(single_rps / ceiling_single, 3)),
        );
        report.insert(
            "batch100_events_per_s_postgres".into(),
            json!(round(batch_events, 0)),
        );
        report.insert(
            "ceiling_postgres_bulk_rows_per_s".into(),
            json!(round(ceiling_bulk, 0)),
        );
        report.insert(
            "batch100_ratio_postgres".into(),
            json!(round(batch_events / ceiling_bulk, 3)),
        );
    } else if wanted("postgres") {
        eprintln!("bench: SKIPPED PostgreSQL (nothing answers on 127.0.0.1:5432)");
        report.insert("postgres".into(), json!("skipped: not reachable"));
    }
    if wanted("queue") {
        if postgres_reachable() && piperider_testkit::nats::installed() {
            let (events_per_s, lag) = queue_phase(work, phase).await?;
            report.insert("queue_events_per_s".into(), json!(round(events_per_s, 0)));
            report.insert("queue_writer_lag_s".into(), json!(round(lag, 2)));
            // End to end: the phase's events over the time until all were stored.
            let secs = phase.as_secs_f64();
            report.insert(
                "queue_stored_events_per_s".into(),
                json!(round(events_per_s * secs / (secs + lag), 0)),
            );
        } else {
            eprintln!("bench: SKIPPED the queue path (it needs PostgreSQL and nats-server)");
            report.insert(
                "queue".into(),
                json!("skipped: no PostgreSQL or nats-server"),
            );
        }
    }
    memory.report(&mut report);
    Ok(report)
}

/// The queue path: 100-event batches through two nodes, a three-server
/// JetStream cluster and two writers into PostgreSQL, all on this
/// machine. Returns the events acknowledged per second, and how long the
/// writers took to store them all once the load stopped.
async fn queue_phase(work: &std::path::Path, phase: Duration) -> Result<(f64, f64)> {
    let name = format!("piperider_bench_queue_{}", std::process::id());
    pg_admin(&format!("DROP DATABASE IF EXISTS {name}")).await?;
    pg_admin(&format!("CREATE DATABASE {name}")).await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let result = async {
        let cluster = piperider_testkit::nats::Cluster::start(3, &work.join("nats"))
            .map_err(|e| format!("starting nats-server: {e}"))?;
        let queue = cluster.urls().join(",");
        let writer = ["--queue", queue.as_str(), "--role", "writer"];
        let node = ["--queue", queue.as_str()];
        let _writers = [
            Backend::start_with(&url, Log::Warnings, &writer)?,
            Backend::start_with(&url, Log::Warnings, &writer)?,
        ];
        let nodes = [
            Backend::start_with(&url, Log::Warnings, &node)?,
            Backend::start_with(&url, Log::Warnings, &node)?,
        ];
        // The stream made and its leader elected: one batch answered.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut warm_up = 0;
        while warm_up == 0 {
            if std::time::Instant::now() > deadline {
                return Err("the queue's stream took no batch within 30 s".to_string());
            }
            let o = load::run(nodes[0].addr, "/v1/batch", 1, Duration::from_millis(200), None, batch100()).await;
            warm_up = o.requests;
        }
        let half = BATCH_CONNECTIONS.div_ceil(2);
        let (a, b) = tokio::join!(
            load::run(nodes[0].addr, "/v1/batch", half, phase, None, batch100()),
            load::run(nodes[1].addr, "/v1/batch", half, phase, None, batch100()),
        );
        let stopped = std::time::Instant::now();
        let elapsed = a.elapsed.max(b.elapsed).as_secs_f64();
        let events_per_s = (a.requests + b.requests) as f64 * 100.0 / elapsed;
        eprintln!(
            "bench queue: {events_per_s:.0} events/s through two nodes ({} failures), p50 {:.2} ms, p99 {:.2} ms",
            a.failures + b.failures,
            a.percentile_ms(0.5).max(b.percentile_ms(0.5)),
            a.percentile_ms(0.99).max(b.percentile_ms(0.99)),
        );
        // Every acknowledged event stored, the warm-up's too.
        let acknowledged = ((warm_up + a.requests + b.requests) * 100) as i64;
        loop {
            let stored = crate::queue_faults::pg_count(&url).await?;
            if stored >= acknowledged {
                break;
            }
            if stopped.elapsed() > Duration::from_secs(300) {
                return Err(format!(
                    "the writers stored {stored} of {acknowledged} events within 300 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lag = stopped.elapsed().as_secs_f64();
        eprintln!("bench queue: the writers stored everything {lag:.2} s after the load stopped");
        Ok::<_, String>((events_per_s, lag))
    }
    .await;
    pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    result
}

/// The ceiling, a no-op axum endpoint in its own process like the
/// backend, and single-event requests to the backend on SQLite, measured in
/// turns: this machine's speed drifts from minute to minute, so each round
/// gives a ratio of two neighbouring measurements, and the report keeps the
/// medians. Returns the no-op and single-event rates.
async fn single_rounds(
    backend: &Backend,
    phase: Duration,
    report: &mut Map<String, Value>,
) -> Result<(f64, f64)> {
    let noop = NoopServer::start()?;
    let (mut noops, mut singles, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let n = best_rps(noop.addr, &format!("noop, round {round},"), phase).await?;
        let s = best_rps(
            backend.addr,
            &format!("single sqlite, round {round},"),
            phase,
        )
        .await?;
        noops.push(n);
        singles.push(s);
        ratios.push(s / n);
    }
    let noop_rps = median(noops);
    let single_rps = median(singles);
    report.insert("noop_rps".into(), json!(round(noop_rps, 0)));
    report.insert(
        "single_event_rps_sqlite".into(),
        json!(round(single_rps, 0)),
    );
    report.insert(
        "single_event_ratio_sqlite".into(),
        json!(round(median(ratios), 3)),
    );
    Ok((noop_rps, single_rps))
}

/// The CPU time of one single-event request, for the no-op endpoint and
/// the backend on SQLite, at [`COST_RATE`] requests a second.
async fn cost(backend: &Backend, phase: Duration, report: &mut Map<String, Value>) -> Result {
    let noop = NoopServer::start()?;
    let noop_us = cpu_us_per_request(noop.addr, noop.process.0.id(), phase).await?;
    let single_us = cpu_us_per_request(
        backend.addr,
        backend.pid().ok_or("the backend is not running")?,
        phase,
    )
    .await?;
    eprintln!(
        "bench CPU per request at {COST_RATE} requests/s: no-op {noop_us:.1} µs, single sqlite {single_us:.1} µs"
    );
    report.insert("noop_cpu_us".into(), json!(round(noop_us, 1)));
    report.insert(
        "single_event_cpu_us_sqlite".into(),
        json!(round(single_us, 1)),
    );
    Ok(())
}

/// The CPU time process `pid` (serving `addr`) takes per single-event
/// request at [`COST_RATE`], in microseconds: a steadier figure than a
/// capacity on a shared machine, for telling two builds apart.
async fn cpu_us_per_request(addr: SocketAddr, pid: u32, phase: Duration) -> Result<f64> {
    let cpu = || crate::launcher::process_cpu_s(pid).ok_or("cannot read a server's CPU time");
    let before = cpu()?;
    let o = load::run(
        addr,
        "/v1/batch",
        CONNECTIONS,
        phase,
        Some(COST_RATE),
        single(),
    )
    .await;
    let used = cpu()? - before;
    if o.requests == 0 {
        return Err("no request succeeded while measuring CPU per request".into());
    }
    Ok(used / o.requests as f64 * 1e6)
}

/// Latency of single-event requests at half their measured capacity.
async fn latency(
    backend: &Backend,
    single_rps: f64,
    phase: Duration,
    report: &mut Map<String, Value>,
) {
    let half = load::run(
        backend.addr,
        "/v1/batch",
        CONNECTIONS,
        phase,
        Some(single_rps / 2.0),
        single(),
    )
    .await;
    eprintln!(
        "bench latency at {:.0} requests/s: p50 {:.2} ms, p99 {:.2} ms",
        half.rps(),
        half.percentile_ms(0.5),
        half.percentile_ms(0.99)
    );
    report.insert("p50_ms".into(), json!(round(half.percentile_ms(0.5), 3)));
    report.insert("p99_ms".into(), json!(round(half.percentile_ms(0.99), 3)));
}

/// A million stored events, then the dashboard's query.
async fn stats_query(backend: &Backend, report: &mut Map<String, Value>) -> Result {
    let stored = backend.rolled_up()?;
    if stored < 1_000_000 {
        let needed = (1_000_000 - stored).div_ceil(100);
        fill(backend.addr, needed).await?;
    }
    let stored = backend.rolled_up()?;
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let (status, _) = load::get(backend.addr, "/v1/admin/stats", Some(&backend.token))
            .await
            .ok_or("stats query failed")?;
        if status != 200 {
            return Err(format!("GET /v1/admin/stats answered {status}"));
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let stats_ms = median(times);
    eprintln!("bench stats query over {stored} events: {stats_ms:.1} ms");
    report.insert("stats_query_ms".into(), json!(round(stats_ms, 2)));
    report.insert("stats_query_events".into(), json!(stored));
    Ok(())
}

/// Clients sending hostile bodies at once: twice the 32 the figure's
/// definition names, the count the hostile-input acceptance names.
const HOSTILE_CLIENTS: usize = 64;

/// A backend of its own on SQLite under [`HOSTILE_CLIENTS`] clients
/// sending the worst bodies the limits allow
/// ([`crate::events::hostile_bodies`]), beside 16 connections of ordinary
/// single-event requests: its peak memory, the share of the ordinary
/// requests that succeeded, and their rate.
async fn hostile(work: &Path, phase: Duration, report: &mut Map<String, Value>) -> Result {
    let db = work.join("hostile.db");
    let backend = Backend::start(&format!("sqlite:{}", db.display()), Log::Warnings)?;
    let bodies = Arc::new(crate::events::hostile_bodies());
    let flood = tokio::spawn(load::flood(backend.addr, HOSTILE_CLIENTS, phase, bodies));
    let ordinary = load::run(backend.addr, "/v1/batch", 16, phase, None, single()).await;
    let hostile = flood.await.map_err(|e| e.to_string())?;
    let attempted = ordinary.requests + ordinary.failures;
    let success = ordinary.requests as f64 / attempted.max(1) as f64;
    let rss = backend
        .peak_rss_mb()
        .ok_or("cannot read the backend's memory use")?;
    eprintln!(
        "bench hostile: {hostile} hostile bodies answered, {} of {attempted} ordinary requests succeeded, peak RSS {rss:.1} MB",
        ordinary.requests
    );
    report.insert("hostile_peak_rss_mb".into(), json!(round(rss, 1)));
    report.insert("hostile_ordinary_success".into(), json!(round(success, 4)));
    report.insert(
        "hostile_ordinary_rps".into(),
        json!(round(ordinary.rps(), 0)),
    );
    Ok(())
}

/// The best rate of single-event requests to `addr` over [`SWEEP`].
async fn best_rps(addr: SocketAddr, name: &str, phase: Duration) -> Result<f64> {
    let mut best: f64 = 0.0;
    for connections in SWEEP {
        let name = format!("{name} {connections} connections");
        best = best.max(phase_rps(addr, &name, connections, phase, single()).await?);
    }
    Ok(best)
}

/// `piperider-bench noop-server` in its own process.
struct NoopServer {
    process: Process,
    addr: SocketAddr,
}

impl NoopServer {
    fn start() -> Result<NoopServer> {
        let mut child = Command::new(crate::binary("piperider-bench"))
            .arg("noop-server")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the no-op server: {e}"))?;
        let mut line = String::new();
        let out = child.stdout.take().ok_or("no stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .parse()
            .map_err(|e| format!("no-op server address {line:?}: {e}"))?;
        Ok(NoopServer {
            process: Process(child),
            addr,
        })
    }
}

async fn phase_rps(
    addr: SocketAddr,
    name: &str,
    connections: usize,
    phase: Duration,
    body: BodyFn,
) -> Result<f64> {
    let o = load::run(addr, "/v1/batch", connections, phase, None, body).await;
    eprintln!(
        "bench {name}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} failures)",
        o.rps(),
        o.percentile_ms(0.5),
        o.percentile_ms(0.99),
        o.failures
    );
    if o.requests == 0 {
        return Err(format!("bench {name}: no request succeeded"));
    }
    // `PIPERIDER_BENCH_METRICS=1`: the backend's group-commit figures so far.
    if std::env::var_os("PIPERIDER_BENCH_METRICS").is_some()
        && let Some((_, metrics)) = load::get(addr, "/metrics", None).await
    {
        for line in metrics.lines().filter(|l| {
            l.starts_with("piperider_ingest_commit") && (l.contains("_sum") || l.contains("_count"))
        }) {
            eprintln!("bench {name}: {line}");
        }
    }
    Ok(o.rps())
}

/// Sends `batches` 100-event batches as fast as the backend takes them.
async fn fill(addr: SocketAddr, batches: u64) -> Result {
    let started = Instant::now();
    let mut sent = 0;
    while sent < batches {
        let o = load::run(
            addr,
            "/v1/batch",
            BATCH_CONNECTIONS,
            Duration::from_secs(2),
            None,
            batch100(),
        )
        .await;
        sent += o.requests;
        if o.requests == 0 {
            return Err("filling the database: no batch succeeded".into());
        }
    }
    eprintln!(
        "bench filled {} events in {:.1} s",
        sent * 100,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn print(report: &Map<String, Value>) {
    for key in [
        "noop_rps",
        "single_event_rps_sqlite",
        "single_event_ratio_sqlite",
        "noop_cpu_us",
        "single_event_cpu_us_sqlite",
        "ceiling_postgres_single_rows_per_s",
        "single_event_rps_postgres",
        "single_event_ratio_postgres",
        "ceiling_sqlite_rows_per_s",
        "batch100_events_per_s_sqlite",
        "batch100_ratio_sqlite",
        "ceiling_postgres_bulk_rows_per_s",
        "batch100_events_per_s_postgres",
        "batch100_ratio_postgres",
        "queue_events_per_s",
        "queue_writer_lag_s",
        "queue_stored_events_per_s",
        "p50_ms",
        "p99_ms",
        "peak_rss_mb",
        "peak_rss_mb_by_phase",
        "stats_query_ms",
        "hostile_peak_rss_mb",
        "hostile_ordinary_success",
        "hostile_ordinary_rps",
    ] {
        if let Some(v) = report.get(key) {
            println!("{key:<34} {v:>12}");
        }
    }
}
