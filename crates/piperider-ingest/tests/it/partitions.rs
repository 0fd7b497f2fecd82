//! PostgreSQL's raw events by month: partitions made ahead and for what
//! the default partition holds, retention dropping whole months, and the
//! migration that moved an existing table.

use axum::http::StatusCode;
use chrono::{Datelike, Days, Months, NaiveDate};

use crate::{Db, Harness, USER, event, new_postgres_database};

/// The months that have a partition of `events`, as `events_YYYY_MM`.
async fn partitions(h: &Harness) -> Vec<String> {
    h.query_text(
        "SELECT CAST(c.relname AS TEXT) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = CAST('events' AS regclass) ORDER BY 1",
    )
    .await
}

/// `YYYY-MM count` of the stored events, by month.
async fn by_month(h: &Harness) -> Vec<String> {
    h.query_text(
        "SELECT substr(day, 1, 7) || ' ' || count(*) FROM events GROUP BY substr(day, 1, 7) ORDER BY 1",
    )
    .await
}

fn table(d: NaiveDate) -> String {
    format!("events_{:04}_{:02}", d.year(), d.month())
}

fn month(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

/// The first day of the month `back` months before today's.
fn first_of(back: u32) -> NaiveDate {
    chrono::Utc::now()
        .date_naive()
        .with_day(1)
        .unwrap()
        .checked_sub_months(Months::new(back))
        .unwrap()
}

/// `n` events of `USER` at noon (UTC) on `day`.
fn events_on(day: NaiveDate, n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|_| {
            let mut e = event(USER);
            e["timestamp"] = day
                .and_hms_opt(12, 0, 0)
                .unwrap()
                .and_utc()
                .to_rfc3339()
                .into();
            e
        })
        .collect()
}

/// Retention whose cut-off falls in last month drops the partition of the
/// month before (wholly past it) and deletes last month's rows before the
/// cut-off alone; this month's events are untouched and the rollups keep
/// every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_past_a_month_boundary_drops_that_months_partition() {
    let Some(h) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let today = chrono::Utc::now().date_naive();
    let two_back = first_of(2) + Days::new(14);
    let early_last = first_of(1) + Days::new(1);
    let cut = first_of(1) + Days::new(9);
    let late_last = first_of(1) + Days::new(20);
    let mut batch = events_on(two_back, 3);
    batch.extend(events_on(early_last, 2));
    batch.extend(events_on(late_last, 4));
    batch.extend((0..5).map(|_| event(USER)));
    h.post_accepted(&batch).await;

    // The store made this month's and next month's partitions; the older
    // months' events wait in the default one until the maintenance pass
    // gives them partitions of their own (the default retention deletes
    // nothing here).
    let parts = partitions(&h).await;
    assert!(parts.contains(&table(today)), "{parts:?}");
    assert!(!parts.contains(&table(two_back)), "{parts:?}");
    let now = chrono::Utc::now();
    h.state.run_retention(now).await.unwrap();
    let parts = partitions(&h).await;
    for d in [two_back, early_last, today] {
        assert!(parts.contains(&table(d)), "{} in {parts:?}", table(d));
    }
    assert_eq!(
        h.query_text("SELECT CAST(count(*) AS TEXT) FROM ONLY events_default")
            .await,
        ["0"]
    );
    let mut expected = vec![
        format!("{} 3", month(two_back)),
        format!("{} 6", month(last_month())),
        format!("{} 5", month(today)),
    ];
    assert_eq!(by_month(&h).await, expected);

    // Retention to the cut-off in last month.
    let days = (today - cut).num_days();
    let short = h
        .with_config(|c| c.retention_days = u32::try_from(days).unwrap())
        .await;
    short.state.run_retention(now).await.unwrap();
    let parts = partitions(&h).await;
    assert!(!parts.contains(&table(two_back)), "dropped: {parts:?}");
    assert!(parts.contains(&table(late_last)), "{parts:?}");
    assert!(parts.contains(&table(today)), "{parts:?}");
    expected.remove(0);
    expected[0] = format!("{} 4", month(last_month()));
    assert_eq!(
        by_month(&h).await,
        expected,
        "only the rows before the cut-off went"
    );
    // The rollups keep every event.
    let (_, _) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(
        h.query_text("SELECT CAST(SUM(events) AS TEXT) FROM daily_events")
            .await,
        ["14"]
    );
    h.finish().await;
}

fn last_month() -> NaiveDate {
    first_of(1)
}

/// An `events` table from before partitions (migrations 1 to 12), with
/// three months of rows and some ids queued for the roller, moves into
/// monthly partitions when the service starts: every row kept, each month
/// in its partition, the default one empty, a resend of a moved event
/// still a duplicate, and the queued ids rolled up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_to_monthly_partitions_moves_every_event() {
    let Some(name) = new_postgres_database().await else {
        return;
    };
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let mut before = sqlx::migrate!("./migrations/postgres");
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < 13)
            .cloned()
            .collect(),
    );
    let start = first_of(3).and_hms_opt(0, 0, 0).unwrap().and_utc();
    let end = first_of(0).and_hms_opt(0, 0, 0).unwrap().and_utc();
    let step = (end - start).num_milliseconds() / 3000;
    {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        before.run(&pool).await.unwrap();
        sqlx::raw_sql(&format!(
            "INSERT INTO events (event_id, received_at, ts, day, event_type, user_id, device_id, os, arch, \
             os_version, runtime_name, runtime_version, app_version, initial_version, ci, project_id, \
             datasource_type, tables, columns, rows, builtin_assertions, custom_assertions, \
             passed_assertions, failed_assertions, status, duration_ms, country, region) \
             SELECT CAST(gen_random_uuid() AS TEXT), t, t, \
             to_char(to_timestamp(t / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 'run', 'user-' || (i % 50), \
             'device', 'linux', 'x86_64', '6.1', 'python', '3.11.7', '0.2.0', '0.1.0', NULL, 'project', \
             'sqlite', 2, 8, 30, 4, 1, 4, 1, 'ok', 812, NULL, NULL \
             FROM generate_series(0, 2999) AS i, LATERAL (SELECT {} + CAST(i AS BIGINT) * {step} AS t) AS x; \
             INSERT INTO rollup_queue (event_id) SELECT CAST(event_id AS uuid) FROM events ORDER BY ts LIMIT 10;",
            start.timestamp_millis()
        ))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let h = Harness::on(url, tempfile::tempdir().unwrap(), Some(name), |_| {}).await;
    // 3,000 rows spread evenly over three months of unequal length.
    let counted = by_month(&h).await;
    let months: Vec<String> = (1..=3).rev().map(|back| month(first_of(back))).collect();
    let found: Vec<&str> = counted.iter().map(|m| &m[..7]).collect();
    assert_eq!(found, months, "{counted:?}");
    let total: i64 = counted
        .iter()
        .map(|m| m.split(' ').nth(1).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 3000, "{counted:?}");
    let parts = partitions(&h).await;
    for back in 0..=3 {
        assert!(parts.contains(&table(first_of(back))), "{parts:?}");
    }
    assert!(parts.contains(&"events_default".to_string()), "{parts:?}");
    for m in &counted {
        let (month, n) = m.split_once(' ').unwrap();
        let in_partition = h
            .query_text(&format!(
                "SELECT CAST(count(*) AS TEXT) FROM ONLY events_{}",
                month.replace('-', "_")
            ))
            .await;
        assert_eq!(in_partition, [n], "{month}");
    }

    // A resend of a moved event is a duplicate.
    let old = h
        .query_text(
            "SELECT event_id || ' ' || CAST(ts AS TEXT) FROM events ORDER BY ts DESC LIMIT 1",
        )
        .await;
    let (id, ts) = old[0].split_once(' ').unwrap();
    let mut resent = event(USER);
    resent["event_id"] = id.into();
    resent["timestamp"] = chrono::DateTime::from_timestamp_millis(ts.parse().unwrap())
        .unwrap()
        .to_rfc3339()
        .into();
    let (status, body) = h.post_batch(&[resent]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], "duplicate", "{body}");
    assert_eq!(h.store().count_events().await.unwrap(), 3000);

    // The ids queued before the migration (no day) are rolled up.
    let (status, _) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.query_text("SELECT CAST(COALESCE(SUM(events), 0) AS TEXT) FROM daily_events")
            .await,
        ["10"]
    );
    h.finish().await;
}

/// A copy of an event stored on the neighbouring day (its clock was ahead
/// of the receiver's when that copy came, so it took the receiver's day)
/// makes a resend a duplicate on both write paths: a group of new events
/// alone, and a group with an invalid event to quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_on_the_neighbouring_day_makes_a_resend_a_duplicate() {
    let Some(h) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let e = event(USER);
    let (status, body) = h.post_batch(std::slice::from_ref(&e)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], "accepted");
    let yesterday = chrono::Utc::now().date_naive() - Days::new(1);
    h.execute(
        "",
        &format!(
            "UPDATE events SET day = '{yesterday}' WHERE event_id = '{}'",
            e["event_id"].as_str().unwrap()
        ),
    )
    .await;
    let (_, body) = h.post_batch(std::slice::from_ref(&e)).await;
    assert_eq!(body["results"][0]["status"], "duplicate", "alone: {body}");
    let mut refused = event(USER);
    refused["stats"]["rows"] = serde_json::json!(-1);
    let (_, body) = h.post_batch(&[e, refused]).await;
    assert_eq!(
        body["results"][0]["status"], "duplicate",
        "with a refused one: {body}"
    );
    assert_eq!(h.store().count_events().await.unwrap(), 1);
    h.finish().await;
}

/// Two nodes' maintenance passes at once both make the partition that is
/// missing: one creates it, the other finds it made, neither fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_preparing_partitions_at_once_both_succeed() {
    let Some(h) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let other = h.another_node().await;
    let next = first_of(0).checked_add_months(Months::new(1)).unwrap();
    h.execute("", &format!("DROP TABLE {}", table(next))).await;
    assert!(!partitions(&h).await.contains(&table(next)));
    let now = chrono::Utc::now();
    let (a, b) = tokio::join!(h.state.run_retention(now), other.state.run_retention(now));
    a.unwrap();
    b.unwrap();
    assert!(partitions(&h).await.contains(&table(next)));
    other.store().close().await;
    h.finish().await;
}

/// An import of past months' events into PostgreSQL leaves each month in
/// its own partition and the default partition empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_of_past_months_fills_their_partitions() {
    let Some(pg) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let src = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    let (three_back, last) = (first_of(3) + Days::new(3), first_of(1) + Days::new(7));
    let mut batch = events_on(three_back, 2);
    batch.extend(events_on(last, 3));
    batch.push(event(USER));
    let (status, body) = src.post_batch(&batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut bytes = Vec::new();
    piperider_ingest::storage::transfer::export(&src.url(), &mut bytes)
        .await
        .unwrap();
    let pg = pg
        .reopen(async |url: &str| {
            piperider_ingest::storage::transfer::import(url, &mut &bytes[..])
                .await
                .unwrap();
        })
        .await;
    let parts = partitions(&pg).await;
    for d in [three_back, last] {
        assert!(parts.contains(&table(d)), "{} in {parts:?}", table(d));
    }
    assert_eq!(
        pg.query_text("SELECT CAST(count(*) AS TEXT) FROM ONLY events_default")
            .await,
        ["0"]
    );
    assert_eq!(
        by_month(&pg).await,
        [
            format!("{} 2", month(three_back)),
            format!("{} 3", month(last)),
            format!("{} 1", month(first_of(0))),
        ]
    );
    src.finish().await;
    pg.finish().await;
}
