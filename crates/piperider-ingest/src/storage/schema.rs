//! The tables the storage layer writes, each named once with its columns
//! (and their kind) and its conflict rule, the statements that delete and
//! prune, and the SQLite settings. Both databases take the same statements
//! wherever they can: `$n` placeholders, `ON CONFLICT`, `CASE` instead of
//! `min`/`max`/`LEAST`. The tables themselves are created by the
//! migrations in `migrations/{sqlite,postgres}/`.

use std::time::Duration;

use super::rows::Figures;

/// What a multi-row `INSERT` does with a row whose key is already stored.
#[derive(Debug)]
pub(crate) enum OnConflict {
    /// Nothing (no key: every row is new).
    None,
    /// Keep the stored row (`ON CONFLICT (key) DO NOTHING`).
    Keep(&'static str),
    /// Add every other column to the stored row's (counters).
    Add(&'static str),
    /// A clause of its own.
    Clause(&'static str),
}

/// A multi-row `INSERT` into one table: its columns (with their kind,
/// `text` or `int`) and what it does on a conflict. The row source differs
/// by database: an array per column on PostgreSQL, one bound row at a time
/// on SQLite.
#[derive(Debug)]
pub(crate) struct Upsert {
    pub(crate) table: &'static str,
    pub(crate) columns: &'static [(&'static str, &'static str)],
    pub(crate) on_conflict: OnConflict,
}

impl Upsert {
    /// The column names, comma-separated.
    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        names.join(", ")
    }

    fn conflict_clause(&self) -> String {
        match &self.on_conflict {
            OnConflict::None => String::new(),
            OnConflict::Keep(key) => format!("ON CONFLICT ({key}) DO NOTHING"),
            OnConflict::Add(key) => {
                let keys: Vec<&str> = key.split(", ").collect();
                let sums: Vec<String> = self
                    .columns
                    .iter()
                    .filter(|(n, _)| !keys.contains(n))
                    .map(|(n, _)| format!("{n} = {}", saturating_sum(self.table, n)))
                    .collect();
                format!("ON CONFLICT ({key}) DO UPDATE SET {}", sums.join(", "))
            }
            OnConflict::Clause(clause) => (*clause).to_string(),
        }
    }

    /// The statement with `source` (a `VALUES` or `SELECT`) as its rows.
    pub(crate) fn sql(&self, source: &str) -> String {
        format!(
            "{} {}",
            self.sql_without_conflict(source),
            self.conflict_clause()
        )
    }

    /// The statement taking one row as `?1..?n` (SQLite).
    pub(crate) fn row_sql(&self) -> String {
        format!("{} {}", self.row_insert(), self.conflict_clause())
    }

    /// [`Self::row_sql`] without its conflict rule (for another one).
    fn row_insert(&self) -> String {
        let marks: Vec<String> = (1..=self.columns.len()).map(|i| format!("?{i}")).collect();
        self.sql_without_conflict(&format!("VALUES ({})", marks.join(", ")))
    }

    fn sql_without_conflict(&self, source: &str) -> String {
        format!("INSERT INTO {} ({}) {source}", self.table, self.names())
    }
}

/// A column: its name and kind (`text` or `int`).
type Column = (&'static str, &'static str);

/// The figures' columns, in [`Figures::NAMES`] order.
const FIGURE_COLUMNS: [Column; 7] = {
    let mut columns = [("", "int"); 7];
    let mut i = 0;
    while i < 7 {
        columns[i].0 = Figures::NAMES[i];
        i += 1;
    }
    columns
};

/// `head`, the figures' columns, then `tail`, as one list (`N` is the
/// sum of the three lengths).
const fn with_figures<const H: usize, const T: usize, const N: usize>(
    head: [Column; H],
    tail: [Column; T],
) -> [Column; N] {
    assert!(H + 7 + T == N, "N is the number of columns");
    let mut columns = [("", ""); N];
    let mut i = 0;
    while i < N {
        columns[i] = if i < H {
            head[i]
        } else if i < H + 7 {
            FIGURE_COLUMNS[i - H]
        } else {
            tail[i - H - 7]
        };
        i += 1;
    }
    columns
}

const EVENT_COLUMNS: [Column; 28] = with_figures(
    [
        ("event_id", "text"),
        ("received_at", "int"),
        ("ts", "int"),
        ("day", "text"),
        ("event_type", "text"),
        ("user_id", "text"),
        ("device_id", "text"),
        ("os", "text"),
        ("arch", "text"),
        ("os_version", "text"),
        ("runtime_name", "text"),
        ("runtime_version", "text"),
        ("app_version", "text"),
        ("initial_version", "text"),
        ("ci", "text"),
        ("project_id", "text"),
        ("datasource_type", "text"),
    ],
    [
        ("status", "text"),
        ("duration_ms", "int"),
        ("country", "text"),
        ("region", "text"),
    ],
);

/// Raw events, once per `event_id`.
pub(crate) const EVENTS: Upsert = Upsert {
    table: "events",
    columns: &EVENT_COLUMNS,
    on_conflict: OnConflict::Keep("event_id"),
};

const DAILY_EVENT_COLUMNS: [Column; 12] = with_figures(
    [
        ("day", "text"),
        ("event_type", "text"),
        ("shard", "int"),
        ("events", "int"),
        ("errors", "int"),
    ],
    [],
);

/// Users: earliest and latest sighting; attributes of the latest event.
pub(crate) const USERS: Upsert = Upsert {
    table: "users",
    columns: &[
        ("user_id", "text"),
        ("first_seen", "int"),
        ("first_day", "text"),
        ("last_seen", "int"),
        ("country", "text"),
        ("region", "text"),
        ("os", "text"),
        ("arch", "text"),
        ("os_version", "text"),
        ("device_id", "text"),
        ("runtime_name", "text"),
        ("runtime_version", "text"),
        ("app_version", "text"),
        ("initial_version", "text"),
        ("ci", "text"),
    ],
    on_conflict: OnConflict::Clause(
        "ON CONFLICT (user_id) DO UPDATE SET \
         first_day = CASE WHEN excluded.first_seen < users.first_seen THEN excluded.first_day ELSE users.first_day END, \
         first_seen = CASE WHEN excluded.first_seen < users.first_seen THEN excluded.first_seen ELSE users.first_seen END, \
         country = CASE WHEN excluded.last_seen >= users.last_seen THEN COALESCE(excluded.country, users.country) ELSE users.country END, \
         region = CASE WHEN excluded.last_seen >= users.last_seen THEN COALESCE(excluded.region, users.region) ELSE users.region END, \
         os = CASE WHEN excluded.last_seen >= users.last_seen THEN excluded.os ELSE users.os END, \
         arch = CASE WHEN excluded.last_seen >= users.last_seen THEN excluded.arch ELSE users.arch END, \
         os_version = CASE WHEN excluded.last_seen >= users.last_seen THEN excluded.os_version ELSE users.os_version END, \
         device_id = CASE WHEN excluded.last_seen >= users.last_seen THEN excluded.device_id ELSE users.device_id END, \
         runtime_name = CASE WHEN excluded.last_seen >= users.last_seen THEN excluded.runtime_name ELSE users.runtime_name END, \
         runtime_version = CASE WHEN excluded.last_seen >= users.last_seen THEN excluded.runtime_version ELSE users.runtime_version END, \
         app_version = CASE WHEN excluded.last_seen >= users.last_seen THEN excluded.app_version ELSE users.app_version END, \
         initial_version = CASE WHEN excluded.first_seen < users.first_seen THEN excluded.initial_version ELSE users.initial_version END, \
         ci = CASE WHEN excluded.last_seen >= users.last_seen THEN excluded.ci ELSE users.ci END, \
         last_seen = CASE WHEN excluded.last_seen > users.last_seen THEN excluded.last_seen ELSE users.last_seen END",
    ),
};

/// SQLite's writer, first for each user and project it rolls up: the
/// upsert of a row whose stored events are all no later than the new ones
/// (the common case), setting only what the latest event decides. SQLite
/// rewrites the entry of every index whose column a `SET` names, changed
/// or not, so this leaves `users_first_day` and `projects_user` alone.
/// When the new events are not all later it changes nothing (no row is
/// returned or changed) and [`USERS`] or [`PROJECTS`] follows.
pub(crate) static USERS_LATER_SQLITE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        let latest: Vec<String> = USERS.columns[4..]
            .iter()
            .filter(|(n, _)| *n != "initial_version")
            .map(|(n, _)| match *n {
                "country" | "region" => format!("{n} = COALESCE(excluded.{n}, users.{n})"),
                _ => format!("{n} = excluded.{n}"),
            })
            .collect();
        format!(
            "{} ON CONFLICT (user_id) DO UPDATE SET {}, last_seen = excluded.last_seen \
         WHERE excluded.first_seen >= users.first_seen AND excluded.last_seen >= users.last_seen \
         RETURNING first_day",
            USERS.row_insert(),
            latest.join(", ")
        )
    });

pub(crate) static PROJECTS_LATER_SQLITE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "{} ON CONFLICT (project_id) DO UPDATE SET current_version = excluded.current_version, \
             last_seen = excluded.last_seen WHERE excluded.first_seen >= projects.first_seen \
             AND excluded.last_seen >= projects.last_seen AND excluded.user_id = projects.user_id",
            PROJECTS.row_insert()
        )
    });

/// The owner key each user id is bound to: the first stored event that
/// carries one binds it, and nothing rebinds it (see
/// `piperider_event::OwnerKey`).
pub(crate) const OWNER_KEYS: Upsert = Upsert {
    table: "owner_keys",
    columns: &[
        ("user_id", "text"),
        ("owner_key", "text"),
        ("bound_at", "int"),
    ],
    on_conflict: OnConflict::Keep("user_id"),
};

/// Projects: first and last sighting, initial and current version.
pub(crate) const PROJECTS: Upsert = Upsert {
    table: "projects",
    columns: &[
        ("project_id", "text"),
        ("user_id", "text"),
        ("first_seen", "int"),
        ("last_seen", "int"),
        ("initial_version", "text"),
        ("current_version", "text"),
    ],
    on_conflict: OnConflict::Clause(
        "ON CONFLICT (project_id) DO UPDATE SET \
         user_id = CASE WHEN excluded.last_seen >= projects.last_seen THEN excluded.user_id ELSE projects.user_id END, \
         initial_version = CASE WHEN excluded.first_seen < projects.first_seen THEN excluded.initial_version ELSE projects.initial_version END, \
         current_version = CASE WHEN excluded.last_seen >= projects.last_seen THEN excluded.current_version ELSE projects.current_version END, \
         first_seen = CASE WHEN excluded.first_seen < projects.first_seen THEN excluded.first_seen ELSE projects.first_seen END, \
         last_seen = CASE WHEN excluded.last_seen > projects.last_seen THEN excluded.last_seen ELSE projects.last_seen END",
    ),
};

/// The data source types each project has used.
pub(crate) const DATASOURCES: Upsert = Upsert {
    table: "project_datasources",
    columns: &[("project_id", "text"), ("datasource_type", "text")],
    on_conflict: OnConflict::Keep("project_id, datasource_type"),
};

/// Daily active users.
pub(crate) const DAILY_USERS: Upsert = Upsert {
    table: "daily_users",
    columns: &[("day", "text"), ("user_id", "text")],
    on_conflict: OnConflict::Keep("day, user_id"),
};

/// Commands per day with their sums, in rows of the writer's shard (see
/// [`super::rollup::Aggregate::tables`]).
pub(crate) const DAILY_EVENTS: Upsert = Upsert {
    table: "daily_events",
    columns: &DAILY_EVENT_COLUMNS,
    on_conflict: OnConflict::Add("day, event_type, shard"),
};

/// Distributions: events per day, metric and power-of-ten bucket, in rows
/// of the writer's shard.
pub(crate) const DAILY_BUCKETS: Upsert = Upsert {
    table: "daily_buckets",
    columns: &[
        ("day", "text"),
        ("metric", "text"),
        ("bucket", "int"),
        ("shard", "int"),
        ("events", "int"),
    ],
    on_conflict: OnConflict::Add("day, metric, bucket, shard"),
};

/// Invalid events kept for inspection.
pub(crate) const QUARANTINE: Upsert = Upsert {
    table: "quarantine",
    columns: &[
        ("received_at", "int"),
        ("field", "text"),
        ("reason", "text"),
        ("size", "int"),
        ("keys", "text"),
        ("user_hash", "text"),
    ],
    on_conflict: OnConflict::None,
};

/// Newest quarantined events kept.
pub(crate) const QUARANTINE_KEEP: i64 = 10_000;

/// Keeps the newest [`QUARANTINE_KEEP`] quarantined events (`$1`).
pub(crate) const PRUNE_QUARANTINE: &str =
    "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - $1";

/// The events of one user (`$1`), after `FROM`. SQLite has no index on
/// `events.user_id` (an insert would touch a random page of it; see its
/// migration 0004): it finds them through the days `daily_users` records
/// for the user, which cover every stored event, and its index on the day.
/// PostgreSQL keeps the index, which it uses here: a deletion there runs in
/// the request, and must end within the request timeout at any size.
macro_rules! user_events {
    () => {
        "events WHERE day IN (SELECT day FROM daily_users WHERE user_id = $1) AND user_id = $1"
    };
}
pub(crate) use user_events;

/// Deleting one user's events (`$1`) on SQLite: through the days
/// `daily_users` records for them, which its writer keeps complete (raw
/// events have no index on `user_id` there).
pub(crate) const DELETE_USER_EVENTS_SQLITE: &str = concat!("DELETE FROM ", user_events!());

/// Deleting one user's events (`$1`) on PostgreSQL: by its index on
/// `user_id`, since the rollups of events still queued for the roller are
/// not written yet.
pub(crate) const DELETE_USER_EVENTS_POSTGRES: &str = "DELETE FROM events WHERE user_id = $1";

/// Deleting one user (`$1`): every rollup row of theirs and their owner
/// key (their events: [`DELETE_USER_EVENTS_SQLITE`],
/// [`DELETE_USER_EVENTS_POSTGRES`], run before these).
pub(crate) const DELETE_USER: [&str; 5] = [
    "DELETE FROM users WHERE user_id = $1",
    "DELETE FROM project_datasources WHERE project_id IN (SELECT project_id FROM projects WHERE user_id = $1)",
    "DELETE FROM projects WHERE user_id = $1",
    "DELETE FROM daily_users WHERE user_id = $1",
    "DELETE FROM owner_keys WHERE user_id = $1",
];

/// Remembers a deleted user's salted hash (`$1`), when (`$2`), and the
/// owner key bound to the id (`$3`), so a repeated request is answered as
/// done; run before [`DELETE_USER`], which deletes the key.
pub(crate) const REMEMBER_DELETED_USER: &str = "INSERT INTO deleted_users (user_hash, deleted_at, owner_key) \
     VALUES ($1, $2, (SELECT owner_key FROM owner_keys WHERE user_id = $3)) ON CONFLICT (user_hash) DO NOTHING";

/// Deleting one user's quarantined events, by the salted hash of the id (`$1`).
pub(crate) const DELETE_USER_QUARANTINE: &str = "DELETE FROM quarantine WHERE user_hash = $1";

/// Deleting quarantined events received before `$1` (milliseconds).
pub(crate) const PRUNE_QUARANTINE_BEFORE: &str = "DELETE FROM quarantine WHERE received_at < $1";

/// How long an SQLite connection waits for the file's lock.
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of every SQLite connection, the sqlx pool's and the
/// writer's alike. Durability differs by who acknowledges a commit: see
/// [`sqlite_synchronous`].
pub(crate) const SQLITE_PRAGMAS: [(&str, &str); 3] = [
    // Index pages stay in memory instead of being read back per insert.
    // The writer then sets its own size (`RollupHold`).
    ("cache_size", "-32768"),
    ("temp_store", "memory"),
    // Checkpoints run on the writer's own thread (`sqlite::checkpointer`);
    // this is only a backstop should that thread fall behind.
    ("wal_autocheckpoint", "262144"),
];

/// `synchronous` for an SQLite connection. The writer's commits are made
/// durable by its syncer threads (an `fdatasync` of the WAL) before they
/// are acknowledged, so the writer need not wait for the disk (`NORMAL`;
/// SQLite still syncs before each checkpoint). The pool's few writes
/// (settings, consent decisions, Cloud events, retention) are acknowledged
/// as soon as they commit, so each reaches the disk first (`FULL`).
pub(crate) fn sqlite_synchronous(writer: bool) -> &'static str {
    if writer { "NORMAL" } else { "FULL" }
}

/// `table.column + excluded.column`, held at the largest BIGINT instead of
/// overflowing: PostgreSQL would refuse the row ("out of range") and SQLite
/// would turn the sum into a float. Both dialects take this form, and the
/// subtraction cannot overflow (counters are never negative).
fn saturating_sum(table: &str, column: &str) -> String {
    format!(
        "CASE WHEN {table}.{column} > {max} - excluded.{column} THEN {max} \
         ELSE {table}.{column} + excluded.{column} END",
        max = i64::MAX
    )
}

/// `SUM(column)` as a BIGINT held at the largest one: PostgreSQL sums
/// BIGINTs as NUMERIC, and a cast of a larger one fails.
pub(crate) fn saturating_total(column: &str) -> String {
    format!(
        "CAST(CASE WHEN SUM({column}) > {max} THEN {max} ELSE SUM({column}) END AS BIGINT)",
        max = i64::MAX
    )
}

/// Every text column and the most characters it holds: a wire-format limit
/// (`piperider_event::limits`), an id's or a day's fixed form, a code the
/// service writes, or a cut made before storing. Nothing the service
/// stores is longer, whatever a client sends; a test lists the text
/// columns each database has, fails for one missing here, and fills every
/// column to its limit to check the bound.
pub const TEXT_BOUNDS: &[(&str, &str, usize)] = {
    use super::rows::{QUARANTINE_FIELD_CHARS, QUARANTINE_KEYS_BYTES, QUARANTINE_REASON_CHARS};
    use crate::geo::{COUNTRY_CHARS, REGION_CHARS};
    use piperider_event::limits::{
        MAX_COMPARISON_SOURCES, MAX_NAME_LEN, MAX_ROUTE_LEN, MAX_VERSION_LEN,
    };
    const ID: usize = 32;
    const DEVICE: usize = 64;
    const EVENT_ID: usize = 36;
    const DAY: usize = 10;
    /// A country code, or the word for none.
    const SEGMENT_COUNTRY: usize = if super::cube::UNKNOWN_COUNTRY.len() > COUNTRY_CHARS {
        super::cube::UNKNOWN_COUNTRY.len()
    } else {
        COUNTRY_CHARS
    };
    const NAME: usize = MAX_NAME_LEN;
    const VERSION: usize = MAX_VERSION_LEN;
    /// The sources of one comparison, joined by commas.
    const SOURCES: usize = MAX_COMPARISON_SOURCES * (MAX_NAME_LEN + 1) - 1;
    &[
        ("settings", "key", 32),
        ("settings", "value", 128),
        ("events", "event_id", EVENT_ID),
        ("events", "day", DAY),
        ("events", "event_type", NAME),
        ("events", "user_id", ID),
        ("events", "device_id", DEVICE),
        ("events", "os", NAME),
        ("events", "arch", NAME),
        ("events", "os_version", VERSION),
        ("events", "runtime_name", NAME),
        ("events", "runtime_version", VERSION),
        ("events", "app_version", VERSION),
        ("events", "initial_version", VERSION),
        ("events", "ci", NAME),
        ("events", "project_id", ID),
        ("events", "datasource_type", NAME),
        ("events", "status", NAME),
        ("events", "country", COUNTRY_CHARS),
        ("events", "region", REGION_CHARS),
        ("users", "user_id", ID),
        ("users", "first_day", DAY),
        ("users", "country", COUNTRY_CHARS),
        ("users", "region", REGION_CHARS),
        ("users", "os", NAME),
        ("users", "arch", NAME),
        ("users", "os_version", VERSION),
        ("users", "device_id", DEVICE),
        ("users", "runtime_name", NAME),
        ("users", "runtime_version", VERSION),
        ("users", "app_version", VERSION),
        ("users", "initial_version", VERSION),
        ("users", "ci", NAME),
        ("owner_keys", "user_id", ID),
        ("owner_keys", "owner_key", 64),
        ("projects", "project_id", ID),
        ("projects", "user_id", ID),
        ("projects", "initial_version", VERSION),
        ("projects", "current_version", VERSION),
        ("project_datasources", "project_id", ID),
        ("project_datasources", "datasource_type", NAME),
        ("daily_users", "day", DAY),
        ("daily_users", "user_id", ID),
        ("daily_events", "day", DAY),
        ("daily_events", "event_type", NAME),
        ("daily_buckets", "day", DAY),
        ("daily_buckets", "metric", NAME),
        ("segments", "os", NAME),
        ("segments", "app_version", VERSION),
        ("segments", "datasource_type", NAME),
        ("segments", "ci", NAME),
        ("segments", "country", SEGMENT_COUNTRY),
        ("cube_counts", "grain", 1),
        ("cube_counts", "period", DAY),
        ("cube_counts", "event_type", NAME),
        ("cube_sketches", "grain", 1),
        ("cube_sketches", "kind", 1),
        ("cube_sketches", "period", DAY),
        ("cohort_sketches", "cohort", DAY),
        ("cohort_sketches", "week", DAY),
        ("quarantine", "field", QUARANTINE_FIELD_CHARS),
        ("quarantine", "reason", QUARANTINE_REASON_CHARS),
        ("quarantine", "keys", QUARANTINE_KEYS_BYTES),
        ("quarantine", "user_hash", 64),
        ("deleted_users", "user_hash", 64),
        ("deleted_users", "owner_key", 64),
        ("cloud_events", "event_id", EVENT_ID),
        ("cloud_events", "day", DAY),
        ("cloud_events", "event_type", NAME),
        ("cloud_events", "visitor_id", ID),
        ("cloud_events", "route", MAX_ROUTE_LEN),
        ("cloud_events", "sources", SOURCES),
        ("cloud_events", "metric", NAME),
        ("consent_audit", "consent_id", ID),
        ("consent_audit", "day", DAY),
        ("consent_audit", "choice", 16),
        ("consent_audit", "source", 16),
        ("consent_records", "consent_id", ID),
        ("consent_records", "kind", 16),
        ("consent_records", "banner_hash", 64),
        ("consent_records", "source", 16),
        ("consent_records", "prev_hash", 64),
        ("consent_records", "hash", 64),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_every_column_but_the_key() {
        assert_eq!(
            DAILY_BUCKETS.row_sql(),
            "INSERT INTO daily_buckets (day, metric, bucket, shard, events) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (day, metric, bucket, shard) DO UPDATE SET events = CASE WHEN daily_buckets.events > 9223372036854775807 - excluded.events \
             THEN 9223372036854775807 ELSE daily_buckets.events + excluded.events END"
        );
        let sql = DAILY_EVENTS.row_sql();
        for name in super::super::rows::Figures::NAMES {
            assert!(
                sql.contains(&format!(
                    "{name} = {}",
                    saturating_sum("daily_events", name)
                )),
                "{sql}"
            );
        }
        assert!(!sql.contains("shard = "), "{sql}");
    }
}
