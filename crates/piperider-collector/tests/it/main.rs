//! The collector through its public API, against a loopback sink.

mod capture;
mod rules;
mod sending;

use std::path::{Path, PathBuf};
use std::time::Duration;

use piperider_collector::{AppInfo, Collector, CommandRecord, Env, SenderPolicy};
use piperider_event::{CommandName, Runtime, Stats, Status};
use piperider_profile::AppHome;

pub(crate) const PIPERIDER_PROFILE: &str =
    "user_id: 3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b\nanonymous_tracking: true\n";
pub(crate) const PROJECT_ID: &str = "dc243c0c67204d4bb15740617505cb26";

pub(crate) fn app() -> AppInfo {
    AppInfo {
        name: "piperider".into(),
        version: "0.1.0".into(),
        runtime: Runtime {
            name: "rust".into(),
            version: "1.95.0".into(),
        },
        default_endpoint: None,
        notice: "notice".into(),
    }
}

/// A user home, a working folder and an environment, all in a temporary folder.
pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: PathBuf,
}

impl World {
    pub(crate) fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("work");
        std::fs::create_dir_all(&cwd).unwrap();
        World {
            dir,
            env: Vec::new(),
            cwd,
        }
    }

    /// With PipeRider's own two-line profile and the endpoint set.
    pub(crate) fn with_profile(endpoint: &str) -> World {
        let mut w = World::new();
        w.write_profile(PIPERIDER_PROFILE);
        w.set("PIPERIDER_TELEMETRY_ENDPOINT", endpoint);
        w
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home/.piperider")
    }

    pub(crate) fn profile_path(&self) -> PathBuf {
        self.home().join("profile.yml")
    }

    pub(crate) fn write_profile(&self, text: &str) {
        std::fs::create_dir_all(self.home()).unwrap();
        std::fs::write(self.profile_path(), text).unwrap();
    }

    /// Makes `cwd` a project whose config says `config`.
    pub(crate) fn project(&mut self, config: &str) -> PathBuf {
        let project = self.dir.path().join("work/shop");
        std::fs::create_dir_all(project.join(".piperider")).unwrap();
        std::fs::write(project.join(".piperider/config.yml"), config).unwrap();
        self.cwd = project.join("models");
        std::fs::create_dir_all(&self.cwd).unwrap();
        project
    }

    pub(crate) fn set(&mut self, k: &str, v: &str) {
        self.env.push((k.into(), v.into()));
    }

    pub(crate) fn collector(&self) -> Collector {
        Collector::with_parts(
            app(),
            AppHome::at("piperider", self.home()),
            &self.cwd,
            Env::from_pairs(self.env.clone()),
        )
    }

    pub(crate) fn spool_files(&self) -> usize {
        let dir = self.home().join("telemetry/spool");
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }
}

pub(crate) fn run_record(status: Status) -> CommandRecord {
    CommandRecord {
        command: CommandName::RUN,
        status,
        duration: Duration::from_millis(812),
        stats: Some(Stats {
            tables: 2,
            columns: 8,
            rows: 30,
            builtin_assertions: 4,
            custom_assertions: 1,
            passed_assertions: 4,
            failed_assertions: 1,
        }),
        datasource_type: Some("sqlite".into()),
    }
}

pub(crate) fn quick_policy() -> SenderPolicy {
    SenderPolicy {
        base_backoff: Duration::from_millis(20),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        attempts_per_run: 2,
        ..SenderPolicy::default()
    }
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
