//! The record path: what [`Collector::start`] prepares while the command
//! runs, and what [`Collector::record`] does when it ends (apply the rules,
//! build the event, spool it, start a sender).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use piperider_event::{
    CliEvent, CommandName, Outcome, Project, SCHEMA_VERSION, Stats, Status, WireEvent,
};

use crate::TelemetryMode;
use crate::decision::{self, Decision, Reason};
use crate::spool::{Spool, SpoolLimits};
use crate::{Collector, NoticeOut, device, sender};

/// How long local telemetry files are kept: four weeks, as Go's telemetry does.
pub(crate) const LOCAL_KEPT_FOR: Duration = Duration::from_secs(28 * 24 * 3600);

/// One finished command, as the host reports it.
#[derive(Debug, Clone)]
pub struct CommandRecord {
    /// The command that ran; another CLI names its own (see [`CommandName::new`]).
    pub command: CommandName,
    /// How it ended.
    pub status: Status,
    /// How long it took, measured by the host.
    pub duration: Duration,
    /// What it counted, for commands that count (`run`).
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
    /// Local mode: kept on this machine, never to be sent.
    KeptLocally {
        /// How many of the oldest local records the cap dropped to make room.
        dropped: usize,
    },
    /// In the spool; `sender_started` when this call started a sender.
    Queued {
        /// Whether this call started a detached sender (at most one runs).
        sender_started: bool,
        /// How many of the oldest events the spool's cap dropped to make room.
        dropped: usize,
    },
    /// Something failed; it was logged and nothing else happened.
    Failed,
}

/// What can be worked out before the command ends, off its critical path.
#[derive(Debug)]
pub(crate) struct Prepared {
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

impl Collector {
    /// Call when the command starts (optional): works out on a background
    /// thread, while the command runs, everything about its event except
    /// the event itself (the rules, the device and platform, room in the
    /// spool), so that [`Collector::record`] has little left to do when the
    /// command ends. With telemetry switched off by the environment it does
    /// nothing.
    pub fn start(&self) {
        if decision::env_mode(&self.app, &self.env).is_err() {
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
        let inputs = self.inputs();
        let user = decision::user_rules(&inputs);
        let project = self.project_snapshot();
        let decision = decision::project_rules(&inputs, user.clone());
        let device = match (&decision.ci, &decision.profile) {
            (None, Some(profile)) if decision.enabled => self.device_id(profile).ok(),
            _ => None,
        };
        let paths = self.paths();
        if ahead && let Some(paths) = &paths {
            // Local telemetry files do not outlive their four weeks.
            let _ = self
                .local_records()
                .map(|local| local.remove_older_than(LOCAL_KEPT_FOR));
            let _ = crate::sent::SentLog::new(&paths.sent).trim(LOCAL_KEPT_FOR);
            crate::log::remove_if_stale(&paths.log);
            crate::log::remove_if_stale(&paths.rejected_log);
        }
        let room_made = ahead
            && decision.enabled
            && decision.mode == TelemetryMode::On
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
            decision::project_rules(&self.inputs(), prepared.user)
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
        // What the backend would refuse is never spooled (it would only be
        // lost there): the wire crate's own checks, size included.
        CliEvent::parse(&json, chrono::Utc::now())
            .map_err(|e| format!("an event the backend would refuse was not recorded: {e}"))?;
        if self.debug() {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&json);
            let _ = stderr.write_all(b"\n");
            return Ok(Recorded::Printed);
        }
        let paths = self.paths().ok_or("no app folder")?;
        if decision.mode == TelemetryMode::Local {
            let local = self.local_records().ok_or("no app folder")?;
            let dropped = local
                .append(&json, &event.event_id)
                .map_err(|e| format!("local records {}: {e}", paths.local.display()))?;
            return Ok(Recorded::KeptLocally { dropped });
        }
        let endpoint = self.endpoint().ok_or("no endpoint")?;
        let spool = Spool::new(&paths.spool, SpoolLimits::default()).for_endpoint(&endpoint);
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
        // CI pseudonyms are computed, so anyone could prove them: they carry
        // no owner key, and no one can delete or read them through the API.
        let (user_id, owner_key, device_id) = match (decision.ci, profile, device) {
            (Some(vendor), _, _) => (
                device::ci_user_id(&self.app.name, vendor, decision.project_id.as_ref()),
                None,
                device::ci_device_id(&self.app.name, vendor),
            ),
            (None, Some(profile), Some(device)) => (
                profile.user_id.clone(),
                Some(self.owner_key(profile)?),
                device,
            ),
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
            owner_key,
            device_id,
            platform,
            runtime: piperider_event::Runtime {
                name: self.app.runtime.name.clone(),
                version: version_text(&self.app.runtime.version),
            },
            app_version: version_text(&self.app.version),
            // A hand-edited profile may say anything: held to the wire format's form.
            initial_version: version_text(
                &profile
                    .and_then(|p| p.initial_version.clone())
                    .unwrap_or_else(|| self.app.version.clone()),
            ),
            ci: decision.ci.map(str::to_string),
            project,
            stats: record.stats.map(Stats::within_limits),
            outcome: Outcome {
                status: record.status,
                // A command longer than the wire format takes is reported at its limit.
                duration_ms: record
                    .duration
                    .as_millis()
                    .min(u128::from(piperider_event::limits::MAX_DURATION_MS))
                    as u64,
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
            return Ok(device::device_id_from_machine(
                &self.app.name,
                &machine,
                &profile.user_id,
            ));
        }
        if let Some(id) = &profile.device_id {
            return Ok(id.clone());
        }
        let id: piperider_event::DeviceId = piperider_event::UserId::random()
            .as_str()
            .parse()
            .map_err(|e: piperider_event::Violation| e.to_string())?;
        self.profile_store()
            .and_then(|store| store.set_value("device_id", id.as_str()))
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// The public key of the profile's owner secret; a profile made before
    /// the secret existed gets one now (a lossless edit), so this user can
    /// prove their id from the first event that carries it.
    fn owner_key(
        &self,
        profile: &piperider_profile::Profile,
    ) -> Result<piperider_event::OwnerKey, String> {
        if let Some(secret) = &profile.owner_secret {
            return Ok(secret.public_key());
        }
        self.profile_store()
            .and_then(|store| store.owner_secret_or_new())
            .map(|secret| secret.public_key())
            .map_err(|e| e.to_string())
    }

    fn show_notice(&self) {
        if let NoticeOut::Stderr = self.notice_out {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{}", self.app.notice.trim_end());
        }
    }
}

/// A version as the wire format takes it: no control characters, at most
/// its length in characters, `unknown` when nothing is left.
fn version_text(s: &str) -> String {
    let kept: String = s
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(piperider_event::limits::MAX_VERSION_LEN)
        .collect();
    if kept.is_empty() {
        "unknown".into()
    } else {
        kept
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
