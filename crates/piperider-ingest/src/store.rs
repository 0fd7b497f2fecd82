//! Storage on SQLite (embedded default) or PostgreSQL (production), behind
//! one API. The SQL is the same for both wherever it can be: `$n`
//! placeholders, `ON CONFLICT`, `CASE` instead of `min`/`max`/`LEAST`.
//!
//! Reads of the dashboard and admin API go to rollup tables kept at ingest
//! (`users`, `projects`, `daily_*`), so they cost the number of users and
//! days, not the number of events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::FromRow;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// `SELECT` of typed columns from one array parameter per column
/// (PostgreSQL's `UNNEST`): a multi-row statement takes its rows as a fixed
/// number of parameters, so its text never changes (it stays prepared in
/// the statement cache), and the arrays travel in PostgreSQL's binary
/// format, with no text to parse. `types` are `text` or `int`, one per column.
fn from_arrays(types: &[&str]) -> String {
    let columns: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let pg = if *t == "int" { "BIGINT[]" } else { "TEXT[]" };
            format!("CAST(${} AS {pg})", i + 1)
        })
        .collect();
    // `WHERE true` keeps a following `ON CONFLICT` from being read as a join's `ON`.
    format!("SELECT * FROM UNNEST({}) WHERE true", columns.join(", "))
}

/// The rows as the parameters of [`Upsert::array_sql`]: one array per column.
fn column_arrays<'a, R: AsRef<[Cell<'a>]>>(
    upsert: &Upsert,
    rows: &'a [R],
) -> sqlx::Result<sqlx::postgres::PgArguments> {
    use sqlx::Arguments;
    let mut args = sqlx::postgres::PgArguments::default();
    for (i, (_, kind)) in upsert.columns.iter().enumerate() {
        let added = if *kind == "int" {
            let column: Vec<Option<i64>> = rows.iter().map(|r| r.as_ref()[i].int()).collect();
            args.add(column)
        } else {
            let column: Vec<Option<&str>> = rows.iter().map(|r| r.as_ref()[i].text()).collect();
            args.add(column)
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// Newest quarantined events kept.
pub(crate) const QUARANTINE_KEEP: i64 = 10_000;

#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// One stored event: the wire event flattened, plus when it arrived and
/// where from (country and region only).
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub(crate) event_id: String,
    pub(crate) received_at: i64,
    pub(crate) ts: i64,
    pub(crate) day: String,
    pub(crate) event_type: String,
    pub(crate) user_id: String,
    pub(crate) device_id: String,
    pub(crate) os: String,
    pub(crate) arch: String,
    pub(crate) os_version: String,
    pub(crate) runtime_name: String,
    pub(crate) runtime_version: String,
    pub(crate) app_version: String,
    pub(crate) initial_version: String,
    pub(crate) ci: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) datasource_type: Option<String>,
    pub(crate) stats: Option<[i64; 7]>,
    pub(crate) status: String,
    pub(crate) duration_ms: i64,
    pub(crate) country: Option<String>,
    pub(crate) region: Option<String>,
}

/// An invalid event kept for inspection: why, and its first bytes.
#[derive(Debug, Clone)]
pub(crate) struct QuarantineRow {
    pub(crate) received_at: i64,
    pub(crate) field: String,
    pub(crate) reason: String,
    pub(crate) size: i64,
    pub(crate) excerpt: String,
}

impl QuarantineRow {
    pub(crate) fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            self.received_at.into(),
            (&self.field).into(),
            (&self.reason).into(),
            self.size.into(),
            (&self.excerpt).into(),
        ]
    }
}

pub(crate) const QUARANTINE: Upsert = Upsert {
    table: "quarantine",
    columns: &[
        ("received_at", "int"),
        ("field", "text"),
        ("reason", "text"),
        ("size", "int"),
        ("excerpt", "text"),
    ],
    on_conflict: "",
};

/// Keeps the newest [`QUARANTINE_KEEP`] quarantined events (`$1`).
pub(crate) const PRUNE_QUARANTINE: &str =
    "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - $1";

/// What became of one event handed to [`Store::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Accepted,
    Duplicate,
    /// Its user asked for deletion: dropped.
    DeletedUser,
}

const STAT_METRICS: [&str; 7] = [
    "tables",
    "columns",
    "rows",
    "builtin_assertions",
    "custom_assertions",
    "passed_assertions",
    "failed_assertions",
];

/// Power-of-ten bucket: 0 for 0, b for 10^(b-1) ..= 10^b - 1.
pub(crate) fn bucket(v: i64) -> i64 {
    let mut b = 0;
    let mut n = v.max(0);
    while n > 0 {
        b += 1;
        n /= 10;
    }
    b
}

/// One value of a row handed to the database: text or an integer, either
/// possibly null. PostgreSQL gets rows as one array per column
/// ([`from_arrays`]), the SQLite writer binds them to a prepared statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(v: &'a str) -> Self {
        Cell::Text(Some(v))
    }
}
impl<'a> From<&'a String> for Cell<'a> {
    fn from(v: &'a String) -> Self {
        Cell::Text(Some(v))
    }
}
impl<'a> From<&'a Option<String>> for Cell<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Cell::Text(v.as_deref())
    }
}
impl From<i64> for Cell<'_> {
    fn from(v: i64) -> Self {
        Cell::Int(Some(v))
    }
}
impl From<Option<i64>> for Cell<'_> {
    fn from(v: Option<i64>) -> Self {
        Cell::Int(v)
    }
}

impl<'a> Cell<'a> {
    /// The integer of an integer column (a text cell there is a bug).
    fn int(self) -> Option<i64> {
        match self {
            Cell::Int(v) => v,
            Cell::Text(_) => unreachable!("text in an integer column"),
        }
    }

    /// The text of a text column (an integer cell there is a bug).
    fn text(self) -> Option<&'a str> {
        match self {
            Cell::Text(v) => v,
            Cell::Int(_) => unreachable!("an integer in a text column"),
        }
    }
}

impl rusqlite::ToSql for Cell<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Cell::Text(v) => v.to_sql(),
            Cell::Int(v) => v.to_sql(),
        }
    }
}

/// A multi-row `INSERT` into one table: its columns (with their kind,
/// `text` or `int`) and its `ON CONFLICT` clause. The row source differs by
/// database: an array per column on PostgreSQL, one bound row at a time on
/// SQLite.
pub(crate) struct Upsert {
    pub(crate) table: &'static str,
    pub(crate) columns: &'static [(&'static str, &'static str)],
    pub(crate) on_conflict: &'static str,
}

impl Upsert {
    fn sql(&self, source: &str) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        format!(
            "INSERT INTO {} ({}) {source} {}",
            self.table,
            names.join(", "),
            self.on_conflict
        )
    }

    /// The statement taking all rows as one array per column (PostgreSQL).
    pub(crate) fn array_sql(&self) -> String {
        let types: Vec<&str> = self.columns.iter().map(|(_, t)| *t).collect();
        self.sql(&from_arrays(&types))
    }

    /// The statement taking one row as `?1..?n` (SQLite).
    pub(crate) fn row_sql(&self) -> String {
        let marks: Vec<String> = (1..=self.columns.len()).map(|i| format!("?{i}")).collect();
        self.sql(&format!("VALUES ({})", marks.join(", ")))
    }
}

pub(crate) const EVENTS: Upsert = Upsert {
    table: "events",
    columns: &[
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
        ("tables", "int"),
        ("columns", "int"),
        ("rows", "int"),
        ("builtin_assertions", "int"),
        ("custom_assertions", "int"),
        ("passed_assertions", "int"),
        ("failed_assertions", "int"),
        ("status", "text"),
        ("duration_ms", "int"),
        ("country", "text"),
        ("region", "text"),
    ],
    on_conflict: "ON CONFLICT (event_id) DO NOTHING",
};

/// A stored event's row, in [`EVENTS`] column order.
pub(crate) fn event_cells(e: &EventRow) -> [Cell<'_>; 28] {
    let s = e.stats.map(|s| s.map(Some)).unwrap_or([None; 7]);
    [
        (&e.event_id).into(),
        e.received_at.into(),
        e.ts.into(),
        (&e.day).into(),
        (&e.event_type).into(),
        (&e.user_id).into(),
        (&e.device_id).into(),
        (&e.os).into(),
        (&e.arch).into(),
        (&e.os_version).into(),
        (&e.runtime_name).into(),
        (&e.runtime_version).into(),
        (&e.app_version).into(),
        (&e.initial_version).into(),
        (&e.ci).into(),
        (&e.project_id).into(),
        (&e.datasource_type).into(),
        s[0].into(),
        s[1].into(),
        s[2].into(),
        s[3].into(),
        s[4].into(),
        s[5].into(),
        s[6].into(),
        (&e.status).into(),
        e.duration_ms.into(),
        (&e.country).into(),
        (&e.region).into(),
    ]
}

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
    on_conflict: "ON CONFLICT (user_id) DO UPDATE SET \
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
    on_conflict: "ON CONFLICT (project_id) DO UPDATE SET \
         user_id = CASE WHEN excluded.last_seen >= projects.last_seen THEN excluded.user_id ELSE projects.user_id END, \
         initial_version = CASE WHEN excluded.first_seen < projects.first_seen THEN excluded.initial_version ELSE projects.initial_version END, \
         current_version = CASE WHEN excluded.last_seen >= projects.last_seen THEN excluded.current_version ELSE projects.current_version END, \
         first_seen = CASE WHEN excluded.first_seen < projects.first_seen THEN excluded.first_seen ELSE projects.first_seen END, \
         last_seen = CASE WHEN excluded.last_seen > projects.last_seen THEN excluded.last_seen ELSE projects.last_seen END",
};

pub(crate) const DATASOURCES: Upsert = Upsert {
    table: "project_datasources",
    columns: &[("project_id", "text"), ("datasource_type", "text")],
    on_conflict: "ON CONFLICT (project_id, datasource_type) DO NOTHING",
};

/// Daily active users.
pub(crate) const DAILY_USERS: Upsert = Upsert {
    table: "daily_users",
    columns: &[("day", "text"), ("user_id", "text")],
    on_conflict: "ON CONFLICT (day, user_id) DO NOTHING",
};

/// Commands per day with their sums, in rows of the writer's shard (see
/// [`Aggregate::tables`]).
pub(crate) const DAILY_EVENTS: Upsert = Upsert {
    table: "daily_events",
    columns: &[
        ("day", "text"),
        ("event_type", "text"),
        ("shard", "int"),
        ("events", "int"),
        ("errors", "int"),
        ("tables", "int"),
        ("columns", "int"),
        ("rows", "int"),
        ("builtin_assertions", "int"),
        ("custom_assertions", "int"),
        ("passed_assertions", "int"),
        ("failed_assertions", "int"),
    ],
    on_conflict: "ON CONFLICT (day, event_type, shard) DO UPDATE SET events = daily_events.events + excluded.events, \
         errors = daily_events.errors + excluded.errors, tables = daily_events.tables + excluded.tables, \
         columns = daily_events.columns + excluded.columns, rows = daily_events.rows + excluded.rows, \
         builtin_assertions = daily_events.builtin_assertions + excluded.builtin_assertions, \
         custom_assertions = daily_events.custom_assertions + excluded.custom_assertions, \
         passed_assertions = daily_events.passed_assertions + excluded.passed_assertions, \
         failed_assertions = daily_events.failed_assertions + excluded.failed_assertions",
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
    on_conflict: "ON CONFLICT (day, metric, bucket, shard) DO UPDATE SET events = daily_buckets.events + excluded.events",
};

/// What newly stored events add to the rollups, worked out in memory so
/// that each user, project and day costs one upsert however many events
/// it had. PostgreSQL writes one per transaction; the SQLite writer keeps
/// one across transactions and writes it about once a second
/// (`sqlite_writer`). Upserts commute (earliest and latest win, counts
/// add), so aggregates may be written in any order.
#[derive(Debug, Default)]
pub(crate) struct Aggregate {
    /// Per user: the earliest and the latest event. (Hash maps for the
    /// many keys, sorted once when written; B-trees for the few days.)
    users: HashMap<String, (Arc<EventRow>, Arc<EventRow>)>,
    projects: HashMap<String, (Arc<EventRow>, Arc<EventRow>)>,
    datasources: HashMap<String, BTreeSet<String>>,
    /// Per day, the users active on it.
    active: BTreeMap<String, HashSet<String>>,
    /// Per day and event type: events, errors and the seven sums.
    daily: BTreeMap<String, BTreeMap<String, [i64; 9]>>,
    /// Per day: events per metric and bucket.
    buckets: BTreeMap<String, BTreeMap<(&'static str, i64), i64>>,
    events: usize,
}

fn earliest_latest(
    map: &mut HashMap<String, (Arc<EventRow>, Arc<EventRow>)>,
    key: &str,
    e: &Arc<EventRow>,
) {
    match map.get_mut(key) {
        Some((first, last)) => {
            if e.ts < first.ts {
                *first = e.clone();
            }
            if e.ts >= last.ts {
                *last = e.clone();
            }
        }
        None => {
            map.insert(key.to_string(), (e.clone(), e.clone()));
        }
    }
}

fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The entries of `map` in key order.
fn sorted<V>(map: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

impl Aggregate {
    pub(crate) fn add(&mut self, e: &Arc<EventRow>) {
        self.events += 1;
        earliest_latest(&mut self.users, &e.user_id, e);
        if let Some(p) = &e.project_id {
            earliest_latest(&mut self.projects, p, e);
            if let Some(t) = &e.datasource_type {
                match self.datasources.get_mut(p.as_str()) {
                    Some(types) => {
                        if !types.contains(t) {
                            types.insert(t.clone());
                        }
                    }
                    None => {
                        self.datasources
                            .insert(p.clone(), BTreeSet::from([t.clone()]));
                    }
                }
            }
        }
        let active = entry(&mut self.active, &e.day);
        if !active.contains(&e.user_id) {
            active.insert(e.user_id.clone());
        }
        let d = entry(entry(&mut self.daily, &e.day), &e.event_type);
        d[0] += 1;
        d[1] += i64::from(e.status == "error");
        if let Some(s) = e.stats {
            let buckets = entry(&mut self.buckets, &e.day);
            for (i, v) in s.iter().enumerate() {
                d[2 + i] += v;
                *buckets.entry((STAT_METRICS[i], bucket(*v))).or_insert(0) += 1;
            }
        }
    }

    /// How many events it holds.
    pub(crate) fn events(&self) -> usize {
        self.events
    }

    /// Each rollup table's upsert with its rows, in key order (so that
    /// concurrent PostgreSQL transactions take row locks in one order).
    /// Counters are added to rows of `shard`: every transaction adds to
    /// the counters of its day, so concurrent writers sharing one row
    /// would take turns, each waiting for the other's commit.
    pub(crate) fn tables(&self, shard: i64) -> [(&'static Upsert, Vec<Vec<Cell<'_>>>); 6] {
        let users = sorted(&self.users)
            .into_iter()
            .map(|(_, (first, last))| {
                vec![
                    (&last.user_id).into(),
                    first.ts.into(),
                    (&first.day).into(),
                    last.ts.into(),
                    (&last.country).into(),
                    (&last.region).into(),
                    (&last.os).into(),
                    (&last.arch).into(),
                    (&last.os_version).into(),
                    (&last.device_id).into(),
                    (&last.runtime_name).into(),
                    (&last.runtime_version).into(),
                    (&last.app_version).into(),
                    (&first.initial_version).into(),
                    (&last.ci).into(),
                ]
            })
            .collect();
        let projects = sorted(&self.projects)
            .into_iter()
            .map(|(id, (first, last))| {
                vec![
                    id.into(),
                    (&last.user_id).into(),
                    first.ts.into(),
                    last.ts.into(),
                    (&first.app_version).into(),
                    (&last.app_version).into(),
                ]
            })
            .collect();
        let datasources = sorted(&self.datasources)
            .into_iter()
            .flat_map(|(p, types)| types.iter().map(move |t| vec![p.into(), t.into()]))
            .collect();
        let daily_users = self
            .active
            .iter()
            .flat_map(|(d, users)| {
                let mut users: Vec<&String> = users.iter().collect();
                users.sort_unstable();
                users.into_iter().map(move |u| vec![d.into(), u.into()])
            })
            .collect();
        let daily_events = self
            .daily
            .iter()
            .flat_map(|(day, types)| {
                types.iter().map(move |(t, v)| {
                    let mut row = vec![day.into(), t.into(), shard.into()];
                    row.extend(v.map(Cell::from));
                    row
                })
            })
            .collect();
        let daily_buckets = self
            .buckets
            .iter()
            .flat_map(|(day, counts)| {
                counts.iter().map(move |((metric, b), n)| {
                    vec![
                        day.into(),
                        (*metric).into(),
                        (*b).into(),
                        shard.into(),
                        (*n).into(),
                    ]
                })
            })
            .collect();
        [
            (&USERS, users),
            (&PROJECTS, projects),
            (&DATASOURCES, datasources),
            (&DAILY_USERS, daily_users),
            (&DAILY_EVENTS, daily_events),
            (&DAILY_BUCKETS, daily_buckets),
        ]
    }
}

/// The UTC day of a time as the tables keep it, 'YYYY-MM-DD' (without
/// parsing a format string per event).
pub(crate) fn day(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Datelike;
    let d = t.date_naive();
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

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

/// Deleting one user (`$1`): their events and every rollup row of theirs.
pub(crate) const DELETE_USER: [&str; 5] = [
    "DELETE FROM users WHERE user_id = $1",
    concat!("DELETE FROM ", user_events!()),
    "DELETE FROM project_datasources WHERE project_id IN (SELECT project_id FROM projects WHERE user_id = $1)",
    "DELETE FROM projects WHERE user_id = $1",
    "DELETE FROM daily_users WHERE user_id = $1",
];

/// Remembers a deleted user's salted hash (`$1`) and when (`$2`).
pub(crate) const REMEMBER_DELETED_USER: &str = "INSERT INTO deleted_users (user_hash, deleted_at) VALUES ($1, $2) ON CONFLICT (user_hash) DO NOTHING";

/// What became of each event of a group, in input order: dropped for a
/// deleted user, accepted the first time its id was inserted, otherwise a
/// duplicate.
pub(crate) fn outcomes(
    events: &[&Arc<EventRow>],
    is_deleted: impl Fn(&EventRow) -> bool,
    inserted: &HashSet<&str>,
) -> Vec<Written> {
    let mut first = HashSet::new();
    events
        .iter()
        .map(|e| {
            if is_deleted(e) {
                Written::DeletedUser
            } else if inserted.contains(e.event_id.as_str()) && first.insert(e.event_id.as_str()) {
                Written::Accepted
            } else {
                Written::Duplicate
            }
        })
        .collect()
}

impl Store {
    /// Connects, creating an SQLite file if needed, and runs the embedded migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Every commit reaches the disk before it is acknowledged.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
                // Index pages stay in memory instead of being read back per insert.
                .pragma("cache_size", "-32768")
                .pragma("temp_store", "memory")
                // Fewer, larger checkpoints.
                .pragma("wal_autocheckpoint", "8192");
            // The writer thread opens the same file: an in-memory database would be a different one.
            if url.contains(":memory:") || url.contains("mode=memory") {
                anyhow::bail!(
                    "the SQLite store must be a file (sqlite:path/to/telemetry.db), not an in-memory database"
                );
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Store::Sqlite(pool)
        } else {
            anyhow::bail!("unsupported database URL (use sqlite:path.db or postgres://...)");
        };
        Ok(store)
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    pub async fn ping(&self) -> sqlx::Result<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))
    }

    /// Whether the database answers and, with `write`, whether a write
    /// could start now (SQLite's write lock can be taken, and is given
    /// back at once; for PostgreSQL an answer is enough).
    pub async fn ready(&self, write: bool) -> sqlx::Result<()> {
        self.ping().await?;
        match self {
            Store::Sqlite(pool) if write => {
                pool.begin_with("BEGIN IMMEDIATE").await?.rollback().await
            }
            _ => Ok(()),
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// A setting, created with `make()` the first time it is asked for.
    pub(crate) async fn setting(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> sqlx::Result<String> {
        let value = make();
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(&value)
                .execute(pool)
                .await?;
            sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await
        })
    }

    /// Stores a group of events in one PostgreSQL transaction (group
    /// commit): the events of deleted users are dropped, the rest inserted
    /// once each (`event_id` is unique), the rollups updated for what was
    /// new, and the invalid events quarantined. Nothing is acknowledged
    /// before `COMMIT`. (SQLite has its own writer thread: `sqlite_writer`.)
    pub(crate) async fn write_postgres(
        pool: &PgPool,
        shard: i64,
        events: &[&Arc<EventRow>],
        hashes: &HashMap<&str, &str>,
        quarantine: &[QuarantineRow],
    ) -> sqlx::Result<Vec<Written>> {
        let mut tx = pool.begin().await?;
        // Deleted users.
        let wanted: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| hashes.get(e.user_id.as_str()).copied())
            .collect();
        let deleted: HashSet<String> = if wanted.is_empty() {
            HashSet::new()
        } else {
            let list: Vec<&str> = wanted.into_iter().collect();
            let found: Vec<String> =
                sqlx::query_scalar("SELECT user_hash FROM deleted_users WHERE user_hash = ANY($1)")
                    .bind(list)
                    .fetch_all(&mut *tx)
                    .await?;
            found.into_iter().collect()
        };
        let is_deleted = |e: &EventRow| {
            hashes
                .get(e.user_id.as_str())
                .is_some_and(|h| deleted.contains(*h))
        };

        // Events, once each.
        let mut seen_in_group = HashSet::new();
        let fresh: Vec<&Arc<EventRow>> = events
            .iter()
            .copied()
            .filter(|e| !is_deleted(e) && seen_in_group.insert(e.event_id.as_str()))
            .collect();
        let ids: Vec<String> = if fresh.is_empty() {
            Vec::new()
        } else {
            let rows: Vec<[Cell<'_>; 28]> = fresh.iter().map(|e| event_cells(e)).collect();
            sqlx::query_scalar_with(
                &format!("{} RETURNING event_id", EVENTS.array_sql()),
                column_arrays(&EVENTS, &rows)?,
            )
            .fetch_all(&mut *tx)
            .await?
        };
        let inserted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut rollup = Aggregate::default();
        for e in fresh
            .iter()
            .filter(|e| inserted.contains(e.event_id.as_str()))
        {
            rollup.add(e);
        }
        for (upsert, rows) in rollup.tables(shard) {
            if !rows.is_empty() {
                sqlx::query_with(&upsert.array_sql(), column_arrays(upsert, &rows)?)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if !quarantine.is_empty() {
            let rows: Vec<Vec<Cell<'_>>> = quarantine.iter().map(QuarantineRow::cells).collect();
            sqlx::query_with(&QUARANTINE.array_sql(), column_arrays(&QUARANTINE, &rows)?)
                .execute(&mut *tx)
                .await?;
            sqlx::query(PRUNE_QUARANTINE)
                .bind(QUARANTINE_KEEP)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes(events, is_deleted, &inserted))
    }

    /// Deletes everything stored about one user and remembers the salted
    /// hash of the id, so later events for it are dropped (PostgreSQL; the
    /// SQLite writer runs [`DELETE_USER`] itself). Returns whether anything
    /// was stored.
    pub(crate) async fn delete_user_postgres(
        pool: &PgPool,
        user_id: &str,
        user_hash: &str,
        now_ms: i64,
    ) -> sqlx::Result<bool> {
        let mut tx = pool.begin().await?;
        let mut found = 0;
        for sql in DELETE_USER {
            found += sqlx::query(sql)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        sqlx::query(REMEMBER_DELETED_USER)
            .bind(user_hash)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(found > 0)
    }

    /// Deletes raw events older than `before_ms` (the rollups stay).
    pub(crate) async fn prune_events(&self, before_ms: i64) -> sqlx::Result<u64> {
        on_pool!(self, pool => Ok(sqlx::query("DELETE FROM events WHERE ts < $1").bind(before_ms).execute(pool).await?.rows_affected()))
    }

    pub async fn count_events(&self) -> sqlx::Result<i64> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await)
    }

    /// Every row of a table as text, for audits such as "no address is
    /// stored anywhere" (PostgreSQL; an SQLite database is a file to read).
    pub async fn table_as_text(&self, table: &str) -> sqlx::Result<String> {
        if !table.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(sqlx::Error::Protocol(format!("not a table name: {table}")));
        }
        match self {
            Store::Postgres(pool) => {
                let sql =
                    format!("SELECT COALESCE(string_agg(t::text, E'\\n'), '') FROM {table} t");
                sqlx::query_scalar(&sql).fetch_one(pool).await
            }
            Store::Sqlite(_) => Err(sqlx::Error::Protocol("read the SQLite file instead".into())),
        }
    }

    /// Appends one consent decision to the audit trail.
    pub(crate) async fn append_consent(
        &self,
        record: &piperider_consent::ConsentRecord,
        day: &str,
        source: &str,
    ) -> sqlx::Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO consent_audit (consent_id, decided_at, day, choice, policy_version, gpc, source) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(record.id.as_str())
            .bind(record.at)
            .bind(day)
            .bind(record.choice.as_str())
            .bind(i64::from(record.policy))
            .bind(i64::from(record.gpc))
            .bind(source)
            .execute(pool)
            .await
            .map(drop)
        })
    }

    /// Stores one Cloud event (once per `event_id`).
    pub(crate) async fn insert_cloud_event(
        &self,
        e: &piperider_event::CloudEvent,
        received_at: i64,
    ) -> sqlx::Result<()> {
        let sources = e.sources.as_ref().map(|s| s.join(","));
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO cloud_events (event_id, received_at, ts, day, event_type, visitor_id, route, sources, metric) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(e.event_id.to_string())
            .bind(received_at)
            .bind(e.timestamp.timestamp_millis())
            .bind(day(e.timestamp))
            .bind(e.event_type.as_str())
            .bind(e.visitor_id.as_str())
            .bind(e.route.as_str())
            .bind(sources.clone())
            .bind(e.metric.clone())
            .execute(pool)
            .await
            .map(drop)
        })
    }

    /// Cloud figures for the days `from..=to`: counts by event type, page
    /// views by route, comparison sources, trend metrics, consent choices.
    pub(crate) async fn cloud_stats(
        &self,
        from: &str,
        to: &str,
    ) -> sqlx::Result<BTreeMap<String, Vec<Count>>> {
        let queries = [
            (
                "events",
                "SELECT event_type, COUNT(*) FROM cloud_events WHERE day >= $1 AND day <= $2 GROUP BY event_type ORDER BY 2 DESC, 1",
            ),
            (
                "page_views",
                "SELECT route, COUNT(*) FROM cloud_events WHERE day >= $1 AND day <= $2 AND event_type = 'page_view' GROUP BY route ORDER BY 2 DESC, 1 LIMIT 50",
            ),
            (
                "comparison_sources",
                "SELECT sources, COUNT(*) FROM cloud_events WHERE day >= $1 AND day <= $2 AND event_type = 'comparison_sources' GROUP BY sources ORDER BY 2 DESC, 1 LIMIT 50",
            ),
            (
                "trend_metrics",
                "SELECT metric, COUNT(*) FROM cloud_events WHERE day >= $1 AND day <= $2 AND event_type = 'trend_metric_selected' GROUP BY metric ORDER BY 2 DESC, 1 LIMIT 50",
            ),
            (
                "consent",
                "SELECT choice, COUNT(*) FROM consent_audit WHERE day >= $1 AND day <= $2 GROUP BY choice ORDER BY 1",
            ),
        ];
        let mut out = BTreeMap::new();
        for (name, sql) in queries {
            let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(sql).bind(from).bind(to).fetch_all(pool).await)?;
            out.insert(
                name.to_string(),
                rows.into_iter()
                    .map(|(key, count)| Count { key, count })
                    .collect(),
            );
        }
        Ok(out)
    }

    /// The event types of the stored Cloud events, sorted (tests).
    pub async fn cloud_event_types_for_tests(&self) -> sqlx::Result<Vec<String>> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT event_type FROM cloud_events ORDER BY event_type").fetch_all(pool).await)
    }

    pub async fn count_cloud_events(&self) -> sqlx::Result<i64> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM cloud_events").fetch_one(pool).await)
    }

    pub async fn count_consent_decisions(&self) -> sqlx::Result<i64> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM consent_audit").fetch_one(pool).await)
    }

    pub async fn count_quarantined(&self) -> sqlx::Result<i64> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM quarantine").fetch_one(pool).await)
    }

    /// Everything stored about one user, `None` when nothing is.
    pub(crate) async fn user_report(&self, user_id: &str) -> sqlx::Result<Option<UserReport>> {
        on_pool!(self, pool => {
            let Some(user) = sqlx::query_as::<_, UserRow>(
                "SELECT user_id, first_seen, last_seen, country, region, os, arch, os_version, device_id, runtime_name, \
                 runtime_version, app_version, initial_version, ci FROM users WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
            else {
                return Ok(None);
            };
            let projects = sqlx::query_as::<_, ProjectRow>(
                "SELECT project_id, first_seen, last_seen, initial_version, current_version FROM projects WHERE user_id = $1 ORDER BY first_seen",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            let types: Vec<(String, String)> = sqlx::query_as(
                "SELECT d.project_id, d.datasource_type FROM project_datasources d JOIN projects p ON p.project_id = d.project_id \
                 WHERE p.user_id = $1 ORDER BY d.datasource_type",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            let events: i64 = sqlx::query_scalar(concat!("SELECT COUNT(*) FROM ", user_events!())).bind(user_id).fetch_one(pool).await?;
            let days_active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM daily_users WHERE user_id = $1").bind(user_id).fetch_one(pool).await?;
            Ok(Some(UserReport::new(user, projects, types, events, days_active)))
        })
    }

    /// The dashboard's figures for the days `from..=to` ('YYYY-MM-DD').
    pub(crate) async fn stats(
        &self,
        from: &str,
        to: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> sqlx::Result<Stats> {
        let last_day = if self.is_sqlite() {
            "date(last_seen / 1000, 'unixepoch')"
        } else {
            "to_char(to_timestamp(last_seen / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        };
        let last_seen_sql = format!(
            "SELECT {last_day} AS d, COUNT(*) FROM users WHERE last_seen >= $1 AND last_seen < $2 GROUP BY d ORDER BY d"
        );
        on_pool!(self, pool => {
            let last_seen: Vec<(String, i64)> = sqlx::query_as(&last_seen_sql).bind(from_ms).bind(to_ms).fetch_all(pool).await?;
            let active: Vec<(String, i64)> = sqlx::query_as(
                "SELECT day, COUNT(*) FROM daily_users WHERE day >= $1 AND day <= $2 GROUP BY day ORDER BY day",
            )
            .bind(from).bind(to).fetch_all(pool).await?;
            let new: Vec<(String, i64)> = sqlx::query_as(
                "SELECT first_day, COUNT(*) FROM users WHERE first_day >= $1 AND first_day <= $2 GROUP BY first_day ORDER BY first_day",
            )
            .bind(from).bind(to).fetch_all(pool).await?;
            let active_users: i64 = sqlx::query_scalar(
                "SELECT COUNT(DISTINCT user_id) FROM daily_users WHERE day >= $1 AND day <= $2",
            )
            .bind(from).bind(to).fetch_one(pool).await?;
            let total_users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await?;
            let commands: Vec<DailyEvents> = sqlx::query_as(
                "SELECT day, event_type, CAST(SUM(events) AS BIGINT) AS events, CAST(SUM(errors) AS BIGINT) AS errors, \
                 CAST(SUM(tables) AS BIGINT) AS tables, CAST(SUM(columns) AS BIGINT) AS columns, CAST(SUM(rows) AS BIGINT) AS rows, \
                 CAST(SUM(builtin_assertions) AS BIGINT) AS builtin_assertions, CAST(SUM(custom_assertions) AS BIGINT) AS custom_assertions, \
                 CAST(SUM(passed_assertions) AS BIGINT) AS passed_assertions, CAST(SUM(failed_assertions) AS BIGINT) AS failed_assertions \
                 FROM daily_events WHERE day >= $1 AND day <= $2 GROUP BY day, event_type ORDER BY day, event_type",
            )
            .bind(from).bind(to).fetch_all(pool).await?;
            let buckets: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT metric, bucket, CAST(SUM(events) AS BIGINT) FROM daily_buckets WHERE day >= $1 AND day <= $2 \
                 GROUP BY metric, bucket ORDER BY metric, bucket",
            )
            .bind(from).bind(to).fetch_all(pool).await?;
            let mut breakdowns = BTreeMap::new();
            for (name, column) in [
                ("platforms", "os"),
                ("architectures", "arch"),
                ("countries", "country"),
                ("runtime_versions", "runtime_version"),
                ("app_versions", "app_version"),
                ("initial_versions", "initial_version"),
                ("ci", "ci"),
            ] {
                let sql = format!(
                    "SELECT COALESCE({column}, 'unknown'), COUNT(*) FROM users WHERE last_seen >= $1 AND last_seen < $2 \
                     GROUP BY {column} ORDER BY 2 DESC, 1 LIMIT 50"
                );
                let rows: Vec<(String, i64)> = sqlx::query_as(&sql).bind(from_ms).bind(to_ms).fetch_all(pool).await?;
                breakdowns.insert(name.to_string(), rows.into_iter().map(|(k, v)| Count { key: k, count: v }).collect());
            }
            let regions: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT COALESCE(country, 'unknown'), COALESCE(region, 'unknown'), COUNT(*) FROM users \
                 WHERE last_seen >= $1 AND last_seen < $2 GROUP BY country, region ORDER BY 3 DESC, 1, 2 LIMIT 100",
            )
            .bind(from_ms).bind(to_ms).fetch_all(pool).await?;
            breakdowns.insert(
                "regions".to_string(),
                regions.into_iter().map(|(c, r, n)| Count { key: format!("{c}-{r}"), count: n }).collect(),
            );
            let datasources: Vec<(String, i64)> = sqlx::query_as(
                "SELECT d.datasource_type, COUNT(*) FROM project_datasources d JOIN projects p ON p.project_id = d.project_id \
                 WHERE p.last_seen >= $1 AND p.last_seen < $2 GROUP BY d.datasource_type ORDER BY 2 DESC, 1",
            )
            .bind(from_ms).bind(to_ms).fetch_all(pool).await?;
            breakdowns.insert(
                "datasource_types".to_string(),
                datasources.into_iter().map(|(k, v)| Count { key: k, count: v }).collect(),
            );
            let projects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE last_seen >= $1 AND last_seen < $2")
                .bind(from_ms).bind(to_ms).fetch_one(pool).await?;
            let mut stats = Stats::new(from, to, active, new, active_users, total_users, projects, commands, buckets, breakdowns);
            stats.last_seen = last_seen.into_iter().map(|(key, count)| Count { key, count }).collect();
            Ok(stats)
        })
    }
}

#[derive(Debug, FromRow)]
struct UserRow {
    user_id: String,
    first_seen: i64,
    last_seen: i64,
    country: Option<String>,
    region: Option<String>,
    os: String,
    arch: String,
    os_version: String,
    device_id: String,
    runtime_name: String,
    runtime_version: String,
    app_version: String,
    initial_version: String,
    ci: Option<String>,
}

#[derive(Debug, FromRow)]
struct ProjectRow {
    project_id: String,
    first_seen: i64,
    last_seen: i64,
    initial_version: String,
    current_version: String,
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Everything stored about one user (`GET /v1/admin/users/{user_id}`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct UserReport {
    pub user_id: String,
    pub first_seen: String,
    pub last_seen: String,
    pub country: Option<String>,
    pub region: Option<String>,
    pub platform: PlatformReport,
    pub device_id: String,
    pub runtime: RuntimeReport,
    pub app_version: String,
    pub initial_version: String,
    pub ci: Option<String>,
    pub events_stored: i64,
    pub days_active: i64,
    pub projects: Vec<ProjectReport>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlatformReport {
    pub os: String,
    pub arch: String,
    pub os_version: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RuntimeReport {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProjectReport {
    pub project_id: String,
    pub first_seen: String,
    pub last_seen: String,
    pub initial_version: String,
    pub current_version: String,
    pub datasource_types: Vec<String>,
}

impl UserReport {
    fn new(
        u: UserRow,
        projects: Vec<ProjectRow>,
        types: Vec<(String, String)>,
        events: i64,
        days_active: i64,
    ) -> Self {
        UserReport {
            first_seen: iso(u.first_seen),
            last_seen: iso(u.last_seen),
            country: u.country,
            region: u.region,
            platform: PlatformReport {
                os: u.os,
                arch: u.arch,
                os_version: u.os_version,
            },
            device_id: u.device_id,
            runtime: RuntimeReport {
                name: u.runtime_name,
                version: u.runtime_version,
            },
            app_version: u.app_version,
            initial_version: u.initial_version,
            ci: u.ci,
            events_stored: events,
            days_active,
            projects: projects
                .into_iter()
                .map(|p| ProjectReport {
                    datasource_types: types
                        .iter()
                        .filter(|(id, _)| *id == p.project_id)
                        .map(|(_, t)| t.clone())
                        .collect(),
                    project_id: p.project_id,
                    first_seen: iso(p.first_seen),
                    last_seen: iso(p.last_seen),
                    initial_version: p.initial_version,
                    current_version: p.current_version,
                })
                .collect(),
            user_id: u.user_id,
        }
    }
}

#[derive(Debug, FromRow)]
struct DailyEvents {
    day: String,
    event_type: String,
    events: i64,
    errors: i64,
    tables: i64,
    columns: i64,
    rows: i64,
    builtin_assertions: i64,
    custom_assertions: i64,
    passed_assertions: i64,
    failed_assertions: i64,
}

/// A count by key (a country, a version, a day).
#[derive(Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Count {
    pub key: String,
    pub count: i64,
}

/// One day's commands of one type, with what they counted.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CommandDay {
    pub day: String,
    pub event_type: String,
    pub events: i64,
    pub errors: i64,
}

/// Sums over the range, and per day.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Totals {
    pub events: i64,
    pub errors: i64,
    pub tables: i64,
    pub columns: i64,
    pub rows: i64,
    pub builtin_assertions: i64,
    pub custom_assertions: i64,
    pub passed_assertions: i64,
    pub failed_assertions: i64,
}

/// How many events had a figure in each power-of-ten bucket
/// (`0`, `1-9`, `10-99`, ...).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Distribution {
    pub metric: String,
    pub buckets: Vec<Count>,
}

/// `GET /v1/admin/stats`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Stats {
    pub from: String,
    pub to: String,
    pub active_users: i64,
    pub total_users: i64,
    pub active_projects: i64,
    pub daily_active_users: Vec<Count>,
    pub new_users: Vec<Count>,
    /// Users by the day they were last seen (within the range).
    pub last_seen: Vec<Count>,
    pub commands: Vec<CommandDay>,
    pub commands_by_type: Vec<Count>,
    pub totals: Totals,
    pub daily_totals: BTreeMap<String, Totals>,
    pub distributions: Vec<Distribution>,
    /// Users seen in the range, by their latest platform, country, region, versions; projects by data source type.
    pub breakdowns: BTreeMap<String, Vec<Count>>,
}

fn bucket_label(b: i64) -> String {
    match b {
        0 => "0".into(),
        1 => "1-9".into(),
        b => format!("{}-{}", 10i64.pow((b - 1) as u32), 10i64.pow(b as u32) - 1),
    }
}

impl Stats {
    #[allow(clippy::too_many_arguments)]
    fn new(
        from: &str,
        to: &str,
        active: Vec<(String, i64)>,
        new: Vec<(String, i64)>,
        active_users: i64,
        total_users: i64,
        projects: i64,
        commands: Vec<DailyEvents>,
        buckets: Vec<(String, i64, i64)>,
        breakdowns: BTreeMap<String, Vec<Count>>,
    ) -> Stats {
        let mut totals = Totals::default();
        let mut daily_totals: BTreeMap<String, Totals> = BTreeMap::new();
        let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
        for c in &commands {
            for t in [&mut totals, daily_totals.entry(c.day.clone()).or_default()] {
                t.events += c.events;
                t.errors += c.errors;
                t.tables += c.tables;
                t.columns += c.columns;
                t.rows += c.rows;
                t.builtin_assertions += c.builtin_assertions;
                t.custom_assertions += c.custom_assertions;
                t.passed_assertions += c.passed_assertions;
                t.failed_assertions += c.failed_assertions;
            }
            *by_type.entry(c.event_type.clone()).or_default() += c.events;
        }
        let mut distributions: BTreeMap<String, Vec<Count>> = BTreeMap::new();
        for (metric, b, n) in buckets {
            distributions.entry(metric).or_default().push(Count {
                key: bucket_label(b),
                count: n,
            });
        }
        let count = |v: Vec<(String, i64)>| {
            v.into_iter()
                .map(|(key, count)| Count { key, count })
                .collect()
        };
        Stats {
            from: from.to_string(),
            to: to.to_string(),
            active_users,
            total_users,
            active_projects: projects,
            daily_active_users: count(active),
            new_users: count(new),
            last_seen: Vec::new(),
            commands_by_type: by_type
                .into_iter()
                .map(|(key, count)| Count { key, count })
                .collect(),
            commands: commands
                .into_iter()
                .map(|c| CommandDay {
                    day: c.day,
                    event_type: c.event_type,
                    events: c.events,
                    errors: c.errors,
                })
                .collect(),
            totals,
            daily_totals,
            distributions: distributions
                .into_iter()
                .map(|(metric, buckets)| Distribution { metric, buckets })
                .collect(),
            breakdowns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(
            [
                bucket(0),
                bucket(1),
                bucket(9),
                bucket(10),
                bucket(99),
                bucket(100)
            ],
            [0, 1, 1, 2, 2, 3]
        );
        assert_eq!(bucket_label(3), "100-999");
    }
}
