//! Queue mode on real parts: a three-server NATS JetStream cluster started
//! by the test on free loopback ports, a node publishing to it, writers
//! storing into a throwaway PostgreSQL database.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use piperider_ingest::Store;
use piperider_ingest::storage::QueueConfig;
use piperider_testkit::nats;
use serde_json::Value;

use crate::{Db, Harness, USER, event};

/// Whether `nats-server` runs here; without it the test says so and
/// passes, unless the suite requires it (CI).
fn nats_available() -> bool {
    let found = nats::installed();
    if !found {
        assert!(
            std::env::var_os("PIPERIDER_REQUIRE_NATS").is_none(),
            "nats-server is required here but was not found"
        );
        eprintln!("SKIPPED: nats-server is not installed (apt-get install -y nats-server)");
    }
    found
}

/// A PostgreSQL database (its harness serves the writers' store), three
/// clustered JetStream servers, the queue's settings for them, and a node
/// ready on them; `None` when PostgreSQL or nats-server is missing here
/// (and the suite does not require them).
async fn setup() -> Option<(Harness, nats::Cluster, QueueConfig, Harness)> {
    if !nats_available() {
        return None;
    }
    let h = Harness::start(Db::Postgres, |_| {}).await?;
    let cluster = nats::Cluster::start(3, h.dir.path()).unwrap();
    let config = QueueConfig {
        urls: cluster.urls().to_vec(),
        replicas: None,
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(3600),
    };
    let node = node(&h, &config).await;
    Some((h, cluster, config, node))
}

/// Waits until `check` holds, for at most `secs` seconds.
async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node on the queue, ready (the cluster has elected its JetStream
/// leader and the stream is made).
async fn node(h: &Harness, config: &QueueConfig) -> Harness {
    let store = Store::connect_node(&h.url(), config).await.unwrap();
    let node = Harness::serving(h.state.config().clone(), store).await;
    eventually(30, "the node is ready", async || {
        node.store().ready().await.is_ok()
    })
    .await;
    node
}

/// A writer process's tasks on `h`'s database: they stop when the
/// returned sender is dropped, and the handle then ends.
type Writers = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), piperider_ingest::StorageError>>,
);

fn writers(h: &Harness, config: &QueueConfig) -> Writers {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (store, config) = (h.store().clone(), config.clone());
    let handle = tokio::spawn(async move {
        piperider_ingest::storage::run_writers(store, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, handle)
}

async fn stored(h: &Harness) -> i64 {
    h.store().count_events().await.unwrap()
}

/// Events posted to a node are answered once the stream holds them,
/// stored once by the writers (a resend is a duplicate, in the stream and
/// in the database), counted once in the rollups; a deletion through the
/// node is ordered after the user's events and before later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_publishes_and_the_writers_store_each_event_once() {
    let Some((h, _cluster, config, node)) = setup().await else {
        return;
    };
    let (stop, _writers) = writers(&h, &config);

    let users: Vec<String> = (0..20).map(|n| format!("{n:032x}")).collect();
    let batches: Vec<Vec<Value>> = users
        .iter()
        .map(|u| (0..10).map(|_| event(u)).collect())
        .collect();
    for events in &batches {
        let (status, body) = node.post_batch(events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for r in body["results"].as_array().unwrap() {
            assert_eq!(r["status"], "accepted", "{body}");
        }
    }
    // A resend within the stream's window: duplicates, stored once.
    let (status, body) = node.post_batch(&batches[0]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["status"], "duplicate", "{body}");
    }
    eventually(30, "every event stored", async || stored(&h).await == 200).await;
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("\npiperider_ingest_queue_max_bytes 67108864\n"),
        "{metrics}"
    );

    // A user's events, their deletion, then more of their events: all
    // through the stream, none left once the writers are done.
    let doomed = &users[1];
    let (status, _) = node.post_batch(&[event(doomed), event(doomed)]).await;
    assert_eq!(status, StatusCode::OK);
    let status = node.admin_delete_user(doomed).await;
    assert!(status.is_success(), "{status}");
    let (status, body) = node.post_batch(&[event(doomed)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(30, "the deletion carried out", async || {
        h.tombstones().await == 1
    })
    .await;
    // The events after the deletion reach a writer and are dropped.
    eventually(30, "the stream drained", async || {
        node.store()
            .queue_state()
            .await
            .is_some_and(|s| s.is_ok_and(|s| s.messages == 0))
    })
    .await;
    let left = h
        .query_text(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM events WHERE user_id = '{doomed}'"
        ))
        .await;
    assert_eq!(left, ["0"], "events of a deleted user survived");
    assert_eq!(stored(&h).await, 190);
    let (_, stats) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(stats["total_users"], 19, "{stats}");
    drop(stop);
    node.store().close().await;
    h.finish().await;
}

/// With PostgreSQL refusing connections, the node still answers 200 and
/// is ready (it depends on the queue); once the database is back the
/// writers store everything that was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_takes_events_while_the_database_is_away() {
    let Some((h, _cluster, config, node)) = setup().await else {
        return;
    };
    // The only writer for now, stopped while it waits for the database.
    let (stop_first, first) = writers(&h, &config);
    let outage = h.take_storage_away().await;
    // A node started meanwhile starts, and takes events too.
    let late = Harness::serving(
        h.state.config().clone(),
        Store::connect_node(&h.url(), &config).await.unwrap(),
    )
    .await;
    let (status, body) = late.post_batch(&[event(USER)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut acknowledged = 1;
    for n in 0..10 {
        let events: Vec<Value> = (0..20).map(|_| event(&format!("{n:032x}"))).collect();
        let (status, body) = node.post_batch(&events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        acknowledged += body["results"].as_array().unwrap().len() as i64;
    }
    let (status, _, _) = node
        .send(
            "127.0.0.1",
            Request::get("/readyz").body(Body::empty()).unwrap(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the node's readiness follows the queue"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A writer retrying its messages stops when asked, leaving them to the others.
    drop(stop_first);
    tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("a writer waiting for the database stops when asked")
        .unwrap()
        .unwrap();
    let (stop, _writers) = writers(&h, &config);
    outage.end().await;
    eventually(60, "the writers caught up", async || {
        h.store()
            .count_events()
            .await
            .is_ok_and(|n| n == acknowledged)
    })
    .await;
    drop(stop);
    node.store().close().await;
    late.store().close().await;
    h.finish().await;
}

/// A stream deleted under a running node and writers (an operator's
/// mistake, a cluster made anew) is made again: at most one request fails
/// (503, the client keeps its events) while the node finds out, later
/// ones are answered 200, and the writers store them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_made_again() {
    let Some((h, cluster, config, node)) = setup().await else {
        return;
    };
    let (stop, _writers) = writers(&h, &config);
    let (status, body) = node.post_batch(&[event(USER)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(30, "the first event stored", async || stored(&h).await == 1).await;

    let client = async_nats::connect(cluster.urls()[0].as_str())
        .await
        .unwrap();
    async_nats::jetstream::new(client)
        .delete_stream(piperider_ingest::storage::STREAM)
        .await
        .unwrap();
    let mut answers = Vec::new();
    while answers.last() != Some(&StatusCode::OK) {
        assert!(answers.len() < 2, "answered {answers:?}");
        answers.push(node.post_batch(&[event(USER)]).await.0);
    }
    let (status, body) = node.post_batch(&[event(USER)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(30, "the events after the deletion stored", async || {
        stored(&h).await == 3
    })
    .await;
    drop(stop);
    h.finish().await;
}
