//! The commands a user runs on their telemetry (`status`, `enable`,
//! `disable`, `reset`, `forget`, `show`) and the sender, which the host
//! runs when started with [`SENDER_ARG`](crate::SENDER_ARG).

use std::path::PathBuf;
use std::time::Duration;

use piperider_profile::ProfileError;
use serde::Serialize;

use crate::decision::{self, Decision, Reason};
use crate::sender::{self, OwnerAnswer, SendReport, SenderPolicy};
use crate::{Collector, Spool, TelemetryMode};

/// The state `piperider telemetry status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryStatus {
    /// Whether the next command would record an event.
    pub enabled: bool,
    /// The mode chosen: `on`, `local` or `off`.
    #[serde(serialize_with = "mode_name")]
    pub mode: TelemetryMode,
    /// Where the mode came from: `profile`, `default`, or the environment
    /// variable that set it (`PIPERIDER_TELEMETRY`, `DO_NOT_TRACK`, ...).
    pub mode_source: String,
    /// The rule that decided, as a stable name (`do_not_track`, `enabled`, ...).
    pub reason: String,
    /// The rule that decided, in words, with how to change it.
    pub explanation: String,
    /// The profile's user id, when there is a profile.
    pub user_id: Option<String>,
    /// The project's telemetry id, inside a project that has one.
    pub project_id: Option<String>,
    /// Where the profile is (or would be).
    pub profile_path: PathBuf,
    /// The project's config file, inside a project.
    pub project_config: Option<PathBuf>,
    /// Events on disk, not yet answered by the backend.
    pub pending_events: usize,
    /// Events the spool's cap has dropped, ever.
    pub dropped_events: u64,
    /// Events recorded in local mode and kept on this machine.
    pub local_events: usize,
    /// Where events go, when a safe endpoint is configured.
    pub endpoint: Option<String>,
    /// Whether debug mode prints events instead of sending them.
    pub debug: bool,
}

/// Why [`Collector::forget`] or [`Collector::held`] asked nothing of the
/// backend, or what it answered. No variant repeats a server's answer body.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// The profile could not be read, or the new user id not written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// There is no profile: nothing was ever sent about this user.
    #[error("{}: no profile, so nothing was sent about you", path.display())]
    NoProfile {
        /// Where the profile would be.
        path: PathBuf,
    },
    /// No backend is configured to ask.
    #[error("no endpoint: set {var}")]
    NoEndpoint {
        /// The variable that sets it (`PIPERIDER_TELEMETRY_ENDPOINT`).
        var: String,
    },
    /// The backend could not check that the user id is this user's: it
    /// holds no key for it (nothing sent since the profile got its
    /// `telemetry_secret`), or a key of another profile.
    #[error(
        "the backend holds nothing it can prove is yours: no event of this user id carrying this profile's key was stored (events sent before the profile had a telemetry_secret cannot be proved; `telemetry reset` starts a new id)"
    )]
    NotProved,
    /// The request failed or was refused; nothing was reset.
    #[error("{0}")]
    Request(String),
}

impl Collector {
    /// What `telemetry status` shows. Changes nothing.
    pub fn status(&self) -> TelemetryStatus {
        let decision = decision::decide_with_facts(&self.inputs());
        let spool = self.spool();
        let mode_source = match &decision.mode_source {
            crate::ModeSource::Environment(var) => var.clone(),
            other => other.to_string(),
        };
        TelemetryStatus {
            enabled: decision.enabled,
            mode: decision.mode,
            mode_source,
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
            local_events: self.local_records().as_ref().map_or(0, Spool::len),
            endpoint: self.endpoint(),
            debug: self.debug(),
        }
    }

    /// Turns telemetry on in the profile (creating it if needed). When it
    /// was not on, the profile records the moment: nothing recorded before
    /// it is ever sent.
    pub fn enable(&self) -> Result<(), ProfileError> {
        self.switch_to(TelemetryMode::On)
    }

    /// Local mode: events are recorded on this machine and never sent.
    /// Pending events are deleted (they would otherwise go when uploading
    /// is turned on again, though recorded before it). Returns how many.
    pub fn keep_local(&self) -> Result<usize, ProfileError> {
        self.switch_to(TelemetryMode::Local)?;
        Ok(self.drop_pending())
    }

    /// Writes `mode` to the profile, creating the profile if needed.
    fn switch_to(&self, mode: TelemetryMode) -> Result<(), ProfileError> {
        let store = self.profile_store()?;
        let now = chrono::Utc::now();
        match store.load() {
            Ok(None) => {
                let (_, created) = self.create_profile(mode == TelemetryMode::On)?;
                if created && mode == TelemetryMode::On {
                    return Ok(());
                }
                store.set_mode(mode, now)
            }
            Ok(Some(_)) => store.set_mode(mode, now),
            // A profile without a user id gets one: choosing a mode is explicit.
            Err(ProfileError::Field { ref field, .. }) if field == "user_id" => {
                store.renew_identity()?;
                store.set_mode(mode, now)
            }
            Err(ProfileError::Field { ref field, .. })
                if ["anonymous_tracking", "telemetry_mode", "uploading_since"]
                    .contains(&field.as_str()) =>
            {
                store.set_mode(mode, now)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes every local telemetry file: the local records, the log of
    /// what was sent, and the collector's logs. Pending events stay (`disable` deletes them).
    /// Returns how many local records there were.
    pub fn clean(&self) -> std::io::Result<usize> {
        let Some(paths) = self.paths() else {
            return Ok(0);
        };
        let records = self.local_records().map_or(Ok(0), |s| s.clear())?;
        crate::sent::SentLog::new(&paths.sent).clear()?;
        for file in [&paths.log, &paths.rejected_log] {
            match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(records)
    }

    /// The batches delivered (at most 2,500 events or 1 MiB, four weeks),
    /// oldest first, each checked against its receipt. With
    /// `ask_backend`, the backend is also asked (with the profile's proof,
    /// as `held` asks) for the digests of what it holds now, and each batch
    /// says whether its events are still held as sent.
    pub fn sent(&self, ask_backend: bool) -> std::io::Result<Vec<crate::SentBatch>> {
        let Some(paths) = self.paths() else {
            return Ok(Vec::new());
        };
        let mut batches = crate::sent::SentLog::new(&paths.sent).read()?;
        let not_checked = |reason: String| crate::HeldCheck::NotChecked { reason };
        let held = if !ask_backend {
            Err("not asked (--offline)".to_string())
        } else if batches.iter().all(|b| b.digests.is_empty()) {
            Err("nothing to check".to_string())
        } else if self.decide().mode != TelemetryMode::On {
            Err("telemetry is not on".to_string())
        } else {
            self.held().map_err(|e| e.to_string()).and_then(|report| {
                report["event_digests"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|d| {
                                Some((
                                    d["event_id"].as_str()?.to_string(),
                                    d["digest"].as_str()?.to_string(),
                                ))
                            })
                            .collect::<std::collections::HashMap<_, _>>()
                    })
                    .ok_or_else(|| "the backend lists no event digests".to_string())
            })
        };
        for batch in &mut batches {
            match &held {
                Ok(digests) if !batch.digests.is_empty() => batch.check_held(digests),
                Ok(_) => batch.held = not_checked("no event of it was stored by it".into()),
                Err(reason) => batch.held = not_checked(reason.clone()),
            }
        }
        Ok(batches)
    }

    /// The events kept in local mode, oldest first, each as recorded.
    pub fn kept_locally(&self) -> Vec<Vec<u8>> {
        self.local_records().map_or_else(Vec::new, |s| s.contents())
    }

    /// Turns telemetry off in the profile (creating it if needed) and
    /// deletes pending events. Sends nothing, not even about the opt-out.
    pub fn disable(&self) -> Result<usize, ProfileError> {
        let store = self.profile_store()?;
        // Off first, so a sender still running sees it before its next post; then the pending events go.
        let switched = match store.load() {
            Ok(None) => self.create_profile(false).map(drop),
            // Even a profile with a bad field can say "off".
            Ok(Some(_)) | Err(ProfileError::Field { .. }) => {
                store.set_mode(TelemetryMode::Off, chrono::Utc::now())
            }
            Err(e) => Err(e),
        };
        let dropped = self.drop_pending();
        switched.map(|()| dropped)
    }

    /// A new `user_id` and owner secret; pending events (made under the old
    /// one) are dropped.
    pub fn reset(&self) -> Result<piperider_event::UserId, ProfileError> {
        let store = self.profile_store()?;
        if store.load()?.is_none() {
            return Err(ProfileError::Missing {
                path: store.path().to_path_buf(),
            });
        }
        self.drop_pending();
        store.renew_identity()
    }

    /// Asks the backend to delete everything stored for this user, then resets.
    pub fn forget(&self) -> Result<piperider_event::UserId, ForgetError> {
        let (user_id, secret, endpoint) = self.owner_request()?;
        // Pending events would re-create what is being deleted.
        self.drop_pending();
        let policy = SenderPolicy::default();
        match sender::request_deletion(&endpoint, &user_id, &secret, &policy)
            .map_err(ForgetError::Request)?
        {
            OwnerAnswer::Done(_) => Ok(self.reset()?),
            OwnerAnswer::NotProved => Err(ForgetError::NotProved),
        }
    }

    /// Everything the backend holds about this user, as its JSON answer
    /// (`GET /v1/users/{user_id}` with the profile's proof).
    pub fn held(&self) -> Result<serde_json::Value, ForgetError> {
        let (user_id, secret, endpoint) = self.owner_request()?;
        let policy = SenderPolicy::default();
        match sender::request_held(&endpoint, &user_id, &secret, &policy)
            .map_err(ForgetError::Request)?
        {
            OwnerAnswer::Done(body) => serde_json::from_slice(&body)
                .map_err(|_| ForgetError::Request("the backend's answer is not JSON".into())),
            OwnerAnswer::NotProved => Err(ForgetError::NotProved),
        }
    }

    /// What an owner's request needs: the profile's user id and secret,
    /// and the endpoint to ask.
    fn owner_request(
        &self,
    ) -> Result<
        (
            piperider_event::UserId,
            piperider_event::OwnerSecret,
            String,
        ),
        ForgetError,
    > {
        let store = self.profile_store()?;
        let profile = store.load()?.ok_or_else(|| ForgetError::NoProfile {
            path: store.path().to_path_buf(),
        })?;
        let endpoint = self.endpoint().ok_or_else(|| ForgetError::NoEndpoint {
            var: self.app.endpoint_var(),
        })?;
        let secret = profile.owner_secret.ok_or(ForgetError::NotProved)?;
        Ok((profile.user_id, secret, endpoint))
    }

    fn drop_pending(&self) -> usize {
        self.spool().and_then(|s| s.clear().ok()).unwrap_or(0)
    }

    /// Deletes pending events recorded before the profile's `uploading_since`.
    fn drop_recorded_before_uploading(&self) {
        let since = self
            .profile_store()
            .ok()
            .and_then(|s| s.load().ok().flatten())
            .and_then(|p| p.uploading_since);
        if let (Some(since), Some(spool)) = (since, self.spool()) {
            let removed = spool.remove_recorded_before(since.into()).unwrap_or(0);
            if removed > 0 {
                self.log(&format!(
                    "deleted {removed} pending event(s) recorded before uploading was turned on"
                ));
            }
        }
    }

    /// The pending events, each exactly as it will be sent.
    pub fn pending(&self) -> Vec<Vec<u8>> {
        self.spool().map_or_else(Vec::new, |s| s.contents())
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
        if !may_send(&decision) {
            return total;
        }
        loop {
            // Nothing recorded before uploading was last turned on is sent.
            self.drop_recorded_before_uploading();
            // Switched off or to local since this sender started
            // (`telemetry disable`, `telemetry local`, a hand edit)?
            let allowed = || may_send(&self.decide());
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
            // Events queued while the lock was held are ours to send; a
            // pass that moved nothing (a spool it cannot read) ends it.
            let moved = report.sent + report.rejected + report.set_aside;
            if report.already_running
                || report.failed_attempts > 0
                || report.left_behind == 0
                || moved == 0
            {
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

/// Whether spooled events may go now: uploading is on, and recording is
/// (or only this project opted out; other projects' events may still go).
fn may_send(decision: &Decision) -> bool {
    decision.mode == TelemetryMode::On
        && (decision.enabled || matches!(decision.reason, Reason::ProjectOptOut))
}

fn mode_name<S: serde::Serializer>(mode: &TelemetryMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode.as_str())
}
