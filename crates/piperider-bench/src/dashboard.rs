//! The dashboard at a million users: a data set of one million users and
//! ten million events over a year, built once through the service's own
//! ingest path and kept under `<target dir>/bench/dashboard/` for later
//! runs, then every chart of the dashboard timed for a 30-day and a
//! 365-day range (`stats_query_ms_1m_users`), and the page itself
//! (`dashboard_render_ms`).
//!
//! The data is long-tailed as real telemetry is: a user's number of
//! events follows a Pareto law (most users run a command or two, a few
//! run thousands), new users arrive faster as the year goes on, activity
//! fades after a user's first day, releases come every four weeks and
//! users upgrade with a lag, countries follow a Zipf law (the events come
//! through a trusted proxy from addresses a generated GeoIP database
//! places in 60 countries), 15% of users are CI runners, and each day's
//! events arrive in the order of their times.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{NaiveDate, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::launcher::{Backend, Log};
use crate::{Result, median, round};

const USERS: u32 = 1_000_000;
const EVENTS: u64 = 10_000_000;
const DAYS: i64 = 365;
/// Changes whenever the data set's recipe does (a kept one is rebuilt).
const RECIPE: u32 = 3;
const CONNECTIONS: usize = 32;

const COUNTRIES: [&str; 60] = [
    "US", "CN", "DE", "GB", "IN", "FR", "JP", "BR", "CA", "KR", "TW", "NL", "AU", "SG", "ES", "IT",
    "SE", "PL", "CH", "RU", "ID", "VN", "TR", "IL", "MX", "AR", "BE", "AT", "DK", "FI", "NO", "IE",
    "PT", "CZ", "UA", "RO", "HU", "GR", "NZ", "ZA", "TH", "MY", "PH", "HK", "CL", "CO", "PE", "EG",
    "NG", "KE", "PK", "BD", "SA", "AE", "IR", "LT", "LV", "EE", "SK", "SI",
];
const DATASOURCES: [&str; 10] = [
    "snowflake",
    "postgres",
    "bigquery",
    "sqlite",
    "duckdb",
    "redshift",
    "databricks",
    "csv",
    "parquet",
    "mysql",
];

/// splitmix64: the data set is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Zipf-like index below `n` (exponent about 1).
    fn zipf(&mut self, n: usize) -> usize {
        let x = (n as f64 + 1.0).powf(self.unit()) - 1.0;
        (x as usize).min(n - 1)
    }
}

/// What a user is, fixed for the year.
struct Person {
    first_day: u16,
    events: u32,
    os: u8,
    country: u8,
    ci: bool,
    lag: u8,
    projects: u8,
    datasource: [u8; 2],
}

fn people(rng: &mut Rng) -> Vec<Person> {
    // Pareto weights (alpha 1.3), scaled to EVENTS in all.
    let weights: Vec<f64> = (0..USERS)
        .map(|_| rng.unit().powf(-1.0 / 1.3).min(20_000.0))
        .collect();
    let sum: f64 = weights.iter().sum();
    weights
        .into_iter()
        .map(|w| Person {
            first_day: (DAYS as f64 * rng.unit().sqrt()).min(DAYS as f64 - 1.0) as u16,
            events: ((w * EVENTS as f64 / sum).round() as u32).max(1),
            os: match rng.below(100) {
                0..55 => 0,
                55..90 => 1,
                _ => 2,
            },
            country: rng.zipf(COUNTRIES.len()) as u8,
            ci: rng.below(100) < 15,
            lag: (-14.0 * rng.unit().ln()).min(120.0) as u8,
            projects: if rng.below(4) == 0 { 2 } else { 1 },
            datasource: [
                rng.zipf(DATASOURCES.len()) as u8,
                rng.zipf(DATASOURCES.len()) as u8,
            ],
        })
        .collect()
}

/// Every event as `day << 32 | user`, in day order; at most [`EVENTS`].
fn schedule(rng: &mut Rng, people: &[Person]) -> Vec<u64> {
    let mut all = Vec::with_capacity(EVENTS as usize + people.len());
    for (u, p) in people.iter().enumerate() {
        let left = (DAYS - 1 - i64::from(p.first_day)) as f64;
        all.push(u64::from(p.first_day) << 32 | u as u64);
        for _ in 1..p.events {
            // Activity fades after the first day.
            let day = i64::from(p.first_day) + (left * rng.unit().powi(3)) as i64;
            all.push((day as u64) << 32 | u as u64);
        }
    }
    all.truncate(EVENTS as usize);
    all.sort_unstable();
    all
}

fn version(day: i64) -> String {
    format!("0.{}.0", 10 + day.max(0) / 28)
}

fn hex_id(prefix: u64, n: u64) -> String {
    format!("{prefix:016x}{n:016x}")
}

/// The JSON of one event of user `u` on `day`, at `ms` (Unix milliseconds).
fn event(rng: &mut Rng, people: &[Person], u: usize, day: i64, ms: i64) -> String {
    let p = &people[u];
    let first = i64::from(p.first_day);
    let command = if day == first && rng.below(3) > 0 {
        "init"
    } else {
        match rng.below(10) {
            0..6 => "run",
            6..8 => "generate-report",
            _ => "generate-assertions",
        }
    };
    let app = version(day - i64::from(p.lag)).max(version(first - i64::from(p.lag)));
    let initial = version(first - i64::from(p.lag));
    // One release fails more often than the others.
    let failing = if app == "0.17.0" { 12 } else { 4 };
    let status = if rng.below(100) < failing {
        "error"
    } else {
        "ok"
    };
    let median_ms = match command {
        "run" => 40_000.0,
        "generate-report" => 3_000.0,
        "init" => 800.0,
        _ => 8_000.0,
    };
    let normal = (-2.0 * rng.unit().ln()).sqrt() * (std::f64::consts::TAU * rng.unit()).cos();
    let duration = (median_ms * (0.8 * normal).exp()).min(6.0e8) as u64;
    let project = rng.below(u64::from(p.projects));
    let datasource = DATASOURCES[usize::from(p.datasource[project as usize])];
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    // A version 7 id made at the event's time, as the collector makes it.
    let random = (u128::from(rng.next()) << 64 | u128::from(rng.next())).to_le_bytes();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&random[..10]);
    let id = uuid::Builder::from_unix_timestamp_millis(ms as u64, &tail).into_uuid();
    let tables = 1 + rng.below(40);
    format!(
        r#"{{"schema_version":1,"event_id":"{id}","event_type":"{command}","timestamp":"{}","user_id":"{}","device_id":"{}{}","platform":{{"os":"{}","arch":"x86_64","os_version":"6.1"}},"runtime":{{"name":"python","version":"3.11.7"}},"app_version":"{app}","initial_version":"{initial}","ci":{},"project":{{"project_id":"{}","datasource_type":"{datasource}"}},"stats":{{"tables":{tables},"columns":{},"rows":{},"builtin_assertions":{},"custom_assertions":{},"passed_assertions":{},"failed_assertions":{}}},"outcome":{{"status":"{status}","duration_ms":{duration}}}}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        hex_id(0x5eed, u as u64),
        hex_id(0xde71ce, u as u64),
        hex_id(0, 0),
        ["linux", "macos", "windows"][usize::from(p.os)],
        if p.ci { r#""github_actions""# } else { "null" },
        hex_id(0x9e0, u as u64 * 2 + project),
        tables * 8,
        rng.below(10_000_000),
        tables * 4,
        rng.below(5),
        tables * 4,
        rng.below(3),
    )
}

/// The GeoIP database the backend is given: `1.N.0.0/16` is in `COUNTRIES[N]`.
fn geoip(path: &Path) -> Result {
    let mut writer = mmdb_writer::Writer::new("GeoLite2-City");
    for (i, code) in COUNTRIES.iter().enumerate() {
        let net: ipnet::IpNet = format!("1.{i}.0.0/16")
            .parse()
            .map_err(|e| format!("{e}"))?;
        writer
            .insert(net, &json!({"country": {"iso_code": code}}))
            .map_err(|e| format!("GeoIP fixture: {e}"))?;
    }
    let bytes = writer
        .to_bytes()
        .map_err(|e| format!("GeoIP fixture: {e}"))?;
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// How far the data set's build has come, day by day: what the month
/// copier waits on before it copies a month of events to PostgreSQL.
struct Progress {
    /// Every batch of days up to this one is on its way (-1: none yet).
    sent_through: std::sync::atomic::AtomicI64,
    /// The batches of each day sent and not yet answered.
    outstanding: Vec<std::sync::atomic::AtomicU32>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            sent_through: std::sync::atomic::AtomicI64::new(-1),
            outstanding: (0..DAYS)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
        }
    }

    /// Whether every event of the days before `day` is stored (each batch
    /// is answered 200 only once its events are committed).
    fn stored_before(&self, day: i64) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        day <= DAYS
            && self.sent_through.load(Acquire) >= day - 1
            && self.outstanding[..day.max(0) as usize]
                .iter()
                .all(|n| n.load(Acquire) == 0)
    }
}

/// Sets its flag when dropped.
struct Done(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// One request of the data set: the country its address is in, its
/// events' day and its body.
type Batch = (u8, u16, String);

/// Posts every batch over `CONNECTIONS` keep-alive connections; returns
/// how many were not answered 200.
async fn post_all(
    addr: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<Batch>,
    progress: &std::sync::Arc<Progress>,
) -> u64 {
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (rx, progress) = (rx.clone(), progress.clone());
            tokio::spawn(async move {
                let mut failed = 0u64;
                let mut conn: Option<(BufReader<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf)> = None;
                loop {
                    let Some((country, day, body)) = rx.lock().await.recv().await else {
                        return failed;
                    };
                    let head = format!(
                        "POST /v1/batch HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n\
                         x-forwarded-for: 1.{country}.{}.{}\r\ncontent-length: {}\r\n\r\n",
                        body.len() % 250,
                        body.len() % 199 + 1,
                        body.len()
                    );
                    let mut ok = false;
                    // As a collector does: a refused batch (408, 429, 503)
                    // is sent again after a pause; its events' ids make a
                    // second copy of any already stored a duplicate.
                    for attempt in 0..8 {
                        if conn.is_none() {
                            conn = TcpStream::connect(addr).await.ok().map(|s| {
                                let (r, w) = s.into_split();
                                (BufReader::new(r), w)
                            });
                        }
                        let Some((read, write)) = conn.as_mut() else { continue };
                        let sent = write.write_all(head.as_bytes()).await.is_ok()
                            && write.write_all(body.as_bytes()).await.is_ok();
                        match if sent { crate::load::read_response(read).await } else { None } {
                            Some(200) => {
                                ok = true;
                                break;
                            }
                            Some(status @ (408 | 429 | 503)) => {
                                eprintln!("bench dashboard: a batch answered {status}, sent again");
                                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt.min(4))).await;
                            }
                            Some(_) => break,
                            None => conn = None,
                        }
                    }
                    failed += u64::from(!ok);
                    progress.outstanding[usize::from(day)]
                        .fetch_sub(1, std::sync::atomic::Ordering::Release);
                }
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(1);
    }
    failed
}

/// The kept data set: its database and what it was built from.
struct Kept {
    dir: PathBuf,
    end: NaiveDate,
}

fn marker(dir: &Path) -> PathBuf {
    dir.join("seed.json")
}

/// The kept SQLite data set if it was built by this recipe.
fn kept(dir: &Path) -> Option<Kept> {
    let v: Value = serde_json::from_slice(&std::fs::read(marker(dir)).ok()?).ok()?;
    if v["recipe"] != RECIPE || v["users"] != USERS || v["events"] != EVENTS {
        return None;
    }
    Some(Kept {
        dir: dir.to_path_buf(),
        end: v["end"].as_str()?.parse().ok()?,
    })
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("telemetry.db").display())
}

fn start_backend(database_url: &str, dir: &Path, extra: &[&str]) -> Result<Backend> {
    let geo = dir.join("geo.mmdb").display().to_string();
    let mut args = vec!["--geoip-db", &geo, "--trusted-proxy", "127.0.0.1/32"];
    args.extend_from_slice(extra);
    Backend::start_with(database_url, Log::Warnings, &args)
}

/// Builds the data set through the ingest path of a backend on SQLite,
/// ending on `end`. With `pg` (a PostgreSQL copy begun), each month of
/// events is copied there on a thread of its own once every event of it
/// is stored, while later months are built; the copy is handed back
/// with what is left of it.
async fn build(
    dir: &Path,
    end: NaiveDate,
    mut pg: Option<PgCopy>,
    report: &mut Map<String, Value>,
) -> Result<(Kept, Option<PgCopy>)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    geoip(&dir.join("geo.mmdb"))?;
    let started = Instant::now();
    let start = end - TimeDelta::days(DAYS - 1);
    // A fill with history (`--bulk-load`): the writer holds rollups and
    // the cube for two million events at a time, and the summary read at
    // the end, which has it write the last of them, may take longer than a
    // live request is given.
    let backend = start_backend(
        &sqlite_url(dir),
        dir,
        &["--bulk-load", "--request-timeout-secs", "900"],
    )?;
    let progress = std::sync::Arc::new(Progress::new());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Set however the build ends, so the copier does not wait on.
    let stop_copier = Done(done.clone());
    if let Some(copy) = pg.as_mut() {
        copy.copy_beside(
            dir.join("telemetry.db"),
            start,
            progress.clone(),
            done.clone(),
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(64);
    let sent = progress.clone();
    let generator = std::thread::spawn(move || {
        let mut rng = Rng(0x5eed_0000 + u64::from(RECIPE));
        let people = people(&mut rng);
        let all = schedule(&mut rng, &people);
        let now = Utc::now().timestamp_millis();
        let mut i = 0;
        while i < all.len() {
            let day = (all[i] >> 32) as i64;
            let mut j = i;
            while j < all.len() && (all[j] >> 32) as i64 == day {
                j += 1;
            }
            // The day's events in the order of their times, as collectors
            // send them soon after each command; then one request per
            // country (the address gives it), at most 500 events.
            let midnight = (start + TimeDelta::days(day))
                .and_hms_opt(0, 0, 0)
                .map_or(0, |t| t.and_utc().timestamp_millis());
            let mut timed: Vec<(i64, usize)> = all[i..j]
                .iter()
                .map(|&e| {
                    let ms = (midnight + rng.below(86_400_000) as i64).min(now);
                    (ms, (e & 0xffff_ffff) as usize)
                })
                .collect();
            timed.sort_unstable();
            let mut by_country: Vec<Vec<(i64, usize)>> = vec![Vec::new(); COUNTRIES.len()];
            for &(ms, u) in &timed {
                by_country[usize::from(people[u].country)].push((ms, u));
            }
            for (country, events) in by_country.iter().enumerate() {
                for chunk in events.chunks(500) {
                    let events: Vec<String> = chunk
                        .iter()
                        .map(|&(ms, u)| event(&mut rng, &people, u, day, ms))
                        .collect();
                    let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
                    sent.outstanding[day as usize]
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if tx.blocking_send((country as u8, day as u16, body)).is_err() {
                        return;
                    }
                }
            }
            sent.sent_through
                .store(day, std::sync::atomic::Ordering::Release);
            i = j;
        }
    });
    let failed = post_all(backend.addr, rx, &progress).await;
    generator
        .join()
        .map_err(|_| "the data set's generator panicked")?;
    if failed > 0 {
        return Err(format!("{failed} batches of the data set were not stored"));
    }
    let sent_s = started.elapsed().as_secs_f64();
    // The summary chart of the year counts what was stored (the stats
    // API reads every user and is not what the dashboard calls).
    let path = format!("/v1/admin/charts/summary?from={start}&to={end}");
    let (status, body) = crate::load::get(backend.addr, &path, Some(&backend.token))
        .await
        .ok_or("the summary chart failed")?;
    let summary: Value = serde_json::from_str(&body).unwrap_or_default();
    let stored = summary["rows"][0][3].as_u64().unwrap_or(0);
    if status != 200 || stored == 0 {
        return Err(format!("{path} answered {status}: {body}"));
    }
    // The rollups and the cube held back for the last events, written
    // for that first read: the build's tail, on the writer alone.
    let tail_s = started.elapsed().as_secs_f64() - sent_s;
    eprintln!(
        "bench dashboard: every event stored {sent_s:.0} s in, the last held rollups written {tail_s:.1} s later"
    );
    report.insert(
        "dashboard_seed_last_rollups_s".into(),
        json!(round(tail_s, 1)),
    );
    // What the build's time is made of: the SQLite writer works on one
    // core, so its CPU time near the build's time says it set the pace.
    if let Some((all, writer)) = backend.cpu_s("sqlite-writer") {
        eprintln!(
            "bench dashboard: the backend used {all:.0} CPU-seconds building it, its SQLite writer {writer:.0}"
        );
        report.insert("dashboard_seed_backend_cpu_s".into(), json!(round(all, 1)));
        report.insert(
            "dashboard_seed_writer_cpu_s".into(),
            json!(round(writer, 1)),
        );
    }
    drop(backend);
    // The copier ends with the month it is on, beside what is left.
    drop(stop_copier);
    let built_s = started.elapsed().as_secs_f64();
    eprintln!("bench dashboard: built the data set ({stored} events) in {built_s:.0} s");
    report.insert("dashboard_seed_build_s".into(), json!(round(built_s, 1)));
    std::fs::write(
        marker(dir),
        json!({"recipe": RECIPE, "users": USERS, "events": EVENTS, "stored": stored, "end": end.to_string(), "built_s": built_s})
            .to_string(),
    )
    .map_err(|e| e.to_string())?;
    Ok((
        Kept {
            dir: dir.to_path_buf(),
            end,
        },
        pg,
    ))
}

/// The PostgreSQL copy of the data set: this database, its tables
/// copied from the SQLite one (the same rows, salt included) with COPY.
const PG_DATABASE: &str = "piperider_bench_dashboard";

/// The tables copied, in an order the foreign keys (none) would allow.
const TABLES: [&str; 13] = [
    "events",
    "users",
    "projects",
    "project_datasources",
    "daily_users",
    "daily_events",
    "daily_buckets",
    "owner_keys",
    "segments",
    "cube_counts",
    "cube_sketches",
    "cohort_sketches",
    "settings",
];

/// A value in COPY's text format.
fn copy_text(v: rusqlite::types::ValueRef<'_>, out: &mut Vec<u8>) {
    use rusqlite::types::ValueRef;
    use std::io::Write;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match v {
        ValueRef::Null => out.extend_from_slice(b"\\N"),
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Real(f) => {
            let _ = write!(out, "{f}");
        }
        ValueRef::Text(t) => {
            for &b in t {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b => out.push(b),
                }
            }
        }
        ValueRef::Blob(bytes) => {
            out.reserve(3 + 2 * bytes.len());
            out.extend_from_slice(b"\\\\x");
            for &b in bytes {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
    }
}

/// The kept PostgreSQL copy if it is of this SQLite data set.
async fn pg_kept(kept: &Kept) -> Result<bool> {
    use sqlx::Connection;
    let url = format!("postgres://postgres@127.0.0.1:5432/{PG_DATABASE}");
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return Ok(false);
    };
    let mark: Option<String> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'bench_seed'")
            .fetch_optional(&mut conn)
            .await
            .ok()
            .flatten();
    Ok(mark.as_deref() == Some(&format!("{RECIPE}:{}", kept.end)))
}

/// Runs `sql` on `pg`; an error names the statement.
async fn execute(pg: &mut sqlx::PgConnection, sql: &str) -> Result {
    sqlx::query(sql)
        .execute(pg)
        .await
        .map(drop)
        .map_err(|e| format!("{sql}: {e}"))
}

/// The statements that make a table's dropped keys and indexes again: on
/// the table (on a partitioned one, on each partition too, attaching the
/// partitions' own where they have them), and on one partition, with
/// `{partition}` in place of its name.
#[derive(Default)]
struct Keys {
    table: Vec<String>,
    partition: Vec<String>,
}

/// [`execute`], saying how long `sql` took when it took over a second.
async fn execute_noting_slow(pg: &mut sqlx::PgConnection, sql: &str) -> Result {
    let t = Instant::now();
    execute(pg, sql).await?;
    if t.elapsed().as_secs_f64() > 1.0 {
        eprintln!("bench dashboard: {sql}: {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Drops the keys and indexes of `table`; returns the statements that
/// make them again.
async fn drop_keys(pg: &mut sqlx::PgConnection, table: &str) -> Result<Keys> {
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = $1::regclass AND contype IN ('p', 'u')",
    )
    .bind(table)
    .fetch_all(&mut *pg)
    .await
    .map_err(|e| format!("{table}'s keys: {e}"))?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.relname::text, pg_get_indexdef(i.oid) FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = $1::regclass \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
    )
    .bind(table)
    .fetch_all(&mut *pg)
    .await
    .map_err(|e| format!("{table}'s indexes: {e}"))?;
    let mut make = Keys::default();
    for (name, definition) in keys {
        execute(pg, &format!("ALTER TABLE {table} DROP CONSTRAINT {name}")).await?;
        make.table.push(format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"
        ));
        make.partition.push(format!(
            "ALTER TABLE {{partition}} ADD CONSTRAINT {{partition}}_{name} {definition}"
        ));
    }
    for (name, definition) in indexes {
        execute(pg, &format!("DROP INDEX {name}")).await?;
        // `CREATE [UNIQUE] INDEX name ON [ONLY] public.table USING ...`:
        // made again on every partition (`ON ONLY` would make it on the
        // partitioned table alone, invalid until each partition's is
        // attached).
        let (head, using) = definition
            .split_once(" USING ")
            .ok_or_else(|| format!("{name}'s definition: {definition}"))?;
        let (create, _) = head
            .split_once(&format!(" {name} ON "))
            .ok_or_else(|| format!("{name}'s definition: {definition}"))?;
        make.table
            .push(format!("{create} {name} ON {table} USING {using}"));
        make.partition.push(format!(
            "{create} {{partition}}_{name} ON {{partition}} USING {using}"
        ));
    }
    Ok(make)
}

/// The partitions of `table` with a range: name, from (inclusive) and to
/// (exclusive), as `YYYY-MM-DD`.
async fn partitions(
    pg: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Vec<(String, String, String)>> {
    let bounds: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(&mut *pg)
    .await
    .map_err(|e| format!("{table}'s partitions: {e}"))?;
    // `FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')`, or `DEFAULT`.
    Ok(bounds
        .into_iter()
        .filter_map(|(name, bound)| {
            let quoted: Vec<&str> = bound.split('\'').collect();
            (quoted.len() == 5).then(|| (name, quoted[1].to_string(), quoted[3].to_string()))
        })
        .collect())
}

/// The rows `select` reads from SQLite, into `target` by `COPY ... FREEZE`
/// in the transaction that truncates it, then `ANALYZE` of `target`
/// (which needs no index), saying how long both took; returns how many.
async fn copy_rows(
    pg: &mut sqlx::PgConnection,
    sqlite: &rusqlite::Connection,
    target: &str,
    select: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<u64> {
    let t = Instant::now();
    let mut statement = sqlite.prepare(select).map_err(|e| e.to_string())?;
    let columns: Vec<String> = statement
        .column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    execute(pg, "BEGIN").await?;
    execute(pg, &format!("TRUNCATE {target}")).await?;
    let mut copy = pg
        .copy_in_raw(&format!(
            "COPY {target} ({}) FROM STDIN (FREEZE)",
            columns.join(", ")
        ))
        .await
        .map_err(|e| format!("COPY {target}: {e}"))?;
    let mut rows = statement.query(params).map_err(|e| e.to_string())?;
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut count = 0u64;
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        for i in 0..columns.len() {
            if i > 0 {
                buffer.push(b'\t');
            }
            copy_text(row.get_ref(i).map_err(|e| e.to_string())?, &mut buffer);
        }
        buffer.push(b'\n');
        count += 1;
        if buffer.len() >= 1 << 20 {
            copy.send(std::mem::take(&mut buffer))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    copy.send(buffer).await.map_err(|e| e.to_string())?;
    copy.finish()
        .await
        .map_err(|e| format!("COPY {target}: {e}"))?;
    execute(pg, "COMMIT").await?;
    execute(pg, &format!("ANALYZE {target}")).await?;
    eprintln!(
        "bench dashboard: copied {target} ({count} rows) to PostgreSQL in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(count)
}

async fn connect_pg(url: &str) -> Result<sqlx::PgConnection> {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// Runs `work` on `n` threads at once, each with a runtime of its own (a
/// connection belongs to the runtime that made it); returns what each gave.
fn in_parallel<T: Send, F: std::future::Future<Output = Result<T>>>(
    n: usize,
    work: impl Fn() -> F + Sync,
) -> Result<Vec<T>> {
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    scope.spawn(|| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| e.to_string())?
                            .block_on(work())
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err("a copy thread panicked".into()))
                })
                .collect()
        })
    })
}

/// A month of events: its partition, its first day and the day after its
/// last.
type Month = (String, NaiveDate, NaiveDate);

/// The SQLite events of a month, from its first day (`?1`) to the day
/// after its last (`?2`).
const MONTH_OF_EVENTS: &str = "SELECT * FROM events WHERE day >= ?1 AND day < ?2";

/// The SQLite data set's copy into [`PG_DATABASE`] under way.
struct PgCopy {
    url: String,
    started: Instant,
    /// The statements that make the dropped keys and indexes again.
    rebuild: Vec<String>,
    /// Those that make them on one month's partition, with `{partition}`
    /// in place of its name.
    month_keys: Vec<String>,
    /// The months of events not yet copied (nor being copied), oldest
    /// first.
    months: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Month>>>,
    /// The thread copying months beside the build: the events it copied.
    copier: Option<std::thread::JoinHandle<Result<u64>>>,
}

fn open_sqlite(db: &Path) -> Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", db.display()))
}

/// Lowers the priority of the process `pid` (`None`: the calling thread)
/// to the lowest, so that it takes only the CPU nothing else wants; where
/// that is not allowed (another user's process), it says so and goes on
/// at its priority.
fn lowest_priority(pid: Option<i32>, what: &str) {
    // On Linux a nice value belongs to a thread; `None` is the caller's.
    let pid = pid.and_then(rustix::process::Pid::from_raw);
    if let Err(e) = rustix::process::setpriority_process(pid, 19) {
        eprintln!("bench dashboard: {what} keeps its priority: {e}");
    }
}

impl PgCopy {
    /// Makes [`PG_DATABASE`] afresh for a data set ending on `end`: its
    /// schema by a backend's migrations, a partition for each month, and
    /// no keys or indexes yet.
    async fn begin(end: NaiveDate) -> Result<PgCopy> {
        let started = Instant::now();
        crate::backend::pg_admin(&format!(
            "DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"
        ))
        .await?;
        crate::backend::pg_admin(&format!("CREATE DATABASE {PG_DATABASE}")).await?;
        let url = format!("postgres://postgres@127.0.0.1:5432/{PG_DATABASE}");
        // A backend makes the schema (its migrations run before it is ready).
        let backend = Backend::start(&url, Log::Warnings)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        while backend.get("/readyz").map(|(s, _)| s) != Ok(200) {
            if Instant::now() > deadline {
                return Err("the PostgreSQL backend did not become ready".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(backend);
        // A partition for each month of the year, so COPY fills them (not
        // the default partition, whose rows the next start would move).
        let made = std::process::Command::new(crate::binary("piperider-ingest"))
            .args(["partitions", "--database-url", &url, "--from"])
            .arg((end - TimeDelta::days(DAYS - 1)).to_string())
            .args(["--to", &end.to_string()])
            .output()
            .map_err(|e| format!("piperider-ingest partitions: {e}"))?;
        if !made.status.success() {
            return Err(format!(
                "piperider-ingest partitions: {}",
                String::from_utf8_lossy(&made.stderr)
            ));
        }
        let mut pg = connect_pg(&url).await?;
        // A bulk load: the keys and indexes are dropped first and built
        // once at the end (far cheaper than 10 million insertions into
        // each), and every table is filled by `COPY ... FREEZE` in the
        // transaction that truncated it, so its rows are written once,
        // already frozen and visible (the VACUUM at the end then has
        // nothing to rewrite).
        let (mut rebuild, mut month_keys) = (Vec::new(), Vec::new());
        for table in TABLES {
            let keys = drop_keys(&mut pg, table).await?;
            rebuild.extend(keys.table);
            if table == "events" {
                month_keys = keys.partition;
            }
        }
        let mut months = Vec::new();
        for (partition, from, to) in partitions(&mut pg, "events").await? {
            let day = |d: &str| {
                d.parse::<NaiveDate>()
                    .map_err(|e| format!("{partition}'s bound {d}: {e}"))
            };
            months.push((partition.clone(), day(&from)?, day(&to)?));
        }
        months.sort_by_key(|m| m.1);
        Ok(PgCopy {
            url,
            started,
            rebuild,
            month_keys,
            months: std::sync::Arc::new(std::sync::Mutex::new(months.into())),
            copier: None,
        })
    }

    /// Starts a thread that copies each month of events from the SQLite
    /// database `db` once the build (which began on `start`) has stored
    /// every event of it, oldest first, and makes that partition's keys
    /// and indexes, until `done`. One month at a time, at the lowest
    /// priority (its thread and its PostgreSQL connection's process): the
    /// build keeps the cores it uses.
    fn copy_beside(
        &mut self,
        db: PathBuf,
        start: NaiveDate,
        progress: std::sync::Arc<Progress>,
        done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        let (url, months) = (self.url.clone(), self.months.clone());
        let month_keys = self.month_keys.clone();
        self.copier = Some(std::thread::spawn(move || -> Result<u64> {
            lowest_priority(None, "the month copier");
            let copy = async {
                let mut connections = None;
                let mut events = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let next = {
                        let mut months = months.lock().map_err(|e| e.to_string())?;
                        // The last month ends with the data set, before
                        // its partition does: copied beside the rollups
                        // written last.
                        let stored = months.front().is_some_and(|m| {
                            progress.stored_before((m.2 - start).num_days().min(DAYS))
                        });
                        if stored { months.pop_front() } else { None }
                    };
                    let Some((partition, from, to)) = next else {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    };
                    let (pg, sqlite) = match connections {
                        Some(ref mut c) => c,
                        None => {
                            let mut pg = connect_pg(&url).await?;
                            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                                .fetch_one(&mut pg)
                                .await
                                .map_err(|e| e.to_string())?;
                            lowest_priority(Some(pid), "the month copier's PostgreSQL process");
                            connections.insert((pg, open_sqlite(&db)?))
                        }
                    };
                    let t = Instant::now();
                    let params: [&dyn rusqlite::ToSql; 2] = [&from.to_string(), &to.to_string()];
                    events += copy_rows(pg, sqlite, &partition, MONTH_OF_EVENTS, &params).await?;
                    for sql in &month_keys {
                        execute(pg, &sql.replace("{partition}", &partition)).await?;
                    }
                    eprintln!(
                        "bench dashboard: {partition}'s keys and indexes made beside the build, {:.1} s after its copy began",
                        t.elapsed().as_secs_f64()
                    );
                }
                Ok(events)
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(copy)
        }));
    }

    /// Copies what is left of the data set `kept` (the months not copied
    /// yet and the other tables), then builds the keys and indexes.
    async fn finish(self, kept: &Kept, report: &mut Map<String, Value>) -> Result {
        let finishing = Instant::now();
        let db = kept.dir.join("telemetry.db");
        let PgCopy {
            url,
            started,
            rebuild,
            months,
            copier,
            ..
        } = self;
        // The months the copier beside the build has not begun.
        let months: Vec<Month> = months
            .lock()
            .map_err(|e| e.to_string())?
            .drain(..)
            .collect();
        // Two copies at a time, each on its own connections (PostgreSQL
        // parses each `COPY` on one core): the latest months, the
        // largest, first, then the other tables. Each job: the target,
        // the rows' `SELECT` and its parameters, and whether its rows are
        // events.
        let mut jobs: std::collections::VecDeque<(String, String, Vec<String>, bool)> = months
            .into_iter()
            .rev()
            .map(|(partition, from, to)| {
                (
                    partition,
                    MONTH_OF_EVENTS.to_string(),
                    vec![from.to_string(), to.to_string()],
                    true,
                )
            })
            .collect();
        jobs.extend(TABLES[1..].iter().map(|t| {
            (
                t.to_string(),
                format!("SELECT * FROM {t}"),
                Vec::new(),
                false,
            )
        }));
        let jobs = &std::sync::Mutex::new(jobs);
        let (url, db) = (&url, &db);
        let copied_after = in_parallel(2, move || async move {
            let (mut pg, sqlite) = (connect_pg(url).await?, open_sqlite(db)?);
            let mut events = 0u64;
            loop {
                let next = jobs.lock().map_err(|e| e.to_string())?.pop_front();
                let Some((target, select, params, are_events)) = next else {
                    return Ok(events);
                };
                let params: Vec<&dyn rusqlite::ToSql> =
                    params.iter().map(|p| p as &dyn rusqlite::ToSql).collect();
                let n = copy_rows(&mut pg, &sqlite, &target, &select, &params).await?;
                if are_events {
                    events += n;
                }
            }
        })?
        .into_iter()
        .sum::<u64>();
        // The month the copier was on when the build ended.
        let copied_beside = match copier {
            Some(copier) => copier
                .join()
                .map_err(|_| "the month copier panicked".to_string())??,
            None => 0,
        };
        let copied = copied_after + copied_beside;
        let stored: u64 = open_sqlite(db)?
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if copied != stored {
            return Err(format!(
                "{copied} of {stored} events copied: some fall outside the monthly partitions"
            ));
        }
        // Keys and indexes, two at a time too (statements on one table
        // wait for each other where their locks conflict).
        let keys_started = Instant::now();
        let statements = &std::sync::Mutex::new(std::collections::VecDeque::from(rebuild));
        in_parallel(2, move || async move {
            let mut pg = connect_pg(url).await?;
            execute(&mut pg, "SET maintenance_work_mem = '1GB'").await?;
            loop {
                let next = statements.lock().map_err(|e| e.to_string())?.pop_front();
                let Some(sql) = next else {
                    return Ok(());
                };
                execute_noting_slow(&mut pg, &sql).await?;
            }
        })?;
        eprintln!(
            "bench dashboard: PostgreSQL's keys and indexes built in {:.0} s",
            keys_started.elapsed().as_secs_f64()
        );
        let mut pg = connect_pg(url).await?;
        for sql in [
            "SELECT setval(pg_get_serial_sequence('segments', 'id'), COALESCE((SELECT MAX(id) FROM segments), 0) + 1, false)".to_string(),
            // As a database long in service is: its pages' hint bits and
            // visibility set (otherwise the first reads of every copied
            // page write it again), every table analyzed (each was as it
            // was copied; as under autovacuum, the partitioned `events`
            // has statistics only for its partitions, which no chart
            // reads anyway) and nothing left for the checkpointer, so that
            // the timings that follow are not taken beside the copy's
            // aftermath.
            "VACUUM (FREEZE)".to_string(),
            format!("INSERT INTO settings (key, value) VALUES ('bench_seed', '{RECIPE}:{}')", kept.end),
            "CHECKPOINT".to_string(),
        ] {
            execute_noting_slow(&mut pg, &sql).await?;
        }
        let after_s = finishing.elapsed().as_secs_f64();
        eprintln!(
            "bench dashboard: the PostgreSQL copy's last part took {after_s:.0} s ({} s since it began)",
            started.elapsed().as_secs()
        );
        report.insert(
            "dashboard_seed_copy_postgres_s".into(),
            json!(round(after_s, 1)),
        );
        Ok(())
    }
}

/// Every chart the dashboard draws, for both ranges: the median time of
/// each over `runs` rounds; returns the slowest median and every median.
async fn time_charts(
    addr: SocketAddr,
    token: &str,
    end: NaiveDate,
    runs: usize,
) -> Result<(f64, Map<String, Value>)> {
    let (status, list) = crate::load::get(addr, "/v1/admin/charts", Some(token))
        .await
        .ok_or("GET /v1/admin/charts failed")?;
    if status != 200 {
        return Err(format!("GET /v1/admin/charts answered {status}"));
    }
    let list: Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
    let names: Vec<String> = list["charts"]
        .as_array()
        .ok_or("no chart list")?
        .iter()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let mut medians = Map::new();
    let mut slowest: f64 = 0.0;
    for days in [30, 365] {
        let from = end - TimeDelta::days(days - 1);
        for name in &names {
            let path = format!("/v1/admin/charts/{name}?from={from}&to={end}");
            let mut times = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let (status, body) = crate::load::get(addr, &path, Some(token))
                    .await
                    .ok_or_else(|| format!("GET {path} failed"))?;
                if status != 200 {
                    return Err(format!("GET {path} answered {status}: {body}"));
                }
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let m = median(times);
            slowest = slowest.max(m);
            medians.insert(format!("{name}_{days}d"), json!(round(m, 1)));
        }
    }
    Ok((slowest, medians))
}

/// The summary chart's distinct users for 30 and 365 days against the
/// exact count (from `daily_users`, read directly, not timed):
/// `distinct_users_error_pct`.
async fn accuracy(backend: &Backend, kept: &Kept, report: &mut Map<String, Value>) -> Result {
    let db = rusqlite::Connection::open_with_flags(
        kept.dir.join("telemetry.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(|e| e.to_string())?;
    let mut errors = Map::new();
    for days in [30, 365] {
        let from = kept.end - TimeDelta::days(days - 1);
        let exact: i64 = db
            .query_row(
                "SELECT COUNT(DISTINCT user_id) FROM daily_users WHERE day >= ?1 AND day <= ?2",
                [from.to_string(), kept.end.to_string()],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        let path = format!("/v1/admin/charts/summary?from={from}&to={}", kept.end);
        let (_, body) = crate::load::get(backend.addr, &path, Some(&backend.token))
            .await
            .ok_or("the summary chart failed")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let estimate = v["rows"][0][0].as_i64().ok_or("no active_users")?;
        let pct = (estimate - exact).abs() as f64 / exact.max(1) as f64 * 100.0;
        eprintln!(
            "bench dashboard: {days} days: {estimate} active users estimated, {exact} exact ({pct:.2}%)"
        );
        errors.insert(
            format!("{days}d"),
            json!({"estimate": estimate, "exact": exact, "error_pct": round(pct, 2)}),
        );
    }
    report.insert("distinct_users_error_pct".into(), Value::Object(errors));
    Ok(())
}

/// The dashboard phase on the kept data set (built first if need be).
pub(crate) async fn run(report: &mut Map<String, Value>, quick: bool) -> Result {
    let dir = crate::target_dir().join("bench").join("dashboard");
    let postgres = crate::backend::postgres_reachable();
    let kept = match kept(&dir) {
        Some(k) => {
            eprintln!("bench dashboard: reusing the data set in {}", dir.display());
            if postgres && !pg_kept(&k).await? {
                PgCopy::begin(k.end).await?.finish(&k, report).await?;
            }
            k
        }
        None => {
            // A data set built afresh has salts of its own: its copy too,
            // begun beside the build.
            let started = Instant::now();
            let end = Utc::now().date_naive();
            let pg = if postgres {
                Some(PgCopy::begin(end).await?)
            } else {
                None
            };
            let (k, pg) = build(&dir, end, pg, report).await?;
            if let Some(pg) = pg {
                pg.finish(&k, report).await?;
            }
            let seeded_s = started.elapsed().as_secs_f64();
            eprintln!("bench dashboard: the data set built on every database in {seeded_s:.0} s");
            report.insert("dashboard_seed_s".into(), json!(round(seeded_s, 1)));
            k
        }
    };
    let runs = if quick { 3 } else { 5 };
    let mut databases = vec![("sqlite", sqlite_url(&kept.dir))];
    if postgres {
        databases.push((
            "postgres",
            format!("postgres://postgres@127.0.0.1:5432/{PG_DATABASE}"),
        ));
    } else {
        eprintln!("bench dashboard: SKIPPED PostgreSQL (nothing answers on 127.0.0.1:5432)");
    }
    for (db, url) in databases {
        let backend = start_backend(&url, &kept.dir, &[])?;
        let (slowest, medians) = time_charts(backend.addr, &backend.token, kept.end, runs).await?;
        // The page itself: every chart read and drawn on the server.
        let mut pages = Map::new();
        for days in [30, 365] {
            let path = format!(
                "/admin?from={}&to={}",
                kept.end - TimeDelta::days(days - 1),
                kept.end
            );
            let mut times = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let (status, body) = crate::load::get(backend.addr, &path, Some(&backend.token))
                    .await
                    .ok_or("GET /admin failed")?;
                if status != 200 || !body.contains("id=events") {
                    return Err(format!(
                        "GET {path} answered {status} without the dashboard"
                    ));
                }
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            pages.insert(format!("{days}d"), json!(round(median(times), 1)));
        }
        if db == "sqlite" {
            accuracy(&backend, &kept, report).await?;
        }
        eprintln!(
            "bench dashboard on {db}: slowest chart median {slowest:.1} ms; the page {pages:?} ms"
        );
        report.insert(
            format!("stats_query_ms_1m_users_{db}"),
            json!(round(slowest, 1)),
        );
        report.insert(format!("chart_ms_1m_users_{db}"), Value::Object(medians));
        report.insert(format!("dashboard_render_ms_{db}"), Value::Object(pages));
    }
    Ok(())
}
