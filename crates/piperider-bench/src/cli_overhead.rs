//! `cargo xtask bench [--quick]`: the speed targets, measured as ratios in
//! one run on this machine, written to `<target dir>/bench/report.json`.
//!
//! CLI overhead: the wall time of a real `piperider run` with telemetry on,
//! against the same command with `DO_NOT_TRACK=1`, interleaved run by run, in
//! three conditions of the backend: up, refusing connections, and accepting
//! connections without ever answering.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use piperider_testkit::{Mode, Sink};
use serde_json::{Value, json};

use crate::{Result, median, sample, spool_len};

struct Settings {
    cli_iterations: usize,
    /// Runs where every command starts its own sender (each waits for the last sender to exit).
    isolated_iterations: usize,
}

/// The whole bench: the CLI's overhead, then the backend's figures;
/// writes the report and prints its table.
pub(crate) fn run(quick: bool) -> Result {
    let settings = Settings {
        cli_iterations: if quick { 41 } else { 121 },
        isolated_iterations: if quick { 11 } else { 31 },
    };
    let work = crate::work_dir("bench")?;
    let mut report = serde_json::Map::new();
    if std::env::var_os("PIPERIDER_BENCH_ONLY").is_some() {
        let backend = crate::backend::run(quick)?;
        crate::backend::print(&backend);
        // Every figure of the phases run, nested ones too.
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(backend)).unwrap_or_default()
        );
        return Ok(());
    }
    let cli = cli_overhead(&work, &settings);
    let _ = std::fs::remove_dir_all(&work);
    let cli = cli?;
    report.insert("cli_overhead_ms".into(), cli.0);
    report.insert("cli_overhead_ratio".into(), cli.1);
    report.insert("cli_overhead_isolated".into(), cli.2);
    let backend = crate::backend::run(quick)?;
    report.extend(backend);
    report.insert(
        "machine".into(),
        json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "quick": quick,
        }),
    );

    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("report.json");
    let text =
        serde_json::to_string_pretty(&Value::Object(report.clone())).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    print_table(&report);
    crate::backend::print(&report);
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

fn print_table(report: &serde_json::Map<String, Value>) {
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "figure", "sink_up", "sink_refused", "sink_blackhole"
    );
    for key in ["cli_overhead_ms", "cli_overhead_ratio"] {
        let v = &report[key];
        println!(
            "{key:<34} {:>12.3} {:>12.3} {:>12.3}",
            v["sink_up"].as_f64().unwrap_or(f64::NAN),
            v["sink_refused"].as_f64().unwrap_or(f64::NAN),
            v["sink_blackhole"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let iso = &report["cli_overhead_isolated"];
    println!(
        "{:<34} {:>12.3}   (ratio {:.3}; every command starts a sender)",
        "cli_overhead_isolated_ms",
        iso["ms"].as_f64().unwrap_or(f64::NAN),
        iso["ratio"].as_f64().unwrap_or(f64::NAN)
    );
}

/// A project with the sample database and a returning user's profile.
fn project(work: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = work.join(name);
    let project = dir.join("shop");
    let home = dir.join("home");
    std::fs::create_dir_all(&project).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    std::fs::write(
        home.join("profile.yml"),
        "user_id: 3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b\nanonymous_tracking: true\n",
    )
    .map_err(|e| e.to_string())?;
    sample::shop_db(&project.join("shop.db"))?;
    let piperider = project.join(".piperider");
    std::fs::create_dir_all(piperider.join("assertions")).map_err(|e| e.to_string())?;
    std::fs::write(
        piperider.join("config.yml"),
        "dataSources:\n- name: shop\n  type: sqlite\n  dbpath: shop.db\ntelemetry:\n  id: dc243c0c67204d4bb15740617505cb26\n",
    )
    .map_err(|e| e.to_string())?;
    Ok((project, home))
}

fn timed(project: &Path, home: &Path, endpoint: &str, telemetry: bool) -> Result<Duration> {
    let mut cmd = crate::piperider_command(home, project, endpoint);
    cmd.arg("run");
    if !telemetry {
        cmd.env("DO_NOT_TRACK", "1");
    }
    let started = Instant::now();
    let status = cmd.status().map_err(|e| format!("piperider: {e}"))?;
    let took = started.elapsed();
    if !status.success() {
        return Err(format!(
            "`piperider run` failed in the benchmark ({status})"
        ));
    }
    Ok(took)
}

/// Overhead from runs taken in on/off pairs: the median of the pairwise
/// differences and of the pairwise ratios. Pairing cancels the slow drift
/// of a shared machine, which otherwise dwarfs a sub-millisecond effect.
fn paired(on: &[f64], off: &[f64]) -> (f64, f64) {
    let diffs = on.iter().zip(off).map(|(a, b)| a - b).collect();
    let ratios = on.iter().zip(off).map(|(a, b)| a / b).collect();
    (
        crate::round(median(diffs), 3),
        crate::round(median(ratios), 3),
    )
}

/// Whether a sender process holds the sender lock.
fn sender_running(home: &Path) -> bool {
    match std::fs::File::open(home.join("telemetry/sender.lock")) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Overhead when no sender lingers from an earlier command, so each
/// command pays for starting one: the case of a person running commands
/// minutes apart.
fn isolated(work: &Path, endpoint: &str, iterations: usize) -> Result<Value> {
    let (project, home) = project(work, "isolated")?;
    let settle = |home: &Path| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while (spool_len(home) > 0 || sender_running(home)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    timed(&project, &home, endpoint, true)?;
    settle(&home);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    // Each run follows the same wait, so neither finds the machine warmer,
    // and which goes first alternates (the first follows a sender's exit).
    for i in 0..iterations {
        for telemetry in [i % 2 == 0, i % 2 == 1] {
            std::thread::sleep(Duration::from_millis(50));
            let took = timed(&project, &home, endpoint, telemetry)?.as_secs_f64() * 1e3;
            if telemetry {
                on.push(took)
            } else {
                off.push(took)
            }
            settle(&home);
        }
    }
    let (ms, ratio) = paired(&on, &off);
    eprintln!(
        "bench isolated: telemetry on {:.2} ms, off {:.2} ms (medians of {iterations})",
        median(on),
        median(off)
    );
    Ok(json!({ "ms": ms, "ratio": ratio }))
}

fn cli_overhead(work: &Path, settings: &Settings) -> Result<(Value, Value, Value)> {
    let up = Sink::start(Mode::Accept);
    let blackhole = Sink::start(Mode::Blackhole);
    let conditions = [
        ("sink_up", up.endpoint()),
        ("sink_refused", Sink::refused_endpoint()),
        ("sink_blackhole", blackhole.endpoint()),
    ];
    let mut ms = serde_json::Map::new();
    let mut ratio = serde_json::Map::new();
    for (name, endpoint) in conditions {
        let (project, home) = project(work, name)?;
        // Warm the page cache and the backoff state.
        timed(&project, &home, &endpoint, true)?;
        timed(&project, &home, &endpoint, false)?;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for i in 0..settings.cli_iterations {
            // Alternate which goes first, so drift hits both alike.
            let order = if i % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for telemetry in order {
                let took = timed(&project, &home, &endpoint, telemetry)?.as_secs_f64() * 1e3;
                if telemetry {
                    on.push(took)
                } else {
                    off.push(took)
                }
                if name == "sink_up" {
                    // The sender runs after the command; let it finish outside the timing.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while spool_len(&home) > 0 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        let (d, r) = paired(&on, &off);
        eprintln!(
            "bench {name}: telemetry on {:.2} ms, off {:.2} ms (medians of {})",
            median(on),
            median(off),
            settings.cli_iterations
        );
        ms.insert(name.into(), json!(d));
        ratio.insert(name.into(), json!(r));
    }
    let isolated = isolated(work, &up.endpoint(), settings.isolated_iterations)?;
    if up.events().is_empty() {
        return Err("the benchmark's telemetry never reached the sink: the sink_up figures would be meaningless".into());
    }
    Ok((Value::Object(ms), Value::Object(ratio), isolated))
}
