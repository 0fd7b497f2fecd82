//! `piperider-bench`: the load tools, run by `cargo xtask` on release
//! binaries of the same build (found beside this one, so they follow
//! `CARGO_TARGET_DIR`).
//!
//! - `bench [--quick]`  the speed targets as ratios measured in one run;
//!   writes `<target dir>/bench/report.json`
//! - `faults [NAME]`    the fault-injection cases, or those whose name has NAME (`cargo xtask test` runs them all)
//! - `noop-server`      the HTTP ceiling: a no-op axum endpoint (the bench
//!   starts it in its own process, as the backend is)
//! - `sample-db PATH`   the sample SQLite data source (`cargo xtask dev` uses it)

mod backend;
mod ceilings;
mod cli_overhead;
mod dashboard;
mod events;
mod faults;
mod launcher;
mod load;
mod queue_faults;
mod sample;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: piperider-bench <task>   (run through `cargo xtask bench` and `cargo xtask test`)

tasks:
  bench [--quick]  measure the speed targets; writes <target dir>/bench/report.json
  faults [NAME]    run the fault-injection cases (those whose name has NAME); the last line counts them
  noop-server      serve a no-op endpoint on a free loopback port; prints its address
  sample-db PATH   create the sample SQLite data source at PATH unless it exists
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["bench"] => cli_overhead::run(false),
        ["bench", "--quick"] => cli_overhead::run(true),
        ["faults", filter @ ..] => faults::run(filter.first().copied()).map(|(passed, failed)| {
            // `cargo xtask test` adds this line's counts to its totals.
            println!("faults: {passed} passed, {failed} failed");
        }),
        ["noop-server"] => backend::noop_server(),
        ["sample-db", path] => sample::shop_db(Path::new(path)),
        ["help" | "--help" | "-h"] | [] => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown task {args:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("piperider-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A binary of the same build as this one (`piperider`,
/// `piperider-ingest`, `piperider-bench`): its sibling in the profile's
/// folder of Cargo's target directory.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Cargo's target directory: the parent of this binary's profile folder.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `piperider` in `project`, with a clean environment: `home` as its home
/// and `~/.piperider`, telemetry sent to `endpoint`, output discarded.
fn piperider_command(home: &Path, project: &Path, endpoint: &str) -> Command {
    let mut cmd = Command::new(binary("piperider"));
    cmd.current_dir(project)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("PIPERIDER_HOME", home)
        .env("PIPERIDER_TELEMETRY_ENDPOINT", endpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// Events waiting in the spool (dot files, a writer's temporary ones, excluded).
fn spool_len(home: &Path) -> usize {
    std::fs::read_dir(home.join("telemetry/spool"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

/// A work folder of this process under the system's temp folder, empty.
fn work_dir(name: &str) -> Result<PathBuf> {
    let work = std::env::temp_dir().join(format!("piperider-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    Ok(work)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}
