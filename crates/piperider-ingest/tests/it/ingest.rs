//! Durable, idempotent ingest; geo through trusted proxies only; no address kept.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::{
    CLIENT_IP, Db, Harness, PROJECT, USER, deletion, event, logs, on_both, owned_event, owner,
    run_sql,
};

on_both!(
    the_same_batch_twice_stores_each_event_once,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let events: Vec<Value> = (0..3).map(|_| event(USER)).collect();
        let (status, body) = h.post_batch(&events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let statuses: Vec<&str> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["accepted"; 3]);
        for (r, e) in body["results"].as_array().unwrap().iter().zip(&events) {
            assert_eq!(r["event_id"], e["event_id"], "results come in input order");
        }
        let (status, body) = h.post_batch(&events).await;
        assert_eq!(status, StatusCode::OK);
        let statuses: Vec<&str> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["duplicate"; 3]);
        // The same event twice in one batch.
        let e = event(USER);
        let (_, body) = h.post_batch(&[e.clone(), e]).await;
        assert_eq!(body["results"][0]["status"], "accepted");
        assert_eq!(body["results"][1]["status"], "duplicate");
        assert_eq!(h.store().count_events().await.unwrap(), 4);
        let (_, stats) = h.admin_get("/v1/admin/stats").await;
        assert_eq!(
            stats["totals"]["events"], 4,
            "rollups counted a duplicate: {stats}"
        );
        h.finish().await;
    }
);

/// PostgreSQL's roller writes the rollups of acknowledged events within
/// about a second with no read asking for them, and a read of the stats
/// leaves nothing queued; ids queued when a node stopped (a crash) are
/// rolled up by the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roller_writes_rollups_soon_and_after_a_crash() {
    let Some(h) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let (status, _) = h.post_batch(&[event(USER), event(USER)]).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        // Straight from the table: no read of the service's asks for a flush.
        let counted = h
            .query_text("SELECT CAST(COALESCE(SUM(events), 0) AS TEXT) FROM daily_events")
            .await;
        if counted == ["2"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not rolled up: {counted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.query_text("SELECT CAST(COUNT(*) AS TEXT) FROM rollup_queue")
            .await,
        ["0"]
    );
    // The backlog is exported for operators (0 here, as the queue is empty).
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("\npiperider_ingest_rollup_backlog 0\n"),
        "{metrics}"
    );

    // A node that stopped before its roller ran: an event stored, its id queued.
    h.store().close().await;
    let id = "0190f5a0-0000-7000-8000-00000000abcd";
    h.execute(
        "",
        &format!(
            "INSERT INTO events SELECT '{id}', received_at, ts, day, event_type, \
             user_id, device_id, os, arch, os_version, runtime_name, runtime_version, app_version, \
             initial_version, ci, project_id, datasource_type, tables, columns, rows, \
             builtin_assertions, custom_assertions, passed_assertions, failed_assertions, status, \
             duration_ms, country, region FROM events LIMIT 1; \
             INSERT INTO rollup_queue VALUES ('{id}')"
        ),
    )
    .await;
    let another = h.another_node().await;
    let (_, stats) = another.admin_get("/v1/admin/stats").await;
    assert_eq!(stats["totals"]["events"], 3, "{stats}");
    another.store().close().await;
    h.finish().await;
}

/// The SQLite writer opened after an unclean stop rolls up the events
/// stored past its watermark (as a process killed before writing its
/// held-back rollups leaves them), and goes on giving new events rowids
/// past the stored ones: the next batch is accepted and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_writer_rolls_up_what_an_unclean_stop_left_and_goes_on_storing() {
    let h = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    let (status, _) = h.post_batch(&[event(USER), event(USER)]).await;
    assert_eq!(status, StatusCode::OK);
    let h = h
        .reopen(async |url: &str| {
            // Stored, and neither rolled up nor in the cube: a writer
            // killed between its commit and its rollups.
            let columns = "received_at, ts, day, event_type, user_id, device_id, os, arch, \
                 os_version, runtime_name, runtime_version, app_version, initial_version, ci, \
                 project_id, datasource_type, tables, columns, rows, builtin_assertions, \
                 custom_assertions, passed_assertions, failed_assertions, status, duration_ms, \
                 country, region";
            run_sql(
                url,
                &format!(
                    "INSERT INTO events (event_id, {columns}) \
                     SELECT '0190f5a0-0000-7000-8000-00000000abcd', {columns} FROM events LIMIT 1"
                ),
            )
            .await;
        })
        .await;
    let (status, body) = h.post_batch(&[event(USER)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], "accepted", "{body}");
    let (_, stats) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(stats["totals"]["events"], 4, "{stats}");
    let (_, summary) = h.admin_get("/v1/admin/charts/summary").await;
    assert_eq!(summary["rows"][0][3], 4, "{summary}");
    h.finish().await;
}

/// An event committed by another node or writer after a deletion of its
/// user looked for the user's events (its group checked the tombstones
/// just before they were written) is deleted by the roller that takes its
/// queued id, and never counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_while_its_user_was_deleted_does_not_survive() {
    let Some(h) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let other = "0123456789abcdef0123456789abcdef";
    let (status, _) = h.post_batch(&[event(USER), event(other)]).await;
    assert_eq!(status, StatusCode::OK);
    let status = h.admin_delete_user(USER).await;
    assert!(status.is_success(), "{status}");
    // The deleted user's event left the roller's queue uncounted.
    let (_, stats) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(stats["totals"]["events"], 1, "{stats}");
    // The late commit: the deleted user's event and its queued id.
    let id = "0190f5a0-0000-7000-8000-00000000abce";
    h.execute(
        "",
        &format!(
            "INSERT INTO events SELECT '{id}', received_at, ts, day, event_type, \
             '{USER}', device_id, os, arch, os_version, runtime_name, runtime_version, app_version, \
             initial_version, ci, project_id, datasource_type, tables, columns, rows, \
             builtin_assertions, custom_assertions, passed_assertions, failed_assertions, status, \
             duration_ms, country, region FROM events WHERE user_id = '{other}'; \
             INSERT INTO rollup_queue VALUES ('{id}')"
        ),
    )
    .await;
    let (_, stats) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(stats["totals"]["events"], 1, "counted: {stats}");
    assert_eq!(stats["total_users"], 1, "{stats}");
    let left = h
        .query_text(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM events WHERE user_id = '{USER}'"
        ))
        .await;
    assert_eq!(left, ["0"]);
    h.finish().await;
}

/// Two nodes on one PostgreSQL database given the same batches at once (a
/// sender that timed out on one and resent to the other): each event is
/// stored once and counted once in the rollups, accepted by one node and a
/// duplicate for the other, whichever wins each race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_given_the_same_batches_at_once_store_and_count_each_event_once() {
    let Some(a) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let b = a.another_node().await;
    let users: Vec<String> = (0..40).map(|n| format!("{n:032x}")).collect();
    let batches: Vec<Vec<Value>> = users
        .iter()
        .map(|u| (0..25).map(|_| event(u)).collect())
        .collect();
    for (i, events) in batches.iter().enumerate() {
        let ((sa, x), (sb, y)) = tokio::join!(a.post_batch(events), b.post_batch(events));
        assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK), "{x} {y}");
        for (rx, ry) in x["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(y["results"].as_array().unwrap())
        {
            let mut pair = [
                rx["status"].as_str().unwrap(),
                ry["status"].as_str().unwrap(),
            ];
            pair.sort();
            assert_eq!(pair, ["accepted", "duplicate"], "batch {i}: {x} {y}");
        }
    }
    assert_eq!(a.store().count_events().await.unwrap(), 1000);
    let (_, stats) = a.admin_get("/v1/admin/stats").await;
    assert_eq!(stats["totals"]["events"], 1000, "rollups: {stats}");
    assert_eq!(
        a.query_text("SELECT CAST(COUNT(*) AS TEXT) FROM users")
            .await,
        ["40"]
    );
    b.store().close().await;
    a.finish().await;
}

on_both!(
    one_invalid_event_does_not_spoil_its_neighbours,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let mut bad = event(USER);
        bad["stats"]["rows"] = json!(-1);
        let good = [event(USER), event(USER)];
        let (status, body) = h
            .post_batch(&[good[0].clone(), bad.clone(), good[1].clone()])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let r = body["results"].as_array().unwrap();
        assert_eq!(r[0]["status"], "accepted");
        assert_eq!(r[1]["status"], "rejected");
        assert_eq!(r[1]["field"], "stats.rows");
        assert_eq!(r[1]["event_id"], bad["event_id"]);
        assert_eq!(r[2]["status"], "accepted");
        assert_eq!(h.store().count_events().await.unwrap(), 2);
        assert_eq!(h.store().count_quarantined().await.unwrap(), 1);
        h.finish().await;
    }
);

async fn user_country(h: &Harness, user: &str) -> (Value, Value) {
    let (status, report) = h.admin_get(&format!("/v1/admin/users/{user}")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    (report["country"].clone(), report["region"].clone())
}

async fn post_from(h: &Harness, peer: &str, forwarded_for: &str, user: &str) {
    let request = Request::post("/v1/batch")
        .header("content-type", "application/json")
        .header("x-forwarded-for", forwarded_for)
        .body(Body::from(json!({"events": [event(user)]}).to_string()))
        .unwrap();
    let (status, _, body) = h.send(peer, request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

on_both!(
    country_and_region_come_from_a_trusted_proxys_forwarded_address,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let via_proxy = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
        post_from(&h, "10.0.0.5", CLIENT_IP, via_proxy).await;
        assert_eq!(
            user_country(&h, via_proxy).await,
            (json!("GB"), json!("ENG"))
        );

        // The same header from a peer that is not a trusted proxy is ignored.
        let spoofer = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2";
        post_from(&h, "192.0.2.10", CLIENT_IP, spoofer).await;
        assert_eq!(user_country(&h, spoofer).await, (Value::Null, Value::Null));

        // A direct client's own address counts; a failed lookup never rejects.
        let direct = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa3";
        post_from(&h, CLIENT_IP, "1.2.3.4", direct).await;
        assert_eq!(user_country(&h, direct).await, (json!("GB"), json!("ENG")));

        // Nothing stored holds the address.
        match db {
            Db::Sqlite => {
                h.store().close().await;
                for entry in std::fs::read_dir(h.dir.path()).unwrap() {
                    let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                    assert!(
                        !contains(&bytes, CLIENT_IP.as_bytes()),
                        "the address is in a database file"
                    );
                }
            }
            Db::Postgres => {
                for table in [
                    "events",
                    "users",
                    "projects",
                    "daily_users",
                    "daily_events",
                    "quarantine",
                    "settings",
                ] {
                    let dump = h.store().table_as_text(table).await.unwrap();
                    assert!(!dump.contains(CLIENT_IP), "the address is in table {table}");
                }
            }
        }
        let logged = logs().lock().unwrap().clone();
        assert!(!logged.is_empty(), "the test captured no logs");
        assert!(
            !contains(&logged, CLIENT_IP.as_bytes()),
            "the address was logged"
        );
        h.finish().await;
    }
);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

on_both!(
    only_the_owner_deletes_and_then_the_user_is_gone_for_good,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (mine, theirs) = (owner(1), owner(2));
        let mut refused = owned_event(USER, &mine);
        refused["stats"]["rows"] = json!(-1);
        let (status, _) = h
            .post_batch(&[owned_event(USER, &mine), owned_event(USER, &mine), refused])
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h.store().count_quarantined().await.unwrap(), 1);
        // An outsider's event under the same id, with their key, later:
        // stored (ingestion is anonymous) but it binds nothing.
        let (_, body) = h.post_batch(&[owned_event(USER, &theirs)]).await;
        assert_eq!(body["results"][0]["status"], "accepted");
        let (status, report) = h.admin_get(&format!("/v1/admin/users/{USER}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(report["events_stored"], 3);

        // The user id alone, someone else's proof, a proof for reading, a
        // stale one: refused, nothing deleted, no tombstone.
        let stale = json!({"user_id": USER, "proof": mine.prove(
            piperider_event::OwnerAction::Delete,
            &USER.parse().unwrap(),
            chrono::Utc::now() - chrono::TimeDelta::minutes(16),
        )});
        let read = json!({"user_id": USER, "proof": mine.prove(
            piperider_event::OwnerAction::Read,
            &USER.parse().unwrap(),
            chrono::Utc::now(),
        )});
        for (body, expected) in [
            (
                json!({"user_id": USER}).to_string(),
                StatusCode::BAD_REQUEST,
            ),
            (deletion(USER, &theirs), StatusCode::FORBIDDEN),
            (read.to_string(), StatusCode::FORBIDDEN),
            (stale.to_string(), StatusCode::FORBIDDEN),
        ] {
            let (status, answer) = h.post_json("/v1/deletion-requests", body.clone()).await;
            assert_eq!(status, expected, "{body}: {answer}");
        }
        assert_eq!(h.store().count_events().await.unwrap(), 3);
        assert_eq!(h.tombstones().await, 0);

        // The owner's proof: everything gone.
        let (status, _) = h
            .post_json("/v1/deletion-requests", deletion(USER, &mine))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _) = h.admin_get(&format!("/v1/admin/users/{USER}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(h.store().count_events().await.unwrap(), 0);
        assert_eq!(h.tombstones().await, 1);
        for table in [
            "users",
            "projects",
            "daily_users",
            "owner_keys",
            "quarantine",
        ] {
            let left = h
                .query_text(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
                .await;
            assert_eq!(left[0], "0", "{table} keeps a row");
        }

        // The same request again (its answer lost, say): done, and said so;
        // reading is proved but finds nothing.
        let (status, _) = h
            .post_json("/v1/deletion-requests", deletion(USER, &mine))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let read = mine
            .prove(
                piperider_event::OwnerAction::Read,
                &USER.parse().unwrap(),
                chrono::Utc::now(),
            )
            .to_header();
        assert_eq!(h.held(USER, Some(&read)).await.0, StatusCode::NOT_FOUND);
        let (status, _) = h
            .post_json("/v1/deletion-requests", deletion(USER, &theirs))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // An event still queued on a laptop arrives late: dropped, and the sender told so.
        let (status, body) = h.post_batch(&[owned_event(USER, &mine)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["results"][0]["status"], "rejected");
        assert_eq!(body["results"][0]["field"], "user_id");
        assert_eq!(h.store().count_events().await.unwrap(), 0);

        // Other users are untouched.
        let other = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let (_, body) = h.post_batch(&[event(other)]).await;
        assert_eq!(body["results"][0]["status"], "accepted");
        h.finish().await;
    }
);

on_both!(
    a_user_id_with_no_key_such_as_a_ci_pseudonym_cannot_be_deleted_or_read,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        // A CI run's event: a computed pseudonym, no owner key.
        let ci_user = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
        let mut ci = event(ci_user);
        ci["ci"] = json!("github_actions");
        let (status, _) = h.post_batch(&[ci]).await;
        assert_eq!(status, StatusCode::OK);
        // Whoever computes the pseudonym signs with a key of their own.
        let outsider = owner(3);
        let (status, _) = h
            .post_json("/v1/deletion-requests", deletion(ci_user, &outsider))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let proof = outsider.prove(
            piperider_event::OwnerAction::Read,
            &ci_user.parse().unwrap(),
            chrono::Utc::now(),
        );
        let (status, answer) = h.held(ci_user, Some(&proof.to_header())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(h.store().count_events().await.unwrap(), 1);
        assert_eq!(h.tombstones().await, 0);
        // Nor is an id nothing was stored for told apart from one with a key.
        let (status, _) = h
            .post_json(
                "/v1/deletion-requests",
                deletion(&"d".repeat(32), &outsider),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        h.finish().await;
    }
);

on_both!(
    the_owner_reads_what_is_held_and_no_one_else_does,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (mine, theirs) = (owner(1), owner(2));
        let (status, _) = h.post_batch(&[owned_event(USER, &mine)]).await;
        assert_eq!(status, StatusCode::OK);
        let prove = |secret: &piperider_event::OwnerSecret, user: &str| {
            secret
                .prove(
                    piperider_event::OwnerAction::Read,
                    &user.parse().unwrap(),
                    chrono::Utc::now(),
                )
                .to_header()
        };
        let (status, answer) = h.held(USER, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert!(answer.get("first_seen").is_none());
        for authorization in [
            prove(&theirs, USER),
            format!("Bearer {}", crate::ADMIN_TOKEN),
            "PipeRider-Owner at=1, signature=00".to_string(),
        ] {
            let (status, answer) = h.held(USER, Some(&authorization)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{authorization}: {answer}");
            assert!(answer.get("first_seen").is_none());
        }
        // A deletion proof does not read.
        let delete = mine
            .prove(
                piperider_event::OwnerAction::Delete,
                &USER.parse().unwrap(),
                chrono::Utc::now(),
            )
            .to_header();
        assert_eq!(h.held(USER, Some(&delete)).await.0, StatusCode::FORBIDDEN);
        let (status, report) = h.held(USER, Some(&prove(&mine, USER))).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        for key in [
            "first_seen",
            "last_seen",
            "country",
            "region",
            "platform",
            "device_id",
            "runtime",
            "projects",
        ] {
            assert!(
                report.get(key).is_some(),
                "the report lacks {key}: {report}"
            );
        }
        assert_eq!(report["country"], "GB");
        assert_eq!(report["projects"][0]["project_id"], PROJECT);
        assert_eq!(report["projects"][0]["datasource_types"], json!(["sqlite"]));
        assert_eq!(report["events_stored"], 1);
        h.finish().await;
    }
);

on_both!(
    an_event_stamped_ahead_counts_today_not_tomorrow,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let now = chrono::Utc::now();
        let ahead = now + chrono::TimeDelta::minutes(23 * 60 + 59);
        let mut e = event(USER);
        e["timestamp"] = json!(ahead.to_rfc3339());
        let (status, body) = h.post_batch(&[e]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (today, tomorrow) = (now.date_naive(), ahead.date_naive());
        let (_, stats) = h
            .admin_get(&format!("/v1/admin/stats?from={today}&to={today}"))
            .await;
        assert_eq!(stats["totals"]["events"], 1, "{stats}");
        if tomorrow != today {
            let (_, stats) = h
                .admin_get(&format!("/v1/admin/stats?from={tomorrow}&to={tomorrow}"))
                .await;
            assert_eq!(
                stats["totals"]["events"], 0,
                "tomorrow was filled in advance: {stats}"
            );
        }
        h.finish().await;
    }
);

/// PostgreSQL: a deletion and a commit of the same user's events in flight
/// at once; the events never survive the deletion. (On SQLite both go
/// through the one writer, one after the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_racing_a_commit_of_the_same_user_leaves_nothing() {
    let Some(h) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let mine = owner(1);
    let (status, _) = h.post_batch(&[owned_event(USER, &mine)]).await;
    assert_eq!(status, StatusCode::OK);
    // The next commit of this user's events holds its transaction open for
    // a second after it has checked the tombstones.
    h.execute(
        "",
        &format!(
            "CREATE FUNCTION slow() RETURNS trigger AS $$ BEGIN \
             IF NEW.user_id = '{USER}' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER slow BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION slow()"
        ),
    )
    .await;
    let h = std::sync::Arc::new(h);
    let late = {
        let h = h.clone();
        let event = owned_event(USER, &mine);
        tokio::spawn(async move { h.post_batch(&[event]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, _) = h
        .post_json("/v1/deletion-requests", deletion(USER, &mine))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = late.await.unwrap();
    assert!(
        status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
        "{status}: {body}"
    );
    let left = h
        .query_text(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM events WHERE user_id = '{USER}'"
        ))
        .await;
    assert_eq!(
        left[0], "0",
        "an event committed beside the deletion survived it"
    );
    for table in ["users", "daily_users", "owner_keys"] {
        let left = h
            .query_text(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
            .await;
        assert_eq!(left[0], "0", "{table} keeps a row");
    }
    std::sync::Arc::into_inner(h).unwrap().finish().await;
}

on_both!(
    a_receipt_is_the_digest_of_what_was_stored_and_the_user_report_lists_the_same,
    |db: Db| async move {
        use piperider_event::{CliEvent, WireEvent};
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        // A clock ahead of the backend's: stored at the time of receipt.
        let mut ahead = event(USER);
        ahead["timestamp"] =
            json!((chrono::Utc::now() + chrono::TimeDelta::seconds(20)).to_rfc3339());
        let mut broken = event(USER);
        broken["stats"] = json!({"rows": -1});
        let events = vec![event(USER), broken, ahead, event(USER)];
        let (status, body) = h.post_batch(&events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let received_at = body["receipt"]["received_at"].as_i64().unwrap();
        let at = chrono::DateTime::from_timestamp_millis(received_at).unwrap();
        let digests: Vec<(String, String)> = [0, 2, 3]
            .iter()
            .map(|&i| {
                let e = CliEvent::parse(events[i].to_string().as_bytes(), at).unwrap();
                let f = e.stored_fields(received_at);
                (f.event_id.clone(), f.digest())
            })
            .collect();
        let expected =
            piperider_event::batch_digest(digests.iter().map(|(i, d)| (i.as_str(), d.as_str())));
        assert_eq!(body["receipt"]["digest"], expected.as_str(), "{body}");
        // Resent: nothing stored by it, so the receipt covers nothing.
        let (_, again) = h.post_batch(&events[..1]).await;
        assert_eq!(again["results"][0]["status"], "duplicate");
        assert_eq!(
            again["receipt"]["digest"],
            piperider_event::batch_digest([]).as_str()
        );
        // What is held now, read back from the database, has the same digests.
        let (status, report) = h.admin_get(&format!("/v1/admin/users/{USER}")).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let listed: std::collections::HashMap<String, String> = report["event_digests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["event_id"].as_str().unwrap().into(),
                    d["digest"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(listed.len(), 3, "{report}");
        for (id, digest) in &digests {
            assert_eq!(listed.get(id), Some(digest), "{id}");
        }
        h.finish().await;
    }
);

on_both!(
    a_user_and_a_project_keep_their_earliest_and_latest_whatever_the_order,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (a, b) = (format!("{:032x}", 0xa), format!("{:032x}", 0xb));
        let now = chrono::Utc::now();
        let at = |user: &str, days_ago: i64, version: &str, os: &str| {
            let mut e = event(user);
            let ts = now - chrono::TimeDelta::days(days_ago);
            e["timestamp"] = json!(ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            e["app_version"] = json!(version);
            e["initial_version"] = json!(version);
            e["platform"]["os"] = json!(os);
            e
        };
        let day = |days_ago: i64| {
            (now - chrono::TimeDelta::days(days_ago))
                .date_naive()
                .to_string()
        };
        let report = |user: String| {
            let h = &h;
            async move {
                let (status, body) = h.admin_get(&format!("/v1/admin/users/{user}")).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                body
            }
        };
        // User a: the middle event, a later one, then an earlier one,
        // each rolled up before the next comes (a read writes the rollups).
        for e in [
            at(&a, 5, "0.2.0", "linux"),
            at(&a, 1, "0.3.0", "macos"),
            at(&a, 9, "0.1.0", "windows"),
        ] {
            let (status, body) = h.post_batch(&[e]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            report(a.clone()).await;
        }
        let r = report(a.clone()).await;
        assert!(
            r["first_seen"].as_str().unwrap().starts_with(&day(9)),
            "{r}"
        );
        assert!(r["last_seen"].as_str().unwrap().starts_with(&day(1)), "{r}");
        assert_eq!(r["platform"]["os"], "macos", "the latest event's: {r}");
        assert_eq!(r["app_version"], "0.3.0");
        assert_eq!(r["initial_version"], "0.1.0", "the earliest event's");
        assert_eq!(r["days_active"], 3);
        let project = &r["projects"][0];
        assert_eq!(project["initial_version"], "0.1.0", "{r}");
        assert_eq!(project["current_version"], "0.3.0");
        assert!(project["first_seen"].as_str().unwrap().starts_with(&day(9)));
        // The project's latest event comes from user b: it is b's now.
        let (status, body) = h.post_batch(&[at(&b, 0, "0.4.0", "linux")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(report(a.clone()).await["projects"], json!([]));
        let r = report(b.clone()).await;
        assert_eq!(r["projects"][0]["initial_version"], "0.1.0", "{r}");
        assert_eq!(r["projects"][0]["current_version"], "0.4.0");
        // An earlier event of a's for it does not take it back.
        let (status, body) = h.post_batch(&[at(&a, 7, "0.1.5", "linux")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            report(b.clone()).await["projects"][0]["current_version"],
            "0.4.0"
        );
        assert_eq!(report(a.clone()).await["platform"]["os"], "macos");
        h.finish().await;
    }
);
