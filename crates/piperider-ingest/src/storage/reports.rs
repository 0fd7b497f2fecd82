//! The admin read models: what `GET /v1/admin/stats` and
//! `GET /v1/admin/users/{user_id}` answer, and the dashboard draws.
//!
//! These types are a second public format beside the wire format: their
//! JSON is documented in `/openapi.json` (generated from them) and read by
//! tools outside this service, so a field is added, never renamed or
//! removed. They read the rollup tables, never the raw events (except to
//! count one user's), so they cost the number of users and days; each read
//! first makes the rollups include every acknowledged event.

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeDelta};
use schemars::JsonSchema;
use serde::Serialize;
use sqlx::FromRow;

use super::error::StorageError;
use super::rows::{EventRow, Figures};
use super::schema::{saturating_total, user_events};
use super::{Backend, Store, on_pool};

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
    /// The digest of each stored event, newest first, at most
    /// [`EVENT_DIGESTS`]: what a sender holds its receipts against (the
    /// wire format's `Receipt`). Digests only: no event's content.
    pub event_digests: Vec<EventDigest>,
}

/// How many of a user's newest events the report gives digests of (as
/// many as a sender keeps in its log of what it sent).
pub const EVENT_DIGESTS: usize = 2_500;

/// One stored event's digest.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventDigest {
    pub event_id: String,
    /// SHA-256 of the event as stored (the wire format's `StoredFields`), 64 hex digits.
    pub digest: String,
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

/// A count by key (a country, a version, a day).
#[derive(Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Count {
    pub key: String,
    pub count: i64,
}

/// One day's commands of one type.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CommandDay {
    pub day: String,
    pub event_type: String,
    pub events: i64,
    pub errors: i64,
}

/// Sums over the range, and per day: commands, failed commands, and the
/// figures they reported.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Totals {
    pub events: i64,
    pub errors: i64,
    #[serde(flatten)]
    pub figures: Figures,
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

fn counts(rows: Vec<(String, i64)>) -> Vec<Count> {
    rows.into_iter()
        .map(|(key, count)| Count { key, count })
        .collect()
}

impl UserReport {
    fn new(
        u: UserRow,
        projects: Vec<ProjectRow>,
        types: Vec<(String, String)>,
        events: i64,
        days_active: i64,
        event_digests: Vec<EventDigest>,
    ) -> Self {
        UserReport {
            event_digests,
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

fn bucket_label(b: i64) -> String {
    match b {
        0 => "0".into(),
        1 => "1-9".into(),
        b => format!("{}-{}", 10i64.pow((b - 1) as u32), 10i64.pow(b as u32) - 1),
    }
}

/// `daily_events` summed over its shards, per day and command, with the
/// figures in [`Figures::NAMES`] order after `events` and `errors`.
fn daily_events_sql() -> String {
    let sums: Vec<String> = ["events", "errors"]
        .into_iter()
        .chain(Figures::NAMES)
        .map(saturating_total)
        .collect();
    format!(
        "SELECT day, event_type, {} FROM daily_events WHERE day >= $1 AND day <= $2 \
         GROUP BY day, event_type ORDER BY day, event_type",
        sums.join(", ")
    )
}

/// One row of [`daily_events_sql`]: day, command, events, errors, figures.
type DailyRow = (String, String, i64, i64, i64, i64, i64, i64, i64, i64, i64);

fn row_totals(row: &DailyRow) -> Totals {
    let (_, _, events, errors, a, b, c, d, e, f, g) = *row;
    Totals {
        events,
        errors,
        figures: Figures::from_values([a, b, c, d, e, f, g]),
    }
}

/// The users' attributes broken down by value: (name in the answer, column).
const USER_BREAKDOWNS: [(&str, &str); 7] = [
    ("platforms", "os"),
    ("architectures", "arch"),
    ("countries", "country"),
    ("runtime_versions", "runtime_version"),
    ("app_versions", "app_version"),
    ("initial_versions", "initial_version"),
    ("ci", "ci"),
];

/// The first millisecond of a day.
fn ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

impl Stats {
    fn new(
        from: NaiveDate,
        to: NaiveDate,
        commands: Vec<DailyRow>,
        buckets: Vec<(String, i64, i64)>,
    ) -> Stats {
        let mut totals = Totals::default();
        let mut daily_totals: BTreeMap<String, Totals> = BTreeMap::new();
        let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
        for row in &commands {
            let t = row_totals(row);
            for sum in [&mut totals, daily_totals.entry(row.0.clone()).or_default()] {
                sum.events = sum.events.saturating_add(t.events);
                sum.errors = sum.errors.saturating_add(t.errors);
                sum.figures.add(&t.figures);
            }
            let n = by_type.entry(row.1.clone()).or_default();
            *n = n.saturating_add(t.events);
        }
        let mut distributions: BTreeMap<String, Vec<Count>> = BTreeMap::new();
        for (metric, b, n) in buckets {
            distributions.entry(metric).or_default().push(Count {
                key: bucket_label(b),
                count: n,
            });
        }
        Stats {
            from: from.to_string(),
            to: to.to_string(),
            active_users: 0,
            total_users: 0,
            active_projects: 0,
            daily_active_users: Vec::new(),
            new_users: Vec::new(),
            last_seen: Vec::new(),
            commands_by_type: counts(by_type.into_iter().collect()),
            commands: commands
                .into_iter()
                .map(|(day, event_type, events, errors, ..)| CommandDay {
                    day,
                    event_type,
                    events,
                    errors,
                })
                .collect(),
            totals,
            daily_totals,
            distributions: distributions
                .into_iter()
                .map(|(metric, buckets)| Distribution { metric, buckets })
                .collect(),
            breakdowns: BTreeMap::new(),
        }
    }
}

impl Store {
    /// Everything stored about one user, `None` when nothing is.
    pub(crate) async fn user_report(
        &self,
        user_id: &str,
    ) -> Result<Option<UserReport>, StorageError> {
        self.flush().await?;
        on_pool!(&self.0.backend, pool => {
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
            let stored = sqlx::query(&format!(
                "SELECT * FROM {} ORDER BY ts DESC, event_id DESC LIMIT {EVENT_DIGESTS}",
                user_events!()
            ))
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            let mut digests = Vec::with_capacity(stored.len());
            for row in &stored {
                let event = EventRow::from_sqlx(row)?;
                digests.push(EventDigest {
                    digest: event.stored_fields().digest(),
                    event_id: event.event_id,
                });
            }
            Ok(Some(UserReport::new(user, projects, types, events, days_active, digests)))
        })
    }

    /// The dashboard's figures for the days `from..=to`.
    pub(crate) async fn stats(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Stats, StorageError> {
        self.flush().await?;
        let (days, ms) = (
            (from.to_string(), to.to_string()),
            (ms(from), ms(to + TimeDelta::days(1))),
        );
        let last_day = match self.0.backend {
            Backend::Sqlite(_) => "date(last_seen / 1000, 'unixepoch')",
            Backend::Postgres(_) => {
                "to_char(to_timestamp(last_seen / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            }
        };
        let last_seen_sql = format!(
            "SELECT {last_day} AS d, COUNT(*) FROM users WHERE last_seen >= $1 AND last_seen < $2 GROUP BY d ORDER BY d"
        );
        let (days, last_seen_sql) = (&days, &last_seen_sql);
        self.read(move || async move { on_pool!(self.reader(), pool => {
            let by_day = |sql: &'static str| sqlx::query_as::<_, (String, i64)>(sql).bind(&days.0).bind(&days.1).fetch_all(pool);
            let by_time = |sql: String| async move { sqlx::query_as::<_, (String, i64)>(&sql).bind(ms.0).bind(ms.1).fetch_all(pool).await };
            let commands: Vec<DailyRow> = sqlx::query_as(&daily_events_sql()).bind(&days.0).bind(&days.1).fetch_all(pool).await?;
            let buckets: Vec<(String, i64, i64)> = sqlx::query_as(
                &format!("SELECT metric, bucket, {} FROM daily_buckets WHERE day >= $1 AND day <= $2 \
                 GROUP BY metric, bucket ORDER BY metric, bucket", saturating_total("events")),
            )
            .bind(&days.0).bind(&days.1).fetch_all(pool).await?;
            let mut stats = Stats::new(from, to, commands, buckets);
            stats.daily_active_users = counts(by_day("SELECT day, COUNT(*) FROM daily_users WHERE day >= $1 AND day <= $2 GROUP BY day ORDER BY day").await?);
            stats.new_users = counts(by_day("SELECT first_day, COUNT(*) FROM users WHERE first_day >= $1 AND first_day <= $2 GROUP BY first_day ORDER BY first_day").await?);
            stats.last_seen = counts(by_time(last_seen_sql.clone()).await?);
            stats.active_users = sqlx::query_scalar("SELECT COUNT(DISTINCT user_id) FROM daily_users WHERE day >= $1 AND day <= $2")
                .bind(&days.0).bind(&days.1).fetch_one(pool).await?;
            stats.total_users = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await?;
            stats.active_projects = sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE last_seen >= $1 AND last_seen < $2")
                .bind(ms.0).bind(ms.1).fetch_one(pool).await?;
            for (name, column) in USER_BREAKDOWNS {
                let sql = format!(
                    "SELECT COALESCE({column}, 'unknown'), COUNT(*) FROM users WHERE last_seen >= $1 AND last_seen < $2 \
                     GROUP BY {column} ORDER BY 2 DESC, 1 LIMIT 50"
                );
                stats.breakdowns.insert(name.to_string(), counts(by_time(sql).await?));
            }
            let regions: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT COALESCE(country, 'unknown'), COALESCE(region, 'unknown'), COUNT(*) FROM users \
                 WHERE last_seen >= $1 AND last_seen < $2 GROUP BY country, region ORDER BY 3 DESC, 1, 2 LIMIT 100",
            )
            .bind(ms.0).bind(ms.1).fetch_all(pool).await?;
            stats.breakdowns.insert(
                "regions".to_string(),
                regions.into_iter().map(|(c, r, n)| Count { key: format!("{c}-{r}"), count: n }).collect(),
            );
            let datasources = by_time(
                "SELECT d.datasource_type, COUNT(*) FROM project_datasources d JOIN projects p ON p.project_id = d.project_id \
                 WHERE p.last_seen >= $1 AND p.last_seen < $2 GROUP BY d.datasource_type ORDER BY 2 DESC, 1".to_string(),
            ).await?;
            stats.breakdowns.insert("datasource_types".to_string(), counts(datasources));
            Ok(stats)
        }) })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_labels() {
        assert_eq!(bucket_label(0), "0");
        assert_eq!(bucket_label(1), "1-9");
        assert_eq!(bucket_label(3), "100-999");
    }

    #[test]
    fn totals_serialize_their_figures_flat() {
        let t = Totals {
            events: 2,
            errors: 1,
            figures: Figures {
                rows: 30,
                ..Figures::default()
            },
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["rows"], 30);
        assert_eq!(v["events"], 2);
        assert_eq!(v.as_object().unwrap().len(), 9);
    }
}
