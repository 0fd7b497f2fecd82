//! `--read-database-url` on a real streaming replica: a primary and a hot
//! standby of the test's own ([`piperider_testkit::postgres`]).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use piperider_testkit::postgres::{Replicated, tools};

use crate::{Harness, USER, event};

/// The server's tools, or `None` (said loudly) outside CI without them.
fn server_tools() -> Option<std::path::PathBuf> {
    let found = tools();
    if found.is_none() {
        assert!(
            std::env::var_os("PIPERIDER_REQUIRE_PG_TOOLS").is_none(),
            "PostgreSQL's server tools (initdb, pg_ctl, pg_basebackup) are required here but were not found"
        );
        eprintln!("SKIPPED: no PostgreSQL server tools (initdb) for a replica");
    }
    found
}

async fn sql(url: &str, statement: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let value: Option<String> = sqlx::query_scalar(statement)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
        .flatten();
    conn.close().await.unwrap();
    value.unwrap_or_default()
}

/// The events the dashboard's figures count.
async fn counted(h: &Harness) -> i64 {
    let (status, stats) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats["totals"]["events"].as_i64().unwrap()
}

/// Stores `n` new events.
async fn post(h: &Harness, n: usize) {
    let batch: Vec<serde_json::Value> = (0..n).map(|_| event(USER)).collect();
    let (status, body) = h.post_batch(&batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Waits until the dashboard counts `n` events.
async fn until_counted(h: &Harness, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = counted(h).await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard counts {now}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The dashboard's figures come from the replica: they stand still while
/// its replay is paused, though the primary has more, and catch up when
/// it resumes. With the replica stopped, the primary answers at once and
/// the failure is counted in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_reads_go_to_the_replica_and_fall_back_to_the_primary() {
    let Some(tools) = server_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = Replicated::start(&tools, dir.path()).unwrap();
    sql(
        &cluster.primary_url("postgres"),
        "CREATE DATABASE telemetry",
    )
    .await;
    let (primary, replica) = (
        cluster.primary_url("telemetry"),
        cluster.replica_url("telemetry"),
    );
    let h = Harness::on(primary.clone(), tempfile::tempdir().unwrap(), None, |c| {
        c.read_database_url = Some(replica.clone());
    })
    .await;
    post(&h, 3).await;
    until_counted(&h, 3).await;

    // Replay paused: the primary's rollups hold 5 events, the replica's 3.
    sql(&replica, "SELECT CAST(pg_wal_replay_pause() AS TEXT)").await;
    post(&h, 2).await;
    assert_eq!(counted(&h).await, 3, "read on the paused replica");
    assert_eq!(
        sql(
            &primary,
            "SELECT CAST(SUM(events) AS TEXT) FROM daily_events"
        )
        .await,
        "5"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counted(&h).await, 3, "still the paused replica");
    sql(&replica, "SELECT CAST(pg_wal_replay_resume() AS TEXT)").await;
    until_counted(&h, 5).await;
    assert!(
        h.metrics()
            .await
            .contains("piperider_ingest_replica_read_failures_total 0"),
        "no read failed yet"
    );

    // The replica gone: the primary answers the next read, which counts
    // the event just stored.
    cluster.stop_replica().unwrap();
    post(&h, 1).await;
    assert_eq!(counted(&h).await, 6);
    assert!(
        h.metrics()
            .await
            .contains("piperider_ingest_replica_read_failures_total 1"),
        "{}",
        h.metrics().await
    );
    // The primary keeps the reads while the replica rests.
    assert_eq!(counted(&h).await, 6);
    h.finish().await;
}
