//! The backend's speed figures, measured in one run on this machine:
//! the HTTP ceiling (a no-op axum endpoint), single-event requests with
//! durable acknowledgement, 100-event batches, latency at half the maximum
//! rate, peak memory, and the stats query over a million stored events.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::Result;
use crate::load::{self, BodyFn};

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
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
const USERS: u64 = 1_000;

/// `xtask noop-server`: an axum endpoint that reads the body and answers
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

/// One `run` event of user `n % USERS`, appended to `out`: a fresh
/// time-ordered id, as the collector makes them, and the time of the
/// request. User, device and project ids look like real ones: random hex,
/// not a counter padded with zeros. Written piece by piece: the load
/// generator shares the machine with the backend, so its own work per
/// event is kept to a few hundred nanoseconds.
fn push_event(out: &mut String, n: u64, now_ms: u64, timestamp: &str) {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.push_str("{\"schema_version\":1,\"event_id\":\"");
    out.push_str(next_event_id(now_ms).hyphenated().encode_lower(&mut id));
    out.push_str("\",\"event_type\":\"run\",\"timestamp\":\"");
    out.push_str(timestamp);
    out.push_str("\",\"user_id\":\"");
    out.push_str(&IDS.users[(n % USERS) as usize]);
    out.push_str("\",\"device_id\":\"");
    out.push_str(&IDS.devices[(n % USERS) as usize]);
    out.push_str(
        "\",\"platform\":{\"os\":\"linux\",\"arch\":\"x86_64\",\"os_version\":\"6.1.0\"},\
         \"runtime\":{\"name\":\"python\",\"version\":\"3.11.7\"},\"app_version\":\"0.2.0\",\"initial_version\":\"0.1.0\",\
         \"ci\":null,\"project\":{\"project_id\":\"",
    );
    out.push_str(&IDS.projects[(n % (USERS * 2)) as usize]);
    out.push_str(
        "\",\"datasource_type\":\"postgres\"},\
         \"stats\":{\"tables\":12,\"columns\":140,\"rows\":250000,\"builtin_assertions\":40,\"custom_assertions\":3,\
         \"passed_assertions\":41,\"failed_assertions\":2},\"outcome\":{\"status\":\"ok\",\"duration_ms\":2300}}",
    );
}

/// A UUIDv7 of `now_ms` whose random bits are a process-wide counter
/// through splitmix64, all 64 of them: unique in the run, and spread like
/// the random bits of `Uuid::now_v7`, which costs ten times as much.
fn next_event_id(now_ms: u64) -> uuid::Uuid {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let h = splitmix64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    // The builder keeps 12 bits of the first two bytes and 62 of the last
    // eight: the top 12 bits of `h` go to the former, the other 52 to the
    // latter's low bits.
    let mut bits = [0u8; 10];
    bits[..2].copy_from_slice(&((h >> 52) as u16).to_be_bytes());
    bits[2..].copy_from_slice(&(h & ((1 << 52) - 1)).to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(now_ms, &bits).into_uuid()
}

/// A request body of `events` events of user `n % USERS`, stamped now.
pub(crate) fn body(n: u64, events: usize) -> String {
    let now = chrono::Utc::now();
    let timestamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let mut out = String::with_capacity(16 + events * 900);
    out.push_str("{\"events\":[");
    for i in 0..events {
        if i > 0 {
            out.push(',');
        }
        push_event(&mut out, n, now_ms, &timestamp);
    }
    out.push_str("]}");
    out
}

/// The ids of the bench's users, their devices and projects, made once.
struct Ids {
    users: Vec<String>,
    devices: Vec<String>,
    projects: Vec<String>,
}

static IDS: std::sync::LazyLock<Ids> = std::sync::LazyLock::new(|| Ids {
    users: (0..USERS).map(|n| random_hex(1, n, 2)).collect(),
    devices: (0..USERS).map(|n| random_hex(2, n, 4)).collect(),
    projects: (0..USERS * 2).map(|n| random_hex(3, n, 2)).collect(),
});

/// A bijection of 64-bit words whose outputs look random (splitmix64).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `words` 64-bit words of hex, the same for the same `kind` and `n`.
fn random_hex(kind: u64, n: u64, words: u64) -> String {
    (0..words)
        .map(|w| format!("{:016x}", splitmix64(kind << 56 ^ n << 8 ^ w)))
        .collect()
}

fn single() -> BodyFn {
    Arc::new(|n| body(n, 1))
}

/// A CLI flushing its spool: 100 events of one user (`n`).
fn batch100() -> BodyFn {
    Arc::new(|n| body(n, 100))
}

fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

/// A release `piperider-ingest` process on its own database.
struct Backend {
    child: Process,
    addr: SocketAddr,
}

impl Backend {
    fn start(database_url: &str) -> Result<Backend> {
        let addr = free_port()?;
        let child = Command::new(crate::binary("release", "piperider-ingest"))
            .args([
                "--listen",
                &addr.to_string(),
                "--database-url",
                database_url,
                "--rate-limit-ip",
                "0",
                "--rate-limit-user",
                "0",
            ])
            .args(["--admin-token", ADMIN_TOKEN])
            .env("PIPERIDER_INGEST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting piperider-ingest: {e}"))?;
        let backend = Backend {
            child: Process(child),
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("piperider-ingest did not start listening within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(backend)
    }

    /// Peak resident memory so far, in MB (Linux).
    fn peak_rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn postgres_reachable() -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], 5432)),
        Duration::from_secs(2),
    )
    .is_ok()
}

async fn pg_admin(sql: &str) -> Result {
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
    let work = std::env::temp_dir().join(format!("piperider-bench-backend-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let result = runtime.block_on(measure(phase, &work));
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

async fn measure(phase: Duration, work: &Path) -> Result<Map<String, Value>> {
    let mut report = Map::new();

    // SQLite: one backend process for all its phases, so the stats query
    // runs over what the others stored too.
    let mut noop_rps = None;
    if wanted("single") || wanted("latency") || wanted("batch") || wanted("stats") {
        let db: PathBuf = work.join("bench.db");
        let backend = Backend::start(&format!("sqlite:{}", db.display()))?;
        if wanted("single") || wanted("latency") {
            let (n, single_rps) = single_rounds(&backend, phase, &mut report).await?;
            noop_rps = Some(n);
            if wanted("latency") {
                latency(&backend, single_rps, phase, &mut report).await;
            }
        }
        if wanted("batch") {
            let batch_rps = phase_rps(
                backend.addr,
                "batch100 sqlite",
                BATCH_CONNECTIONS,
                phase,
                batch100(),
            )
            .await?;
            report.insert(
                "batch100_events_per_s_sqlite".into(),
                json!(round(batch_rps * 100.0, 0)),
            );
        }
        if wanted("stats") {
            stats_query(&backend, &mut report).await?;
        }
        let rss = backend
            .peak_rss_mb()
            .ok_or("cannot read the backend's memory use")?;
        report.insert("peak_rss_mb".into(), json!(round(rss, 1)));
    }

    // PostgreSQL, when a server answers.
    if !wanted("postgres") {
        return Ok(report);
    }
    if postgres_reachable() {
        let name = format!("piperider_bench_{}", std::process::id());
        pg_admin(&format!("DROP DATABASE IF EXISTS {name}")).await?;
        pg_admin(&format!("CREATE DATABASE {name}")).await?;
        let result = async {
            let backend = Backend::start(&format!("postgres://postgres@127.0.0.1:5432/{name}"))?;
            let single_rps = best_rps(backend.addr, "single postgres", phase).await?;
            let batch_rps = phase_rps(
                backend.addr,
                "batch100 postgres",
                BATCH_CONNECTIONS,
                phase,
                batch100(),
            )
            .await?;
            Ok::<_, String>((single_rps, batch_rps))
        }
        .await;
        pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        let (single_rps, batch_rps) = result?;
        report.insert(
            "single_event_rps_postgres".into(),
            json!(round(single_rps, 0)),
        );
        if let Some(noop_rps) = noop_rps {
            report.insert(
                "single_event_ratio_postgres".into(),
                json!(round(single_rps / noop_rps, 3)),
            );
        }
        report.insert(
            "batch100_events_per_s_postgres".into(),
            json!(round(batch_rps * 100.0, 0)),
        );
    } else {
        eprintln!("xtask: bench: SKIPPED PostgreSQL (nothing answers on 127.0.0.1:5432)");
        report.insert("postgres".into(), json!("skipped: not reachable"));
    }
    Ok(report)
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
    let noop_rps = crate::bench::median(noops);
    let single_rps = crate::bench::median(singles);
    report.insert("noop_rps".into(), json!(round(noop_rps, 0)));
    report.insert(
        "single_event_rps_sqlite".into(),
        json!(round(single_rps, 0)),
    );
    report.insert(
        "single_event_ratio_sqlite".into(),
        json!(round(crate::bench::median(ratios), 3)),
    );
    Ok((noop_rps, single_rps))
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
        "xtask: bench latency at {:.0} requests/s: p50 {:.2} ms, p99 {:.2} ms",
        half.rps(),
        half.percentile_ms(0.5),
        half.percentile_ms(0.99)
    );
    report.insert("p50_ms".into(), json!(round(half.percentile_ms(0.5), 3)));
    report.insert("p99_ms".into(), json!(round(half.percentile_ms(0.99), 3)));
}

/// A million stored events, then the dashboard's query.
async fn stats_query(backend: &Backend, report: &mut Map<String, Value>) -> Result {
    let stored = stored_events(backend.addr).await?;
    if stored < 1_000_000 {
        let needed = (1_000_000 - stored).div_ceil(100);
        fill(backend.addr, needed).await?;
    }
    let stored = stored_events(backend.addr).await?;
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let (status, _) = load::get(backend.addr, "/v1/admin/stats", Some(ADMIN_TOKEN))
            .await
            .ok_or("stats query failed")?;
        if status != 200 {
            return Err(format!("GET /v1/admin/stats answered {status}"));
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let stats_ms = crate::bench::median(times);
    eprintln!("xtask: bench stats query over {stored} events: {stats_ms:.1} ms");
    report.insert("stats_query_ms".into(), json!(round(stats_ms, 2)));
    report.insert("stats_query_events".into(), json!(stored));
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

/// `xtask noop-server` in its own process.
struct NoopServer {
    _process: Process,
    addr: SocketAddr,
}

impl NoopServer {
    fn start() -> Result<NoopServer> {
        let mut child = Command::new(crate::binary("release", "xtask"))
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
            _process: Process(child),
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
        "xtask: bench {name}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} failures)",
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
            eprintln!("xtask: bench {name}: {line}");
        }
    }
    Ok(o.rps())
}

async fn stored_events(addr: SocketAddr) -> Result<u64> {
    let (status, body) = load::get(addr, "/v1/admin/stats", Some(ADMIN_TOKEN))
        .await
        .ok_or("stats query failed")?;
    if status != 200 {
        return Err(format!("GET /v1/admin/stats answered {status}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    v["totals"]["events"]
        .as_u64()
        .ok_or_else(|| "stats without totals.events".to_string())
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
        "xtask: bench filled {} events in {:.1} s",
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
        "single_event_rps_postgres",
        "single_event_ratio_postgres",
        "batch100_events_per_s_sqlite",
        "batch100_events_per_s_postgres",
        "p50_ms",
        "p99_ms",
        "peak_rss_mb",
        "stats_query_ms",
    ] {
        if let Some(v) = report.get(key) {
            println!("{key:<34} {v:>12}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_event_ids_are_unique_v7_and_parse() {
        let ids: std::collections::HashSet<uuid::Uuid> = (0..100_000)
            .map(|_| next_event_id(1_764_511_200_000))
            .collect();
        assert_eq!(ids.len(), 100_000);
        let id = ids.iter().next().unwrap();
        assert_eq!(id.get_version_num(), 7);
        let body = body(3, 2);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
        assert_eq!(v["events"][0]["user_id"], IDS.users[3]);
    }
}
