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
use crate::owner::hex;

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
        // The array written element by element: the same bytes as a
        // `serde_json::Value` array would give, without building one.
        let mut json = Vec::with_capacity(512);
        json.push(b'[');
        let mut put = |value: &dyn erased::Value| {
            if json.len() > 1 {
                json.push(b',');
            }
            value.write(&mut json);
        };
        put(&self.event_id);
        put(&self.received_at);
        put(&self.ts);
        put(&self.event_type);
        put(&self.user_id);
        put(&self.device_id);
        put(&self.os);
        put(&self.arch);
        put(&self.os_version);
        put(&self.runtime_name);
        put(&self.runtime_version);
        put(&self.app_version);
        put(&self.initial_version);
        put(&self.ci);
        put(&self.project_id);
        put(&self.datasource_type);
        put(&self.stats);
        put(&self.status);
        put(&self.duration_ms);
        json.push(b']');
        hex(&Sha256::digest(&json))
    }
}

/// Any serializable value, written as compact JSON.
mod erased {
    pub(super) trait Value {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Value for T {
        fn write(&self, out: &mut Vec<u8>) {
            // Strings, numbers, arrays and nulls cannot fail to serialize.
            let _ = serde_json::to_writer(out, self);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_sha256_of_the_fields_as_one_compact_json_array() {
        let fields = StoredFields {
            event_id: "0190f2c4-8a6b-7c3d-9e1f-2a3b4c5d6e7f".into(),
            received_at: 1_800_000_000_123,
            ts: 1_800_000_000_000,
            event_type: "run",
            user_id: "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b",
            device_id: "ab",
            os: "linux",
            arch: "x86_64",
            os_version: "6.1 \"q\"",
            runtime_name: "rust",
            runtime_version: "1.95.0",
            app_version: "0.1.0",
            initial_version: "0.1.0",
            ci: None,
            project_id: Some("dc243c0c67204d4bb15740617505cb26"),
            datasource_type: Some("sqlite"),
            stats: Some([2, 8, 30, 4, 1, 4, 1]),
            status: "ok",
            duration_ms: 812,
        };
        let text = serde_json::json!([
            fields.event_id,
            fields.received_at,
            fields.ts,
            fields.event_type,
            fields.user_id,
            fields.device_id,
            fields.os,
            fields.arch,
            fields.os_version,
            fields.runtime_name,
            fields.runtime_version,
            fields.app_version,
            fields.initial_version,
            fields.ci,
            fields.project_id,
            fields.datasource_type,
            fields.stats,
            fields.status,
            fields.duration_ms,
        ])
        .to_string();
        assert_eq!(fields.digest(), hex(&Sha256::digest(text.as_bytes())));
        // Every field counts.
        let other = StoredFields {
            duration_ms: 813,
            ..fields.clone()
        };
        assert_ne!(other.digest(), fields.digest());
        assert_eq!(batch_digest([]), hex(&Sha256::digest(b"")));
    }
}
