//! What newly stored events add to the rollup tables, worked out in memory
//! so that each user, project and day costs one upsert however many events
//! it had. The SQLite writer and PostgreSQL's roller each gather the events
//! of about a second into one and write it in one transaction.
//! Upserts commute (earliest and latest win, counts add), so aggregates may
//! be written in any order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::cube::{FastMap, FastSet};
use super::rows::{Cell, EventRow, Figures};
use super::schema::{
    DAILY_BUCKETS, DAILY_EVENTS, DAILY_USERS, DATASOURCES, PROJECTS, USERS, Upsert,
};

/// One day's commands of one type: how many, how many failed, and the
/// sums of their figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DailyCounts {
    pub(crate) events: i64,
    pub(crate) errors: i64,
    pub(crate) figures: Figures,
}

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

/// The rollups of a set of events, ready to be written.
#[derive(Debug, Default)]
pub(crate) struct Aggregate {
    /// Per user: the earliest and the latest event. (Hash maps for the
    /// many keys, sorted once when written; B-trees for the few days.)
    users: FastMap<String, (Arc<EventRow>, Arc<EventRow>)>,
    projects: FastMap<String, (Arc<EventRow>, Arc<EventRow>)>,
    datasources: FastMap<String, BTreeSet<String>>,
    /// Per day, the users active on it.
    active: BTreeMap<String, FastSet<String>>,
    /// Per day and event type.
    daily: BTreeMap<String, BTreeMap<String, DailyCounts>>,
    /// Per day: events per figure and bucket.
    buckets: BTreeMap<String, BTreeMap<(&'static str, i64), i64>>,
}

fn earliest_latest(
    map: &mut FastMap<String, (Arc<EventRow>, Arc<EventRow>)>,
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

/// The value under `key`, inserted as the default first (without
/// allocating the key when it is there).
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The entries of `map` in key order.
fn sorted<V>(map: &FastMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

/// One upsert with its rows.
pub(crate) type TableRows<'a> = (&'static Upsert, Vec<Vec<Cell<'a>>>);

impl Aggregate {
    pub(crate) fn add(&mut self, e: &Arc<EventRow>) {
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
        d.events += 1;
        d.errors += i64::from(e.status == "error");
        if let Some(figures) = &e.stats {
            d.figures.add(figures);
            let buckets = entry(&mut self.buckets, &e.day);
            for (name, v) in Figures::NAMES.into_iter().zip(figures.values()) {
                *buckets.entry((name, bucket(v))).or_insert(0) += 1;
            }
        }
    }

    /// Each rollup table's upsert with its rows, in key order (so that
    /// concurrent PostgreSQL transactions take row locks in one order).
    /// Counters are added to rows of shard 0; reads sum every shard (rows
    /// of others date from when each PostgreSQL writer had its own).
    pub(crate) fn tables(&self) -> [TableRows<'_>; 6] {
        [
            (&USERS, self.user_rows()),
            (&PROJECTS, self.project_rows()),
            (&DATASOURCES, self.datasource_rows()),
            (&DAILY_USERS, self.active_rows()),
            (&DAILY_EVENTS, self.daily_rows()),
            (&DAILY_BUCKETS, self.bucket_rows()),
        ]
    }

    fn user_rows(&self) -> Vec<Vec<Cell<'_>>> {
        sorted(&self.users)
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
            .collect()
    }

    fn project_rows(&self) -> Vec<Vec<Cell<'_>>> {
        sorted(&self.projects)
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
            .collect()
    }

    fn datasource_rows(&self) -> Vec<Vec<Cell<'_>>> {
        sorted(&self.datasources)
            .into_iter()
            .flat_map(|(p, types)| types.iter().map(move |t| vec![p.into(), t.into()]))
            .collect()
    }

    fn active_rows(&self) -> Vec<Vec<Cell<'_>>> {
        self.active
            .iter()
            .flat_map(|(d, users)| {
                let mut users: Vec<&String> = users.iter().collect();
                users.sort_unstable();
                users.into_iter().map(move |u| vec![d.into(), u.into()])
            })
            .collect()
    }

    fn daily_rows(&self) -> Vec<Vec<Cell<'_>>> {
        self.daily
            .iter()
            .flat_map(|(day, types)| {
                types.iter().map(move |(t, c)| {
                    let mut row = vec![
                        day.into(),
                        t.into(),
                        0.into(),
                        c.events.into(),
                        c.errors.into(),
                    ];
                    row.extend(c.figures.values().map(Cell::from));
                    row
                })
            })
            .collect()
    }

    fn bucket_rows(&self) -> Vec<Vec<Cell<'_>>> {
        self.buckets
            .iter()
            .flat_map(|(day, counts)| {
                counts.iter().map(move |((metric, b), n)| {
                    vec![
                        day.into(),
                        (*metric).into(),
                        (*b).into(),
                        0.into(),
                        (*n).into(),
                    ]
                })
            })
            .collect()
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
    }

    #[test]
    fn every_row_has_its_tables_columns() {
        let row = |ts: i64, status: &str, rows: i64| {
            Arc::new(EventRow {
                event_id: format!("e{ts}"),
                received_at: ts,
                ts,
                day: "2026-12-01".into(),
                event_type: "run".into(),
                user_id: "u".into(),
                device_id: "d".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                os_version: "6".into(),
                runtime_name: "python".into(),
                runtime_version: "3.11".into(),
                app_version: "0.2.0".into(),
                initial_version: "0.1.0".into(),
                ci: None,
                project_id: Some("p".into()),
                datasource_type: Some("sqlite".into()),
                stats: Some(Figures {
                    rows,
                    ..Figures::default()
                }),
                status: status.into(),
                duration_ms: 1,
                country: None,
                region: None,
                owner_key: None,
            })
        };
        let mut a = Aggregate::default();
        a.add(&row(1, "ok", 5));
        a.add(&row(2, "error", 50));
        assert_eq!(
            a.daily["2026-12-01"]["run"],
            DailyCounts {
                events: 2,
                errors: 1,
                figures: Figures {
                    rows: 55,
                    ..Figures::default()
                }
            }
        );
        for (upsert, rows) in a.tables() {
            assert!(!rows.is_empty(), "{}", upsert.table);
            for r in rows {
                assert_eq!(r.len(), upsert.columns.len(), "{}", upsert.table);
            }
        }
    }
}
