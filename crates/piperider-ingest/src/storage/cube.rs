//! The dashboard's rollups: per day, ISO week and month, and per segment
//! (platform, app version, data source type, CI or not, country), the
//! commands with their failures, figures and durations, and sketches of
//! the distinct users, new users and projects; and, per cohort week, a
//! sketch of its users active in each later week. Reads merge a few
//! rows per period however many users there are (`insights`).
//!
//! Each event counts in seven segments: its own (every dimension set),
//! one per dimension (that dimension set, the others `''`, any value:
//! every stored value is at least one character long) and the total
//! (all `''`). A chart with at most one filter reads one segment
//! per period; more filters, or a breakdown under a filter, read the
//! matching full segments.
//!
//! A full segment has only day rows (its weeks and months are read from
//! its days): an event is mostly alone in its full segment on a day, so
//! each row less is a write less per event, and only a chart under two
//! or more filters reads them.
//!
//! Rows are merged, not added: the writer reads the stored row, merges
//! what it gathered and writes it back, under the writer's own
//! transaction on SQLite and an advisory lock on PostgreSQL (one roller
//! writes the cube at a time).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, TimeDelta};

use super::error::StorageError;
use super::rows::{EventRow, Figures};
use super::sketch::{Gather, Histogram, Malformed, Sketch, member_hash};

/// The dimensions a chart can be filtered and broken down by, as the
/// `segments` table names its columns.
pub const DIMENSIONS: [&str; 5] = ["os", "app_version", "datasource_type", "ci", "country"];

/// The value of `ci` for a command run in CI, and for one that was not.
pub const CI: &str = "ci";
pub const INTERACTIVE: &str = "interactive";
/// The value of `datasource_type` for a command outside a project.
pub const NO_DATASOURCE: &str = "none";
/// The value of `country` when the address had none.
pub const UNKNOWN_COUNTRY: &str = "unknown";

/// Values of the [`DIMENSIONS`], in their order; `''` where any value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Segment(pub(crate) [String; 5]);

/// Period kinds: day (`YYYY-MM-DD`), ISO week (its Monday, `YYYY-MM-DD`),
/// month (`YYYY-MM`).
pub(crate) const DAY: &str = "d";
pub(crate) const WEEK: &str = "w";
pub(crate) const MONTH: &str = "m";

/// Sketch kinds: active users, users first seen in the period, active projects.
pub(crate) const USERS: &str = "u";
pub(crate) const NEW_USERS: &str = "n";
pub(crate) const PROJECTS: &str = "p";

/// The Monday of a day's ISO week.
pub(crate) fn week_of(d: NaiveDate) -> NaiveDate {
    d - TimeDelta::days(i64::from(d.weekday().num_days_from_monday()))
}

pub(crate) fn month_of(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

/// The day's period of each grain.
fn periods(day: NaiveDate) -> [(&'static str, String); 3] {
    [
        (DAY, day.to_string()),
        (WEEK, week_of(day).to_string()),
        (MONTH, month_of(day)),
    ]
}

fn parse_day(day: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// Commands of one type: how many, how many failed, their figures and durations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) events: i64,
    pub(crate) errors: i64,
    pub(crate) figures: Figures,
    pub(crate) durations: Histogram,
}

impl Counts {
    pub(crate) fn merge(&mut self, other: &Counts) {
        self.events = self.events.saturating_add(other.events);
        self.errors = self.errors.saturating_add(other.errors);
        self.figures.add(&other.figures);
        self.durations.merge(&other.durations);
    }
}

/// The in-memory maps of the cube and the rollups: keys are small
/// integers and ids sent by clients, hashed fast (SipHash was a tenth of
/// the roller's time) but well mixed, so that keys alike in most of their
/// bits do not collide, and seeded per process.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::quality::RandomState>;

/// Distinct texts (days, values, commands, ids), each kept once and
/// named by its index.
#[derive(Debug, Default)]
struct Texts {
    values: Vec<String>,
    index: FastMap<String, u32>,
}

impl Texts {
    fn id(&mut self, v: &str) -> u32 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.values.len() as u32;
        self.values.push(v.to_string());
        self.index.insert(v.to_string(), i);
        i
    }

    fn get(&self, i: u32) -> &str {
        &self.values[i as usize]
    }
}

/// A full segment, its five values as text ids.
type SegmentIds = [u32; 5];
/// A segment with `ANY` where any value.
const ANY_ID: u32 = u32::MAX;

#[derive(Debug, Default)]
struct DayCell {
    users: FastSet<u32>,
    projects: FastSet<u32>,
    commands: Vec<(u32, Counts)>,
}

/// What a set of events adds to the cube, before it is expanded into
/// periods and segments (which needs each user's first day, known once
/// the `users` rollup is written). Texts are kept once each.
#[derive(Debug, Default)]
pub(crate) struct Cube {
    texts: Texts,
    cells: FastMap<(u32, SegmentIds), DayCell>,
    events: usize,
}

impl Cube {
    /// How many events it holds.
    pub(crate) fn events(&self) -> usize {
        self.events
    }

    pub(crate) fn add(&mut self, e: &EventRow) {
        self.events += 1;
        let t = &mut self.texts;
        let segment = [
            t.id(&e.os),
            t.id(&e.app_version),
            t.id(e.datasource_type.as_deref().unwrap_or(NO_DATASOURCE)),
            t.id(if e.ci.is_some() { CI } else { INTERACTIVE }),
            t.id(e.country.as_deref().unwrap_or(UNKNOWN_COUNTRY)),
        ];
        let (day, user, command) = (t.id(&e.day), t.id(&e.user_id), t.id(&e.event_type));
        let project = e.project_id.as_deref().map(|p| t.id(p));
        let cell = self.cells.entry((day, segment)).or_default();
        cell.users.insert(user);
        if let Some(p) = project {
            cell.projects.insert(p);
        }
        let c = match cell.commands.iter().position(|(t, _)| *t == command) {
            Some(i) => &mut cell.commands[i].1,
            None => {
                cell.commands.push((command, Counts::default()));
                &mut cell.commands.last_mut().expect("pushed").1
            }
        };
        c.events += 1;
        c.errors += i64::from(e.status == "error");
        if let Some(f) = &e.stats {
            c.figures.add(f);
        }
        c.durations.add(e.duration_ms);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The users it holds, each once.
    pub(crate) fn users(&self) -> Vec<&str> {
        let mut ids: Vec<u32> = self
            .cells
            .values()
            .flat_map(|c| c.users.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|i| self.texts.get(i)).collect()
    }

    fn segment(&self, ids: &[u32; 5]) -> Segment {
        Segment(ids.map(|i| {
            if i == ANY_ID {
                String::new()
            } else {
                self.texts.get(i).to_string()
            }
        }))
    }

    /// The rows it adds, given the salt of the sketches' hashes and each
    /// user's first day as stored (a user without one counts as not new).
    pub(crate) fn rows(&self, salt: &str, first_days: &HashMap<String, String>) -> CubeRows {
        const GRAINS: [&str; 3] = [DAY, WEEK, MONTH];
        const KINDS: [&str; 3] = [USERS, NEW_USERS, PROJECTS];
        // Periods as ids of their own; each day's three, each user's
        // first day's three, and each member's hash, once.
        let mut periods_text = Texts::default();
        let mut day_periods: FastMap<u32, Option<[u32; 3]>> = FastMap::default();
        let of_date = |d: NaiveDate, texts: &mut Texts| periods(d).map(|(_, p)| texts.id(&p));
        let mut hashes: FastMap<u32, u64> = FastMap::default();
        let mut firsts: FastMap<u32, Option<[u32; 3]>> = FastMap::default();
        for ((day, _), cell) in &self.cells {
            day_periods.entry(*day).or_insert_with(|| {
                parse_day(self.texts.get(*day)).map(|d| of_date(d, &mut periods_text))
            });
            for &u in &cell.users {
                hashes
                    .entry(u)
                    .or_insert_with(|| member_hash(salt, self.texts.get(u)));
                if let std::collections::hash_map::Entry::Vacant(slot) = firsts.entry(u) {
                    slot.insert(
                        first_days
                            .get(self.texts.get(u))
                            .and_then(|d| parse_day(d))
                            .map(|f| of_date(f, &mut periods_text)),
                    );
                }
            }
            for &p in &cell.projects {
                hashes
                    .entry(p)
                    .or_insert_with(|| member_hash(salt, self.texts.get(p)));
            }
        }
        // (grain, period, segment), all ids.
        type Key = (u8, u32, [u32; 5]);
        // A cell's rows in the six segments it shares with other cells
        // are first gathered per day (a cell's day in each segment is
        // one row to merge into, not three), then each day's row is
        // merged into its week's and its month's: the counts, and the
        // members of five kinds (below).
        let mut day_counts: FastMap<((u32, [u32; 5]), u32), Counts> = FastMap::default();
        let mut day_members: FastMap<((u32, [u32; 5]), u8), Gather> = FastMap::default();
        // A cell is alone in its full segment on its day: its rows there
        // are its own, kept apart (no merging, and the maps stay small: a
        // few rows per day and dimension value).
        let mut counts_full: Vec<((Key, u32), Counts)> = Vec::new();
        let mut members_full: Vec<((Key, u8), Gather)> = Vec::new();
        let mut cohort_members: FastMap<(u32, u32, [u32; 5]), Gather> = FastMap::default();
        for ((day, full), cell) in &self.cells {
            let Some(Some(periods)) = day_periods.get(day) else {
                continue;
            };
            let mut cuboids = [[ANY_ID; 5]; 7];
            cuboids[0] = *full;
            for d in 0..5 {
                cuboids[d + 1][d] = full[d];
            }
            // Each member's hash looked up once for the cell's rows, with
            // whether the user is new in each of its periods.
            let users: Vec<(u64, Option<[u32; 3]>, [bool; 3])> = cell
                .users
                .iter()
                .map(|u| {
                    let f = firsts.get(u).copied().flatten();
                    let new = [0, 1, 2].map(|g| f.is_some_and(|f| f[g] == periods[g]));
                    (hashes[u], f, new)
                })
                .collect();
            let active: Vec<u64> = users.iter().map(|u| u.0).collect();
            let projects: Vec<u64> = cell.projects.iter().map(|p| hashes[p]).collect();
            let fresh: [Vec<u64>; 3] =
                [0, 1, 2].map(|g| users.iter().filter(|u| u.2[g]).map(|u| u.0).collect());
            // The five kinds of a day's members: active users, users new
            // that day, that week and that month, active projects.
            let kinds = [&active, &fresh[0], &fresh[1], &fresh[2], &projects];
            // Weeks and months of a full segment are read from its days.
            let key = (0, periods[0], *full);
            counts_full.extend(cell.commands.iter().map(|(t, c)| ((key, *t), c.clone())));
            for (k, of_kind) in [(0, &active), (1, &fresh[0]), (2, &projects)] {
                if !of_kind.is_empty() {
                    let mut gather = Gather::default();
                    gather.extend(of_kind.iter().copied());
                    members_full.push(((key, k), gather));
                }
            }
            for s in &cuboids[1..] {
                for (t, c) in &cell.commands {
                    day_counts.entry(((*day, *s), *t)).or_default().merge(c);
                }
                for (k, of_kind) in kinds.iter().enumerate() {
                    if !of_kind.is_empty() {
                        day_members
                            .entry(((*day, *s), k as u8))
                            .or_default()
                            .extend(of_kind.iter().copied());
                    }
                }
            }
            for &(h, first, _) in &users {
                let Some(f) = first else {
                    continue;
                };
                for s in &cuboids {
                    cohort_members
                        .entry((f[1], periods[1], *s))
                        .or_default()
                        .insert(h);
                }
            }
        }
        let mut counts: FastMap<(Key, u32), Counts> = FastMap::default();
        for (((day, s), t), c) in day_counts {
            let Some(Some(p)) = day_periods.get(&day) else {
                continue;
            };
            for g in 0..3 {
                counts
                    .entry(((g, p[usize::from(g)], s), t))
                    .or_default()
                    .merge(&c);
            }
        }
        let mut members: FastMap<(Key, u8), Gather> = FastMap::default();
        for (((day, s), k), gather) in day_members {
            let Some(Some(p)) = day_periods.get(&day) else {
                continue;
            };
            let sketch = gather.finish();
            // Each of the five kinds of a day's members into the rows it
            // counts in: (grain, index in `KINDS`).
            let into: &[(u8, u8)] = match k {
                0 => &[(0, 0), (1, 0), (2, 0)],
                1 => &[(0, 1)],
                2 => &[(1, 1)],
                3 => &[(2, 1)],
                _ => &[(0, 2), (1, 2), (2, 2)],
            };
            for &(g, kind) in into {
                members
                    .entry(((g, p[usize::from(g)], s), kind))
                    .or_default()
                    .absorb(&sketch);
            }
        }
        let text = |i: u32| periods_text.get(i).to_string();
        let mut segments: FastMap<[u32; 5], Arc<Segment>> = FastMap::default();
        let mut segment = |s: [u32; 5]| {
            segments
                .entry(s)
                .or_insert_with(|| Arc::new(self.segment(&s)))
                .clone()
        };
        // In the order of their ids (cheap to sort, where the texts are
        // not), which keeps each segment's rows together, its periods in
        // the order they were first seen (mostly by time): the stored
        // rows each merges into are then near each other.
        let mut counts: Vec<_> = counts.into_iter().chain(counts_full).collect();
        counts.sort_unstable_by_key(|&(((g, p, s), t), _)| (g, s, p, t));
        let mut members: Vec<_> = members.into_iter().chain(members_full).collect();
        members.sort_unstable_by_key(|&(((g, p, s), k), _)| (g, k, s, p));
        let mut cohort_members: Vec<_> = cohort_members.into_iter().collect();
        cohort_members.sort_unstable_by_key(|&((c, w, s), _)| (s, c, w));
        CubeRows {
            counts: counts
                .into_iter()
                .map(|(((g, p, s), t), c)| {
                    (
                        (
                            GRAINS[g as usize],
                            text(p),
                            segment(s),
                            self.texts.get(t).to_string(),
                        ),
                        c,
                    )
                })
                .collect(),
            sketches: members
                .into_iter()
                .map(|(((g, p, s), k), sketch)| {
                    (
                        (GRAINS[g as usize], KINDS[k as usize], text(p), segment(s)),
                        sketch.finish(),
                    )
                })
                .collect(),
            cohorts: cohort_members
                .into_iter()
                .map(|((c, w, s), sketch)| ((text(c), text(w), segment(s)), sketch.finish()))
                .collect(),
        }
    }
}

/// (grain, period, segment, command).
pub(crate) type CountKey = (&'static str, String, Arc<Segment>, String);
/// (grain, kind, period, segment).
pub(crate) type SketchKey = (&'static str, &'static str, String, Arc<Segment>);
/// (cohort week, active week, segment).
pub(crate) type CohortKey = (String, String, Arc<Segment>);

/// The cube rows a set of events adds, ready to be merged into the
/// stored ones: each key once, each segment's rows together.
#[derive(Debug, Default)]
pub(crate) struct CubeRows {
    pub(crate) counts: Vec<(CountKey, Counts)>,
    pub(crate) sketches: Vec<(SketchKey, Sketch)>,
    pub(crate) cohorts: Vec<(CohortKey, Sketch)>,
}

impl CubeRows {
    /// Every segment a row names, each once, in order.
    pub(crate) fn segments(&self) -> Vec<&Segment> {
        // Rows share one `Arc` per segment: told apart by address first,
        // so that only a few are sorted.
        let mut seen: FastSet<*const Segment> = FastSet::default();
        let mut all: Vec<&Segment> = self
            .counts
            .iter()
            .map(|(k, _)| &k.2)
            .chain(self.sketches.iter().map(|(k, _)| &k.3))
            .chain(self.cohorts.iter().map(|(k, _)| &k.2))
            .filter(|s| seen.insert(Arc::as_ptr(s)))
            .map(|s| &**s)
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// The columns of `cube_counts` after the key, in the order the writers bind them.
pub(crate) const COUNT_VALUES: &str = "events, errors, tables, columns, rows, builtin_assertions, custom_assertions, passed_assertions, failed_assertions, durations";

/// `SET` of an upsert that replaces a stored row's counts with the merged ones.
fn replace_counts() -> String {
    let sets: Vec<String> = COUNT_VALUES
        .split(", ")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    sets.join(", ")
}

impl Counts {
    pub(crate) fn from_stored(
        events: i64,
        errors: i64,
        figures: [i64; 7],
        durations: &[u8],
    ) -> Result<Counts, Malformed> {
        Ok(Counts {
            events,
            errors,
            figures: Figures::from_values(figures),
            durations: Histogram::from_bytes(durations)?,
        })
    }
}

impl From<Malformed> for StorageError {
    fn from(m: Malformed) -> Self {
        StorageError::Corrupt(m.0)
    }
}

/// Writes the cube's rows on SQLite, inside the writer's transaction,
/// with `ids` the segment ids known so far (filled as segments are added).
pub(crate) fn write_sqlite(
    tx: &rusqlite::Transaction<'_>,
    rows: CubeRows,
    ids: &mut HashMap<Segment, i64>,
) -> rusqlite::Result<()> {
    use rusqlite::{OptionalExtension, params};
    for s in rows.segments() {
        if ids.contains_key(s) {
            continue;
        }
        let v = &s.0;
        tx.prepare_cached(
            "INSERT INTO segments (os, app_version, datasource_type, ci, country) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )?
        .execute(params![v[0], v[1], v[2], v[3], v[4]])?;
        let id: i64 = tx
            .prepare_cached(
                "SELECT id FROM segments WHERE os = ?1 AND app_version = ?2 AND datasource_type = ?3 AND ci = ?4 AND country = ?5",
            )?
            .query_row(params![v[0], v[1], v[2], v[3], v[4]], |r| r.get(0))?;
        ids.insert(s.clone(), id);
    }
    let corrupt = |what| rusqlite::Error::InvalidColumnType(0, what, rusqlite::types::Type::Blob);
    {
        let mut read = tx.prepare_cached(&format!(
            "SELECT {COUNT_VALUES} FROM cube_counts WHERE grain = ?1 AND segment = ?2 AND period = ?3 AND event_type = ?4"
        ))?;
        let mut write = tx.prepare_cached(&format!(
            "INSERT INTO cube_counts (grain, segment, period, event_type, {COUNT_VALUES}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
             ON CONFLICT (grain, segment, period, event_type) DO UPDATE SET {}",
            replace_counts()
        ))?;
        for ((grain, period, s, t), mut c) in rows.counts {
            let id = ids[&*s];
            let stored = read
                .query_row(params![grain, id, period, t], |r| {
                    let mut f = [0i64; 7];
                    for (i, v) in f.iter_mut().enumerate() {
                        *v = r.get(2 + i)?;
                    }
                    let d: Vec<u8> = r.get(9)?;
                    Counts::from_stored(r.get(0)?, r.get(1)?, f, &d)
                        .map_err(|_| corrupt("cube_counts.durations".into()))
                })
                .optional()?;
            if let Some(stored) = stored {
                c.merge(&stored);
            }
            let f = c.figures.values();
            write.execute(params![
                grain,
                id,
                period,
                t,
                c.events,
                c.errors,
                f[0],
                f[1],
                f[2],
                f[3],
                f[4],
                f[5],
                f[6],
                c.durations.to_bytes()
            ])?;
        }
    }
    {
        let mut read = tx.prepare_cached(
            "SELECT sketch FROM cube_sketches WHERE grain = ?1 AND kind = ?2 AND segment = ?3 AND period = ?4",
        )?;
        let mut write = tx.prepare_cached(
            "INSERT INTO cube_sketches (grain, kind, segment, period, sketch) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (grain, kind, segment, period) DO UPDATE SET sketch = excluded.sketch",
        )?;
        for ((grain, kind, period, s), mut sketch) in rows.sketches {
            let id = ids[&*s];
            let stored: Option<Vec<u8>> = read
                .query_row(params![grain, kind, id, period], |r| r.get(0))
                .optional()?;
            if let Some(bytes) = stored {
                sketch.merge(
                    &Sketch::from_bytes(&bytes)
                        .map_err(|_| corrupt("cube_sketches.sketch".into()))?,
                );
            }
            write.execute(params![grain, kind, id, period, sketch.to_bytes()])?;
        }
    }
    let mut read = tx.prepare_cached(
        "SELECT sketch FROM cohort_sketches WHERE segment = ?1 AND cohort = ?2 AND week = ?3",
    )?;
    let mut write = tx.prepare_cached(
        "INSERT INTO cohort_sketches (segment, cohort, week, sketch) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (segment, cohort, week) DO UPDATE SET sketch = excluded.sketch",
    )?;
    for ((cohort, week, s), mut sketch) in rows.cohorts {
        let id = ids[&*s];
        let stored: Option<Vec<u8>> = read
            .query_row(params![id, cohort, week], |r| r.get(0))
            .optional()?;
        if let Some(bytes) = stored {
            sketch.merge(
                &Sketch::from_bytes(&bytes)
                    .map_err(|_| corrupt("cohort_sketches.sketch".into()))?,
            );
        }
        write.execute(params![id, cohort, week, sketch.to_bytes()])?;
    }
    Ok(())
}

/// Serialises the PostgreSQL rollers' writes to the cube (rows are read,
/// merged and written back).
const CUBE_LOCK: i64 = 0x7069_7065_6375_6265;

/// Writes the cube's rows on PostgreSQL, inside the roller's transaction.
pub(crate) async fn write_postgres(
    tx: &mut sqlx::PgConnection,
    rows: CubeRows,
    ids: &mut HashMap<Segment, i64>,
) -> Result<(), StorageError> {
    use sqlx::Row;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CUBE_LOCK)
        .execute(&mut *tx)
        .await?;
    let missing: Vec<&Segment> = rows
        .segments()
        .into_iter()
        .filter(|s| !ids.contains_key(*s))
        .collect();
    if !missing.is_empty() {
        let columns: Vec<Vec<&str>> = (0..5)
            .map(|d| missing.iter().map(|s| s.0[d].as_str()).collect())
            .collect();
        let with_columns = |sql| columns.iter().fold(sqlx::query(sql), |q, c| q.bind(c));
        with_columns(
            "INSERT INTO segments (os, app_version, datasource_type, ci, country) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) ON CONFLICT DO NOTHING",
        )
        .execute(&mut *tx)
        .await?;
        let found = with_columns(
            "SELECT s.id, s.os, s.app_version, s.datasource_type, s.ci, s.country FROM segments s \
             JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS k(os, app_version, datasource_type, ci, country) \
             USING (os, app_version, datasource_type, ci, country)",
        )
        .fetch_all(&mut *tx)
        .await?;
        for r in found {
            let s = Segment([r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)]);
            ids.insert(s, r.get(0));
        }
    }

    // Counts: read what is stored for these keys, merge, write back.
    let mut counts = rows.counts;
    if !counts.is_empty() {
        let (mut g, mut p, mut s, mut t) = (vec![], vec![], vec![], vec![]);
        // Each key, as the table has it, to its row's place in `counts`.
        let mut by_id: HashMap<(String, String, i64, String), usize> = HashMap::new();
        for (i, (k, _)) in counts.iter().enumerate() {
            let id = ids[&*k.2];
            g.push(k.0.to_string());
            p.push(k.1.clone());
            s.push(id);
            t.push(k.3.clone());
            by_id.insert((k.0.to_string(), k.1.clone(), id, k.3.clone()), i);
        }
        let stored = sqlx::query(&format!(
            "SELECT c.grain, c.period, c.segment, c.event_type, {} FROM cube_counts c \
             JOIN UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[]) AS k(grain, period, segment, event_type) \
             USING (grain, period, segment, event_type)",
            COUNT_VALUES
                .split(", ")
                .map(|c| format!("c.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(&g)
        .bind(&p)
        .bind(&s)
        .bind(&t)
        .fetch_all(&mut *tx)
        .await?;
        for r in stored {
            let key: (String, String, i64, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
            let mut f = [0i64; 7];
            for (i, v) in f.iter_mut().enumerate() {
                *v = r.get(6 + i);
            }
            let d: Vec<u8> = r.get(13);
            let c = Counts::from_stored(r.get(4), r.get(5), f, &d)?;
            if let Some(&i) = by_id.get(&key) {
                counts[i].1.merge(&c);
            }
        }
        let mut values: Vec<Vec<i64>> = (0..9).map(|_| Vec::with_capacity(counts.len())).collect();
        let mut durations: Vec<Vec<u8>> = Vec::with_capacity(counts.len());
        for (_, c) in &counts {
            values[0].push(c.events);
            values[1].push(c.errors);
            for (i, v) in c.figures.values().into_iter().enumerate() {
                values[2 + i].push(v);
            }
            durations.push(c.durations.to_bytes());
        }
        let sql = format!(
            "INSERT INTO cube_counts (grain, period, segment, event_type, {COUNT_VALUES}) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], \
             $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bytea[]) \
             ON CONFLICT (grain, segment, period, event_type) DO UPDATE SET {}",
            replace_counts()
        );
        let mut q = sqlx::query(&sql).bind(&g).bind(&p).bind(&s).bind(&t);
        for v in &values {
            q = q.bind(v);
        }
        q.bind(&durations).execute(&mut *tx).await?;
    }

    // Sketches and cohorts: the same, keyed by text, text, id, text.
    let sketch_rows: Vec<([String; 3], i64, Sketch)> = rows
        .sketches
        .into_iter()
        .map(|((g, k, p, s), sk)| ([g.to_string(), k.to_string(), p], ids[&*s], sk))
        .collect();
    merge_sketches_postgres(
        tx,
        "cube_sketches",
        ["grain", "kind", "period"],
        sketch_rows,
    )
    .await?;
    let cohort_rows: Vec<([String; 3], i64, Sketch)> = rows
        .cohorts
        .into_iter()
        .map(|((c, w, s), sk)| ([c, w, String::new()], ids[&*s], sk))
        .collect();
    merge_sketches_postgres(tx, "cohort_sketches", ["cohort", "week", ""], cohort_rows).await
}

/// Merges sketches into `table`, whose key is the named text columns
/// (an empty name: unused) and `segment`.
async fn merge_sketches_postgres(
    tx: &mut sqlx::PgConnection,
    table: &str,
    names: [&str; 3],
    mut rows: Vec<([String; 3], i64, Sketch)>,
) -> Result<(), StorageError> {
    use sqlx::Row;
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = names.into_iter().filter(|n| !n.is_empty()).collect();
    let texts: Vec<Vec<String>> = (0..names.len())
        .map(|i| rows.iter().map(|r| r.0[i].clone()).collect())
        .collect();
    let ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let arrays: Vec<String> = (1..=names.len()).map(|i| format!("${i}::text[]")).collect();
    let id_param = names.len() + 1;
    let key = format!("{}, segment", names.join(", "));
    let read_sql = format!(
        "SELECT k.n, t.sketch FROM {table} t JOIN UNNEST({}, ${id_param}::bigint[]) WITH ORDINALITY AS k({key}, n) \
         USING ({key})",
        arrays.join(", ")
    );
    let mut read = sqlx::query(&read_sql);
    for t in &texts {
        read = read.bind(t);
    }
    for r in read.bind(&ids).fetch_all(&mut *tx).await? {
        let n: i64 = r.get(0);
        let bytes: Vec<u8> = r.get(1);
        if let Some(row) = usize::try_from(n - 1).ok().and_then(|i| rows.get_mut(i)) {
            row.2.merge(&Sketch::from_bytes(&bytes)?);
        }
    }
    let bytes: Vec<Vec<u8>> = rows.iter().map(|r| r.2.to_bytes()).collect();
    let write_sql = format!(
        "INSERT INTO {table} ({key}, sketch) SELECT * FROM UNNEST({}, ${id_param}::bigint[], ${}::bytea[]) \
         ON CONFLICT ({key}) DO UPDATE SET sketch = excluded.sketch",
        arrays.join(", "),
        id_param + 1
    );
    let mut write = sqlx::query(&write_sql);
    for t in &texts {
        write = write.bind(t);
    }
    write.bind(&ids).bind(&bytes).execute(&mut *tx).await?;
    Ok(())
}
