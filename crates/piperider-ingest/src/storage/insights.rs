//! The dashboard's charts (`GET /v1/admin/charts/{name}`): each a table
//! of numbers read from the cube (`cube`), for a date range and the
//! filters asked. A read costs the periods and segments it covers, never
//! the number of users: distinct users and projects come from sketches
//! merged over the range, exact up to 2,048 members and otherwise within
//! the error the chart states.
//!
//! Like [`super::reports`], these types are a public format: a chart,
//! column or field is added, never renamed or removed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, TimeDelta};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::cube::{
    CI, Counts, DAY, DIMENSIONS, MONTH, NEW_USERS, PROJECTS, USERS, WEEK, month_of, week_of,
};
use super::error::StorageError;
use super::rows::Figures;
use super::sketch::{PERCENTILE_ERROR, RELATIVE_ERROR, SPARSE_MAX, Sketch};
use super::{Store, on_pool};

/// Every chart: its name (the path segment) and title.
pub const CHARTS: [(&str, &str); 18] = [
    ("summary", "Summary"),
    ("active_users_daily", "Daily active and new users"),
    ("active_users_weekly", "Weekly active users"),
    (
        "active_users_monthly",
        "Monthly active users and stickiness",
    ),
    ("retention", "Weekly retention by cohort"),
    (
        "version_adoption",
        "Version adoption (share of weekly active users)",
    ),
    ("errors_by_command", "Error rate by command"),
    ("errors_by_version", "Error rate by app version"),
    ("durations", "Command duration percentiles"),
    ("ci_share", "CI and interactive use per week"),
    (
        "projects_by_datasource",
        "Active projects by data source type per week",
    ),
    ("commands_daily", "Commands per day"),
    (
        "figures_daily",
        "Tables, columns, rows and assertions profiled per day",
    ),
    ("users_by_os", "Active users by platform"),
    ("users_by_app_version", "Active users by app version"),
    (
        "users_by_datasource_type",
        "Active users by data source type",
    ),
    ("users_by_ci", "Active users in CI and interactive"),
    ("users_by_country", "Active users by country"),
];

/// The value asked for each of the [`DIMENSIONS`] (in their order), if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(pub [Option<String>; 5]);

impl Filters {
    fn count(&self) -> usize {
        self.0.iter().flatten().count()
    }

    /// The filters set, by dimension name.
    pub fn named(&self) -> BTreeMap<String, String> {
        DIMENSIONS
            .iter()
            .zip(&self.0)
            .filter_map(|(d, v)| Some((d.to_string(), v.clone()?)))
            .collect()
    }
}

/// One column of a chart.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChartColumn {
    pub name: String,
    /// What the numbers count (`users`, `events`, `share`, `ms`, ...), or
    /// what the key is (`day`, `week`, `month`, `name`).
    pub unit: String,
    /// Whether the column's numbers are distinct counts from sketches
    /// (or shares of them), hence estimates past 2,048 members.
    pub estimate: bool,
}

/// One chart's numbers: `rows` of values in `columns` order (text,
/// integers, fractions, or null where there is no value).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Chart {
    pub name: String,
    pub title: String,
    pub from: String,
    pub to: String,
    /// The filters applied, by dimension.
    pub filters: BTreeMap<String, String>,
    pub columns: Vec<ChartColumn>,
    pub rows: Vec<Vec<Value>>,
    /// Whether any number here is an estimate (a distinct count past
    /// 2,048 members, or a percentile); otherwise every number is exact.
    pub estimated: bool,
    /// How exact the estimates are.
    pub accuracy: String,
}

impl Chart {
    /// The rows as CSV (RFC 4180) under a header of the column names. A
    /// text cell a spreadsheet would run as a formula (starting with `=`,
    /// `+`, `-`, `@`, tab or carriage return) gets a leading `'`.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let names: Vec<String> = self.columns.iter().map(|c| csv_text(&c.name)).collect();
        out.push_str(&names.join(","));
        out.push_str("\r\n");
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|v| match v {
                    Value::Null => String::new(),
                    Value::String(s) => csv_text(s),
                    other => other.to_string(),
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

fn csv_text(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) || s.starts_with('\'') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn col(name: &str, unit: &str, estimate: bool) -> ChartColumn {
    ChartColumn {
        name: name.into(),
        unit: unit.into(),
        estimate,
    }
}

/// A sketch's count, noting whether it was estimated.
struct Tally {
    estimated: bool,
}

impl Tally {
    fn count(&mut self, s: &Sketch) -> i64 {
        self.estimated |= !s.is_exact();
        s.count()
    }
}

fn ratio(a: i64, b: i64) -> Value {
    if b == 0 {
        Value::Null
    } else {
        json!((a as f64 / b as f64 * 10_000.0).round() / 10_000.0)
    }
}

/// Which periods of each grain cover `from..=to` exactly: the whole
/// months inside it, then (with `weeks`) whole ISO weeks of what is left
/// on either side, then single days.
fn cover(from: NaiveDate, to: NaiveDate, weeks_too: bool) -> [(&'static str, Vec<String>); 3] {
    let (mut months, mut weeks, mut days) = (Vec::new(), Vec::new(), Vec::new());
    let mut fill = |a: NaiveDate, b: NaiveDate| {
        let mut d = a;
        while d <= b {
            if weeks_too && d.weekday() == chrono::Weekday::Mon && d + TimeDelta::days(6) <= b {
                weeks.push(d.to_string());
                d += TimeDelta::days(7);
            } else {
                days.push(d.to_string());
                d += TimeDelta::days(1);
            }
        }
    };
    let first = if from.day() == 1 {
        from
    } else {
        first_of_next_month(from)
    };
    let mut end = first;
    while first_of_next_month(end) - TimeDelta::days(1) <= to {
        months.push(month_of(end));
        end = first_of_next_month(end);
    }
    if months.is_empty() {
        fill(from, to);
    } else {
        fill(from, first - TimeDelta::days(1));
        fill(end, to);
    }
    [(MONTH, months), (WEEK, weeks), (DAY, days)]
}

fn first_of_next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d)
}

/// Every period of a grain from the one holding `from` to the one holding `to`.
fn periods(grain: &str, from: NaiveDate, to: NaiveDate) -> Vec<String> {
    let mut out = Vec::new();
    match grain {
        DAY => {
            let mut d = from;
            while d <= to {
                out.push(d.to_string());
                d += TimeDelta::days(1);
            }
        }
        WEEK => {
            let mut d = week_of(from);
            while d <= to {
                out.push(d.to_string());
                d += TimeDelta::days(7);
            }
        }
        _ => {
            let mut d = NaiveDate::from_ymd_opt(from.year(), from.month(), 1).unwrap_or(from);
            while d <= to {
                out.push(month_of(d));
                d = first_of_next_month(d);
            }
        }
    }
    out
}

/// Periods as an SQL list (they are dates this module wrote, never input).
fn sql_list(periods: &[String]) -> String {
    let quoted: Vec<String> = periods.iter().map(|p| format!("'{p}'")).collect();
    quoted.join(", ")
}

/// Segment ids with the value of the breakdown dimension (or ""), and
/// whether they are full segments (which have only day rows).
struct Segments {
    ids: Vec<(i64, String)>,
    full: bool,
}

impl Segments {
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn id_list(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(|(id, _)| id.to_string()).collect();
        ids.join(", ")
    }

    fn values(&self) -> BTreeMap<i64, &str> {
        self.ids.iter().map(|(i, v)| (*i, v.as_str())).collect()
    }

    /// What to read for the periods `list` of `grain`: the same, or for
    /// the weeks and months of full segments their days (then each day is
    /// keyed by its period, the grain returned last).
    fn plan(
        &self,
        grain: &'static str,
        list: &[String],
    ) -> (&'static str, Vec<String>, Option<&'static str>) {
        if !self.full || grain == DAY {
            return (grain, list.to_vec(), None);
        }
        let days = list
            .iter()
            .filter_map(|p| {
                if grain == WEEK {
                    let monday = NaiveDate::parse_from_str(p, "%Y-%m-%d").ok()?;
                    Some((monday, monday + TimeDelta::days(6)))
                } else {
                    let first = NaiveDate::parse_from_str(&format!("{p}-01"), "%Y-%m-%d").ok()?;
                    Some((first, first_of_next_month(first) - TimeDelta::days(1)))
                }
            })
            .flat_map(|(first, last)| periods(DAY, first, last))
            .collect();
        (DAY, days, Some(grain))
    }
}

/// A period read, or the week or month it falls in when days stand for those.
fn period_key(period: String, grain: Option<&'static str>) -> String {
    let day = NaiveDate::parse_from_str(&period, "%Y-%m-%d");
    match (grain, day) {
        (Some(WEEK), Ok(d)) => week_of(d).to_string(),
        (Some(MONTH), Ok(d)) => month_of(d),
        _ => period,
    }
}

/// A chart's columns and rows.
type Table = (Vec<ChartColumn>, Vec<Vec<Value>>);

/// Sketches read: (period, breakdown value) -> merged sketch.
type Merged = BTreeMap<(String, String), Sketch>;
/// Counts read: (period, breakdown value, command) -> merged counts.
type Summed = BTreeMap<(String, String, String), Counts>;

impl Store {
    /// The segments a chart reads: with at most one filter and no
    /// breakdown, the one segment that holds exactly that; with a
    /// breakdown and no filter, the segments of that dimension alone;
    /// otherwise every full segment that matches (their union is the
    /// filtered population, each event counted once).
    async fn segments(&self, f: &Filters, by: Option<usize>) -> Result<Segments, StorageError> {
        let mut conditions = Vec::new();
        let mut binds: Vec<&str> = Vec::new();
        let k = f.count();
        let full = !(by.is_none() && k <= 1 || by.is_some() && k == 0);
        for (d, name) in DIMENSIONS.iter().enumerate() {
            match &f.0[d] {
                Some(v) => {
                    binds.push(v);
                    conditions.push(format!("{name} = ${}", binds.len()));
                }
                None if full || by == Some(d) => conditions.push(format!("{name} <> ''")),
                None => conditions.push(format!("{name} = ''")),
            }
        }
        let value = by.map_or("''", |b| DIMENSIONS[b]);
        let sql = format!(
            "SELECT id, {value} FROM segments WHERE {}",
            conditions.join(" AND ")
        );
        let ids = on_pool!(self.reader(), pool => {
            let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
            for b in &binds {
                q = q.bind(*b);
            }
            q.fetch_all(pool).await?
        });
        Ok(Segments { ids, full })
    }

    /// Sketches of `kind` for the periods of `grain`, merged per period
    /// and breakdown value (with `per_period` false, over all periods).
    async fn sketches(
        &self,
        kind: &str,
        grain: &'static str,
        list: &[String],
        ids: &Segments,
        per_period: bool,
        into: &mut Merged,
    ) -> Result<(), StorageError> {
        if list.is_empty() || ids.is_empty() {
            return Ok(());
        }
        let (grain, list, key_grain) = ids.plan(grain, list);
        let values = ids.values();
        let sql = format!(
            "SELECT segment, period, sketch FROM cube_sketches WHERE grain = $1 AND kind = $2 \
             AND segment IN ({}) AND period IN ({})",
            ids.id_list(),
            sql_list(&list)
        );
        let rows: Vec<(i64, String, Vec<u8>)> = on_pool!(self.reader(), pool => {
            sqlx::query_as(&sql).bind(grain).bind(kind).fetch_all(pool).await?
        });
        for (segment, period, bytes) in rows {
            let sketch = Sketch::from_bytes(&bytes)?;
            let key = (
                if per_period {
                    period_key(period, key_grain)
                } else {
                    String::new()
                },
                values
                    .get(&segment)
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
            );
            match into.get_mut(&key) {
                Some(s) => s.merge(&sketch),
                None => {
                    into.insert(key, sketch);
                }
            }
        }
        Ok(())
    }

    /// Sketches of `kind` merged over the whole of `from..=to`, per breakdown value.
    async fn sketches_over(
        &self,
        kind: &str,
        from: NaiveDate,
        to: NaiveDate,
        ids: &Segments,
    ) -> Result<BTreeMap<String, Sketch>, StorageError> {
        let mut merged = Merged::new();
        for (grain, list) in cover(from, to, !ids.full) {
            self.sketches(kind, grain, &list, ids, false, &mut merged)
                .await?;
        }
        Ok(merged.into_iter().map(|((_, v), s)| (v, s)).collect())
    }

    /// Counts for the periods of `grain`, summed per period (or not), breakdown value and command.
    async fn counts(
        &self,
        grain: &'static str,
        list: &[String],
        ids: &Segments,
        per_period: bool,
        into: &mut Summed,
    ) -> Result<(), StorageError> {
        if list.is_empty() || ids.is_empty() {
            return Ok(());
        }
        let (grain, list, key_grain) = ids.plan(grain, list);
        let values = ids.values();
        let sql = format!(
            "SELECT segment, period, event_type, {} FROM cube_counts WHERE grain = $1 \
             AND segment IN ({}) AND period IN ({})",
            super::cube::COUNT_VALUES,
            ids.id_list(),
            sql_list(&list)
        );
        let rows: Vec<CountRow> = on_pool!(self.reader(), pool => {
            sqlx::query_as(&sql).bind(grain).fetch_all(pool).await?
        });
        for r in rows {
            let c = Counts::from_stored(r.3, r.4, [r.5, r.6, r.7, r.8, r.9, r.10, r.11], &r.12)?;
            let key = (
                if per_period {
                    period_key(r.1, key_grain)
                } else {
                    String::new()
                },
                values.get(&r.0).copied().unwrap_or_default().to_string(),
                r.2,
            );
            into.entry(key).or_default().merge(&c);
        }
        Ok(())
    }

    async fn counts_over(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        ids: &Segments,
    ) -> Result<Summed, StorageError> {
        let mut summed = Summed::new();
        for (grain, list) in cover(from, to, !ids.full) {
            self.counts(grain, &list, ids, false, &mut summed).await?;
        }
        Ok(summed)
    }

    /// Commands over the whole of `from..=to`, per breakdown value: only
    /// how many (a breakdown chart needs no figures nor durations, whose
    /// histograms would each be read and merged).
    async fn events_over(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        ids: &Segments,
    ) -> Result<BTreeMap<String, i64>, StorageError> {
        let mut events: BTreeMap<String, i64> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(events);
        }
        let values = ids.values();
        for (grain, list) in cover(from, to, !ids.full) {
            if list.is_empty() {
                continue;
            }
            let (grain, list, _) = ids.plan(grain, list.as_slice());
            let sql = format!(
                "SELECT segment, CAST(SUM(events) AS BIGINT) FROM cube_counts WHERE grain = $1 \
                 AND segment IN ({}) AND period IN ({}) GROUP BY segment",
                ids.id_list(),
                sql_list(&list)
            );
            let rows: Vec<(i64, i64)> = on_pool!(self.reader(), pool => {
                sqlx::query_as(&sql).bind(grain).fetch_all(pool).await?
            });
            for (segment, n) in rows {
                let value = values.get(&segment).copied().unwrap_or_default();
                let e = events.entry(value.to_string()).or_default();
                *e = e.saturating_add(n);
            }
        }
        Ok(events)
    }

    /// The chart `name` for the days `from..=to` under `filters`; `None`
    /// for a name not in [`CHARTS`].
    pub(crate) async fn chart(
        &self,
        name: &str,
        from: NaiveDate,
        to: NaiveDate,
        filters: &Filters,
    ) -> Result<Option<Chart>, StorageError> {
        let Some(&(name, title)) = CHARTS.iter().find(|(n, _)| *n == name) else {
            return Ok(None);
        };
        self.flush().await?;
        self.read(move || self.draw(name, title, from, to, filters))
            .await
            .map(Some)
    }

    /// The chart `name`, titled `title`, read from the database
    /// [`Store::reader`] picks.
    async fn draw(
        &self,
        name: &str,
        title: &str,
        from: NaiveDate,
        to: NaiveDate,
        filters: &Filters,
    ) -> Result<Chart, StorageError> {
        let mut t = Tally { estimated: false };
        let mut percentiles = false;
        let (columns, rows) = match name {
            "summary" => self.summary(from, to, filters, &mut t).await?,
            "active_users_daily" => self.active_daily(from, to, filters, &mut t).await?,
            "active_users_weekly" => {
                let ids = self.segments(filters, None).await?;
                let mut m = Merged::new();
                let weeks = periods(WEEK, from, to);
                self.sketches(USERS, WEEK, &weeks, &ids, true, &mut m)
                    .await?;
                let rows = weeks
                    .iter()
                    .map(|w| {
                        let n = m.get(&(w.clone(), String::new())).map_or(0, |s| t.count(s));
                        vec![json!(w), json!(n)]
                    })
                    .collect();
                (
                    vec![col("week", "week", false), col("users", "users", true)],
                    rows,
                )
            }
            "active_users_monthly" => self.active_monthly(from, to, filters, &mut t).await?,
            "retention" => self.retention(from, to, filters, &mut t).await?,
            "version_adoption" => self.version_adoption(from, to, filters, &mut t).await?,
            "errors_by_command" | "errors_by_version" => {
                let by = (name == "errors_by_version").then_some(1);
                let ids = self.segments(filters, by).await?;
                let summed = self.counts_over(from, to, &ids).await?;
                let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
                for ((_, value, command), c) in &summed {
                    let key = if by.is_some() { value } else { command };
                    let e = totals.entry(key.clone()).or_default();
                    e.0 = e.0.saturating_add(c.events);
                    e.1 = e.1.saturating_add(c.errors);
                }
                let key = if by.is_some() {
                    "app_version"
                } else {
                    "event_type"
                };
                let rows = totals
                    .into_iter()
                    .map(|(k, (events, errors))| {
                        vec![
                            json!(k),
                            json!(events),
                            json!(errors),
                            ratio(errors, events),
                        ]
                    })
                    .collect();
                (
                    vec![
                        col(key, "name", false),
                        col("events", "events", false),
                        col("errors", "events", false),
                        col("error_rate", "share", false),
                    ],
                    rows,
                )
            }
            "durations" => {
                percentiles = true;
                let ids = self.segments(filters, None).await?;
                let summed = self.counts_over(from, to, &ids).await?;
                let rows = summed
                    .iter()
                    .map(|((_, _, command), c)| {
                        let q = |q: f64| {
                            c.durations
                                .quantile(q)
                                .map_or(Value::Null, |v| json!(v.round() as i64))
                        };
                        vec![json!(command), json!(c.events), q(0.5), q(0.9)]
                    })
                    .collect();
                (
                    vec![
                        col("event_type", "name", false),
                        col("events", "events", false),
                        col("p50_ms", "ms", false),
                        col("p90_ms", "ms", false),
                    ],
                    rows,
                )
            }
            "ci_share" => self.ci_share(from, to, filters, &mut t).await?,
            "projects_by_datasource" => {
                let ids = self.segments(filters, Some(2)).await?;
                let mut m = Merged::new();
                let weeks = periods(WEEK, from, to);
                self.sketches(PROJECTS, WEEK, &weeks, &ids, true, &mut m)
                    .await?;
                let rows = m
                    .iter()
                    .map(|((w, v), s)| vec![json!(w), json!(v), json!(t.count(s))])
                    .collect();
                (
                    vec![
                        col("week", "week", false),
                        col("datasource_type", "name", false),
                        col("projects", "projects", true),
                    ],
                    rows,
                )
            }
            "commands_daily" | "figures_daily" => {
                let ids = self.segments(filters, None).await?;
                let mut summed = Summed::new();
                self.counts(DAY, &periods(DAY, from, to), &ids, true, &mut summed)
                    .await?;
                if name == "commands_daily" {
                    let rows = summed
                        .iter()
                        .map(|((d, _, command), c)| {
                            vec![json!(d), json!(command), json!(c.events), json!(c.errors)]
                        })
                        .collect();
                    (
                        vec![
                            col("day", "day", false),
                            col("event_type", "name", false),
                            col("events", "events", false),
                            col("errors", "events", false),
                        ],
                        rows,
                    )
                } else {
                    let mut per_day: BTreeMap<&str, Figures> = BTreeMap::new();
                    for ((d, _, _), c) in &summed {
                        per_day.entry(d).or_default().add(&c.figures);
                    }
                    let mut columns = vec![col("day", "day", false)];
                    columns.extend(Figures::NAMES.iter().map(|n| col(n, n, false)));
                    let rows = per_day
                        .into_iter()
                        .map(|(d, f)| {
                            let mut row = vec![json!(d)];
                            row.extend(f.values().iter().map(|v| json!(v)));
                            row
                        })
                        .collect();
                    (columns, rows)
                }
            }
            _ => {
                let dim = name.trim_start_matches("users_by_");
                let by = DIMENSIONS.iter().position(|d| *d == dim);
                let ids = self.segments(filters, by).await?;
                let users = self.sketches_over(USERS, from, to, &ids).await?;
                let events = self.events_over(from, to, &ids).await?;
                let mut rows: Vec<(i64, Vec<Value>)> = users
                    .iter()
                    .map(|(v, s)| {
                        let n = t.count(s);
                        (
                            n,
                            vec![
                                json!(v),
                                json!(n),
                                json!(events.get(v).copied().unwrap_or(0)),
                            ],
                        )
                    })
                    .collect();
                rows.sort_by(|a, b| {
                    b.0.cmp(&a.0)
                        .then_with(|| a.1[0].as_str().cmp(&b.1[0].as_str()))
                });
                (
                    vec![
                        col(dim, "name", false),
                        col("users", "users", true),
                        col("events", "events", false),
                    ],
                    rows.into_iter().map(|(_, r)| r).collect(),
                )
            }
        };
        Ok(Chart {
            name: name.into(),
            title: title.into(),
            from: from.to_string(),
            to: to.to_string(),
            filters: filters.named(),
            columns,
            rows,
            estimated: t.estimated || percentiles,
            accuracy: format!(
                "Distinct users and projects are exact up to {SPARSE_MAX} and otherwise HyperLogLog estimates \
                 with a relative standard error of {:.2}% (within 2% in 98 cases of 100); duration percentiles \
                 are within {:.1}% of the true value; every other number is exact.",
                RELATIVE_ERROR * 100.0,
                PERCENTILE_ERROR * 100.0
            ),
        })
    }

    async fn summary(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        f: &Filters,
        t: &mut Tally,
    ) -> Result<Table, StorageError> {
        let ids = self.segments(f, None).await?;
        let count =
            |m: BTreeMap<String, Sketch>, t: &mut Tally| m.get("").map_or(0, |s| t.count(s));
        let users = count(self.sketches_over(USERS, from, to, &ids).await?, t);
        let new = count(self.sketches_over(NEW_USERS, from, to, &ids).await?, t);
        let projects = count(self.sketches_over(PROJECTS, from, to, &ids).await?, t);
        let (mut events, mut errors) = (0i64, 0i64);
        for c in self.counts_over(from, to, &ids).await?.values() {
            events = events.saturating_add(c.events);
            errors = errors.saturating_add(c.errors);
        }
        Ok((
            vec![
                col("active_users", "users", true),
                col("new_users", "users", true),
                col("active_projects", "projects", true),
                col("events", "events", false),
                col("errors", "events", false),
                col("error_rate", "share", false),
            ],
            vec![vec![
                json!(users),
                json!(new),
                json!(projects),
                json!(events),
                json!(errors),
                ratio(errors, events),
            ]],
        ))
    }

    async fn active_daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        f: &Filters,
        t: &mut Tally,
    ) -> Result<Table, StorageError> {
        let ids = self.segments(f, None).await?;
        let days = periods(DAY, from, to);
        let (mut users, mut new) = (Merged::new(), Merged::new());
        self.sketches(USERS, DAY, &days, &ids, true, &mut users)
            .await?;
        self.sketches(NEW_USERS, DAY, &days, &ids, true, &mut new)
            .await?;
        let rows = days
            .iter()
            .map(|d| {
                let key = (d.clone(), String::new());
                let u = users.get(&key).map_or(0, |s| t.count(s));
                let n = new.get(&key).map_or(0, |s| t.count(s));
                vec![json!(d), json!(u), json!(n)]
            })
            .collect();
        Ok((
            vec![
                col("day", "day", false),
                col("users", "users", true),
                col("new_users", "users", true),
            ],
            rows,
        ))
    }

    /// Monthly active users of each month the range touches, the average
    /// of its daily active users (over its days up to `to`), and their
    /// ratio (stickiness).
    async fn active_monthly(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        f: &Filters,
        t: &mut Tally,
    ) -> Result<Table, StorageError> {
        let ids = self.segments(f, None).await?;
        let months = periods(MONTH, from, to);
        let mut monthly = Merged::new();
        self.sketches(USERS, MONTH, &months, &ids, true, &mut monthly)
            .await?;
        let start = NaiveDate::from_ymd_opt(from.year(), from.month(), 1).unwrap_or(from);
        let days = periods(DAY, start, to);
        let mut daily = Merged::new();
        self.sketches(USERS, DAY, &days, &ids, true, &mut daily)
            .await?;
        let mut per_month: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for d in &days {
            let n = daily
                .get(&(d.clone(), String::new()))
                .map_or(0, |s| t.count(s));
            let e = per_month.entry(d[..7].to_string()).or_default();
            e.0 += n;
            e.1 += 1;
        }
        let rows = months
            .iter()
            .map(|m| {
                let mau = monthly
                    .get(&(m.clone(), String::new()))
                    .map_or(0, |s| t.count(s));
                let (sum, days) = per_month.get(m).copied().unwrap_or((0, 0));
                let avg = if days == 0 {
                    0.0
                } else {
                    sum as f64 / days as f64
                };
                vec![
                    json!(m),
                    json!(mau),
                    json!((avg * 10.0).round() / 10.0),
                    if mau == 0 {
                        Value::Null
                    } else {
                        json!((avg / mau as f64 * 10_000.0).round() / 10_000.0)
                    },
                ]
            })
            .collect();
        Ok((
            vec![
                col("month", "month", false),
                col("users", "users", true),
                col("average_daily_users", "users", true),
                col("stickiness", "share", true),
            ],
            rows,
        ))
    }

    /// Of the users first seen in each week of the range, the share
    /// active in each of the eight weeks after (null for a week after `to`).
    async fn retention(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        f: &Filters,
        t: &mut Tally,
    ) -> Result<Table, StorageError> {
        let ids = self.segments(f, None).await?;
        let cohorts = periods(WEEK, from, to);
        let last = week_of(to);
        let mut merged: BTreeMap<(String, String), Sketch> = BTreeMap::new();
        if !ids.is_empty() && !cohorts.is_empty() {
            let sql = format!(
                "SELECT cohort, week, sketch FROM cohort_sketches WHERE segment IN ({}) AND cohort IN ({})",
                ids.id_list(),
                sql_list(&cohorts)
            );
            let rows: Vec<(String, String, Vec<u8>)> = on_pool!(self.reader(), pool => {
                sqlx::query_as(&sql).fetch_all(pool).await?
            });
            for (cohort, week, bytes) in rows {
                let s = Sketch::from_bytes(&bytes)?;
                match merged.get_mut(&(cohort.clone(), week.clone())) {
                    Some(m) => m.merge(&s),
                    None => {
                        merged.insert((cohort, week), s);
                    }
                }
            }
        }
        let mut columns = vec![col("cohort", "week", false), col("users", "users", true)];
        columns.extend((1..=8).map(|k| col(&format!("week_{k}"), "share", true)));
        let mut rows = Vec::new();
        for c in &cohorts {
            let Some(size) = merged.get(&(c.clone(), c.clone())).map(|s| t.count(s)) else {
                continue;
            };
            let start = NaiveDate::parse_from_str(c, "%Y-%m-%d").unwrap_or(from);
            let mut row = vec![json!(c), json!(size)];
            for k in 1..=8 {
                let w = start + TimeDelta::weeks(k);
                row.push(if w > last {
                    Value::Null
                } else {
                    let n = merged
                        .get(&(c.clone(), w.to_string()))
                        .map_or(0, |s| t.count(s));
                    ratio(n, size)
                });
            }
            rows.push(row);
        }
        Ok((columns, rows))
    }

    /// Per week, the share of its active users on each app version.
    async fn version_adoption(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        f: &Filters,
        t: &mut Tally,
    ) -> Result<Table, StorageError> {
        let weeks = periods(WEEK, from, to);
        let (all, by) = (
            self.segments(f, None).await?,
            self.segments(f, Some(1)).await?,
        );
        let (mut total, mut per) = (Merged::new(), Merged::new());
        self.sketches(USERS, WEEK, &weeks, &all, true, &mut total)
            .await?;
        self.sketches(USERS, WEEK, &weeks, &by, true, &mut per)
            .await?;
        let rows = per
            .iter()
            .map(|((w, v), s)| {
                let n = t.count(s);
                let of = total
                    .get(&(w.clone(), String::new()))
                    .map_or(0, |s| t.count(s));
                vec![json!(w), json!(v), json!(n), ratio(n, of)]
            })
            .collect();
        Ok((
            vec![
                col("week", "week", false),
                col("app_version", "name", false),
                col("users", "users", true),
                col("share", "share", true),
            ],
            rows,
        ))
    }

    /// Per week: commands and users in CI and interactive, and CI's share of each.
    async fn ci_share(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        f: &Filters,
        t: &mut Tally,
    ) -> Result<Table, StorageError> {
        let weeks = periods(WEEK, from, to);
        let ids = self.segments(f, Some(3)).await?;
        let (mut users, mut counts) = (Merged::new(), Summed::new());
        self.sketches(USERS, WEEK, &weeks, &ids, true, &mut users)
            .await?;
        self.counts(WEEK, &weeks, &ids, true, &mut counts).await?;
        let mut events: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for ((w, v, _), c) in &counts {
            let e = events.entry((w, v)).or_default();
            *e = e.saturating_add(c.events);
        }
        let seen: BTreeSet<&str> = users.keys().map(|(w, _)| w.as_str()).collect();
        let rows = weeks
            .iter()
            .filter(|w| seen.contains(w.as_str()))
            .map(|w| {
                let u = |v: &str, t: &mut Tally| {
                    users
                        .get(&(w.clone(), v.to_string()))
                        .map_or(0, |s| t.count(s))
                };
                let e = |v: &str| events.get(&(w.as_str(), v)).copied().unwrap_or(0);
                let (ci_users, people) = (u(CI, t), u(super::cube::INTERACTIVE, t));
                let (ci_events, interactive) = (e(CI), e(super::cube::INTERACTIVE));
                vec![
                    json!(w),
                    json!(ci_events),
                    json!(interactive),
                    ratio(ci_events, ci_events.saturating_add(interactive)),
                    json!(ci_users),
                    json!(people),
                ]
            })
            .collect();
        Ok((
            vec![
                col("week", "week", false),
                col("ci_events", "events", false),
                col("interactive_events", "events", false),
                col("ci_event_share", "share", false),
                col("ci_users", "users", true),
                col("interactive_users", "users", true),
            ],
            rows,
        ))
    }
}

/// One row of `cube_counts` as read: segment, period, command, the values.
type CountRow = (
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Vec<u8>,
);

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_range_is_covered_by_whole_months_weeks_and_days_once_each() {
        let [(_, months), (_, weeks), (_, days)] = cover(d("2026-01-28"), d("2026-03-10"), true);
        assert_eq!(months, ["2026-02"]);
        assert_eq!(weeks, ["2026-03-02"]);
        assert_eq!(
            days,
            [
                "2026-01-28",
                "2026-01-29",
                "2026-01-30",
                "2026-01-31",
                "2026-03-01",
                "2026-03-09",
                "2026-03-10"
            ]
        );
        let [(_, m), (_, w), (_, ds)] = cover(d("2025-12-03"), d("2026-12-02"), true);
        assert_eq!(m.len(), 11);
        assert!(w.len() + ds.len() < 40, "{w:?} {ds:?}");
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let chart = Chart {
            name: "x".into(),
            title: "x".into(),
            from: "2026-01-01".into(),
            to: "2026-01-01".into(),
            filters: BTreeMap::new(),
            columns: vec![col("key", "name", false), col("n", "events", false)],
            rows: vec![
                vec![json!("a,b"), json!(1)],
                vec![json!("=SUM(A1)"), Value::Null],
                vec![json!("say \"hi\""), json!(0.5)],
            ],
            estimated: false,
            accuracy: String::new(),
        };
        assert_eq!(
            chart.to_csv(),
            "key,n\r\n\"a,b\",1\r\n\"'=SUM(A1)\",\r\n\"say \"\"hi\"\"\",0.5\r\n"
        );
    }

    #[test]
    fn every_cover_holds_each_day_of_its_range_once() {
        let start = d("2025-11-20");
        for offset in 0..40 {
            for len in [0, 1, 6, 7, 13, 29, 30, 31, 45, 89, 364, 365, 400] {
                let from = start + TimeDelta::days(offset);
                let to = from + TimeDelta::days(len);
                let mut days = Vec::new();
                for (grain, list) in cover(from, to, len % 2 == 0) {
                    for p in list {
                        let first = match grain {
                            MONTH => d(&format!("{p}-01")),
                            _ => d(&p),
                        };
                        let last = match grain {
                            MONTH => first_of_next_month(first) - TimeDelta::days(1),
                            WEEK => first + TimeDelta::days(6),
                            _ => first,
                        };
                        days.extend(periods(DAY, first, last));
                    }
                }
                days.sort();
                assert_eq!(days, periods(DAY, from, to), "{from}..{to}");
            }
        }
    }

    #[test]
    fn periods_of_each_grain_span_the_range() {
        assert_eq!(
            periods(WEEK, d("2026-12-03"), d("2026-12-14")),
            ["2026-11-30", "2026-12-07", "2026-12-14"]
        );
        assert_eq!(
            periods(MONTH, d("2026-11-30"), d("2027-01-01")),
            ["2026-11", "2026-12", "2027-01"]
        );
        assert_eq!(
            periods(DAY, d("2026-12-31"), d("2027-01-01")),
            ["2026-12-31", "2027-01-01"]
        );
    }
}
