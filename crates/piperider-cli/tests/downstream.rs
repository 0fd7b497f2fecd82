//! The boundary crates as another project takes them: `shipit`, a CLI
//! outside the workspace (written to a temporary folder from
//! `tests/downstream/`), depends on them by path, builds with the declared
//! `rust-version` (when `cargo xtask test` found that toolchain), and runs
//! its own host binary end to end against the real backend. A public item it
//! uses that is removed or renamed fails the build, and so this test.

#[path = "it/backend.rs"]
mod backend;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use backend::Backend;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The workspace's `rust-version`, which the boundary crates inherit.
fn rust_version(root: &Path) -> String {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the workspace declares rust-version")
        .to_string()
}

/// Cargo's target folder (this test runs from `<target>/<profile>/deps/`),
/// so `CARGO_TARGET_DIR` is honoured; the downstream build keeps its own
/// folder inside it, since `cargo test` holds the workspace's build lock.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Writes the downstream crate into `dir` and builds it; returns its binary.
fn build_downstream(dir: &Path) -> PathBuf {
    let root = root();
    let rust_version = rust_version(&root);
    let fixture = root.join("crates/piperider-cli/tests/downstream");
    let manifest = std::fs::read_to_string(fixture.join("Cargo.toml.in"))
        .unwrap()
        .replace("@ROOT@", root.to_str().unwrap())
        .replace("@RUST_VERSION@", &rust_version);
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::copy(fixture.join("src/main.rs"), dir.join("src/main.rs")).unwrap();
    // The workspace's lock: the same versions the workspace is tested with,
    // and no index lookups for packages already downloaded.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let target = target_dir().join("downstream");
    let mut build = match std::env::var("PIPERIDER_MSRV_TOOLCHAIN") {
        Ok(toolchain) => {
            assert_eq!(
                toolchain, rust_version,
                "PIPERIDER_MSRV_TOOLCHAIN names a toolchain other than the declared rust-version"
            );
            let mut c = Command::new("rustup");
            c.args(["run", &toolchain, "cargo"]);
            c
        }
        Err(_) => {
            eprintln!(
                "downstream: SKIPPED the build on Rust {rust_version} (the declared rust-version); \
                 built with the current toolchain (cargo xtask test sets PIPERIDER_MSRV_TOOLCHAIN \
                 when `rustup toolchain install {rust_version} --profile minimal` has been done)"
            );
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        }
    };
    let out = build
        .args(["build", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the downstream crate does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug/shipit")
}

struct Shipit {
    exe: PathBuf,
    home: PathBuf,
    endpoint: String,
}

impl Shipit {
    /// Runs `shipit` as its user would: a home of its own and nothing of
    /// this process's environment (no `CI`, no `DO_NOT_TRACK`).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.exe)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("SHIPIT_TELEMETRY_ENDPOINT", &self.endpoint)
            .current_dir(&self.home)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "shipit {args:?}: {stdout}{stderr}");
        (stdout, stderr)
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_cli_outside_the_workspace_builds_on_the_boundary_crates_and_reports_end_to_end() {
    let crate_dir = tempfile::tempdir().unwrap();
    let exe = build_downstream(crate_dir.path());
    let backend = Backend::start();
    let home = tempfile::tempdir().unwrap();
    let shipit = Shipit {
        exe,
        home: home.path().to_path_buf(),
        endpoint: backend.endpoint.clone(),
    };

    // The event and consent crates on their own.
    let (validated, _) = shipit.ok(&["validate"]);
    assert!(
        validated.starts_with("shipit.deploy ok; refused: stats"),
        "{validated}"
    );
    assert_eq!(shipit.ok(&["consent"]).0.trim(), "true false");

    // First run: its own notice, its own folder, nothing recorded.
    let (_, first) = shipit.ok(&["deploy"]);
    assert!(
        first.contains("shipit collects anonymous usage data"),
        "{first}"
    );
    assert!(first.contains("NoticeShown"), "{first}");
    assert!(home.path().join(".shipit/profile.yml").is_file());
    assert!(!home.path().join(".piperider").exists());
    let (profile, _) = shipit.ok(&["profile"]);
    let (user_id, tracking) = profile.trim().split_once(' ').unwrap();
    assert_eq!((user_id.len(), tracking), (32, "true"), "{profile}");

    // Two commands, one failing with its own exit code: both arrive, under
    // shipit's own command name, sent by shipit's detached sender.
    assert!(shipit.ok(&["deploy"]).1.contains("Queued"));
    let failed = shipit.run(&["deploy", "--fail"]);
    assert_eq!(failed.status.code(), Some(1), "{:?}", text(&failed));
    let stats = backend.wait_for("shipit.deploy", 2);
    assert_eq!(stats["total_users"], 1, "{stats}");

    let deadline = Instant::now() + Duration::from_secs(20);
    while shipit.ok(&["telemetry", "pending"]).0.trim() != "0" {
        assert!(Instant::now() < deadline, "events stayed pending");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = shipit.ok(&["telemetry", "status"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["enabled"], true, "{status}");
    assert_eq!(status["user_id"], user_id, "{status}");
    assert_eq!(status["endpoint"], backend.endpoint.as_str(), "{status}");

    // Its opt-out: nothing more is recorded or sent.
    shipit.ok(&["telemetry", "disable"]);
    assert!(shipit.ok(&["deploy"]).1.contains("Skipped"));
    assert_eq!(shipit.ok(&["telemetry", "pending"]).0.trim(), "0");
    std::thread::sleep(Duration::from_millis(500));
    let stats = backend.wait_for("shipit.deploy", 2);
    let deploys = stats["commands_by_type"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "shipit.deploy")
        .unwrap();
    assert_eq!(deploys["count"], 2, "{stats}");
}
