//! Receipts: the backend's account of what it stored of a batch, in a form
//! the sender can recompute from the bytes it sent.
//!
//! Each stored event has a digest of its [`StoredFields`]: every field of
//! the event as the backend keeps it, plus when it arrived. The backend
//! answers a batch with a [`Receipt`]: the time it received the batch and
//! [`batch_digest`] over the events it accepted, in input order. The
//! sender computes the same from what it sent ([`CliEvent::stored_fields`])
//! and keeps both; later, the digests of what the backend holds now (the
//! owner's `GET /v1/users/{user_id}`) show whether a stored event changed.
//!
//! What the backend adds itself is left out: country and region (derived
//! from the address), and the owner key (kept once per user, not per
//! event). The stored time is the event's, or the time of receipt when the
//! sender's clock was ahead; both sides know both, so both compute it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::CliEvent;

/// One stored event, field by field, as the backend's `events` table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFields<'a> {
    /// `event_id`, as the backend keeps it (a hyphenated UUID).
    pub event_id: String,
    /// When the batch was received, milliseconds since the epoch.
    pub received_at: i64,
    /// The event's time in milliseconds, no later than `received_at`.
    pub ts: i64,
    /// The command.
    pub event_type: &'a str,
    /// The user id.
    pub user_id: &'a str,
    /// The device id.
    pub device_id: &'a str,
    /// `platform.os`.
    pub os: &'a str,
    /// `platform.arch`.
    pub arch: &'a str,
    /// `platform.os_version`.
    pub os_version: &'a str,
    /// `runtime.name`.
    pub runtime_name: &'a str,
    /// `runtime.version`.
    pub runtime_version: &'a str,
    /// `app_version`.
    pub app_version: &'a str,
    /// `initial_version`.
    pub initial_version: &'a str,
    /// `ci`.
    pub ci: Option<&'a str>,
    /// `project.project_id`.
    pub project_id: Option<&'a str>,
    /// `project.datasource_type`.
    pub datasource_type: Option<&'a str>,
    /// `stats`, in the wire format's field order, each held at `i64::MAX`.
    pub stats: Option<[i64; 7]>,
    /// `outcome.status`.
    pub status: &'a str,
    /// `outcome.duration_ms`, held at `i64::MAX`.
    pub duration_ms: i64,
}

impl StoredFields<'_> {
    /// The SHA-256 of the fields (as one JSON array, in the order above),
    /// as 64 lowercase hex digits.
    pub fn digest(&self) -> String {
        let canonical = serde_json::json!([
            self.event_id,
            self.received_at,
            self.ts,
            self.event_type,
            self.user_id,
            self.device_id,
            self.os,
            self.arch,
            self.os_version,
            self.runtime_name,
            self.runtime_version,
            self.app_version,
            self.initial_version,
            self.ci,
            self.project_id,
            self.datasource_type,
            self.stats,
            self.status,
            self.duration_ms,
        ]);
        hex(&Sha256::digest(canonical.to_string().as_bytes()))
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl CliEvent {
    /// The event as a backend that received it at `received_at`
    /// (milliseconds) stores it.
    pub fn stored_fields(&self, received_at: i64) -> StoredFields<'_> {
        StoredFields {
            event_id: self.event_id.to_string(),
            received_at,
            ts: self.timestamp.timestamp_millis().min(received_at),
            event_type: self.event_type.as_str(),
            user_id: self.user_id.as_str(),
            device_id: self.device_id.as_str(),
            os: &self.platform.os,
            arch: &self.platform.arch,
            os_version: &self.platform.os_version,
            runtime_name: &self.runtime.name,
            runtime_version: &self.runtime.version,
            app_version: &self.app_version,
            initial_version: &self.initial_version,
            ci: self.ci.as_deref(),
            project_id: self.project.as_ref().map(|p| p.project_id.as_str()),
            datasource_type: self
                .project
                .as_ref()
                .and_then(|p| p.datasource_type.as_deref()),
            stats: self.stats.map(|s| {
                [
                    s.tables,
                    s.columns,
                    s.rows,
                    s.builtin_assertions,
                    s.custom_assertions,
                    s.passed_assertions,
                    s.failed_assertions,
                ]
                .map(int)
            }),
            status: self.outcome.status.as_str(),
            duration_ms: int(self.outcome.duration_ms),
        }
    }
}

/// The backend's receipt for one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// When the backend received the batch, milliseconds since the epoch
    /// (stored with each event; the stored time is no later than it).
    pub received_at: i64,
    /// [`batch_digest`] over the events of this batch whose result is
    /// `accepted`, in input order: 64 lowercase hex digits.
    pub digest: String,
}

/// The SHA-256 over `event_id digest\n` for each stored event, in order,
/// as 64 lowercase hex digits.
pub fn batch_digest<'a>(events: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = Sha256::new();
    for (event_id, digest) in events {
        hasher.update(event_id.as_bytes());
        hasher.update(b" ");
        hasher.update(digest.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
