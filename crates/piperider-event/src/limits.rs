//! The documented limits of the wire format. The backend enforces them, the
//! collector never produces an event that breaks them, and `docs/` quotes them.

use chrono::TimeDelta;

/// Largest serialized size of one event, in bytes.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 500;
/// How far an event's timestamp may lie ahead of the receiver's clock (clock skew).
pub const MAX_FUTURE_SKEW: TimeDelta = TimeDelta::hours(24);
/// How old an event's timestamp may be (events queued offline for a long time).
pub const MAX_AGE: TimeDelta = TimeDelta::days(365);

/// Longest version string, in characters (`app_version`, `initial_version`, `runtime.version`, `platform.os_version`).
pub const MAX_VERSION_LEN: usize = 64;
/// Longest short name, in characters (`platform.os`, `platform.arch`, `runtime.name`, `ci`, data source type, command name).
pub const MAX_NAME_LEN: usize = 32;
/// A short name's form: lowercase letters, digits, `_`, `.` and `-`,
/// starting with a letter or digit (JSON Schema `pattern`).
pub const TOKEN_PATTERN: &str = r"^[a-z0-9][a-z0-9_.-]*$";
/// A version's form: any text without control characters (JSON Schema
/// `pattern`; Unicode category Cc, as `char::is_control`).
pub const PRINTABLE_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";
/// Longest Cloud route template.
pub const MAX_ROUTE_LEN: usize = 128;
/// Most sources named by one report comparison.
pub const MAX_COMPARISON_SOURCES: usize = 8;

/// Most tables one command may report.
pub const MAX_TABLES: u64 = 1_000_000;
/// Most columns one command may report.
pub const MAX_COLUMNS: u64 = 100_000_000;
/// Most rows one command may report: a trillion, more than any profiling
/// run counts, so that millions of maximal events a day still add up
/// exactly in the backend's 64-bit counters (which saturate beyond).
pub const MAX_ROWS: u64 = 1_000_000_000_000;
/// Most assertions of one kind one command may report.
pub const MAX_ASSERTIONS: u64 = 10_000_000;
/// Longest command duration, in milliseconds (seven days).
pub const MAX_DURATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
