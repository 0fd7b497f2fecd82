//! The public summary (`GET /v1/public/summary`, off unless
//! `--public-stats`): distinct users per platform, app version, runtime
//! version, data source type, country, region and command over a window,
//! every group under its floor folded into "other".
//!
//! Counts are of distinct users, so one heavy user counts once. A user
//! counts in the window when they were active on one of its days (a
//! `daily_users` row), under their latest platform, versions and place
//! (the `users` row); a data source type counts the users of projects seen
//! in the window; a command counts the users who ran it in the window.

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::Serialize;

use super::error::StorageError;
use super::{Store, on_pool};

/// The least number of distinct users a group must have to be shown.
pub const FLOOR: i64 = 10;
/// The same for a region, a smaller place than a country.
pub const REGION_FLOOR: i64 = 20;

/// One dimension's raw counts: (key, distinct users).
pub(crate) type Counts = Vec<(String, i64)>;

/// Distinct active users over `days`, and each dimension's raw counts.
pub(crate) struct RawSummary {
    pub(crate) active_users: i64,
    pub(crate) dimensions: Vec<(&'static str, Counts)>,
}

/// Each query takes one parameter, `$1`: the window's first day
/// (`YYYY-MM-DD`), except `datasource_type`'s, which takes its first
/// moment (milliseconds; `projects` keeps times, not days).
///
/// The users active on a day from `$1` on, by one of their `users` columns.
macro_rules! by_user_column {
    ($column:expr) => {
        concat!(
            "SELECT ",
            $column,
            " AS k, COUNT(*) AS n FROM users u JOIN (SELECT DISTINCT user_id FROM daily_users WHERE day >= $1) a \
             ON a.user_id = u.user_id GROUP BY k"
        )
    };
}

const QUERIES: [(&str, &str); 7] = [
    ("platform", by_user_column!("u.os")),
    ("app_version", by_user_column!("u.app_version")),
    (
        "runtime_version",
        by_user_column!("u.runtime_name || ' ' || u.runtime_version"),
    ),
    ("country", by_user_column!("COALESCE(u.country, 'unknown')")),
    (
        "region",
        by_user_column!("COALESCE(u.country, 'unknown') || '-' || COALESCE(u.region, 'unknown')"),
    ),
    (
        "datasource_type",
        "SELECT d.datasource_type AS k, COUNT(DISTINCT p.user_id) AS n FROM project_datasources d \
         JOIN projects p ON p.project_id = d.project_id WHERE p.last_seen >= $1 GROUP BY d.datasource_type",
    ),
    (
        "command",
        "SELECT event_type AS k, COUNT(DISTINCT user_id) AS n FROM events WHERE day >= $1 GROUP BY event_type",
    ),
];

impl Store {
    /// The raw counts of the window starting on `from` (whose first
    /// moment is `from_ms`), before any floor.
    pub(crate) async fn public_counts(
        &self,
        from: NaiveDate,
        from_ms: i64,
    ) -> Result<RawSummary, StorageError> {
        self.flush().await?;
        let day = from.to_string();
        let day = &day;
        self.read(move || async move {
            on_pool!(self.reader(), pool => {
                let active_users: i64 = sqlx::query_scalar(
                    "SELECT COUNT(DISTINCT user_id) FROM daily_users WHERE day >= $1",
                )
                .bind(day)
                .fetch_one(pool)
                .await?;
                let mut dimensions = Vec::with_capacity(QUERIES.len());
                for (name, sql) in QUERIES {
                    let query = sqlx::query_as(sql);
                    let query = if name == "datasource_type" {
                        query.bind(from_ms)
                    } else {
                        query.bind(day.clone())
                    };
                    let counts: Counts = query.fetch_all(pool).await?;
                    dimensions.push((name, counts));
                }
                Ok(RawSummary { active_users, dimensions })
            })
        })
        .await
    }
}

/// What `GET /v1/public/summary` answers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PublicSummary {
    /// `30d`, `90d` or `365d`.
    pub window: String,
    /// The window's first day (UTC).
    pub from: String,
    /// Its last day, today (UTC).
    pub to: String,
    /// Distinct users active in the window; null below [`FLOOR`].
    pub active_users: Option<i64>,
    /// The floors applied: `groups` for every dimension, `regions` for regions.
    pub floors: Floors,
    /// Each dimension's groups, largest first.
    pub dimensions: Vec<Dimension>,
}

/// The least distinct users a shown group has.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Floors {
    pub groups: i64,
    pub regions: i64,
}

/// One dimension (`platform`, `app_version`, `runtime_version`,
/// `datasource_type`, `country`, `region`, `command`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Dimension {
    pub name: String,
    /// The groups at or over the floor, most users first.
    pub groups: Vec<Group>,
    /// The groups under the floor, together; absent when none was folded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<Other>,
}

/// One shown group.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Group {
    pub key: String,
    /// Distinct users.
    pub users: i64,
}

/// The folded groups.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Other {
    /// Their distinct users together (a user in two folded groups of a
    /// dimension with several values per user counts twice); null when
    /// even together they are under the floor.
    pub users: Option<i64>,
}

impl PublicSummary {
    /// The summary of `raw` with the floors applied.
    pub(crate) fn new(window: &str, from: NaiveDate, to: NaiveDate, raw: RawSummary) -> Self {
        let dimensions = raw
            .dimensions
            .into_iter()
            .map(|(name, counts)| {
                let floor = if name == "region" {
                    REGION_FLOOR
                } else {
                    FLOOR
                };
                fold(name, counts, floor)
            })
            .collect();
        PublicSummary {
            window: window.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            active_users: (raw.active_users >= FLOOR).then_some(raw.active_users),
            floors: Floors {
                groups: FLOOR,
                regions: REGION_FLOOR,
            },
            dimensions,
        }
    }
}

/// Groups under `floor` go into "other"; the rest are shown, largest first.
fn fold(name: &str, counts: Counts, floor: i64) -> Dimension {
    let (mut shown, small): (Vec<_>, Vec<_>) = counts.into_iter().partition(|(_, n)| *n >= floor);
    shown.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let other = (!small.is_empty()).then(|| {
        let users: i64 = small.iter().map(|(_, n)| n).sum();
        Other {
            users: (users >= floor).then_some(users),
        }
    });
    Dimension {
        name: name.to_string(),
        groups: shown
            .into_iter()
            .map(|(key, users)| Group { key, users })
            .collect(),
        other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_under_the_floor_are_folded_and_a_small_other_is_not_counted() {
        let counts = vec![
            ("GB".to_string(), 10),
            ("DE".to_string(), 9),
            ("FR".to_string(), 30),
            ("IS".to_string(), 1),
        ];
        let d = fold("country", counts, FLOOR);
        let keys: Vec<(&str, i64)> = d.groups.iter().map(|g| (g.key.as_str(), g.users)).collect();
        assert_eq!(keys, [("FR", 30), ("GB", 10)]);
        assert_eq!(d.other.unwrap().users, Some(10));
        let d = fold("country", vec![("DE".into(), 9)], FLOOR);
        assert!(d.groups.is_empty());
        assert_eq!(d.other.unwrap().users, None);
        let d = fold(
            "region",
            vec![("GB-ENG".into(), 19), ("FR-IDF".into(), 20)],
            REGION_FLOOR,
        );
        assert_eq!(d.groups.len(), 1);
        assert_eq!(d.groups[0].key, "FR-IDF");
        assert!(
            fold("platform", vec![("linux".into(), 12)], FLOOR)
                .other
                .is_none()
        );
    }
}
