//! The two YAML files PipeRider's telemetry promises its users.
//!
//! - The **user profile**, `~/.piperider/profile.yml` (`PIPERIDER_HOME`
//!   overrides the folder): `user_id` and `anonymous_tracking`, which turns
//!   off all telemetry when `false`. See [`ProfileStore`].
//! - The **project config**, `.piperider/config.yml`, found by walking up
//!   from the working directory: its `telemetry.id` links a project to its
//!   user, and removing it opts the project out. See [`ConfigStore`].
//!
//! Invariants:
//! - **Lossless edits.** Changing one key leaves every other byte as it was:
//!   comments, blank lines, key order, unknown keys. Every edit is verified
//!   by reading the result back; an edit that would change anything else is
//!   refused and the file left alone.
//! - **Never overwrite what cannot be read.** A malformed file yields an
//!   error naming the file, line and column, and its bytes stay unchanged.
//! - **Atomic and serialized.** Writes go to a temporary file in the same
//!   folder, are synced, then renamed over the original; read-modify-write
//!   cycles hold an advisory lock, so concurrent CLI processes never lose an
//!   edit or leave a torn file.
//!
//! Nothing here does network IO or knows about HTTP or SQL.

#![warn(missing_docs)]

mod config;
mod document;
mod error;
mod file;
mod home;
mod profile;

pub use config::{ConfigStore, DataSourceSummary, ProjectConfig};
pub use error::ProfileError;
pub use home::AppHome;
pub use profile::{NewProfile, Profile, ProfileStore, TelemetryMode};

/// The README's examples, compiled (and run where they can be) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
