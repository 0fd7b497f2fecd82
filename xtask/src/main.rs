//! `cargo xtask`: the project's own tasks.
//!
//! - `test`     every suite of the workspace (the README's test command)
//! - `codegen`  write generated files (`--check`: fail when they are stale)
//! - `lint`     `cargo fmt --check` and clippy with warnings denied
//! - `tidy`     the layering and manifest rules (also run by `test`)
//! - `dev`      the whole stack on SQLite (not built yet)

mod codegen;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test               run every test suite (tidy, codegen --check, cargo test)
  codegen [--check]  write docs/schema/ from the Rust types; --check fails when stale
  lint               cargo fmt --check and cargo clippy --all-targets -D warnings
  tidy               check crate layering and manifest rules
  dev                start the whole stack on SQLite (arrives with the dev-stack work)
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
        ["dev"] => Err("`cargo xtask dev` is not built yet: the ingestion backend and dashboard come first (see README.md)".into()),
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

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn test() -> Result {
    tidy::run()?;
    codegen::run(true)?;
    run_step(
        "workspace tests (unit, integration, property)",
        cargo().args(["test", "--workspace", "--no-fail-fast"]),
    )?;
    if in_ci() {
        eprintln!("xtask: all suites ran (CI)");
    } else {
        eprintln!("xtask: all suites ran");
    }
    Ok(())
}

fn lint() -> Result {
    run_step("rustfmt", cargo().args(["fmt", "--all", "--check"]))?;
    run_step(
        "clippy",
        cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
    )
}
