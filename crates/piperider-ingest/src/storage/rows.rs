//! The rows the storage layer writes: a stored event, a quarantined one,
//! and the values of a row as the databases take them. The columns of the
//! `events` table are named once, in [`super::schema::EVENTS`]; a row is
//! turned into values in that order and read back by column name.

use piperider_event::CliEvent;

/// Writes [`Figures`] and its list of names from one list of fields.
macro_rules! figures {
    ($($name:ident),* $(,)?) => {
        /// The seven figures a data command reports, by name. The wire
        /// format's `stats`, an event row's figures, a day's sums and a
        /// report's totals all use this one list.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
        pub struct Figures {
            $(pub $name: i64,)*
        }

        impl Figures {
            /// The figures' names, in the order of [`Figures::values`]
            /// (and of the tables' columns).
            pub const NAMES: [&'static str; 7] = [$(stringify!($name)),*];

            /// The values in the order of [`Figures::NAMES`].
            pub fn values(&self) -> [i64; 7] {
                [$(self.$name),*]
            }

            /// The figures from values in the order of [`Figures::NAMES`].
            pub fn from_values(values: [i64; 7]) -> Figures {
                let [$($name),*] = values;
                Figures { $($name),* }
            }
        }
    };
}

figures!(
    tables,
    columns,
    rows,
    builtin_assertions,
    custom_assertions,
    passed_assertions,
    failed_assertions,
);

impl Figures {
    /// Adds `other` figure by figure, held at `i64::MAX` (as the stored
    /// counters are).
    pub fn add(&mut self, other: &Figures) {
        let (a, b) = (self.values(), other.values());
        *self = Figures::from_values(std::array::from_fn(|i| a[i].saturating_add(b[i])));
    }
}

/// One stored event: the wire event flattened, plus when it arrived and
/// where from (country and region only). In queue mode it travels
/// through the stream as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    pub(crate) stats: Option<Figures>,
    pub(crate) status: String,
    pub(crate) duration_ms: i64,
    pub(crate) country: Option<String>,
    pub(crate) region: Option<String>,
    /// The owner key the event carried: not a column of `events`, it is
    /// bound to the user id in `owner_keys` with the event's insert.
    pub(crate) owner_key: Option<String>,
}

/// The UTC day of a time as the tables keep it, 'YYYY-MM-DD' (without
/// parsing a format string per event).
pub(crate) fn day(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Datelike;
    let d = t.date_naive();
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An [`EventRow`] from a stored row, each column read by name with the
/// driver's `get` (the field's type picks the conversion): one mapping for
/// rusqlite's rows and sqlx's.
macro_rules! event_row_from {
    ($r:expr, $get:ident) => {{
        let mut stats = [None; 7];
        for (value, name) in stats.iter_mut().zip(Figures::NAMES) {
            let v: Option<i64> = $r.$get(name)?;
            *value = v;
        }
        Ok(EventRow {
            event_id: $r.$get("event_id")?,
            received_at: $r.$get("received_at")?,
            ts: $r.$get("ts")?,
            day: $r.$get("day")?,
            event_type: $r.$get("event_type")?,
            user_id: $r.$get("user_id")?,
            device_id: $r.$get("device_id")?,
            os: $r.$get("os")?,
            arch: $r.$get("arch")?,
            os_version: $r.$get("os_version")?,
            runtime_name: $r.$get("runtime_name")?,
            runtime_version: $r.$get("runtime_version")?,
            app_version: $r.$get("app_version")?,
            initial_version: $r.$get("initial_version")?,
            ci: $r.$get("ci")?,
            project_id: $r.$get("project_id")?,
            datasource_type: $r.$get("datasource_type")?,
            stats: stats
                .iter()
                .all(Option::is_some)
                .then(|| Figures::from_values(stats.map(|v| v.unwrap_or(0)))),
            status: $r.$get("status")?,
            duration_ms: $r.$get("duration_ms")?,
            country: $r.$get("country")?,
            region: $r.$get("region")?,
            owner_key: None,
        })
    }};
}

impl EventRow {
    /// The row of a valid wire event received at `received_at` from
    /// `country` and `region` (the address itself is not passed here).
    pub(crate) fn new(
        event: CliEvent,
        country: Option<String>,
        region: Option<String>,
        received_at: i64,
    ) -> EventRow {
        let (project_id, datasource_type) = match event.project {
            Some(p) => (Some(p.project_id.into()), p.datasource_type),
            None => (None, None),
        };
        // A clock ahead of the receiver's (within the allowed skew) counts
        // as the receiver's now: nobody can fill a day that has not come.
        let at = chrono::DateTime::from_timestamp_millis(received_at)
            .map_or(event.timestamp, |now| event.timestamp.min(now));
        EventRow {
            event_id: event.event_id.to_string(),
            received_at,
            ts: at.timestamp_millis(),
            day: day(at),
            event_type: event.event_type.to_string(),
            user_id: event.user_id.into(),
            device_id: event.device_id.into(),
            os: event.platform.os,
            arch: event.platform.arch,
            os_version: event.platform.os_version,
            runtime_name: event.runtime.name,
            runtime_version: event.runtime.version,
            app_version: event.app_version,
            initial_version: event.initial_version,
            ci: event.ci,
            project_id,
            datasource_type,
            stats: event.stats.map(|s| Figures {
                tables: int(s.tables),
                columns: int(s.columns),
                rows: int(s.rows),
                builtin_assertions: int(s.builtin_assertions),
                custom_assertions: int(s.custom_assertions),
                passed_assertions: int(s.passed_assertions),
                failed_assertions: int(s.failed_assertions),
            }),
            status: event.outcome.status.as_str().to_string(),
            duration_ms: int(event.outcome.duration_ms),
            country,
            region,
            owner_key: event.owner_key.map(String::from),
        }
    }

    /// The fields a receipt covers (see [`piperider_event::Receipt`]).
    pub(crate) fn stored_fields(&self) -> piperider_event::StoredFields<'_> {
        piperider_event::StoredFields {
            event_id: self.event_id.clone(),
            received_at: self.received_at,
            ts: self.ts,
            event_type: &self.event_type,
            user_id: &self.user_id,
            device_id: &self.device_id,
            os: &self.os,
            arch: &self.arch,
            os_version: &self.os_version,
            runtime_name: &self.runtime_name,
            runtime_version: &self.runtime_version,
            app_version: &self.app_version,
            initial_version: &self.initial_version,
            ci: self.ci.as_deref(),
            project_id: self.project_id.as_deref(),
            datasource_type: self.datasource_type.as_deref(),
            stats: self.stats.map(|s| s.values()),
            status: &self.status,
            duration_ms: self.duration_ms,
        }
    }

    /// The row's values in [`super::schema::EVENTS`] column order.
    pub(crate) fn cells(&self) -> [Cell<'_>; 28] {
        let s = self
            .stats
            .map(|s| s.values().map(Some))
            .unwrap_or([None; 7]);
        [
            (&self.event_id).into(),
            self.received_at.into(),
            self.ts.into(),
            (&self.day).into(),
            (&self.event_type).into(),
            (&self.user_id).into(),
            (&self.device_id).into(),
            (&self.os).into(),
            (&self.arch).into(),
            (&self.os_version).into(),
            (&self.runtime_name).into(),
            (&self.runtime_version).into(),
            (&self.app_version).into(),
            (&self.initial_version).into(),
            (&self.ci).into(),
            (&self.project_id).into(),
            (&self.datasource_type).into(),
            s[0].into(),
            s[1].into(),
            s[2].into(),
            s[3].into(),
            s[4].into(),
            s[5].into(),
            s[6].into(),
            (&self.status).into(),
            self.duration_ms.into(),
            (&self.country).into(),
            (&self.region).into(),
        ]
    }

    /// A stored event read back by column name (the SQLite writer's recovery).
    pub(crate) fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
        event_row_from!(r, get)
    }

    /// A stored event read back through sqlx, from either database (the
    /// PostgreSQL roller, the user report's digests).
    pub(crate) fn from_sqlx<R>(r: &R) -> Result<EventRow, sqlx::Error>
    where
        R: sqlx::Row,
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    {
        event_row_from!(r, try_get)
    }
}

/// The `owner_keys` rows of newly stored events: the first key each user
/// id carries in them, with the time it arrived.
pub(crate) fn owner_rows<'a>(events: impl Iterator<Item = &'a EventRow>) -> Vec<Vec<Cell<'a>>> {
    let mut seen = std::collections::HashSet::new();
    events
        .filter_map(|e| Some((e, e.owner_key.as_ref()?)))
        .filter(|(e, _)| seen.insert(e.user_id.as_str()))
        .map(|(e, key)| vec![(&e.user_id).into(), key.into(), e.received_at.into()])
        .collect()
}

/// An invalid event kept for inspection: why it was refused and the keys
/// it had, never a value (no user id, no device id, nothing a client
/// typed); the salted hash of its user id, when it had a readable one, so
/// it is deleted with the user. The id itself goes only as far as the
/// store that hashes it (through the stream, in queue mode).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct QuarantineRow {
    pub(crate) received_at: i64,
    pub(crate) field: String,
    pub(crate) reason: String,
    pub(crate) size: i64,
    pub(crate) keys: String,
    /// The readable user id, until the store replaces it with `user_hash`.
    pub(crate) user_id: Option<String>,
    pub(crate) user_hash: Option<String>,
}

/// Longest field path a quarantine row keeps, in characters.
pub(crate) const QUARANTINE_FIELD_CHARS: usize = 64;
/// Longest reason a quarantine row keeps, in characters.
pub(crate) const QUARANTINE_REASON_CHARS: usize = 256;
/// Longest list of keys a quarantine row keeps, in bytes.
pub(crate) const QUARANTINE_KEYS_BYTES: usize = 1024;

/// The wire format's own key names, at any depth.
static KNOWN_KEYS: std::sync::LazyLock<std::collections::BTreeSet<String>> =
    std::sync::LazyLock::new(piperider_event::schema::cli_event_keys);

/// The dotted paths of the keys in `value`, sorted, without a value; a key
/// the wire format does not have is written `?` (a client can put anything
/// in a key's name).
fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let name = if KNOWN_KEYS.contains(key) {
                    key.as_str()
                } else {
                    "?"
                };
                let path = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                };
                out.push(path.clone());
                key_paths(v, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                key_paths(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

impl QuarantineRow {
    /// The row of an event of `size` bytes, refused at `field` for
    /// `reason`: each text cut to its bound; the keys of `value`, the event
    /// as JSON (none when it is not JSON); `user_id` its user id, when
    /// readable (hashed by the store, see [`QuarantineRow::hash_user`]).
    pub(crate) fn new(
        received_at: i64,
        field: &str,
        reason: &str,
        size: usize,
        value: Option<&serde_json::Value>,
        user_id: Option<String>,
    ) -> Self {
        let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        let mut paths = Vec::new();
        if let Some(value) = value {
            key_paths(value, "", &mut paths);
        }
        paths.sort();
        paths.dedup();
        QuarantineRow {
            received_at,
            field: cut(field, QUARANTINE_FIELD_CHARS),
            reason: cut(reason, QUARANTINE_REASON_CHARS),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            keys: cut_bytes(paths.join(","), QUARANTINE_KEYS_BYTES),
            user_id,
            user_hash: None,
        }
    }

    /// Replaces the user id with its salted hash (`hash`), as stored.
    pub(crate) fn hash_user(&mut self, hash: impl Fn(&str) -> String) {
        if let Some(user) = self.user_id.take() {
            self.user_hash = Some(hash(&user));
        }
    }

    /// The row's values in [`super::schema::QUARANTINE`] column order.
    pub(crate) fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            self.received_at.into(),
            (&self.field).into(),
            (&self.reason).into(),
            self.size.into(),
            (&self.keys).into(),
            (&self.user_hash).into(),
        ]
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut_bytes(mut s: String, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// One value of a row handed to the database: text or an integer, either
/// possibly null. PostgreSQL gets rows as one array per column, the SQLite
/// writer binds them to a prepared statement.
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
    pub(crate) fn int(self) -> Option<i64> {
        match self {
            Cell::Int(v) => v,
            Cell::Text(_) => unreachable!("text in an integer column"),
        }
    }

    /// The text of a text column (an integer cell there is a bug).
    pub(crate) fn text(self) -> Option<&'a str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_names_follow_the_events_columns() {
        let names: Vec<&str> = super::super::schema::EVENTS
            .columns
            .iter()
            .map(|(n, _)| *n)
            .collect();
        let at = names.iter().position(|n| *n == "tables").unwrap();
        assert_eq!(&names[at..at + 7], &Figures::NAMES[..]);
        let f = Figures::from_values([1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(f.rows, 3);
        assert_eq!(f.values(), [1, 2, 3, 4, 5, 6, 7]);
    }
}
