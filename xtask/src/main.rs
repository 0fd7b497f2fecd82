//! `cargo xtask`: the project's own tasks.
//!
//! - `test`     every suite of the workspace (the README's test command)
//! - `package`  `cargo package` of the boundary crates, verification included
//! - `codegen`  write generated files (`--check`: fail when they are stale)
//! - `lint`     `cargo fmt --check` and clippy with warnings denied
//! - `tidy`     the layering and manifest rules (also run by `test`)
//! - `bench`    the speed targets, as ratios measured in one run
//! - `dev`      the whole stack on SQLite

mod codegen;
mod dev;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test               run every test suite (tidy, codegen --check, cargo test, examples)
  codegen [--check]  write docs/schema/ from the Rust types; --check fails when stale
  lint               cargo fmt --check, cargo doc and cargo clippy --all-targets, warnings denied
  tidy               check crate layering and manifest rules
  bench [--quick]    measure the speed targets; writes target/bench/report.json
  examples           every crate's examples alone (also run by `test`)
  package            cargo package (verified) of the boundary crates alone (also run by `test`)
  faults             the fault-injection cases alone (also run by `test`)
  fuzz [--cases N]   the never-panics property tests with N cases each (default 20,000):
                     event parser, profile reader, consent cookie, request bodies (gzip too)
  fuzz --seconds N   the same, round after round (fresh random inputs each) for N seconds
  fuzz --libfuzzer [--seconds N]
                     the coverage-guided targets in fuzz/ (cargo fuzz, nightly), N seconds
                     each (default 60), from the committed corpus; new inputs join it
  dev                start the whole stack on SQLite (data in target/piperider-dev/)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["test"] => test(),
        ["codegen"] => codegen::run(false),
        ["codegen", "--check"] => codegen::run(true),
        ["lint"] => lint(),
        ["tidy"] => tidy::run(),
        ["bench"] => bench(&["bench"]),
        ["bench", "--quick"] => bench(&["bench", "--quick"]),
        ["examples"] => run_examples(&mut Totals::default()),
        ["package"] => package(&mut Totals::default()),
        ["faults"] => match faults() {
            Ok((_, 0)) => Ok(()),
            Ok((passed, failed)) => Err(format!("faults: {passed} passed, {failed} failed")),
            Err(e) => Err(e),
        },
        ["fuzz"] => fuzz(20_000),
        ["fuzz", "--cases", n] => match n.parse() {
            Ok(n) => fuzz(n),
            Err(_) => Err(format!("--cases takes a number, not {n:?}")),
        },
        ["fuzz", "--libfuzzer"] => libfuzzer(60),
        ["fuzz", "--libfuzzer", "--seconds", n] => match n.parse() {
            Ok(n) => libfuzzer(n),
            Err(_) => Err(format!("--seconds takes a number, not {n:?}")),
        },
        ["fuzz", "--seconds", n] => match n.parse() {
            Ok(n) => fuzz_for(std::time::Duration::from_secs(n)),
            Err(_) => Err(format!("--seconds takes a number, not {n:?}")),
        },
        ["dev"] => dev::run(),
        ["help" | "--help" | "-h"] | [] => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown task {args:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level under the workspace root")
        .to_path_buf()
}

/// Cargo's target directory for this workspace: `CARGO_TARGET_DIR` or the
/// build configuration's, as `cargo metadata` reports it (never assumed to
/// be `target/` under the root).
pub(crate) fn target_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let from_cargo = cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["target_directory"].as_str().map(PathBuf::from));
        from_cargo
            .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
            .unwrap_or_else(|| root().join("target"))
    })
    .clone()
}

/// A binary built in `profile` (`debug` or `release`).
pub(crate) fn binary(profile: &str, name: &str) -> PathBuf {
    target_dir()
        .join(profile)
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn run_step(name: &str, cmd: &mut Command) -> Result {
    eprintln!("xtask: == {name}");
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: could not start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

/// Builds `packages` in `profile` (`debug` or `release`).
pub(crate) fn build(name: &str, profile: &str, packages: &[&str]) -> Result {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet"]);
    if profile == "release" {
        cmd.arg("--release");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    run_step(name, &mut cmd)
}

/// The load tools (`crates/piperider-bench`) and the binaries they drive,
/// built in release; the tools find those binaries beside their own.
fn bench_binaries(name: &str) -> Result<PathBuf> {
    build(
        name,
        "release",
        &["piperider-cli", "piperider-ingest", "piperider-bench"],
    )?;
    Ok(binary("release", "piperider-bench"))
}

/// `cargo xtask bench`: `piperider-bench bench` on release binaries.
fn bench(args: &[&str]) -> Result {
    let exe = bench_binaries("release build")?;
    run_step("measurements", Command::new(exe).args(args))
}

/// The fault-injection cases on release binaries: (passed, failed), from
/// the last line of `piperider-bench faults`.
fn faults() -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let exe = bench_binaries("release build for the fault-injection suite")?;
    let mut child = Command::new(exe)
        .arg("faults")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting piperider-bench: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut counts = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading piperider-bench's output: {e}"))?;
        println!("{line}");
        // "faults: 5 passed, 0 failed"
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        if let ["faults:", passed, "passed", failed, "failed"] = words.as_slice() {
            counts = passed.parse().ok().zip(failed.parse().ok());
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    match counts {
        Some(counts) if status.success() => Ok(counts),
        _ => Err(format!("piperider-bench faults failed ({status})")),
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn postgres_reachable() -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 5432));
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
}

fn browser_installed() -> bool {
    let runs = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    runs("chromium") && runs("chromedriver")
}

/// Whether `nats-server` runs here (the queue-mode suites start their own).
fn nats_installed() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// axe-core for the browser tests' accessibility check: `npm ci` in
/// tools/axe the first time (its package-lock pins the version).
fn axe_script() -> Result<PathBuf> {
    let dir = root().join("tools").join("axe");
    let script = dir.join("node_modules").join("axe-core").join("axe.min.js");
    if !script.exists() {
        eprintln!("xtask: installing axe-core (npm ci in tools/axe)");
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !script.exists() {
            return Err("npm ci in tools/axe failed or npm is missing".into());
        }
    }
    Ok(script)
}

fn test() -> Result {
    tidy::run()?;
    codegen::run(true)?;
    let mut skipped: Vec<String> = Vec::new();
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"]);
    let mut needs = |present: bool, require: &str, missing: &str, fix: &str| -> Result {
        if present {
            // The suites fail instead of skipping when it is missing.
            cmd.env(require, "1");
        } else if in_ci() {
            return Err(format!(
                "{missing}, and CI must run the suites that need it ({fix})"
            ));
        } else {
            skipped.push(format!("the suites that need it: {missing} ({fix})"));
        }
        Ok(())
    };
    needs(
        postgres_reachable(),
        "PIPERIDER_REQUIRE_POSTGRES",
        "nothing answers as PostgreSQL on 127.0.0.1:5432",
        ".ci/run starts it",
    )?;
    needs(
        browser_installed(),
        "PIPERIDER_REQUIRE_BROWSER",
        "chromium or chromedriver is missing (browser tests)",
        "apt-get install -y chromium chromium-driver",
    )?;
    needs(
        nats_installed(),
        "PIPERIDER_REQUIRE_NATS",
        "nats-server is missing (queue-mode suites)",
        "apt-get install -y nats-server",
    )?;
    needs(
        piperider_testkit::postgres::tools().is_some(),
        "PIPERIDER_REQUIRE_PG_TOOLS",
        "PostgreSQL's server tools (initdb, pg_ctl, pg_basebackup) are missing (the read-replica test)",
        "apt-get install -y postgresql, or PIPERIDER_PG_BIN=<their folder>",
    )?;
    match axe_script() {
        Ok(path) => {
            cmd.env("PIPERIDER_AXE_JS", path);
        }
        Err(e) if in_ci() => {
            return Err(format!("{e}, and CI must run the accessibility check"));
        }
        Err(e) => skipped.push(format!("the dashboard's accessibility check ({e})")),
    }
    let msrv = rust_version()?;
    if msrv_toolchain_installed(&msrv) {
        // The downstream crate is built with the declared rust-version.
        cmd.env("PIPERIDER_MSRV_TOOLCHAIN", &msrv);
    } else if in_ci() {
        return Err(format!(
            "the Rust {msrv} toolchain (the declared rust-version) is missing, and CI must build the downstream crate with it (.ci/run installs it)"
        ));
    } else {
        skipped.push(format!(
            "the downstream crate's build on Rust {msrv}, the declared rust-version (built with the current toolchain instead: rustup toolchain install {msrv} --profile minimal)"
        ));
    }
    let mut totals = Totals::default();
    let cargo_tests = run_tests(
        "workspace tests (unit, integration, property)",
        &mut cmd,
        &mut totals,
    );
    let examples = run_examples(&mut totals);
    let packaged = package(&mut totals);
    eprintln!("xtask: == fault injection (release binaries)");
    let fault_cases = faults();
    if let Ok((passed, failed)) = &fault_cases {
        totals.passed += passed;
        totals.failed += failed;
    }
    eprintln!("xtask: == summary");
    for suite in &skipped {
        eprintln!("xtask: SKIPPED {suite}");
    }
    println!("xtask: {} passed, {} failed", totals.passed, totals.failed);
    cargo_tests?;
    examples?;
    packaged?;
    match fault_cases {
        Ok((_, 0)) => {}
        Ok((_, failed)) => return Err(format!("{failed} fault-injection case(s) failed")),
        Err(e) => return Err(format!("fault injection: {e}")),
    }
    if totals.passed == 0 {
        return Err("no test ran".into());
    }
    Ok(())
}

/// The workspace's `rust-version`, which every crate inherits.
fn rust_version() -> Result<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml"))
        .map_err(|e| format!("Cargo.toml: {e}"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_string)
        .ok_or_else(|| "Cargo.toml: no rust-version under [workspace.package]".into())
}

fn msrv_toolchain_installed(version: &str) -> bool {
    Command::new("rustup")
        .args(["run", version, "cargo", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The crates other projects depend on; the rest are `publish = false`.
pub(crate) const BOUNDARY_CRATES: [&str; 4] = [
    "piperider-event",
    "piperider-profile",
    "piperider-collector",
    "piperider-consent",
];

/// `cargo package` of the boundary crates together (each is verified by
/// building it from its own package, the others it needs taken from theirs):
/// what a registry would get, without uploading anything.
fn package(totals: &mut Totals) -> Result {
    let mut cmd = cargo();
    cmd.arg("package");
    for krate in BOUNDARY_CRATES {
        cmd.args(["-p", krate]);
    }
    // Uncommitted changes are packaged as they are: the check is of the
    // tree being tested, not of the last commit.
    cmd.arg("--allow-dirty");
    match run_step("package (the boundary crates, verified)", &mut cmd) {
        Ok(()) => {
            println!("package {} ... ok", BOUNDARY_CRATES.join(", "));
            totals.passed += 1;
            Ok(())
        }
        Err(e) => {
            println!("package {} ... FAILED", BOUNDARY_CRATES.join(", "));
            totals.failed += 1;
            Err(e)
        }
    }
}

/// Counts from the `test result:` lines of libtest.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }
}

/// Runs a libtest-based command, echoing its output and adding up its results.
fn run_tests(name: &str, cmd: &mut Command, totals: &mut Totals) -> Result {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: == {name}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: could not start {cmd:?}: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("{name}: reading output: {e}"))?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait().map_err(|e| format!("{name}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

/// Runs every crate's `examples/*.rs` (each must exit 0), counting each
/// as a test.
fn run_examples(totals: &mut Totals) -> Result {
    eprintln!("xtask: == examples");
    let mut failed = Vec::new();
    let crates = std::fs::read_dir(root().join("crates")).map_err(|e| format!("crates/: {e}"))?;
    let mut found: Vec<(String, String)> = Vec::new();
    for krate in crates.filter_map(|e| e.ok()) {
        let Ok(examples) = std::fs::read_dir(krate.path().join("examples")) else {
            continue;
        };
        for example in examples.filter_map(|e| e.ok()) {
            let name = example.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".rs") {
                found.push((
                    krate.file_name().to_string_lossy().into_owned(),
                    stem.to_string(),
                ));
            }
        }
    }
    found.sort();
    for (krate, example) in found {
        let status = cargo()
            .args(["run", "--quiet", "-p", &krate, "--example", &example])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("starting cargo: {e}"))?;
        if status.success() {
            println!("example {krate}/{example} ... ok");
            totals.passed += 1;
        } else {
            println!("example {krate}/{example} ... FAILED ({status})");
            totals.failed += 1;
            failed.push(format!("{krate}/{example}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("examples failed: {}", failed.join(", ")))
    }
}

/// The parser property tests at many more cases than `test` runs; a
/// failure is saved by proptest under `proptest-regressions/` and replayed
/// by every later run.
fn fuzz(cases: u64) -> Result {
    run_step(
        &format!("never-panics property tests, {cases} cases each"),
        cargo()
            .args(["test", "--release", "--workspace", "--", "never_panic"])
            .env("PROPTEST_CASES", cases.to_string()),
    )
}

/// Fuzzing for a time: rounds of 2,000 cases each (proptest seeds every
/// round afresh) until `time` has passed; the first failure stops it.
fn fuzz_for(time: std::time::Duration) -> Result {
    let started = std::time::Instant::now();
    let mut rounds = 0;
    while rounds == 0 || started.elapsed() < time {
        fuzz(2_000)?;
        rounds += 1;
    }
    eprintln!(
        "xtask: fuzz: {rounds} round(s) of 2,000 cases per target in {:.0} s, no failure",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The cargo-fuzz targets of `fuzz/`, each for `seconds`, on nightly; a
/// crash stops it (libFuzzer keeps the input under `fuzz/artifacts/`).
fn libfuzzer(seconds: u64) -> Result {
    let dir = root().join("fuzz");
    for target in ["event_parse", "gzip_body", "consent_cookie", "profile_read"] {
        run_step(
            &format!("libFuzzer: {target} for {seconds} s"),
            // rustup's `cargo`, which reads `+nightly` (Cargo's own binary does not).
            Command::new("cargo")
                .current_dir(&dir)
                .env_remove("RUSTUP_TOOLCHAIN")
                .args(["+nightly", "fuzz", "run", target])
                .arg(format!("corpus/{target}"))
                .args(["--", &format!("-max_total_time={seconds}")]),
        )?;
    }
    Ok(())
}

fn lint() -> Result {
    run_step("rustfmt", cargo().args(["fmt", "--all", "--check"]))?;
    run_step(
        "rustdoc (warnings denied)",
        cargo()
            .args(["doc", "--no-deps", "--workspace"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run_step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )
}
