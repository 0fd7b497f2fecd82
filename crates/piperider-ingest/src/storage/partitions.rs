//! PostgreSQL's `events` by month (migration `0013_events_by_month`): one
//! partition per month of the events' day, named `events_YYYY_MM`, and a
//! default partition for rows of a month that has none yet.
//!
//! The maintenance pass ([`prepare`]) creates this month's and next
//! month's partitions ahead, and gives every month found in the default
//! partition (old events, an import) a partition of its own, moving its
//! rows there in the same transaction. Retention ([`drop_expired`]) drops
//! the partitions whose whole month lies before the cut-off; the rows of
//! the month the cut-off falls in are deleted one by one as before.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sqlx::postgres::PgPool;

use super::error::StorageError;

/// How long a partition change waits for a lock before it gives up until
/// the next pass: a waiting `ALTER` or `DROP` would hold up every insert
/// queued behind it.
const LOCK_TIMEOUT: &str = "5s";

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Month {
    year: i32,
    month: u32,
}

impl Month {
    fn of(day: NaiveDate) -> Month {
        Month {
            year: day.year(),
            month: day.month(),
        }
    }

    fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// `events_YYYY_MM`.
    fn table(self) -> String {
        format!("events_{:04}_{:02}", self.year, self.month)
    }

    /// The month of a partition's name, if it is one.
    fn from_table(name: &str) -> Option<Month> {
        let rest = name.strip_prefix("events_")?;
        let (year, month) = rest.split_once('_')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        let month = Month {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
        };
        (1..=12).contains(&month.month).then_some(month)
    }

    /// Its first day, as the `day` column holds it (`YYYY-MM-01`).
    fn first_day(self) -> String {
        format!("{:04}-{:02}-01", self.year, self.month)
    }

    /// The instant its last day ends (UTC), in milliseconds.
    fn end_ms(self) -> i64 {
        let next = self.next();
        NaiveDate::from_ymd_opt(next.year, next.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(i64::MAX, |t| t.and_utc().timestamp_millis())
    }
}

/// The first day of the month of `day` ('YYYY-MM-DD', or 'YYYY-MM' alone).
pub(crate) fn first_of_month(day: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{}-01", day.get(..7)?), "%Y-%m-%d").ok()
}

/// The months that have a partition.
async fn partitioned(pool: &PgPool) -> Result<Vec<Month>, StorageError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(c.relname AS TEXT) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = CAST('events' AS regclass)",
    )
    .fetch_all(pool)
    .await?;
    let mut months: Vec<Month> = names.iter().filter_map(|n| Month::from_table(n)).collect();
    months.sort();
    Ok(months)
}

/// Makes sure this month and the next have a partition, and moves the rows
/// of every month found in the default partition into a partition of that
/// month. Returns the partitions it created.
pub(crate) async fn prepare(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StorageError> {
    let have = partitioned(pool).await?;
    let this = Month::of(now.date_naive());
    let mut wanted = vec![this, this.next()];
    let in_default: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT substr(day, 1, 7) FROM ONLY events_default \
         WHERE day ~ '^[0-9]{4}-(0[1-9]|1[0-2])-[0-9]{2}$'",
    )
    .fetch_all(pool)
    .await?;
    wanted.extend(
        in_default
            .iter()
            .filter_map(|m| first_of_month(m).map(Month::of)),
    );
    make(pool, &have, wanted).await
}

/// Makes a partition for every month of `from..=to` that has none: a bulk
/// load of past events (the benchmark's data set) then copies into them
/// instead of into the default partition. Returns the partitions made.
pub(crate) async fn prepare_range(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<String>, StorageError> {
    let have = partitioned(pool).await?;
    let (mut month, last) = (Month::of(from), Month::of(to));
    let mut wanted = Vec::new();
    while month <= last {
        wanted.push(month);
        month = month.next();
    }
    make(pool, &have, wanted).await
}

/// Creates the partitions of `wanted` not in `have`.
async fn make(
    pool: &PgPool,
    have: &[Month],
    mut wanted: Vec<Month>,
) -> Result<Vec<String>, StorageError> {
    wanted.sort();
    wanted.dedup();
    let mut created = Vec::new();
    for month in wanted.into_iter().filter(|m| !have.contains(m)) {
        match create(pool, month).await {
            Ok(()) => created.push(month.table()),
            // Another node made it meanwhile (42P07: the table exists).
            Err(StorageError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("42P07") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Creates `month`'s partition, with the rows of that month the default
/// partition holds moved into it, in one transaction: the default
/// partition is locked first, so no row of that month lands there
/// meanwhile.
async fn create(pool: &PgPool, month: Month) -> Result<(), StorageError> {
    let (table, from, to) = (month.table(), month.first_day(), month.next().first_day());
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    // The parent first, then the default partition: the order every insert takes them in.
    sqlx::query("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    sqlx::query("LOCK TABLE events_default IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE TABLE {table} (LIKE events)"))
        .execute(&mut *tx)
        .await?;
    let moved = sqlx::query(&format!(
        "WITH moved AS (DELETE FROM events_default WHERE day >= $1 AND day < $2 RETURNING *) \
         INSERT INTO {table} SELECT * FROM moved"
    ))
    .bind(&from)
    .bind(&to)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(&format!(
        "ALTER TABLE events ATTACH PARTITION {table} FOR VALUES FROM ('{from}') TO ('{to}')"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(partition = %table, moved, "events: partition created");
    Ok(())
}

/// Drops the partitions whose whole month ended at or before `before_ms`
/// (every row in them is past retention). Returns their names.
pub(crate) async fn drop_expired(
    pool: &PgPool,
    before_ms: i64,
) -> Result<Vec<String>, StorageError> {
    let mut dropped = Vec::new();
    for month in partitioned(pool).await? {
        if month.end_ms() > before_ms {
            continue;
        }
        let table = month.table();
        let mut tx = pool.begin().await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(partition = %table, "retention: partition dropped");
        dropped.push(table);
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_name_their_partitions_and_end_where_the_next_begins() {
        let dec = Month::of(NaiveDate::from_ymd_opt(2026, 12, 4).unwrap());
        assert_eq!(dec.table(), "events_2026_12");
        assert_eq!(dec.first_day(), "2026-12-01");
        assert_eq!(dec.next().first_day(), "2027-01-01");
        assert_eq!(Month::from_table("events_2026_12"), Some(dec));
        assert_eq!(Month::from_table("events_default"), None);
        assert_eq!(Month::from_table("events_2026_13"), None);
        let end = DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(dec.end_ms(), end.timestamp_millis());
        let first = NaiveDate::from_ymd_opt(2026, 12, 1);
        assert_eq!(first_of_month("2026-12-04"), first);
        assert_eq!(first_of_month("2026-12"), first);
        assert_eq!(first_of_month("2026-13"), None);
        assert_eq!(first_of_month("x"), None);
    }
}
