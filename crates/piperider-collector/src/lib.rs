//! The CLI side of telemetry, for PipeRider and any other Rust CLI.
//!
//! A host command does its work, then calls [`Collector::record`] once with
//! its real figures. The collector decides whether anything may be recorded
//! ([`Reason`] lists the rules, first match wins), builds the event, appends
//! it to a bounded [`Spool`] and, when none is running, starts a detached
//! sender. Recording touches only local files: no network on the command's
//! path, no panic escapes, every error is logged to a small file and
//! swallowed, and the host's exit code is its own.
//!
//! The host binary must hand control to the sender when started with
//! [`SENDER_ARG`]: call [`run_sender_if_requested`] first thing in `main`.

//!
//! The code is in two halves: [`record`](Collector::record) and what
//! prepares it (`record.rs`), and the commands a user runs on their
//! telemetry: status, enable, disable, reset, forget, pending, and the
//! sender (`commands.rs`).

#![warn(missing_docs)]

mod commands;
mod decision;
mod device;
mod env;
mod files;
mod log;
mod record;
mod sender;
mod sent;
mod spool;

use std::io::Write;
use std::path::PathBuf;

use piperider_event::Runtime;
use piperider_profile::{AppHome, NewProfile, ProfileError, ProfileStore};

pub use commands::{ForgetError, TelemetryStatus};
pub use decision::{Decision, ModeSource, Reason};
pub use env::Env;
pub use piperider_profile::TelemetryMode;
pub use record::{CommandRecord, Recorded};
pub use sender::{SENDER_ARG, SendReport, SenderPolicy};
pub use sent::{HeldCheck, ReceiptCheck, SentBatch};
pub use spool::{Spool, SpoolLimits, SpooledEvent};

/// Who is recording: the app's name (which decides its folder, `~/.{name}`,
/// and its variables, `{NAME}_TELEMETRY_*`), version and runtime.
#[derive(Debug, Clone)]
pub struct AppInfo {
    /// Lowercase app name (`piperider`); another CLI uses its own, and so
    /// gets its own folder, profile and variables.
    pub name: String,
    /// The app's version, sent as `app_version` (and `initial_version` on a new profile).
    pub version: String,
    /// The runtime the app runs on, sent as is.
    pub runtime: Runtime,
    /// Where events go when `{NAME}_TELEMETRY_ENDPOINT` is not set. With
    /// neither, nothing is recorded.
    pub default_endpoint: Option<String>,
    /// Printed to stderr on the first run (which records nothing).
    pub notice: String,
}

impl AppInfo {
    fn var(&self, suffix: &str) -> String {
        format!(
            "{}_{suffix}",
            self.name.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// `PIPERIDER_TELEMETRY_DISABLED` for PipeRider.
    pub fn disabled_var(&self) -> String {
        self.var("TELEMETRY_DISABLED")
    }

    /// `PIPERIDER_TELEMETRY`: `off`, `local` or `on` (the environment can
    /// only narrow what the profile chose).
    pub fn mode_var(&self) -> String {
        self.var("TELEMETRY")
    }

    /// `PIPERIDER_TELEMETRY_DEBUG`: print events to stderr instead of sending them.
    pub fn debug_var(&self) -> String {
        self.var("TELEMETRY_DEBUG")
    }

    /// `PIPERIDER_TELEMETRY_ENDPOINT`: the backend's base URL.
    pub fn endpoint_var(&self) -> String {
        self.var("TELEMETRY_ENDPOINT")
    }

    /// `PIPERIDER_TELEMETRY_RETRY_BASE_MS`: the sender's first backoff delay.
    pub fn retry_base_var(&self) -> String {
        self.var("TELEMETRY_RETRY_BASE_MS")
    }
}

/// Whether events may go to `endpoint`: over https, or over http to this
/// machine's loopback (a local backend, tests); anything else would carry
/// the user id in clear text.
fn endpoint_is_safe(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<ureq::http::Uri>() else {
        return false;
    };
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => uri.host().is_some(),
        Some(s) if s.eq_ignore_ascii_case("http") => uri.host().is_some_and(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// The files the collector keeps under the app folder.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) spool: PathBuf,
    pub(crate) sender_lock: PathBuf,
    pub(crate) backoff: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) rejected_log: PathBuf,
    /// Events recorded in local mode (a spool of its own, never sent).
    pub(crate) local: PathBuf,
    /// Batches delivered, with the backend's answers.
    pub(crate) sent: PathBuf,
}

impl Paths {
    fn new(home: &AppHome) -> Self {
        let dir = home.dir().join("telemetry");
        Paths {
            spool: dir.join("spool"),
            sender_lock: dir.join("sender.lock"),
            backoff: dir.join("sender-backoff.json"),
            log: dir.join("telemetry.log"),
            rejected_log: dir.join("rejected.log"),
            local: dir.join("local").join("records"),
            sent: sent::dir(&dir),
        }
    }
}

/// The collector of one process.
#[derive(Debug)]
pub struct Collector {
    app: AppInfo,
    home: Option<AppHome>,
    cwd: PathBuf,
    env: Env,
    sender_exe: Option<PathBuf>,
    notice_out: NoticeOut,
    /// Work started by [`Collector::start`], finished by [`Collector::record`].
    prepared: std::sync::Mutex<Option<std::thread::JoinHandle<record::Prepared>>>,
}

#[derive(Debug, Clone)]
enum NoticeOut {
    Stderr,
    Discard,
}

impl Collector {
    /// A collector for this process: its environment, working folder and
    /// executable (re-run as the sender). Never fails: without a home
    /// folder it records nothing.
    pub fn new(app: AppInfo) -> Self {
        let env = Env::from_process();
        let home = AppHome::resolve_with(&app.name, |v| env.get(v).map(Into::into)).ok();
        Collector {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            sender_exe: std::env::current_exe().ok(),
            app,
            home,
            env,
            notice_out: NoticeOut::Stderr,
            prepared: std::sync::Mutex::new(None),
        }
    }

    /// A collector with every input given: for tests and embedding.
    pub fn with_parts(app: AppInfo, home: AppHome, cwd: impl Into<PathBuf>, env: Env) -> Self {
        Collector {
            app,
            home: Some(home),
            cwd: cwd.into(),
            env,
            sender_exe: None,
            notice_out: NoticeOut::Discard,
            prepared: std::sync::Mutex::new(None),
        }
    }

    fn clone_inputs(&self) -> Collector {
        Collector {
            app: self.app.clone(),
            home: self.home.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            sender_exe: self.sender_exe.clone(),
            notice_out: self.notice_out.clone(),
            prepared: std::sync::Mutex::new(None),
        }
    }

    /// Who is recording.
    pub fn app(&self) -> &AppInfo {
        &self.app
    }

    /// The backend's base URL, from the environment or the app's default,
    /// when it may be used: `https://`, or `http://` on loopback.
    pub fn endpoint(&self) -> Option<String> {
        self.configured_endpoint().filter(|e| endpoint_is_safe(e))
    }

    /// The backend's base URL as configured, safe or not.
    fn configured_endpoint(&self) -> Option<String> {
        self.env
            .get(&self.app.endpoint_var())
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_string())
            .or_else(|| self.app.default_endpoint.clone())
    }

    /// Debug mode (`{NAME}_TELEMETRY_DEBUG`): events are printed to stderr
    /// instead of being spooled and sent.
    pub fn debug(&self) -> bool {
        self.env.flag(&self.app.debug_var())
    }

    /// Applies the rules; reads files, changes nothing.
    pub fn decide(&self) -> Decision {
        decision::decide(&self.inputs())
    }

    /// What the rules read, and nothing else of the collector.
    fn inputs(&self) -> decision::Inputs<'_> {
        let configured = self.configured_endpoint();
        decision::Inputs {
            app: &self.app,
            env: &self.env,
            home: self.home.as_ref(),
            cwd: &self.cwd,
            has_endpoint: configured.is_some(),
            insecure_endpoint: configured.is_some_and(|e| !endpoint_is_safe(&e)),
        }
    }

    fn paths(&self) -> Option<Paths> {
        self.home.as_ref().map(Paths::new)
    }

    /// The spool of this app folder: the events waiting to be sent.
    pub fn spool(&self) -> Option<Spool> {
        self.paths()
            .map(|p| Spool::new(p.spool, SpoolLimits::default()))
    }

    /// The events recorded in local mode, kept as the spool keeps its own
    /// (same caps) and never sent.
    pub fn local_records(&self) -> Option<Spool> {
        self.paths()
            .map(|p| Spool::new(p.local, SpoolLimits::default()))
    }

    /// The profile's store, or why there is none.
    fn profile_store(&self) -> Result<ProfileStore, ProfileError> {
        self.home
            .as_ref()
            .map(ProfileStore::for_home)
            .ok_or_else(|| ProfileError::NoHome {
                var: AppHome::override_var(&self.app.name),
            })
    }

    fn create_profile(
        &self,
        tracking: bool,
    ) -> Result<(piperider_profile::Profile, bool), ProfileError> {
        self.profile_store()?.create(&NewProfile {
            header: vec![
                format!("{} user profile.", self.app.name),
                "anonymous_tracking: false turns off all telemetry.".to_string(),
            ],
            anonymous_tracking: tracking,
            initial_version: Some(self.app.version.clone()),
            device_id: None,
            uploading_since: tracking.then(chrono::Utc::now),
        })
    }

    fn log(&self, message: &str) {
        if let Some(paths) = self.paths() {
            log::append(&paths.log, message);
        }
        if self.debug() {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "telemetry: {message}");
        }
    }
}

/// Call first thing in the host's `main`: when this process was started as
/// the sender, runs it and returns the exit code to end with.
pub fn run_sender_if_requested(app: &AppInfo) -> Option<std::process::ExitCode> {
    if std::env::args_os().nth(1).is_none_or(|a| a != SENDER_ARG) {
        return None;
    }
    let collector = Collector::new(app.clone());
    let mut policy = collector.sender_policy();
    policy.linger = sender::LINGER;
    let report = collector.run_sender(&policy);
    if let Some(paths) = collector.paths()
        && (report.failed_attempts > 0 || report.rejected > 0 || report.set_aside > 0)
    {
        log::append(&paths.log, &format!("sender: {report:?}"));
    }
    Some(std::process::ExitCode::SUCCESS)
}

/// The README's examples, compiled (and run where they can be) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
