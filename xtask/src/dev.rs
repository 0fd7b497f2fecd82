//! `cargo xtask dev`: the whole stack on an embedded SQLite database, in a
//! data folder that a second start reuses (`target/piperider-dev/`).
//!
//! Builds the binaries, starts `piperider-ingest`, prints its URLs, the
//! admin token and the one line that points a CLI at it, then runs a real
//! `piperider init` and `piperider run` on the sample database so the
//! backend holds a real event. Ctrl-C stops everything cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, run_step};

const DEFAULT_PORT: u16 = 8700;

fn data_dir() -> PathBuf {
    crate::target_dir().join("piperider-dev")
}

/// The admin token, made once and kept in the data folder.
fn admin_token(dir: &Path) -> Result<String> {
    let path = dir.join("admin-token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_string();
        if token.len() >= 16 {
            return Ok(token);
        }
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, format!("{token}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(token)
}

fn wait_ready(addr: SocketAddr, child: &mut Child) -> Result {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "piperider-ingest exited during start-up ({status}); see its messages above"
            ));
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("piperider-ingest did not start listening within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn run() -> Result {
    let port = match std::env::var("PIPERIDER_DEV_PORT") {
        Ok(p) => p
            .parse::<u16>()
            .map_err(|_| format!("PIPERIDER_DEV_PORT={p} is not a port number"))?,
        Err(_) => DEFAULT_PORT,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if std::net::TcpListener::bind(addr).is_err() {
        return Err(format!(
            "port {port} is busy: stop what listens on {addr} (another `cargo xtask dev`?) or choose another with PIPERIDER_DEV_PORT=8701"
        ));
    }
    crate::build(
        "build piperider, piperider-demo-cloud and the sample data source",
        "debug",
        &["piperider-cli", "piperider-demo-cloud", "piperider-bench"],
    )?;
    let dir = data_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let token = admin_token(&dir)?;
    let bin = crate::target_dir().join("debug");
    // The backend with the demo Cloud site beside it (never in the production binary).
    let mut ingest = Command::new(bin.join("piperider-demo-cloud"))
        .args(["--listen", &addr.to_string()])
        .arg("--database-url")
        .arg(format!("sqlite:{}", dir.join("ingest.db").display()))
        .arg("--admin-token-file")
        .arg(dir.join("admin-token"))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting piperider-ingest: {e}"))?;
    if let Err(e) = wait_ready(addr, &mut ingest) {
        let _ = ingest.kill();
        return Err(e);
    }
    let endpoint = format!("http://{addr}");
    println!();
    println!(
        "piperider-ingest is running on SQLite ({})",
        dir.join("ingest.db").display()
    );
    println!("  Cloud demo: {endpoint}/   (the consent banner and Cloud telemetry)");
    println!("  API:        {endpoint}/v1/batch   (OpenAPI: {endpoint}/openapi.json)");
    println!("  health:     {endpoint}/healthz  {endpoint}/readyz  {endpoint}/metrics");
    println!("  admin token: {token}");
    println!("  admin API:  curl -H 'Authorization: Bearer {token}' {endpoint}/v1/admin/stats");
    println!("  dashboard:  {endpoint}/admin   (log in with the admin token)");
    println!();
    println!("Point a piperider CLI at it:");
    println!("  export PIPERIDER_TELEMETRY_ENDPOINT={endpoint}");
    println!();
    if let Err(e) = sample_run(&bin, &dir, &endpoint) {
        eprintln!("xtask: the sample run failed: {e}");
    }
    println!(
        "Ctrl-C stops the stack (the data stays in {}).",
        dir.display()
    );
    wait_for_ctrl_c(&mut ingest)
}

/// `piperider init` (once) and `piperider run` on the sample database, as
/// a user of this stack whose home is in the data folder.
fn sample_run(bin: &Path, dir: &Path, endpoint: &str) -> Result {
    let project = dir.join("sample-project");
    std::fs::create_dir_all(&project).map_err(|e| e.to_string())?;
    run_step(
        "sample data source",
        Command::new(bin.join("piperider-bench"))
            .arg("sample-db")
            .arg(project.join("shop.db")),
    )?;
    let home = dir.join("home");
    let piperider = |args: &[&str]| {
        Command::new(bin.join("piperider"))
            .args(args)
            .current_dir(&project)
            .env("PIPERIDER_HOME", &home)
            .env("PIPERIDER_TELEMETRY_ENDPOINT", endpoint)
            .env_remove("DO_NOT_TRACK")
            .env_remove("PIPERIDER_TELEMETRY_DISABLED")
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("piperider: {e}"))
    };
    println!(
        "Sample run in {} (PIPERIDER_HOME={}):",
        project.display(),
        home.display()
    );
    if !project.join(".piperider/config.yml").exists() {
        println!("$ piperider init --datasource-url sqlite://shop.db");
        piperider(&[
            "init",
            "--name",
            "shop",
            "--datasource-url",
            "sqlite://shop.db",
        ])?;
    }
    println!("$ piperider run");
    piperider(&["run"])?;
    println!("$ piperider telemetry status");
    piperider(&["telemetry", "status"])?;
    println!();
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM, then stops the backend with SIGTERM (its
/// acknowledged events are committed) and waits for it to exit.
fn wait_for_ctrl_c(ingest: &mut Child) -> Result {
    let (tx, stop) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    loop {
        if stop.recv_timeout(Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = ingest.try_wait() {
            return Err(format!("piperider-ingest stopped ({status})"));
        }
    }
    // A Ctrl-C in the terminal reached the backend too; SIGTERM is then a no-op.
    let _ = Command::new("kill")
        .args(["-TERM", &ingest.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = ingest.try_wait() {
            println!("stopped.");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ingest.kill();
    let _ = ingest.wait();
    Err("piperider-ingest did not stop within 15 s and was killed".into())
}
