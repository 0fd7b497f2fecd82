//! Fault injection, run by `cargo xtask test` on release binaries: kill
//! the backend while real CLIs deliver, start many CLIs at once, and check
//! that every recorded event is stored exactly once and every event the
//! backend acknowledged is stored. Each case is bounded in time and count.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::launcher::{Backend, Log};
use crate::{Result, sample, spool_len};

/// The id of every stored event, read straight from the SQLite file `db`.
fn stored_ids(db: &Path) -> Result<Vec<uuid::Uuid>> {
    query_text(db, "SELECT event_id FROM events")?
        .into_iter()
        .map(|id| uuid::Uuid::parse_str(&id).map_err(|e| format!("event id {id:?}: {e}")))
        .collect()
}

/// The text rows a query gives on the SQLite file `db`.
fn query_text(db: &Path, sql: &str) -> Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .map_err(|e| e.to_string())?;
        let rows: Vec<(String,)> = sqlx::query_as(sql)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        conn.close().await.map_err(|e| e.to_string())?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    })
}

/// Stored events in the SQLite file `db`, and how many distinct ids they have.
fn stored(db: &Path) -> Result<(i64, i64)> {
    Ok(count_distinct(&stored_ids(db)?))
}

/// The event ids of a `/v1/batch` request body.
pub(crate) fn event_ids(body: &str) -> Result<Vec<uuid::Uuid>> {
    let request: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    request["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| {
            let id = event["event_id"].as_str().unwrap_or_default();
            uuid::Uuid::parse_str(id).map_err(|e| format!("event id {id:?}: {e}"))
        })
        .collect()
}

/// A backend on the SQLite file `db`.
fn backend(db: &Path, log: Log) -> Result<Backend> {
    Backend::start(&format!("sqlite:{}", db.display()), log)
}

/// How many ids, and how many distinct ones.
fn count_distinct(ids: &[uuid::Uuid]) -> (i64, i64) {
    let distinct = ids.iter().collect::<HashSet<_>>().len();
    (ids.len() as i64, distinct as i64)
}

/// A CLI user with a profile, in a project with the sample database.
fn user(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let home = dir.join(name).join("home");
    let project = dir.join(name).join("shop");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(project.join(".piperider")).map_err(|e| e.to_string())?;
    std::fs::write(
        home.join("profile.yml"),
        format!(
            "user_id: {}\nanonymous_tracking: true\n",
            uuid::Uuid::new_v4().simple()
        ),
    )
    .map_err(|e| e.to_string())?;
    sample::shop_db(&project.join("shop.db"))?;
    std::fs::write(
        project.join(".piperider/config.yml"),
        format!(
            "dataSources:\n- name: shop\n  type: sqlite\n  dbpath: shop.db\ntelemetry:\n  id: {}\n",
            uuid::Uuid::new_v4().simple()
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok((home, project))
}

fn piperider(home: &Path, project: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = crate::piperider_command(home, project, endpoint);
    cmd.args(args)
        .env("PIPERIDER_TELEMETRY_RETRY_BASE_MS", "100");
    cmd
}

/// Runs `cmd` to completion, which must exit 0.
fn ok(mut cmd: Command) -> Result {
    let status = cmd.status().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} exited {status}"))
    }
}

/// Delivers every spooled event: a command per user starts a sender, then
/// waits for the spools to empty.
fn drain(users: &[(PathBuf, PathBuf)], endpoint: &str, runs: &mut u64) -> Result {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if users.iter().all(|(h, _)| spool_len(h) == 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let left: usize = users.iter().map(|(h, _)| spool_len(h)).sum();
            return Err(format!("{left} event(s) still waiting after 60 s"));
        }
        for (home, project) in users {
            if spool_len(home) > 0 {
                ok(piperider(home, project, endpoint, &["run"]))?;
                *runs += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// The backend is killed with SIGKILL again and again while four CLIs run
/// commands; afterwards every recorded event is stored exactly once.
fn killed_backend_loses_nothing(work: &Path) -> Result {
    interrupted_backend_loses_nothing(work, "kill", false)
}

/// The same with SIGTERM: graceful stops under load lose nothing either.
fn terminated_backend_loses_nothing(work: &Path) -> Result {
    interrupted_backend_loses_nothing(work, "term", true)
}

/// One thread per user running `piperider run` up to `max_runs` times,
/// `pause` apart, until `stop`; each returns how many commands it ran.
fn cli_workers(
    users: &[(PathBuf, PathBuf)],
    endpoint: &str,
    stop: &Arc<AtomicBool>,
    max_runs: u64,
    pause: Duration,
) -> Vec<std::thread::JoinHandle<Result<u64>>> {
    users
        .iter()
        .cloned()
        .map(|(home, project)| {
            let (endpoint, stop) = (endpoint.to_string(), stop.clone());
            std::thread::spawn(move || -> Result<u64> {
                let mut runs = 0;
                while runs < max_runs && !stop.load(Ordering::Relaxed) {
                    ok(piperider(&home, &project, &endpoint, &["run"]))?;
                    runs += 1;
                    std::thread::sleep(pause);
                }
                Ok(runs)
            })
        })
        .collect()
}

/// The commands the workers ran, in all.
fn runs_of(workers: Vec<std::thread::JoinHandle<Result<u64>>>) -> Result<u64> {
    let mut runs = 0;
    for w in workers {
        runs += w
            .join()
            .map_err(|_| "a CLI worker panicked".to_string())??;
    }
    Ok(runs)
}

/// Batches posted at once right before each interruption, and their events.
const LAST_BATCHES: u64 = 4;
const LAST_BATCH_EVENTS: usize = 250;

/// Batches posted straight to the backend, all at once, just before it is
/// killed or stopped: the ids of every event sent, and of those it
/// answered were stored. The kill follows the last answer within
/// microseconds. Had the backend answered before committing, its writer
/// would then still be on the first of the four transactions' worth of
/// events, which it takes one after another, while the answers, each
/// parsed on its own request task, came early; the CLIs' own events, one
/// per command, would rarely be caught in so short a window.
#[derive(Default)]
struct LastBatches {
    sent: HashSet<uuid::Uuid>,
    acknowledged: HashSet<uuid::Uuid>,
    answered: u64,
}

impl LastBatches {
    fn post(&mut self, backend: &Backend, round: u64) -> Result {
        let bodies: Vec<String> = (0..LAST_BATCHES)
            .map(|i| crate::events::body(round * LAST_BATCHES + i, LAST_BATCH_EVENTS))
            .collect();
        for body in &bodies {
            self.sent.extend(event_ids(body)?);
        }
        let answers: Vec<_> = std::thread::scope(|scope| {
            let posts: Vec<_> = bodies
                .iter()
                .map(|body| scope.spawn(|| backend.request("POST", "/v1/batch", body)))
                .collect();
            posts.into_iter().map(|p| p.join()).collect()
        });
        for answer in answers {
            // Not answered (the backend was still starting): nothing was promised.
            let Ok(Ok((200, answer))) = answer else {
                continue;
            };
            let answer: piperider_event::BatchResponse = serde_json::from_str(&answer)
                .map_err(|e| format!("the answer to a batch: {e}: {answer}"))?;
            self.answered += 1;
            self.acknowledged
                .extend(answer.results.iter().filter_map(|r| {
                    use piperider_event::ResultStatus::{Accepted, Duplicate};
                    matches!(r.status, Accepted | Duplicate).then_some(r.event_id?)
                }));
        }
        Ok(())
    }
}

fn interrupted_backend_loses_nothing(work: &Path, name: &str, graceful: bool) -> Result {
    let db = work.join(format!("{name}.db"));
    let mut backend = backend(&db, Log::Silent)?;
    let endpoint = format!("http://{}", backend.addr);
    let users: Vec<_> = (0..4)
        .map(|i| user(work, &format!("{name}-{i}")))
        .collect::<Result<_>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = cli_workers(&users, &endpoint, &stop, 600, Duration::ZERO);
    let started = Instant::now();
    let mut kills = 0;
    let mut last = LastBatches::default();
    while workers.iter().any(|w| !w.is_finished()) {
        if started.elapsed() > Duration::from_secs(240) {
            stop.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(350));
        last.post(&backend, kills)?;
        if graceful {
            backend.terminate()?;
        } else {
            backend.kill();
        }
        kills += 1;
        std::thread::sleep(Duration::from_millis(200));
        backend.restart()?;
    }
    let mut runs = runs_of(workers)?;
    drain(&users, &endpoint, &mut runs)?;
    let ids = stored_ids(&db)?;
    let all = ids.len() as i64;
    let (last_stored, from_clis): (Vec<_>, Vec<_>) =
        ids.into_iter().partition(|id| last.sent.contains(id));
    let last_stored: HashSet<_> = last_stored.into_iter().collect();
    let lost = last.acknowledged.difference(&last_stored).count();
    let (stored, distinct) = count_distinct(&from_clis);
    let signal = if graceful { "SIGTERM" } else { "SIGKILL" };
    eprintln!(
        "faults: {kills} {signal}s during {runs} commands; {stored} events stored ({distinct} distinct); \
         {} of {} events acknowledged just before a {signal} are stored",
        last.acknowledged.len() - lost,
        last.acknowledged.len()
    );
    if lost > 0 {
        return Err(format!(
            "{lost} events answered as stored right before a {signal} were not stored: \
             the backend answered before committing"
        ));
    }
    if last.answered * 2 < kills * LAST_BATCHES {
        return Err(format!(
            "only {} of the {} batches posted before a {signal} were answered: the case tested too little",
            last.answered,
            kills * LAST_BATCHES
        ));
    }
    for (home, _) in &users {
        let dropped =
            std::fs::read_to_string(home.join("telemetry/dropped-events")).unwrap_or_default();
        if !dropped.trim().is_empty() && dropped.trim() != "0" {
            return Err(format!(
                "the spool cap dropped events ({dropped}): the case is too large"
            ));
        }
    }
    if kills < 5 {
        return Err(format!(
            "only {kills} kills happened: the case tested too little"
        ));
    }
    exactly_once(&backend, runs, (stored, distinct), all)
}

/// Every recorded event stored once (`stored` of them, with `distinct`
/// ids), and all `all` events in the database counted once by the rollups
/// and once by the dashboard's cube.
fn exactly_once(backend: &Backend, runs: u64, (stored, distinct): (i64, i64), all: i64) -> Result {
    if stored != runs as i64 || distinct != stored {
        return Err(format!(
            "{runs} events recorded, {stored} stored ({distinct} distinct): not exactly once"
        ));
    }
    let rolled_up = i64::try_from(backend.rolled_up()?).unwrap_or(i64::MAX);
    if rolled_up != all {
        return Err(format!(
            "{all} events stored but the rollups count {rolled_up}"
        ));
    }
    let in_cube = i64::try_from(backend.in_cube()?).unwrap_or(i64::MAX);
    if in_cube != all {
        return Err(format!(
            "{all} events stored but the dashboard's cube counts {in_cube}"
        ));
    }
    Ok(())
}

/// The database goes away twice while four CLIs run commands (another
/// connection holds SQLite's write lock for seconds): the backend answers
/// 503 with `Retry-After`, `readyz` fails, the CLIs keep their events and
/// deliver them once the database is back, each exactly once.
fn storage_away_loses_nothing(work: &Path) -> Result {
    let db = work.join("away.db");
    let backend = backend(&db, Log::Silent)?;
    let endpoint = format!("http://{}", backend.addr);
    let users: Vec<_> = (0..4)
        .map(|i| user(work, &format!("away-{i}")))
        .collect::<Result<_>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = cli_workers(&users, &endpoint, &stop, 400, Duration::from_millis(50));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut unready = 0;
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(1));
        let lock = runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(conn)
        })?;
        std::thread::sleep(Duration::from_secs(6));
        if backend.get("/readyz")?.0 == 503 {
            unready += 1;
        }
        runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = lock;
            sqlx::query("ROLLBACK")
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })?;
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let mut runs = runs_of(workers)?;
    drain(&users, &endpoint, &mut runs)?;
    let (_, metrics) = backend.get("/metrics")?;
    let refused: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("piperider_ingest_requests_total")
                && l.contains("/v1/batch")
                && l.contains("\"503\"")
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    let (stored, distinct) = stored(&db)?;
    eprintln!(
        "faults: two outages during {runs} commands: {refused} batches answered 503, readyz failed {unready} of 2 times; {stored} events stored ({distinct} distinct)"
    );
    if refused < 1.0 {
        return Err("no batch was answered 503 during the outages: the case tested nothing".into());
    }
    if unready < 2 {
        return Err(format!(
            "readyz failed only {unready} of 2 times while the database was away"
        ));
    }
    exactly_once(&backend, runs, (stored, distinct), stored)
}

/// A tmpfs mounted for the length of a case; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at`; `None` where mounting is not
    /// allowed (a developer's machine without root), an error in CI.
    fn mount(at: &Path, size: &str) -> Result<Option<Tmpfs>> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Ok(Some(Tmpfs(at.to_path_buf()))),
            _ if std::env::var_os("CI").is_some() => Err(format!(
                "cannot mount a tmpfs at {} (CI needs root for this case)",
                at.display()
            )),
            _ => Ok(None),
        }
    }
}

impl Drop for Tmpfs {
    /// Unmounts once the last sender has left it (one may linger for a
    /// few seconds); lazily if it is still busy after ten.
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.0)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !umount(false) {
            if Instant::now() > deadline {
                umount(true);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Fills the filesystem holding `dir`, leaving about `spare` bytes.
fn fill(dir: &Path, spare: usize) -> Result {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).map_err(|e| e.to_string())?;
    let block = vec![0u8; 512];
    while f.write_all(&block).is_ok() {}
    drop(f);
    let len = std::fs::metadata(dir.join("filler"))
        .map_err(|e| e.to_string())?
        .len();
    let keep = len.saturating_sub(spare as u64);
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("filler"))
        .and_then(|f| f.set_len(keep))
        .map_err(|e| e.to_string())
}

/// The spool's disk is full (a 16 KiB tmpfs, filled to the last few
/// hundred bytes): `piperider run` still succeeds with its own exit code
/// and writes its results; once there is room again, telemetry resumes.
fn full_spool_disk(work: &Path) -> Result {
    let db = work.join("full.db");
    let backend = backend(&db, Log::Silent)?;
    let endpoint = format!("http://{}", backend.addr);
    let (home, project) = user(work, "full")?;
    let Some(disk) = Tmpfs::mount(&home.join("telemetry"), "16k")? else {
        eprintln!("faults: SKIPPED the full-disk case: cannot mount a tmpfs here (needs root)");
        return Ok(());
    };
    for spare in [0, 300, 900] {
        fill(&disk.0, spare)?;
        let before = std::fs::read_dir(project.join(".piperider/outputs"))
            .map(|d| d.count())
            .unwrap_or(0);
        ok(piperider(&home, &project, &endpoint, &["run"]))?;
        let after = std::fs::read_dir(project.join(".piperider/outputs"))
            .map(|d| d.count())
            .unwrap_or(0);
        if after <= before {
            return Err(format!(
                "with {spare} bytes left for the spool, `piperider run` wrote no results"
            ));
        }
    }
    // Room again: the next command's event is delivered.
    std::fs::remove_file(disk.0.join("filler")).map_err(|e| e.to_string())?;
    let mut runs = 0;
    ok(piperider(&home, &project, &endpoint, &["run"]))?;
    runs += 1;
    drain(&[(home.clone(), project.clone())], &endpoint, &mut runs)?;
    let (stored, distinct) = stored(&db)?;
    eprintln!(
        "faults: 3 commands on a full spool disk exited 0 with their results; {stored} event(s) stored after room came back"
    );
    if stored < 1 || distinct != stored {
        return Err(format!(
            "after the disk had room again {stored} events were stored ({distinct} distinct)"
        ));
    }
    drop(disk);
    Ok(())
}

/// Twenty CLIs started at once: twenty events, each once, and profiles intact.
fn twenty_at_once(work: &Path) -> Result {
    let db = work.join("twenty.db");
    let backend = backend(&db, Log::Silent)?;
    let endpoint = format!("http://{}", backend.addr);
    let (home, project) = user(work, "twenty")?;
    let profile_before =
        std::fs::read_to_string(home.join("profile.yml")).map_err(|e| e.to_string())?;
    let children: Vec<Child> = (0..20)
        .map(|_| {
            piperider(&home, &project, &endpoint, &["run"])
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_>>()?;
    for mut c in children {
        let status = c.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("a concurrent piperider run exited {status}"));
        }
    }
    let mut runs = 20;
    drain(&[(home.clone(), project)], &endpoint, &mut runs)?;
    let (stored, distinct) = stored(&db)?;
    if stored != runs as i64 || distinct != stored {
        return Err(format!(
            "{runs} events recorded, {stored} stored ({distinct} distinct)"
        ));
    }
    // The profile kept byte for byte, with the one owner secret the first
    // of them added; the key the backend bound is that secret's.
    let profile_after =
        std::fs::read_to_string(home.join("profile.yml")).map_err(|e| e.to_string())?;
    // A secret that YAML could read as a number (`0b...`) is written quoted.
    let secret = profile_after
        .strip_prefix(&profile_before)
        .and_then(|added| added.strip_prefix("telemetry_secret: "))
        .and_then(|s| s.strip_suffix('\n'))
        .map(|s| s.trim_matches('\''))
        .and_then(piperider_event::OwnerSecret::from_hex)
        .ok_or_else(|| {
            format!("the profile changed under concurrent commands:\n{profile_after}")
        })?;
    let bound = query_text(&db, "SELECT owner_key FROM owner_keys")?;
    if bound != [secret.public_key().to_string()] {
        return Err(format!(
            "concurrent commands disagreed on the owner key: bound {bound:?}, the profile's is {}",
            secret.public_key()
        ));
    }
    Ok(())
}

/// One fault-injection case, run in a work folder.
type Case = fn(&Path) -> Result;

/// Runs every case; returns (passed, failed).
/// Every case, or those whose name contains `filter`.
pub(crate) fn run(filter: Option<&str>) -> Result<(u64, u64)> {
    let work = crate::work_dir("faults")?;
    let cases: [(&str, Case); 6] = [
        (
            "the backend killed with SIGKILL during delivery loses nothing and stores nothing twice",
            killed_backend_loses_nothing,
        ),
        (
            "the backend stopped with SIGTERM under load loses nothing and stores nothing twice",
            terminated_backend_loses_nothing,
        ),
        (
            "the database away twice under load: 503 with Retry-After, readyz fails, nothing lost",
            storage_away_loses_nothing,
        ),
        (
            "a full spool disk: the command succeeds with its results, telemetry resumes after",
            full_spool_disk,
        ),
        ("twenty piperider processes at once", twenty_at_once),
        (
            "queue mode: a node, a writer and a NATS server SIGKILLed, then PostgreSQL away 30 s, \
             under 50,000 events: each acknowledged event stored once",
            crate::queue_faults::nodes_writers_and_servers_killed_and_the_database_away,
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        match case(&work) {
            Ok(()) => {
                passed += 1;
                println!(
                    "fault {name} ... ok ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!("fault {name} ... FAILED: {e}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok((passed, failed))
}
