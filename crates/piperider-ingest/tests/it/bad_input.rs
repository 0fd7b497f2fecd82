//! Bad input gets the right 4xx, stores nothing invalid, and the service goes on.

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::{CLIENT_IP, Db, Harness, USER, deletion, event, on_both, owned_event, owner};

async fn raw(
    h: &Harness,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = Request::post("/v1/batch").header("content-type", content_type);
    if let Some(e) = encoding {
        request = request.header("content-encoding", e);
    }
    let (status, headers, body) = h
        .send(CLIENT_IP, request.body(Body::from(body)).unwrap())
        .await;
    let _ = headers;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A request body: content type, content encoding, bytes.
type Body3 = (String, Option<&'static str>, Vec<u8>);
/// An edit that makes a valid event invalid.
type Breaker = Box<dyn Fn(&mut Value)>;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

on_both!(bad_envelopes_get_the_right_4xx, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    let json = "application/json";
    let cases: Vec<(&str, StatusCode, Body3)> = vec![
        (
            "empty body",
            StatusCode::BAD_REQUEST,
            (json.into(), None, vec![]),
        ),
        (
            "invalid JSON",
            StatusCode::BAD_REQUEST,
            (json.into(), None, b"{\"events\": [".to_vec()),
        ),
        (
            "not an object",
            StatusCode::BAD_REQUEST,
            (json.into(), None, b"[1, 2]".to_vec()),
        ),
        (
            "no events",
            StatusCode::BAD_REQUEST,
            (json.into(), None, b"{}".to_vec()),
        ),
        (
            "events not a list",
            StatusCode::BAD_REQUEST,
            (json.into(), None, b"{\"events\": 5}".to_vec()),
        ),
        (
            "unknown envelope field",
            StatusCode::BAD_REQUEST,
            (json.into(), None, b"{\"events\": [], \"x\": 1}".to_vec()),
        ),
        (
            "invalid UTF-8",
            StatusCode::BAD_REQUEST,
            (json.into(), None, b"{\"events\": [\"\xff\xfe\"]}".to_vec()),
        ),
        (
            "wrong content type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ("text/plain".into(), None, b"{\"events\": []}".to_vec()),
        ),
        (
            "unknown encoding",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            (json.into(), Some("br"), b"{\"events\": []}".to_vec()),
        ),
        (
            "broken gzip",
            StatusCode::BAD_REQUEST,
            (json.into(), Some("gzip"), b"not gzip at all".to_vec()),
        ),
        (
            "over 1 MiB",
            StatusCode::PAYLOAD_TOO_LARGE,
            (
                json.into(),
                None,
                format!("{{\"events\": [\"{}\"]}}", "x".repeat(1 << 20)).into_bytes(),
            ),
        ),
        (
            "gzip bomb",
            StatusCode::PAYLOAD_TOO_LARGE,
            (json.into(), Some("gzip"), gzip(&vec![b' '; 64 << 20])),
        ),
    ];
    for (name, expected, (ct, enc, body)) in cases {
        let (status, answer) = raw(&h, &ct, enc, body).await;
        assert_eq!(status, expected, "{name}: {answer}");
        if status != StatusCode::OK {
            assert!(
                answer["reason"].is_string(),
                "{name}: no reason given: {answer}"
            );
        }
    }
    let events: Vec<Value> = (0..10_000).map(|_| event(USER)).collect();
    let (status, _) = h.post_batch(&events).await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "10,000 events in one batch"
    );

    // A gzip body within the limits is taken.
    let body = gzip(json!({"events": [event(USER)]}).to_string().as_bytes());
    let (status, answer) = raw(&h, json, Some("gzip"), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        h.store().count_events().await.unwrap(),
        1,
        "only the valid gzip batch was stored"
    );
    let (status, _, _) = h
        .send(
            CLIENT_IP,
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the service stopped serving");
    h.finish().await;
});

on_both!(
    bad_events_are_rejected_by_field_and_nothing_invalid_is_stored,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let years_ago = (chrono::Utc::now() - chrono::TimeDelta::days(3 * 365)).to_rfc3339();
        let years_ahead = (chrono::Utc::now() + chrono::TimeDelta::days(3 * 365)).to_rfc3339();
        let cases: Vec<(&str, Breaker, &str)> = vec![
            (
                "wrong type",
                Box::new(|e| e["stats"]["rows"] = json!("thirty")),
                "stats.rows",
            ),
            (
                "missing field",
                Box::new(|e| {
                    e.as_object_mut().unwrap().remove("outcome");
                }),
                ".",
            ),
            (
                "unknown field",
                Box::new(|e| e["table_names"] = json!(["payroll"])),
                ".",
            ),
            (
                "a long string",
                Box::new(|e| e["platform"]["os_version"] = json!("x".repeat(40_000))),
                ".",
            ),
            (
                "timestamp years ago",
                Box::new(move |e| e["timestamp"] = json!(years_ago)),
                "timestamp",
            ),
            (
                "timestamp years ahead",
                Box::new(move |e| e["timestamp"] = json!(years_ahead)),
                "timestamp",
            ),
            (
                "SQL in a name",
                Box::new(|e| e["project"]["datasource_type"] = json!("x'); DROP TABLE events; --")),
                "project.datasource_type",
            ),
            ("not an object", Box::new(|e| *e = json!("event")), "."),
            (
                "an error message",
                Box::new(|e| e["outcome"]["message"] = json!("password authentication failed")),
                "outcome",
            ),
        ];
        for (name, edit, field) in cases {
            let mut bad = event(USER);
            edit(&mut bad);
            let (status, body) = h.post_batch(&[bad]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
            assert_eq!(body["results"][0]["status"], "rejected", "{name}");
            assert_eq!(body["results"][0]["field"], field, "{name}: {body}");
        }
        assert_eq!(h.store().count_events().await.unwrap(), 0);

        // SQL-looking text where free text is allowed is stored as text, harmlessly.
        let mut sqlish = event(USER);
        sqlish["platform"]["os_version"] = json!("1'; DROP TABLE events; --");
        let (status, body) = h.post_batch(&[sqlish]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, report) = h.admin_get(&format!("/v1/admin/users/{USER}")).await;
        assert_eq!(
            report["platform"]["os_version"],
            "1'; DROP TABLE events; --"
        );
        assert_eq!(h.store().count_events().await.unwrap(), 1);
        h.finish().await;
    }
);

on_both!(deletion_requests_check_their_input, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    for body in [
        json!({}),
        json!({"user_id": "nope"}),
        json!({"user_id": USER, "extra": 1}),
        json!({"user_id": USER, "proof": {"at": 1, "signature": "00"}}),
        json!({"user_id": USER, "proof": {"at": 1, "signature": "0".repeat(128), "x": 1}}),
    ] {
        let (status, _) = h.post_json("/v1/deletion-requests", body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    h.finish().await;
});

on_both!(a_nul_bearing_event_fails_only_itself, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    let h = std::sync::Arc::new(h);
    // Twenty clients at once, so their batches share group commits with the bad one.
    let others: Vec<_> = (0..20)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let user = format!("{i:032x}");
                h.post_batch(&[event(&user), event(&user)]).await
            })
        })
        .collect();
    let mut bad = event(USER);
    bad["outcome"]["status"] = json!("\u{0}secret");
    bad["platform"]["os_version"] = json!("6.1\u{0}secret");
    let (status, body) = h.post_batch(&[event(USER), bad, event(USER)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "rejected", "accepted"], "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("secret") && !text.contains("\\u0000"),
        "the reason repeats the input: {text}"
    );
    for other in others {
        let (status, body) = other.await.unwrap();
        assert_eq!(status, StatusCode::OK, "a neighbour failed: {body}");
    }
    assert_eq!(h.store().count_events().await.unwrap(), 42);
    std::sync::Arc::into_inner(h).unwrap().finish().await;
});

on_both!(
    counters_at_every_maximum_saturate_and_stats_stay_answerable,
    |db: Db| async move {
        use piperider_event::limits::{MAX_ASSERTIONS, MAX_COLUMNS, MAX_ROWS, MAX_TABLES};
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let maximal = || {
            let mut e = event(USER);
            e["stats"] = json!({
                "tables": MAX_TABLES, "columns": MAX_COLUMNS, "rows": MAX_ROWS,
                "builtin_assertions": MAX_ASSERTIONS, "custom_assertions": MAX_ASSERTIONS,
                "passed_assertions": MAX_ASSERTIONS, "failed_assertions": MAX_ASSERTIONS,
            });
            e
        };
        for _ in 0..20 {
            let events: Vec<Value> = (0..500).map(|_| maximal()).collect();
            let (status, body) = h.post_batch(&events).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{}",
                body.to_string().chars().take(300).collect::<String>()
            );
        }
        let (status, stats) = h.admin_get("/v1/admin/stats").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        let totals = &stats["totals"];
        let n: u64 = 10_000;
        // The caps keep ten thousand maximal events exact.
        assert_eq!(totals["events"], n);
        assert_eq!(totals["tables"], n * MAX_TABLES);
        assert_eq!(totals["columns"], n * MAX_COLUMNS);
        assert_eq!(totals["rows"], n * MAX_ROWS);
        assert_eq!(totals["passed_assertions"], n * MAX_ASSERTIONS);
        // Counters already near the top (every shard of today's `run` row):
        // the next event's rows saturate the stored counter, and the sum
        // over shards is held at the largest BIGINT when read.
        let near = i64::MAX - 5;
        let today = chrono::Utc::now().date_naive();
        let rows: String = (0..4)
            .map(|shard| {
                format!(
                    "INSERT INTO daily_events (day, event_type, shard, events, errors, tables, columns, rows, \
                     builtin_assertions, custom_assertions, passed_assertions, failed_assertions) \
                     VALUES ('{today}', 'import', {shard}, 1, 0, 0, 0, {near}, 0, 0, 0, 0);"
                )
            })
            .collect();
        // SQLite keeps one shard (0): only that row.
        let sqlite_rows = rows.split_inclusive(';').next().unwrap().to_string();
        h.execute(&sqlite_rows, &rows).await;
        let mut import = event(USER);
        import["event_type"] = json!("import");
        let (status, body) = h.post_batch(&[import]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, stats) = h.admin_get("/v1/admin/stats").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        assert_eq!(stats["totals"]["rows"], i64::MAX, "{}", stats["totals"]);
        h.finish().await;
    }
);

on_both!(
    millions_of_tiny_entries_cost_one_too_many,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        // 7 KiB of gzip that holds four million entries: the cap holds while
        // parsing, not after, so the answer is 413 without a 64 MB array.
        let mut json = String::with_capacity(8_000_100);
        json.push_str("{\"events\":[0");
        json.push_str(&",0".repeat(3_999_999));
        json.push_str("]}");
        let (status, answer) =
            raw(&h, "application/json", Some("gzip"), gzip(json.as_bytes())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
        assert_eq!(
            answer["reason"],
            format!(
                "more than {} events in one batch",
                piperider_event::limits::MAX_BATCH_EVENTS
            )
        );
        h.finish().await;
    }
);

on_both!(
    a_request_the_database_refuses_fails_alone,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        // The database itself refuses one user's rows (as it would a value it cannot store).
        let refused = "0badc0de0badc0de0badc0de0badc0de";
        h.execute(
            &format!(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.user_id = '{refused}' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END"
            ),
            &format!(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
                 IF NEW.user_id = '{refused}' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()"
            ),
        )
        .await;
        let h = std::sync::Arc::new(h);
        for round in 0..5 {
            let others: Vec<_> = (0..20)
                .map(|i| {
                    let h = h.clone();
                    tokio::spawn(async move {
                        let user = format!("{:032x}", round * 100 + i);
                        h.post_batch(&[event(&user), event(&user)]).await
                    })
                })
                .collect();
            let (status, body) = h.post_batch(&[event(refused)]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"], "bad_request", "{body}");
            for other in others {
                let (status, body) = other.await.unwrap();
                assert_eq!(status, StatusCode::OK, "a neighbour failed with it: {body}");
            }
        }
        assert_eq!(h.store().count_events().await.unwrap(), 5 * 40);
        // Refused data is not a storage fault: the service stays ready.
        let (status, _, _) = h
            .send(
                "127.0.0.1",
                Request::get("/readyz").body(Body::empty()).unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        std::sync::Arc::into_inner(h).unwrap().finish().await;
    }
);

on_both!(
    every_text_column_has_a_bound_that_holds,
    |db: Db| async move {
        use piperider_event::limits::{
            MAX_COMPARISON_SOURCES, MAX_NAME_LEN, MAX_ROUTE_LEN, MAX_VERSION_LEN,
        };
        use piperider_ingest::storage::TEXT_BOUNDS;
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        // The database's own list of its text columns: each has a bound.
        let columns = h
            .query_text(if h.store().is_sqlite() {
                "SELECT m.name || '.' || p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                 AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\' AND upper(p.type) = 'TEXT' ORDER BY 1"
            } else {
                "SELECT table_name || '.' || column_name FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND data_type = 'text' \
                 AND table_name NOT LIKE '\\_sqlx%' \
                 AND NOT EXISTS (SELECT 1 FROM pg_class k WHERE k.relname = table_name AND k.relispartition) \
                 ORDER BY 1"
            })
            .await;
        let mut bounded: Vec<String> = TEXT_BOUNDS
            .iter()
            .map(|(t, c, _)| format!("{t}.{c}"))
            .collect();
        bounded.sort();
        assert_eq!(
            columns, bounded,
            "text columns without a bound, or bounds of no column"
        );

        // Every column filled to its limit: a CLI event with every text at
        // its most characters (versions of two-byte characters) ...
        let name = |c: char| c.to_string().repeat(MAX_NAME_LEN);
        let version = "é".repeat(MAX_VERSION_LEN);
        let mut maximal = event(USER);
        maximal["event_type"] = json!(name('r'));
        maximal["platform"] = json!({"os": name('o'), "arch": name('a'), "os_version": version});
        maximal["runtime"] = json!({"name": name('p'), "version": version});
        maximal["app_version"] = json!(version);
        maximal["initial_version"] = json!(version);
        maximal["ci"] = json!(name('c'));
        maximal["project"]["datasource_type"] = json!(name('d'));
        maximal["outcome"]["status"] = json!("error");
        maximal["owner_key"] = json!(owner(1).public_key().to_string());
        // ... an invalid one far over every bound, with the line breaks JSON
        // allows between tokens and an unknown field deep inside ...
        let mut invalid = event(USER);
        invalid["platform"]["os_version"] = json!("ü".repeat(4_000));
        invalid["stats"]["unknown_and_long_field_name"] = json!(1);
        let invalid = serde_json::to_string_pretty(&invalid).unwrap();
        let body = format!(r#"{{"events": [{maximal}, {invalid}]}}"#);
        let (status, answer) = raw(&h, "application/json", None, body.into_bytes()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["results"][0]["status"], "accepted", "{answer}");
        assert_eq!(answer["results"][1]["status"], "rejected", "{answer}");
        // ... a deletion, a consent decision and Cloud events at their limits.
        let leaving = "f".repeat(32);
        let mut gone = owned_event(&leaving, &owner(2));
        gone["project"] = Value::Null;
        let (status, _) = h.post_batch(&[gone]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = h
            .post_json("/v1/deletion-requests", deletion(&leaving, &owner(2)))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let request = Request::post("/v1/consent")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"choice": "necessary_only", "source": "settings"}).to_string(),
            ))
            .unwrap();
        let (_, _, _) = h.send(CLIENT_IP, request).await;
        let request = Request::post("/v1/consent")
            .header("content-type", "application/json")
            .body(Body::from(json!({"choice": "accept_all"}).to_string()))
            .unwrap();
        let (status, headers, answer) = h.send(CLIENT_IP, request).await;
        let visitor = serde_json::from_slice::<Value>(&answer).unwrap()["visitor_id"].clone();
        assert_eq!(status, StatusCode::OK);
        let cookie = headers["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let route = format!("/{}", "r".repeat(MAX_ROUTE_LEN - 1));
        let sources: Vec<String> = (0..MAX_COMPARISON_SOURCES).map(|_| name('s')).collect();
        for (event_type, extra) in [
            ("comparison_sources", json!({"sources": sources})),
            ("trend_metric_selected", json!({"metric": name('m')})),
        ] {
            let mut cloud = json!({
                "schema_version": 1,
                "event_id": uuid::Uuid::new_v4().to_string(),
                "event_type": event_type,
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "visitor_id": visitor,
                "route": route,
            });
            cloud
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let request = Request::post("/v1/cloud/events")
                .header("content-type", "application/json")
                .header("cookie", &cookie)
                .body(Body::from(cloud.to_string()))
                .unwrap();
            assert_eq!(h.send(CLIENT_IP, request).await.0, StatusCode::NO_CONTENT);
        }
        assert_eq!(h.store().count_cloud_events().await.unwrap(), 2);
        // Reading the stats writes the rollups first.
        assert_eq!(h.admin_get("/v1/admin/stats").await.0, StatusCode::OK);

        // No stored text is over its column's bound, and every column
        // holds something (so each bound was tried).
        for (table, column, bound) in TEXT_BOUNDS {
            let longest = h
                .query_text(&format!(
                    "SELECT CAST(COALESCE(MAX(length({column})), 0) AS TEXT) FROM {table}"
                ))
                .await;
            let longest: usize = longest[0].parse().unwrap();
            assert!(
                (1..=*bound).contains(&longest),
                "{table}.{column}: the longest value has {longest} characters, the bound is {bound}"
            );
        }
        // The quarantine keeps the event's keys, never a value or a made-up key.
        let kept = h
            .query_text("SELECT field || ' ' || reason || ' ' || keys FROM quarantine")
            .await;
        assert!(kept[0].contains("platform.os_version"), "{}", kept[0]);
        assert!(kept[0].contains("stats.?"), "{}", kept[0]);
        for value in ["ü", USER, "unknown_and_long_field_name", "9b2e4c7a"] {
            assert!(!kept[0].contains(value), "{value} kept: {}", kept[0]);
        }
        h.finish().await;
    }
);
