//! The user profile: `user_id` and `anonymous_tracking`, plus what the
//! collector keeps beside them (`telemetry_secret`, the owner secret whose
//! proofs let only this user delete or read their data; `initial_version`;
//! a fallback `device_id`; `telemetry_mode: local` and `uploading_since`,
//! see [`TelemetryMode`]).
//! Unknown keys (PipeRider kept a Cloud token here) are never touched.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use piperider_event::{DeviceId, OwnerSecret, UserId};
use serde_yaml::Value;

use crate::document::{Edit, Scalar, YamlText};
use crate::{AppHome, ProfileError, file};

/// What the profile says, read as the collector needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The anonymous user id every event carries.
    pub user_id: UserId,
    /// The secret that proves ownership of `user_id` (`telemetry_secret`);
    /// `None` in a profile made before it existed.
    pub owner_secret: Option<OwnerSecret>,
    /// False turns off every kind of telemetry.
    pub anonymous_tracking: bool,
    /// The app version that created the profile, when recorded.
    pub initial_version: Option<String>,
    /// A random device id, kept where the machine has no id to hash.
    pub device_id: Option<DeviceId>,
    /// `telemetry_mode` as written (`on`, `local` or `off`); `None` when
    /// absent. [`Profile::mode`] combines it with `anonymous_tracking`.
    pub telemetry_mode: Option<TelemetryMode>,
    /// When uploading was last turned on (`uploading_since`): nothing
    /// recorded before it may be sent. `None` in a profile made before the
    /// key existed, which has been uploading all along.
    pub uploading_since: Option<DateTime<Utc>>,
}

/// What a user chose for their telemetry.
///
/// In the profile, `anonymous_tracking: false` means [`Off`](Self::Off)
/// whatever else it says (it is the opt-out PipeRider has always
/// documented); otherwise `telemetry_mode: local` means
/// [`Local`](Self::Local), and no `telemetry_mode` means [`On`](Self::On).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TelemetryMode {
    /// Events are recorded and sent.
    On,
    /// Events are recorded on this machine, can be looked at, and are never sent.
    Local,
    /// Nothing is recorded or sent.
    Off,
}

impl TelemetryMode {
    /// `on`, `local` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            TelemetryMode::On => "on",
            TelemetryMode::Local => "local",
            TelemetryMode::Off => "off",
        }
    }

    /// Reads `on`, `local` or `off` (any case, surrounding space ignored).
    pub fn parse(text: &str) -> Option<TelemetryMode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "on" => Some(TelemetryMode::On),
            "local" => Some(TelemetryMode::Local),
            "off" => Some(TelemetryMode::Off),
            _ => None,
        }
    }
}

impl std::fmt::Display for TelemetryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Profile {
    /// The mode this profile chose: off when `anonymous_tracking` is
    /// false, else `telemetry_mode`, else on.
    pub fn mode(&self) -> TelemetryMode {
        if !self.anonymous_tracking {
            return TelemetryMode::Off;
        }
        self.telemetry_mode.unwrap_or(TelemetryMode::On)
    }
}

/// What a new profile starts with; it always gets a fresh `user_id` and
/// `telemetry_secret`.
#[derive(Debug, Clone)]
pub struct NewProfile {
    /// Comment lines written at the top of the file (without `# `).
    pub header: Vec<String>,
    /// True unless the profile is being made to record an opt-out.
    pub anonymous_tracking: bool,
    /// The app version to record as the one that created the profile.
    pub initial_version: Option<String>,
    /// A device id to keep, where the machine has no id to hash.
    pub device_id: Option<DeviceId>,
    /// Written as `uploading_since` when the profile starts with uploading on.
    pub uploading_since: Option<DateTime<Utc>>,
}

impl Default for NewProfile {
    fn default() -> Self {
        NewProfile {
            header: Vec::new(),
            anonymous_tracking: true,
            initial_version: None,
            device_id: None,
            uploading_since: None,
        }
    }
}

/// The profile file at one path.
#[derive(Debug, Clone)]
pub struct ProfileStore {
    path: PathBuf,
}

impl ProfileStore {
    /// The profile file at `path`; nothing is read yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ProfileStore { path: path.into() }
    }

    /// The profile of an app: `profile.yml` in its folder.
    pub fn for_home(home: &AppHome) -> Self {
        Self::new(home.profile_path())
    }

    /// The file this store reads and edits.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The profile, `None` when there is none yet. A profile that cannot be
    /// read, lacks `user_id` or has an `anonymous_tracking` that is neither a
    /// boolean nor yes/no/on/off is an error: the caller keeps telemetry off.
    pub fn load(&self) -> Result<Option<Profile>, ProfileError> {
        match file::read(&self.path)? {
            None => Ok(None),
            Some(text) => parse(&YamlText::parse(&self.path, text)?).map(Some),
        }
    }

    /// Creates the profile unless one exists, never replacing a file that is
    /// there (even one that cannot be read). Returns the profile and whether
    /// this call created it.
    pub fn create(&self, new: &NewProfile) -> Result<(Profile, bool), ProfileError> {
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir)?;
        }
        let secret = random_secret(&self.path)?;
        let text = new_profile_text(&self.path, new, &UserId::random(), &secret)?;
        let created = file::write_atomic(&self.path, &text, Some(0o600), true)?;
        let profile = self.load()?.ok_or_else(|| ProfileError::Missing {
            path: self.path.clone(),
        })?;
        Ok((profile, created))
    }

    /// Sets `anonymous_tracking`, leaving every other byte of the file as it was.
    pub fn set_tracking(&self, enabled: bool) -> Result<(), ProfileError> {
        file::edit(
            &self.path,
            &[Edit::Set(&["anonymous_tracking"], Scalar::Bool(enabled))],
        )
    }

    /// Switches the profile to `mode`, leaving every other key as it was:
    ///
    /// - off: `anonymous_tracking: false`, no `telemetry_mode`;
    /// - local: `anonymous_tracking: true`, `telemetry_mode: local`;
    /// - on: `anonymous_tracking: true`, no `telemetry_mode`, and, when the
    ///   profile was not on already, `uploading_since: now`, so that
    ///   nothing recorded before the switch is ever sent.
    ///
    /// Decided under the file's lock. A profile whose mode keys cannot be
    /// read is switched too: choosing a mode is explicit.
    pub fn set_mode(&self, mode: TelemetryMode, now: DateTime<Utc>) -> Result<(), ProfileError> {
        let since = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        file::edit_with(&self.path, |doc| {
            let was_on = parse(doc).is_ok_and(|p| p.mode() == TelemetryMode::On);
            let mut edits = vec![
                Edit::Set(
                    &["anonymous_tracking"],
                    Scalar::Bool(mode != TelemetryMode::Off),
                ),
                match mode {
                    TelemetryMode::Local => {
                        Edit::Set(&[MODE_KEY], Scalar::Str("local".to_string()))
                    }
                    TelemetryMode::On | TelemetryMode::Off => Edit::Remove(&[MODE_KEY]),
                },
            ];
            if mode == TelemetryMode::On && !was_on {
                edits.push(Edit::Set(&[SINCE_KEY], Scalar::Str(since)));
            }
            Ok((edits, ()))
        })
    }

    /// A fresh `user_id` and `telemetry_secret` at once, and no kept
    /// `device_id` (a reset: the new id cannot be proved with the old
    /// secret, nor linked to the old id through the device), leaving
    /// everything else as it was. Returns the new id.
    pub fn renew_identity(&self) -> Result<UserId, ProfileError> {
        let secret = random_secret(&self.path)?;
        let user_id = UserId::random();
        file::edit(
            &self.path,
            &[
                Edit::Set(&["user_id"], Scalar::Str(user_id.to_string())),
                Edit::Set(&[SECRET_KEY], Scalar::Str(secret.to_hex())),
                Edit::Remove(&["device_id"]),
            ],
        )?;
        Ok(user_id)
    }

    /// The profile's owner secret; a profile made before it existed gets
    /// one (a lossless edit). Decided under the file's lock, so processes
    /// starting at once all end with the one secret that was written.
    pub fn owner_secret_or_new(&self) -> Result<OwnerSecret, ProfileError> {
        let fresh = random_secret(&self.path)?;
        file::edit_with(&self.path, |doc| match doc.get(&[SECRET_KEY]) {
            None | Some(Value::Null) => Ok((
                vec![Edit::Set(&[SECRET_KEY], Scalar::Str(fresh.to_hex()))],
                fresh,
            )),
            Some(value) => value
                .as_str()
                .and_then(|s| OwnerSecret::from_hex(s.trim()))
                .map(|kept| (Vec::new(), kept))
                .ok_or_else(|| doc.field_error(&[SECRET_KEY], "must be 64 lowercase hex digits")),
        })
    }

    /// Sets one top-level string key, leaving everything else as it was.
    pub fn set_value(&self, key: &str, value: &str) -> Result<(), ProfileError> {
        file::edit(
            &self.path,
            &[Edit::Set(&[key], Scalar::Str(value.to_string()))],
        )
    }
}

/// A fresh owner secret; a failing random source is an error about `path`.
fn random_secret(path: &Path) -> Result<OwnerSecret, ProfileError> {
    OwnerSecret::random().map_err(|e| ProfileError::io(path, std::io::Error::other(e.to_string())))
}

/// The profile key of the owner secret.
const SECRET_KEY: &str = "telemetry_secret";
/// The profile key of the mode beside `anonymous_tracking`.
const MODE_KEY: &str = "telemetry_mode";
/// The profile key of the moment uploading was last turned on.
const SINCE_KEY: &str = "uploading_since";

fn new_profile_text(
    path: &Path,
    new: &NewProfile,
    user_id: &UserId,
    secret: &OwnerSecret,
) -> Result<String, ProfileError> {
    let header: String = new
        .header
        .iter()
        .map(|line| format!("# {line}\n").replace("# \n", "#\n"))
        .collect();
    let mut edits = vec![
        Edit::Set(&["user_id"], Scalar::Str(user_id.to_string())),
        Edit::Set(
            &["anonymous_tracking"],
            Scalar::Bool(new.anonymous_tracking),
        ),
        Edit::Set(&[SECRET_KEY], Scalar::Str(secret.to_hex())),
    ];
    if let Some(v) = &new.initial_version {
        edits.push(Edit::Set(&["initial_version"], Scalar::Str(v.clone())));
    }
    if let Some(d) = &new.device_id {
        edits.push(Edit::Set(&["device_id"], Scalar::Str(d.to_string())));
    }
    if let Some(t) = &new.uploading_since {
        edits.push(Edit::Set(
            &[SINCE_KEY],
            Scalar::Str(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        ));
    }
    YamlText::parse(path, header)?.edited(&edits)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), ProfileError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ProfileError::io(dir, e))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), ProfileError> {
    std::fs::create_dir_all(dir).map_err(|e| ProfileError::io(dir, e))
}

fn parse(doc: &YamlText) -> Result<Profile, ProfileError> {
    let user_id = match doc.get(&["user_id"]) {
        None | Some(Value::Null) => return Err(doc.field_error(&["user_id"], "is missing")),
        Some(value) => parse_hex_id(value)
            .ok_or_else(|| doc.field_error(&["user_id"], "must be 32 hex digits (a UUID)"))?,
    };
    let anonymous_tracking = match doc.get(&["anonymous_tracking"]) {
        None | Some(Value::Null) => {
            return Err(doc.field_error(&["anonymous_tracking"], "is missing"));
        }
        Some(value) => bool_like(value).ok_or_else(|| {
            doc.field_error(
                &["anonymous_tracking"],
                "must be true or false (yes/no and on/off are read too)",
            )
        })?,
    };
    let initial_version = doc.get(&["initial_version"]).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let device_id = match doc.get(&["device_id"]) {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_str()
                .and_then(|s| s.parse::<DeviceId>().ok())
                .ok_or_else(|| {
                    doc.field_error(&["device_id"], "must be 32 to 64 lowercase hex digits")
                })?,
        ),
    };
    let owner_secret = match doc.get(&[SECRET_KEY]) {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_str()
                .and_then(|s| OwnerSecret::from_hex(s.trim()))
                .ok_or_else(|| doc.field_error(&[SECRET_KEY], "must be 64 lowercase hex digits"))?,
        ),
    };
    let telemetry_mode = match doc.get(&[MODE_KEY]) {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_str()
                .and_then(TelemetryMode::parse)
                .ok_or_else(|| doc.field_error(&[MODE_KEY], "must be on, local or off"))?,
        ),
    };
    let uploading_since = match doc.get(&[SINCE_KEY]) {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| {
                    doc.field_error(
                        &[SINCE_KEY],
                        "must be a time such as 2026-12-03T20:00:00.000Z (RFC 3339)",
                    )
                })?,
        ),
    };
    Ok(Profile {
        user_id: UserId::from(user_id),
        owner_secret,
        anonymous_tracking,
        initial_version,
        device_id,
        telemetry_mode,
        uploading_since,
    })
}

/// A 32-hex-digit id, as PipeRider writes it; a hyphenated or upper-case
/// UUID is read too and normalized.
pub(crate) fn parse_hex_id(value: &Value) -> Option<HexId> {
    let s = value.as_str()?;
    let uuid = uuid::Uuid::try_parse(s.trim()).ok()?;
    Some(HexId(uuid.simple().to_string()))
}

/// A normalized 32-hex-digit id, convertible to the wire id types.
#[derive(Debug)]
pub(crate) struct HexId(String);

impl From<HexId> for UserId {
    fn from(id: HexId) -> UserId {
        id.0.parse()
            .expect("a UUID in simple form is 32 lowercase hex digits")
    }
}

impl From<HexId> for piperider_event::ProjectId {
    fn from(id: HexId) -> piperider_event::ProjectId {
        id.0.parse()
            .expect("a UUID in simple form is 32 lowercase hex digits")
    }
}

fn bool_like(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Some(true),
            "false" | "no" | "off" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}
