//! CLI events: one per command (`init`, `run`, `generate-assertions`,
//! `generate-report`, or any other), recorded when the command finishes.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::limits::*;
use crate::text::{check_printable, check_token};
use crate::{DeviceId, EventId, OwnerKey, ProjectId, UserId, Violation, WireEvent};

/// One finished CLI command.
///
/// `project` is null outside a project and `stats` null for commands that
/// have none. Nothing here names a table, a column, a path, a host or an
/// error message: only counts and coarse facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CliEvent {
    /// Version of the wire format; 1 when absent.
    #[serde(default = "crate::schema_version_default")]
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u8,
    /// Made by the client; the backend stores each event id once (idempotency key).
    #[schemars(extend("not" = {"const": "00000000-0000-0000-0000-000000000000"}))]
    pub event_id: EventId,
    /// The command that ran.
    pub event_type: CommandName,
    /// When the command finished, RFC 3339 in UTC.
    pub timestamp: DateTime<Utc>,
    /// The user from `profile.yml`; or, in CI, a salted pseudonym of the repository.
    pub user_id: UserId,
    /// The public key of the profile's secret (see [`OwnerKey`]); absent in CI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_key: Option<OwnerKey>,
    /// The machine, as a salted digest: the same machine and user give the
    /// same id, and nothing about the machine can be read back from it.
    pub device_id: DeviceId,
    /// Where the command ran.
    pub platform: Platform,
    /// The runtime the CLI ran on (for PipeRider, Python and its version).
    pub runtime: Runtime,
    /// Version of the CLI that ran the command.
    #[schemars(length(min = 1, max = MAX_VERSION_LEN), regex(pattern = PRINTABLE_PATTERN))]
    pub app_version: String,
    /// Version of the CLI when this user's profile was created.
    #[schemars(length(min = 1, max = MAX_VERSION_LEN), regex(pattern = PRINTABLE_PATTERN))]
    pub initial_version: String,
    /// The CI vendor (`github_actions`, `gitlab_ci`, ...) when the command ran in CI, else null.
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = TOKEN_PATTERN))]
    pub ci: Option<String>,
    /// The project the command ran in, or null outside a project.
    pub project: Option<Project>,
    /// What the command counted, or null for commands that count nothing.
    pub stats: Option<Stats>,
    /// How the command ended and how long it took.
    pub outcome: Outcome,
}

/// The operating system and machine the CLI ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// `linux`, `macos`, `windows`, ...
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = TOKEN_PATTERN))]
    pub os: String,
    /// `x86_64`, `aarch64`, ...
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = TOKEN_PATTERN))]
    pub arch: String,
    /// The operating system's release, as it reports it.
    #[schemars(length(min = 1, max = MAX_VERSION_LEN), regex(pattern = PRINTABLE_PATTERN))]
    pub os_version: String,
}

/// The language runtime of the host CLI (PipeRider runs on Python).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// `python`, `rust`, ...
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = TOKEN_PATTERN))]
    pub name: String,
    /// The runtime's version (`3.11.7`).
    #[schemars(length(min = 1, max = MAX_VERSION_LEN), regex(pattern = PRINTABLE_PATTERN))]
    pub version: String,
}

/// The project a command ran in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The telemetry id `piperider init` wrote to `.piperider/config.yml`.
    pub project_id: ProjectId,
    /// The data source type the command used (`sqlite`, `postgres`, ...), null when none is configured.
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = TOKEN_PATTERN))]
    pub datasource_type: Option<String>,
}

/// What one command counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Tables profiled.
    #[schemars(range(max = MAX_TABLES))]
    pub tables: u64,
    /// Columns profiled, over all tables.
    #[schemars(range(max = MAX_COLUMNS))]
    pub columns: u64,
    /// Rows profiled, over all tables.
    #[schemars(range(max = MAX_ROWS))]
    pub rows: u64,
    /// Assertions of PipeRider's own kinds that ran.
    #[schemars(range(max = MAX_ASSERTIONS))]
    pub builtin_assertions: u64,
    /// Assertions the user wrote that ran.
    #[schemars(range(max = MAX_ASSERTIONS))]
    pub custom_assertions: u64,
    /// Assertions that passed; with `failed_assertions`, at most the assertions that ran.
    #[schemars(range(max = MAX_ASSERTIONS))]
    pub passed_assertions: u64,
    /// Assertions that failed.
    #[schemars(range(max = MAX_ASSERTIONS))]
    pub failed_assertions: u64,
}

/// How the command ended. Never carries an error message: messages can hold secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// Whether the command finished, failed or was interrupted.
    pub status: Status,
    /// Wall time of the command in milliseconds.
    #[schemars(range(max = MAX_DURATION_MS))]
    pub duration_ms: u64,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(transform = crate::schema::names_enum)]
pub enum Status {
    /// Finished as intended (a run whose assertions failed is still `ok`).
    Ok,
    /// Failed (bad configuration, unreachable database, ...); the message itself is never sent.
    Error,
    /// Interrupted (Ctrl-C, a signal).
    Aborted,
}

impl Status {
    /// The name on the wire and in the backend's tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Aborted => "aborted",
        }
    }
}

/// The name of a CLI command: 1 to 32 characters of `a-z 0-9 _ . -`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommandName(Cow<'static, str>);

impl CommandName {
    /// `piperider init`: creates the project and its telemetry id.
    pub const INIT: CommandName = CommandName(Cow::Borrowed("init"));
    /// `piperider run`: profiles the data source and runs the assertions.
    pub const RUN: CommandName = CommandName(Cow::Borrowed("run"));
    /// `piperider generate-assertions`: proposes assertions from a profile.
    pub const GENERATE_ASSERTIONS: CommandName = CommandName(Cow::Borrowed("generate-assertions"));
    /// `piperider generate-report`: renders a run as a report.
    pub const GENERATE_REPORT: CommandName = CommandName(Cow::Borrowed("generate-report"));

    /// Any other command name, checked as the backend checks it. Another CLI
    /// sending to a backend it shares with PipeRider prefixes its own
    /// commands with its name and a dot (`mytool.deploy`), so that no count
    /// of PipeRider's commands includes them.
    ///
    /// ```
    /// use piperider_event::CommandName;
    /// assert_eq!(CommandName::new("mytool.deploy").unwrap().as_str(), "mytool.deploy");
    /// assert!(CommandName::new("Deploy Now").is_err());
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, Violation> {
        Self::try_from(name.into())
    }

    /// The name on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommandName {
    type Error = Violation;
    fn try_from(s: String) -> Result<Self, Violation> {
        check_token(&s, ".", MAX_NAME_LEN)?;
        Ok(CommandName(Cow::Owned(s)))
    }
}

impl From<CommandName> for String {
    fn from(c: CommandName) -> String {
        c.0.into_owned()
    }
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandName({})", self.0)
    }
}

impl JsonSchema for CommandName {
    fn schema_name() -> Cow<'static, str> {
        "CommandName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9_.-]{0,31}$",
            "description": "The command that ran: `init`, `run`, `generate-assertions`, `generate-report`, or any other command name.",
            "examples": ["init", "run", "generate-assertions", "generate-report"],
        })
    }
}

impl WireEvent for CliEvent {
    fn event_id(&self) -> EventId {
        self.event_id
    }

    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    fn validate(&self, now: DateTime<Utc>) -> Result<(), Violation> {
        crate::envelope::check_envelope(self.schema_version, self.event_id, self.timestamp, now)?;
        check_token(&self.platform.os, "platform.os", MAX_NAME_LEN)?;
        check_token(&self.platform.arch, "platform.arch", MAX_NAME_LEN)?;
        check_printable(
            &self.platform.os_version,
            "platform.os_version",
            MAX_VERSION_LEN,
        )?;
        check_token(&self.runtime.name, "runtime.name", MAX_NAME_LEN)?;
        check_printable(&self.runtime.version, "runtime.version", MAX_VERSION_LEN)?;
        check_printable(&self.app_version, "app_version", MAX_VERSION_LEN)?;
        check_printable(&self.initial_version, "initial_version", MAX_VERSION_LEN)?;
        if let Some(ci) = &self.ci {
            check_token(ci, "ci", MAX_NAME_LEN)?;
        }
        if let Some(Project {
            datasource_type: Some(ds),
            ..
        }) = &self.project
        {
            check_token(ds, "project.datasource_type", MAX_NAME_LEN)?;
        }
        if let Some(stats) = &self.stats {
            stats.validate()?;
        }
        if self.outcome.duration_ms > MAX_DURATION_MS {
            return Err(Violation::new(
                "outcome.duration_ms",
                format!("must be at most {MAX_DURATION_MS} (seven days)"),
            ));
        }
        Ok(())
    }
}

impl Stats {
    /// These figures, each held at its limit: what a sender reports when
    /// a count is larger than the wire format takes (a saturated count is
    /// still a count; a refused event is nothing).
    pub fn within_limits(self) -> Stats {
        Stats {
            tables: self.tables.min(MAX_TABLES),
            columns: self.columns.min(MAX_COLUMNS),
            rows: self.rows.min(MAX_ROWS),
            builtin_assertions: self.builtin_assertions.min(MAX_ASSERTIONS),
            custom_assertions: self.custom_assertions.min(MAX_ASSERTIONS),
            passed_assertions: self.passed_assertions.min(MAX_ASSERTIONS),
            failed_assertions: self.failed_assertions.min(MAX_ASSERTIONS),
        }
    }

    fn validate(&self) -> Result<(), Violation> {
        let bounded = [
            ("stats.tables", self.tables, MAX_TABLES),
            ("stats.columns", self.columns, MAX_COLUMNS),
            ("stats.rows", self.rows, MAX_ROWS),
            (
                "stats.builtin_assertions",
                self.builtin_assertions,
                MAX_ASSERTIONS,
            ),
            (
                "stats.custom_assertions",
                self.custom_assertions,
                MAX_ASSERTIONS,
            ),
            (
                "stats.passed_assertions",
                self.passed_assertions,
                MAX_ASSERTIONS,
            ),
            (
                "stats.failed_assertions",
                self.failed_assertions,
                MAX_ASSERTIONS,
            ),
        ];
        for (field, value, max) in bounded {
            if value > max {
                return Err(Violation::new(field, format!("must be at most {max}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_over_the_limits_are_held_at_them() {
        let held = Stats {
            tables: u64::MAX,
            columns: u64::MAX,
            rows: u64::MAX,
            builtin_assertions: u64::MAX,
            custom_assertions: 3,
            passed_assertions: u64::MAX,
            failed_assertions: 0,
        }
        .within_limits();
        assert_eq!(held.rows, MAX_ROWS);
        assert_eq!(held.tables, MAX_TABLES);
        assert_eq!(held.columns, MAX_COLUMNS);
        assert_eq!(held.passed_assertions, MAX_ASSERTIONS);
        assert_eq!(held.custom_assertions, 3);
        assert!(held.validate().is_ok());
    }
}
