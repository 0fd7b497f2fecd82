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

mod decision;
mod device;
mod env;
mod log;
mod sender;
mod spool;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use piperider_event::{
    CliEvent, CommandName, Outcome, Project, Runtime, SCHEMA_VERSION, Stats, Status,
};
use piperider_profile::{AppHome, NewProfile, ProfileError, ProfileStore};
use serde::Serialize;

pub use decision::{Decision, Reason};
pub use device::{ci_user_id, device_id_from_machine, platform};
pub use env::Env;
pub use sender::{SENDER_ARG, SendReport, SenderPolicy};
pub use spool::{Spool, SpoolLimits, SpooledEvent};

/// Who is recording: the app's name (which decides its folder, `~/.{name}`,
/// and its variables, `{NAME}_TELEMETRY_*`), version and runtime.
#[derive(Debug, Clone)]
pub struct AppInfo {
    pub name: String,
    pub version: String,
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

/// The files the collector keeps under the app folder.
#[derive(Debug, Clone)]
pub struct Paths {
    pub telemetry_dir: PathBuf,
    pub spool: PathBuf,
    pub sender_lock: PathBuf,
    pub backoff: PathBuf,
    pub log: PathBuf,
    pub rejected_log: PathBuf,
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
            telemetry_dir: dir,
        }
    }
}

/// One finished command, as the host reports it.
#[derive(Debug, Clone)]
pub struct CommandRecord {
    pub command: CommandName,
    pub status: Status,
    pub duration: Duration,
    pub stats: Option<Stats>,
    /// The data source type the command used (`sqlite`, `postgres`); when
    /// `None` inside a project, the first configured one is reported.
    pub datasource_type: Option<String>,
}

/// What [`Collector::record`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing recorded, for this reason.
    Skipped(Reason),
    /// First run: the profile was created and the notice shown; nothing recorded.
    NoticeShown,
    /// Debug mode: printed to stderr, not spooled, not sent.
    Printed,
    /// In the spool; `sender_started` when this call started a sender.
    Queued {
        sender_started: bool,
        dropped: usize,
    },
    /// Something failed; it was logged and nothing else happened.
    Failed,
}

/// The state `piperider telemetry status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryStatus {
    pub enabled: bool,
    pub reason: String,
    pub explanation: String,
    pub user_id: Option<String>,
    pub project_id: Option<String>,
    pub profile_path: PathBuf,
    pub project_config: Option<PathBuf>,
    pub pending_events: usize,
    pub dropped_events: u64,
    pub endpoint: Option<String>,
    pub debug: bool,
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
    prepared: std::sync::Mutex<Option<std::thread::JoinHandle<Prepared>>>,
}

/// What can be worked out before the command ends, off its critical path.
#[derive(Debug)]
struct Prepared {
    /// Rules 1 to 3, which cannot change while the command runs.
    user: Decision,
    /// Every rule, as things stood when prepared.
    decision: Decision,
    /// The project config as it was then; if it changed (`init` creates
    /// one), rules 4 to 6 are applied again.
    project: Option<ProjectSnapshot>,
    platform: piperider_event::Platform,
    device: Option<piperider_event::DeviceId>,
    /// The spool was brought under its limits with room for one more event.
    room_made: bool,
    /// No backoff forbids starting a sender.
    backoff_due: bool,
}

type ProjectSnapshot = (PathBuf, Option<std::time::SystemTime>, u64);

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

    /// Call when the command starts (optional): works out on a background
    /// thread, while the command runs, everything about its event except
    /// the event itself (the rules, the device and platform, room in the
    /// spool), so that [`Collector::record`] has little left to do when the
    /// command ends. With telemetry switched off by the environment it does
    /// nothing.
    pub fn start(&self) {
        if self.env.flag("DO_NOT_TRACK") || self.env.flag(&self.app.disabled_var()) {
            return;
        }
        let inputs = self.clone_inputs();
        let handle = std::thread::Builder::new()
            .name("telemetry-prepare".into())
            .spawn(move || inputs.prepare(true));
        if let (Ok(handle), Ok(mut slot)) = (handle, self.prepared.lock()) {
            *slot = Some(handle);
        }
    }

    fn project_snapshot(&self) -> Option<ProjectSnapshot> {
        let path = self.home.as_ref()?.find_project_config(&self.cwd)?;
        let meta = std::fs::metadata(&path).ok()?;
        Some((path, meta.modified().ok(), meta.len()))
    }

    /// `ahead`: the command is still running, so make room in the spool now.
    fn prepare(&self, ahead: bool) -> Prepared {
        let user = decision::user_rules(self);
        let project = self.project_snapshot();
        let decision = decision::project_rules(self, user.clone());
        let device = match (&decision.ci, &decision.profile) {
            (None, Some(profile)) if decision.enabled => self.device_id(profile).ok(),
            _ => None,
        };
        let paths = self.paths();
        let room_made = ahead
            && decision.enabled
            && !self.debug()
            && paths.as_ref().is_some_and(|p| {
                Spool::new(&p.spool, SpoolLimits::default())
                    .make_room(1)
                    .map(|dropped| self.note_dropped(dropped))
                    .is_ok()
            });
        Prepared {
            backoff_due: paths.as_ref().is_some_and(sender::backoff_due),
            user,
            decision,
            project,
            platform: device::platform(),
            device,
            room_made,
        }
    }

    fn take_prepared(&self) -> Prepared {
        let handle = self.prepared.lock().ok().and_then(|mut slot| slot.take());
        match handle.map(std::thread::JoinHandle::join) {
            Some(Ok(prepared)) => prepared,
            _ => self.prepare(false),
        }
    }

    fn note_dropped(&self, dropped: usize) {
        if dropped > 0 {
            self.log(&format!(
                "spool full: dropped the {dropped} oldest event(s)"
            ));
        }
    }

    /// Starts a detached sender unless one runs (it will see the event
    /// just spooled) or a backoff is in force.
    fn start_sender(&self, backoff_due: bool) -> bool {
        let (Some(exe), Some(paths)) = (&self.sender_exe, self.paths()) else {
            return false;
        };
        if !backoff_due || sender::lock_is_held(&paths.sender_lock) {
            return false;
        }
        match sender::spawn_detached(exe) {
            Ok(()) => true,
            Err(e) => {
                self.log(&format!("starting the sender {}: {e}", exe.display()));
                false
            }
        }
    }

    /// The program started as the sender (`None`: never start one).
    pub fn set_sender_exe(&mut self, exe: Option<PathBuf>) {
        self.sender_exe = exe;
    }

    pub fn app(&self) -> &AppInfo {
        &self.app
    }

    pub fn home(&self) -> Option<&AppHome> {
        self.home.as_ref()
    }

    pub fn paths(&self) -> Option<Paths> {
        self.home.as_ref().map(Paths::new)
    }

    pub fn spool(&self) -> Option<Spool> {
        self.paths()
            .map(|p| Spool::new(p.spool, SpoolLimits::default()))
    }

    /// The backend's base URL, from the environment or the app's default.
    pub fn endpoint(&self) -> Option<String> {
        self.env
            .get(&self.app.endpoint_var())
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_string())
            .or_else(|| self.app.default_endpoint.clone())
    }

    pub fn debug(&self) -> bool {
        self.env.flag(&self.app.debug_var())
    }

    /// Applies the rules; reads files, changes nothing.
    pub fn decide(&self) -> Decision {
        decision::decide(self)
    }

    /// Records one finished command. Never panics, never blocks on the
    /// network, never fails the host: errors are logged and swallowed.
    pub fn record(&self, record: &CommandRecord) -> Recorded {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.record_inner(record))) {
            Ok(Ok(recorded)) => recorded,
            Ok(Err(message)) => {
                self.log(&format!("record {}: {message}", record.command));
                Recorded::Failed
            }
            Err(_) => {
                self.log(&format!("record {}: panicked", record.command));
                Recorded::Failed
            }
        }
    }

    fn record_inner(&self, record: &CommandRecord) -> Result<Recorded, String> {
        let prepared = self.take_prepared();
        let decision = if prepared.project == self.project_snapshot() {
            prepared.decision
        } else {
            decision::project_rules(self, prepared.user)
        };
        match decision.reason {
            Reason::FirstRun => {
                self.create_profile(true).map_err(|e| e.to_string())?;
                self.show_notice();
                return Ok(Recorded::NoticeShown);
            }
            reason if !decision.enabled => return Ok(Recorded::Skipped(reason)),
            _ => {}
        }
        let device = match prepared.device {
            Some(device) => Some(device),
            None => match (&decision.ci, &decision.profile) {
                (None, Some(profile)) => Some(self.device_id(profile)?),
                _ => None,
            },
        };
        let event = self.assemble(&decision, prepared.platform, device, record)?;
        let json = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        if self.debug() {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&json);
            let _ = stderr.write_all(b"\n");
            return Ok(Recorded::Printed);
        }
        let paths = self.paths().ok_or("no app folder")?;
        let spool = Spool::new(&paths.spool, SpoolLimits::default());
        let appended = if prepared.room_made {
            spool.append_unchecked(&json, &event.event_id).map(|()| 0)
        } else {
            spool.append(&json, &event.event_id)
        };
        let dropped = appended.map_err(|e| format!("spool {}: {e}", paths.spool.display()))?;
        self.note_dropped(dropped);
        let sender_started = self.start_sender(prepared.backoff_due);
        Ok(Recorded::Queued {
            sender_started,
            dropped,
        })
    }

    fn assemble(
        &self,
        decision: &Decision,
        platform: piperider_event::Platform,
        device: Option<piperider_event::DeviceId>,
        record: &CommandRecord,
    ) -> Result<CliEvent, String> {
        let profile = decision.profile.as_ref();
        let (user_id, device_id) = match (decision.ci, profile, device) {
            (Some(vendor), _, _) => (
                device::ci_user_id(&self.app.name, vendor, decision.project_id.as_ref()),
                device::ci_device_id(&self.app.name, vendor),
            ),
            (None, Some(profile), Some(device)) => (profile.user_id.clone(), device),
            _ => return Err("enabled without a profile".into()),
        };
        let project = decision.project_id.clone().map(|project_id| Project {
            project_id,
            datasource_type: record
                .datasource_type
                .clone()
                .or_else(|| decision.datasource_type.clone())
                .map(|t| t.to_ascii_lowercase())
                .filter(|t| is_token(t)),
        });
        Ok(CliEvent {
            schema_version: SCHEMA_VERSION,
            // Time-ordered: the backend's index of event ids grows at one end.
            event_id: uuid::Uuid::now_v7(),
            event_type: record.command.clone(),
            timestamp: chrono::Utc::now(),
            user_id,
            device_id,
            platform,
            runtime: self.app.runtime.clone(),
            app_version: self.app.version.clone(),
            initial_version: profile
                .and_then(|p| p.initial_version.clone())
                .unwrap_or_else(|| self.app.version.clone()),
            ci: decision.ci.map(str::to_string),
            project,
            stats: record.stats,
            outcome: Outcome {
                status: record.status,
                duration_ms: record.duration.as_millis().min(u64::MAX as u128) as u64,
            },
        })
    }

    /// The machine id hashed with the app's salt; where the machine has no
    /// id, a random one kept in the profile.
    fn device_id(
        &self,
        profile: &piperider_profile::Profile,
    ) -> Result<piperider_event::DeviceId, String> {
        if let Some(machine) = device::machine_id() {
            return Ok(device::device_id_from_machine(&self.app.name, &machine));
        }
        if let Some(id) = &profile.device_id {
            return Ok(id.clone());
        }
        let id: piperider_event::DeviceId = piperider_event::UserId::random()
            .as_str()
            .parse()
            .map_err(|e: piperider_event::Violation| e.to_string())?;
        self.profile_store()
            .ok_or("no app folder")?
            .set_value("device_id", id.as_str())
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    fn profile_store(&self) -> Option<ProfileStore> {
        self.home.as_ref().map(ProfileStore::for_home)
    }

    fn create_profile(
        &self,
        tracking: bool,
    ) -> Result<(piperider_profile::Profile, bool), ProfileError> {
        let store = self.profile_store().ok_or(ProfileError::NoHome {
            var: AppHome::override_var(&self.app.name),
        })?;
        store.create(&NewProfile {
            header: vec![
                format!("{} user profile.", self.app.name),
                "anonymous_tracking: false turns off all telemetry.".to_string(),
            ],
            anonymous_tracking: tracking,
            initial_version: Some(self.app.version.clone()),
            device_id: None,
        })
    }

    fn show_notice(&self) {
        if let NoticeOut::Stderr = self.notice_out {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{}", self.app.notice.trim_end());
        }
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

    /// What `telemetry status` shows. Changes nothing.
    pub fn status(&self) -> TelemetryStatus {
        let decision = decision::decide_with_facts(self);
        let spool = self.spool();
        TelemetryStatus {
            enabled: decision.enabled,
            reason: decision.reason.as_str(&self.app).to_string(),
            explanation: decision.reason.explain(&self.app),
            user_id: decision.profile.as_ref().map(|p| p.user_id.to_string()),
            project_id: decision.project_id.as_ref().map(|p| p.to_string()),
            profile_path: self
                .profile_store()
                .map(|s| s.path().to_path_buf())
                .unwrap_or_default(),
            project_config: decision.project_config.clone(),
            pending_events: spool.as_ref().map_or(0, Spool::len),
            dropped_events: spool.as_ref().map_or(0, Spool::dropped),
            endpoint: self.endpoint(),
            debug: self.debug(),
        }
    }

    /// Turns telemetry on in the profile (creating it if needed).
    pub fn enable(&self) -> Result<(), ProfileError> {
        let store = self.profile_store().ok_or(ProfileError::NoHome {
            var: AppHome::override_var(&self.app.name),
        })?;
        match store.load() {
            Ok(None) => self.create_profile(true).map(drop),
            Ok(Some(_)) => store.set_tracking(true),
            // A profile without a user id gets one: enabling is an explicit choice.
            Err(ProfileError::Field { ref field, .. }) if field == "user_id" => {
                store.set_user_id(&piperider_event::UserId::random())?;
                store.set_tracking(true)
            }
            Err(ProfileError::Field { ref field, .. }) if field == "anonymous_tracking" => {
                store.set_tracking(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Turns telemetry off in the profile (creating it if needed) and
    /// deletes pending events. Sends nothing, not even about the opt-out.
    pub fn disable(&self) -> Result<usize, ProfileError> {
        let store = self.profile_store().ok_or(ProfileError::NoHome {
            var: AppHome::override_var(&self.app.name),
        })?;
        // Off first, so a sender still running sees it before its next post; then the pending events go.
        let switched = match store.load() {
            Ok(None) => self.create_profile(false).map(drop),
            // Even a profile with a bad field can say "off".
            Ok(Some(_)) | Err(ProfileError::Field { .. }) => store.set_tracking(false),
            Err(e) => Err(e),
        };
        let dropped = self.drop_pending();
        switched.map(|()| dropped)
    }

    /// A new `user_id`; pending events (made under the old one) are dropped.
    pub fn reset(&self) -> Result<piperider_event::UserId, ProfileError> {
        let store = self.profile_store().ok_or(ProfileError::NoHome {
            var: AppHome::override_var(&self.app.name),
        })?;
        if store.load()?.is_none() {
            return Err(ProfileError::Missing {
                path: store.path().to_path_buf(),
            });
        }
        self.drop_pending();
        let id = piperider_event::UserId::random();
        store.set_user_id(&id)?;
        Ok(id)
    }

    /// Asks the backend to delete everything stored for this user, then resets.
    pub fn forget(&self) -> Result<piperider_event::UserId, String> {
        let store = self.profile_store().ok_or("no app folder")?;
        let profile = store.load().map_err(|e| e.to_string())?.ok_or_else(|| {
            format!(
                "{}: no profile, so nothing was sent about you",
                store.path().display()
            )
        })?;
        let endpoint = self
            .endpoint()
            .ok_or_else(|| format!("no endpoint: set {}", self.app.endpoint_var()))?;
        // Pending events would re-create what is being deleted.
        self.drop_pending();
        sender::request_deletion(&endpoint, &profile.user_id, &SenderPolicy::default())?;
        self.reset().map_err(|e| e.to_string())
    }

    fn drop_pending(&self) -> usize {
        self.spool().and_then(|s| s.clear().ok()).unwrap_or(0)
    }

    /// The pending events, each exactly as it will be sent.
    pub fn pending(&self) -> Vec<Vec<u8>> {
        let Some(spool) = self.spool() else {
            return Vec::new();
        };
        spool
            .list()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| spool.read(e).ok())
            .collect()
    }

    /// Runs the sender in this process until the spool is empty or the
    /// backend is away (what the detached sender process does).
    pub fn run_sender(&self, policy: &SenderPolicy) -> SendReport {
        let mut total = SendReport::default();
        let (Some(paths), Some(endpoint)) = (self.paths(), self.endpoint()) else {
            return total;
        };
        // The profile may have been switched off since the events were queued.
        let decision = self.decide();
        if matches!(decision.reason, Reason::ProfileOptOut) {
            self.drop_pending();
            return total;
        }
        if !decision.enabled && !matches!(decision.reason, Reason::ProjectOptOut) {
            return total;
        }
        loop {
            // Switched off since this sender started (`telemetry disable`, a hand edit)?
            let allowed = || {
                let now = self.decide();
                now.enabled || matches!(now.reason, Reason::ProjectOptOut)
            };
            let report = sender::run(&paths, &endpoint, policy, &allowed);
            if matches!(self.decide().reason, Reason::ProfileOptOut) {
                self.drop_pending();
                return total;
            }
            total.sent += report.sent;
            total.rejected += report.rejected;
            total.set_aside += report.set_aside;
            total.failed_attempts += report.failed_attempts;
            total.already_running |= report.already_running;
            total.left_behind = report.left_behind;
            // Events queued while the lock was held are ours to send.
            if report.already_running || report.failed_attempts > 0 || report.left_behind == 0 {
                return total;
            }
        }
    }

    /// The sender's policy for this process (retry base from the environment).
    pub fn sender_policy(&self) -> SenderPolicy {
        let mut policy = SenderPolicy::default();
        if let Some(ms) = self
            .env
            .get(&self.app.retry_base_var())
            .and_then(|v| v.parse().ok())
        {
            policy.base_backoff = Duration::from_millis(ms);
        }
        policy
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= piperider_event::limits::MAX_NAME_LEN
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
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

/// Where the collector keeps its files for this app folder.
pub fn paths_for(home: &AppHome) -> Paths {
    Paths::new(home)
}
