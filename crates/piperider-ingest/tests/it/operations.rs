//! Health, readiness, metrics, OpenAPI, rate limits, storage failure, shutdown.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::{CLIENT_IP, Db, Harness, USER, event, on_both};

async fn get(h: &Harness, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let (s, headers, b) = h
        .send("127.0.0.1", Request::get(path).body(Body::empty()).unwrap())
        .await;
    (s, headers, String::from_utf8_lossy(&b).into_owned())
}

on_both!(health_readiness_metrics_and_openapi, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    assert_eq!(get(&h, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&h, "/readyz").await.0, StatusCode::OK);
    let mut bad = event(USER);
    bad["ci"] = json!("Not A Vendor");
    h.post_batch(&[event(USER), bad]).await;
    let (status, _, metrics) = get(&h, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("piperider_ingest_events_total{outcome=\"accepted\",reason=\"stored\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("piperider_ingest_events_total{outcome=\"rejected\",reason=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("piperider_ingest_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("piperider_ingest_commit_events_count"),
        "{metrics}"
    );
    assert!(!metrics.contains(CLIENT_IP));
    let (status, _, doc) = get(&h, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/batch",
        "/v1/deletion-requests",
        "/v1/admin/stats",
        "/v1/admin/users/{user_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    assert!(doc["components"]["schemas"].get("CliEvent").is_some());
    // Every reference resolves inside the document.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling reference to {name}"
        );
    }
    h.finish().await;
});

on_both!(
    rate_limits_answer_429_with_retry_after,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |c| c.rate_limit_ip = 1).await else {
            return;
        };
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let request = Request::post("/v1/batch")
                .header("content-type", "application/json")
                .body(Body::from(json!({"events": [event(USER)]}).to_string()))
                .unwrap();
            let (status, headers, _) = h.send(CLIENT_IP, request).await;
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert!(
                    headers.get("retry-after").is_some(),
                    "429 without Retry-After"
                );
            }
            statuses.push(status);
        }
        assert_eq!(
            &statuses[..2],
            &[StatusCode::OK, StatusCode::OK],
            "a burst of two is allowed"
        );
        assert!(
            statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
            "{statuses:?}"
        );
        // Another client is not affected.
        let request = Request::post("/v1/batch")
            .header("content-type", "application/json")
            .body(Body::from(json!({"events": [event(USER)]}).to_string()))
            .unwrap();
        assert_eq!(h.send("192.0.2.99", request).await.0, StatusCode::OK);
        h.finish().await;

        let Some(h) = Harness::start(db, |c| c.rate_limit_user = 1).await else {
            return;
        };
        let mut limited = false;
        for _ in 0..4 {
            limited |= h.post_batch(&[event(USER)]).await.0 == StatusCode::TOO_MANY_REQUESTS;
        }
        assert!(limited, "the per-user bucket never ran out");
        h.finish().await;
    }
);

on_both!(
    storage_away_is_503_with_retry_after_until_it_is_back,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let batch = |user: &str| {
            Request::post("/v1/batch")
                .header("content-type", "application/json")
                .body(Body::from(json!({"events": [event(user)]}).to_string()))
                .unwrap()
        };
        assert_eq!(h.send(CLIENT_IP, batch(USER)).await.0, StatusCode::OK);
        let outage = h.take_storage_away().await;
        let (status, headers, _) = h.send(CLIENT_IP, batch(USER)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(headers.get("retry-after").is_some());
        assert_eq!(get(&h, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            get(&h, "/healthz").await.0,
            StatusCode::OK,
            "liveness is not readiness"
        );
        let metrics = get(&h, "/metrics").await.2;
        assert!(
            metrics.contains("piperider_ingest_storage_failing 1"),
            "{metrics}"
        );

        outage.end().await;
        // Ready again without waiting for traffic, then stores what is resent.
        assert_eq!(get(&h, "/readyz").await.0, StatusCode::OK);
        assert_eq!(h.send(CLIENT_IP, batch(USER)).await.0, StatusCode::OK);
        assert_eq!(h.store().count_events().await.unwrap(), 2);
        let metrics = get(&h, "/metrics").await.2;
        assert!(
            metrics.contains("piperider_ingest_storage_failing 0"),
            "{metrics}"
        );
        h.finish().await;
    }
);

on_both!(
    readiness_fails_while_storage_is_away_with_no_traffic,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let h = std::sync::Arc::new(h);
        assert_eq!(get(&h, "/readyz").await.0, StatusCode::OK);
        let outage = h.take_storage_away().await;
        // Past the second for which a passed probe answers.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        // No event tried the database: readiness finds out by itself, and
        // many probes at once are answered (one probe runs at a time).
        let probes: Vec<_> = (0..50)
            .map(|_| {
                let h = std::sync::Arc::clone(&h);
                tokio::spawn(async move { get(&h, "/readyz").await.0 })
            })
            .collect();
        for probe in probes {
            assert_eq!(probe.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
        }
        outage.end().await;
        assert_eq!(get(&h, "/readyz").await.0, StatusCode::OK);
        assert_eq!(h.post_batch(&[event(USER)]).await.0, StatusCode::OK);
        std::sync::Arc::into_inner(h).unwrap().finish().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_on_a_socket_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("s.db").display());
    let config = piperider_ingest::Config::for_database(&url);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(piperider_ingest::serve(config, listener, async {
        let _ = stopped.await;
    }));
    // A raw HTTP/1.1 request over the socket.
    let body = json!({"events": [event(USER)]}).to_string();
    let response = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"accepted\""), "{response}");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let store = piperider_ingest::Store::connect(&url).await.unwrap();
    assert_eq!(
        store.count_events().await.unwrap(),
        1,
        "the acknowledged event is durable"
    );
}

on_both!(
    retention_deletes_old_events_cloud_events_consent_decisions_and_refused_events,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |c| {
            c.retention_days = 30;
            c.consent_retention_days = 90;
        })
        .await
        else {
            return;
        };
        let now = chrono::Utc::now();
        let day = |ago: i64| {
            (now - chrono::TimeDelta::days(ago))
                .date_naive()
                .to_string()
        };
        let mut refused = event(USER);
        refused["stats"]["rows"] = serde_json::json!(-1);
        let (status, _) = h.post_batch(&[event(USER), refused]).await;
        assert_eq!(status, StatusCode::OK);
        let mut rows = String::new();
        for (id, ago) in [("old", 40), ("recent", 10)] {
            rows.push_str(&format!(
                "INSERT INTO cloud_events (event_id, received_at, ts, day, event_type, visitor_id, route) \
                 VALUES ('{id}', 0, 0, '{}', 'page_view', '00000000000000000000000000000000', '/');",
                day(ago)
            ));
        }
        for (id, ago) in [("older", 100), ("old", 40)] {
            rows.push_str(&format!(
                "INSERT INTO consent_audit (consent_id, decided_at, day, choice, policy_version, gpc, source) \
                 VALUES ('{id}', 0, '{}', 'accept_all', 1, 0, 'banner');",
                day(ago)
            ));
        }
        let ms = |ago: i64| (now - chrono::TimeDelta::days(ago)).timestamp_millis();
        rows.push_str(&format!(
            "INSERT INTO quarantine (received_at, field, reason, size, keys) VALUES ({}, 'x', 'y', 1, '');",
            ms(31)
        ));
        h.execute(&rows, &rows).await;
        assert_eq!(h.store().count_quarantined().await.unwrap(), 2);
        h.state.run_retention(now).await.unwrap();
        // The refused event of 31 days ago goes (30 days); today's stays.
        assert_eq!(h.store().count_quarantined().await.unwrap(), 1);
        // The Cloud event of 40 days ago goes (30 days); the consent decision
        // of 40 days ago stays (90 days), the one of 100 days ago goes.
        assert_eq!(h.store().count_cloud_events().await.unwrap(), 1);
        assert_eq!(h.store().count_consent_decisions().await.unwrap(), 1);
        assert_eq!(
            h.store().count_events().await.unwrap(),
            1,
            "today's event stays"
        );
        // A year on, everything is past its retention.
        h.state
            .run_retention(now + chrono::TimeDelta::days(365))
            .await
            .unwrap();
        assert_eq!(h.store().count_events().await.unwrap(), 0);
        assert_eq!(h.store().count_cloud_events().await.unwrap(), 0);
        assert_eq!(h.store().count_consent_decisions().await.unwrap(), 0);
        assert_eq!(h.store().count_quarantined().await.unwrap(), 0);
        h.finish().await;
    }
);
