//! The admin API: bearer token, stats, users.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::{Db, Harness, USER, event, on_both};

async fn get_with(h: &Harness, path: &str, auth: Option<&str>) -> StatusCode {
    let mut request = Request::get(path);
    if let Some(a) = auth {
        request = request.header("authorization", a);
    }
    h.send("127.0.0.1", request.body(Body::empty()).unwrap())
        .await
        .0
}

/// The distribution of one metric in a stats answer.
fn distribution<'a>(stats: &'a Value, metric: &str) -> &'a Value {
    stats["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["metric"] == metric)
        .unwrap_or_else(|| panic!("no distribution of {metric}: {stats}"))
}

on_both!(admin_needs_the_token, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token"),
        Some("test-admin-token-0123456789"),
        Some("Basic abc"),
    ] {
        assert_eq!(
            get_with(&h, "/v1/admin/stats", auth).await,
            StatusCode::UNAUTHORIZED,
            "{auth:?}"
        );
        assert_eq!(
            get_with(&h, &format!("/v1/admin/users/{USER}"), auth).await,
            StatusCode::UNAUTHORIZED
        );
    }
    h.finish().await;
    let Some(h) = Harness::start(db, |c| c.admin_token = None).await else {
        return;
    };
    let anything = "Bearer test-admin-token-0123456789";
    assert_eq!(
        get_with(&h, "/v1/admin/stats", Some(anything)).await,
        StatusCode::UNAUTHORIZED,
        "no token configured"
    );
    h.finish().await;
});

on_both!(
    stats_count_users_commands_and_figures,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let second = "cccccccccccccccccccccccccccccccc";
        let mut init = event(second);
        init["event_type"] = json!("init");
        init["stats"] = json!(null);
        init["outcome"]["status"] = json!("error");
        init["project"]["datasource_type"] = json!("postgres");
        init["project"]["project_id"] = json!("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
        let (status, _) = h.post_batch(&[event(USER), event(USER), init]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, stats) = h.admin_get("/v1/admin/stats").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        assert_eq!(stats["active_users"], 2);
        assert_eq!(stats["total_users"], 2);
        assert_eq!(stats["active_projects"], 2);
        assert_eq!(stats["daily_active_users"][0]["count"], 2);
        assert_eq!(stats["new_users"][0]["count"], 2);
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        assert_eq!(stats["last_seen"], json!([{"key": today, "count": 2}]));
        assert_eq!(stats["totals"]["events"], 3);
        assert_eq!(stats["totals"]["errors"], 1);
        assert_eq!(stats["totals"]["rows"], 60);
        assert_eq!(stats["totals"]["passed_assertions"], 8);
        assert_eq!(stats["totals"]["failed_assertions"], 2);
        assert_eq!(
            stats["commands_by_type"],
            json!([{"key": "init", "count": 1}, {"key": "run", "count": 2}])
        );
        assert_eq!(
            stats["breakdowns"]["platforms"],
            json!([{"key": "linux", "count": 2}])
        );
        assert_eq!(
            stats["breakdowns"]["datasource_types"],
            json!([{"key": "postgres", "count": 1}, {"key": "sqlite", "count": 1}])
        );
        assert_eq!(stats["breakdowns"]["runtime_versions"][0]["key"], "3.11.7");
        assert_eq!(
            distribution(&stats, "rows")["buckets"],
            json!([{"key": "10-99", "count": 2}])
        );

        // A range that excludes today is empty; a malformed range is a 400.
        let (_, old) = h
            .admin_get("/v1/admin/stats?from=2020-01-01&to=2020-01-31")
            .await;
        assert_eq!(old["totals"]["events"], 0);
        assert_eq!(
            h.admin_get("/v1/admin/stats?from=yesterday").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            h.admin_get("/v1/admin/stats?from=2026-02-01&to=2026-01-01")
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
        h.finish().await;
    }
);

// The users' requests go to PostgreSQL's writers by their hash, and the
// rollups of what each writer stored are written later by the roller; the
// stats read writes them first, so every acknowledged event counts.
on_both!(counters_of_every_writer_add_up, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    let users: Vec<String> = (1..=12).map(|i| format!("{i:x}").repeat(32)).collect();
    for user in &users {
        let (status, body) = h.post_batch(&[event(user)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, stats) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(stats["totals"]["events"], 12, "{stats}");
    assert_eq!(stats["totals"]["rows"], 12 * 30);
    assert_eq!(
        stats["commands_by_type"],
        json!([{"key": "run", "count": 12}])
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        stats["commands"],
        json!([{"day": today, "event_type": "run", "events": 12, "errors": 0}])
    );
    assert_eq!(
        distribution(&stats, "rows")["buckets"],
        json!([{"key": "10-99", "count": 12}])
    );
    h.finish().await;
});

on_both!(admin_user_lookup_and_delete, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    assert_eq!(
        h.admin_get("/v1/admin/users/not-an-id").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.admin_get(&format!("/v1/admin/users/{USER}")).await.0,
        StatusCode::NOT_FOUND
    );
    h.post_batch(&[event(USER)]).await;
    let (status, report) = h.admin_get(&format!("/v1/admin/users/{USER}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["user_id"], USER);
    assert_eq!(h.admin_delete_user(USER).await, StatusCode::NO_CONTENT);
    assert_eq!(
        h.admin_get(&format!("/v1/admin/users/{USER}")).await.0,
        StatusCode::NOT_FOUND
    );
    h.finish().await;
});

on_both!(
    the_dashboard_needs_a_session_from_the_token,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (status, _, body) = h
            .send(
                "127.0.0.1",
                Request::get("/admin").body(Body::empty()).unwrap(),
            )
            .await;
        let page = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("id=token") && !page.contains("id=events"),
            "figures without logging in"
        );
        let login = |token: &str| {
            Request::post("/admin/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={token}")))
                .unwrap()
        };
        let (_, headers, _) = h.send("127.0.0.1", login("wrong-token-wrong-token")).await;
        assert!(
            headers.get("set-cookie").is_none(),
            "a wrong token got a session"
        );
        let (status, headers, _) = h.send("127.0.0.1", login(crate::ADMIN_TOKEN)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let cookie = headers["set-cookie"].to_str().unwrap().to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let session = cookie.split(';').next().unwrap().to_string();
        let request = Request::get("/admin")
            .header("cookie", session)
            .body(Body::empty())
            .unwrap();
        let (_, _, body) = h.send("127.0.0.1", request).await;
        assert!(
            String::from_utf8_lossy(&body).contains("id=events"),
            "the session did not open the dashboard"
        );
        let forged = Request::get("/admin")
            .header("cookie", "piperider_admin=0123")
            .body(Body::empty())
            .unwrap();
        let (_, _, body) = h.send("127.0.0.1", forged).await;
        assert!(
            !String::from_utf8_lossy(&body).contains("id=events"),
            "a made-up session opened the dashboard"
        );
        h.finish().await;
    }
);

/// A log-in form post with `token`, from behind the trusted proxy when `https`.
fn login_request(token: &str, https: bool) -> Request<Body> {
    let mut request =
        Request::post("/admin/login").header("content-type", "application/x-www-form-urlencoded");
    if https {
        request = request
            .header("x-forwarded-for", crate::CLIENT_IP)
            .header("x-forwarded-proto", "https");
    }
    request.body(Body::from(format!("token={token}"))).unwrap()
}

on_both!(
    over_https_the_session_cookie_is_secure_and_host_only,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        // The harness trusts 10.0.0.0/8 as a proxy, which says the client came over https.
        let (status, headers, _) = h
            .send("10.0.0.1", login_request(crate::ADMIN_TOKEN, true))
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let cookie = headers["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("__Host-piperider_admin="), "{cookie}");
        for attribute in ["Path=/;", "Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
        }
        let session = cookie.split(';').next().unwrap().to_string();
        let request = Request::get("/admin")
            .header("cookie", session)
            .body(Body::empty())
            .unwrap();
        let (_, _, body) = h.send("10.0.0.1", request).await;
        assert!(String::from_utf8_lossy(&body).contains("id=events"));
        // An untrusted peer claiming https gets no Secure cookie (it cannot claim https).
        let (_, headers, _) = h
            .send("192.0.2.9", login_request(crate::ADMIN_TOKEN, true))
            .await;
        let cookie = headers["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with("piperider_admin=") && !cookie.contains("Secure"),
            "{cookie}"
        );
        h.finish().await;
    }
);

on_both!(
    wrong_admin_tokens_are_throttled_per_address,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        for _ in 0..10 {
            let (status, _, _) = h
                .send(
                    "198.51.100.7",
                    login_request("not-the-token-at-all-x", false),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::OK,
                "a wrong token shows the log-in page again"
            );
        }
        // Past the limit even the right token is refused, before it is compared.
        let (status, headers, _) = h
            .send("198.51.100.7", login_request(crate::ADMIN_TOKEN, false))
            .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(headers.contains_key("retry-after"));
        let bearer = |token: &str| {
            Request::get("/v1/admin/stats")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap()
        };
        let (status, _, _) = h.send("198.51.100.7", bearer(crate::ADMIN_TOKEN)).await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "bearer attempts share the count"
        );
        // Another address is not affected; bearer failures count too.
        for _ in 0..10 {
            let (status, _, _) = h
                .send("203.0.113.5", bearer("not-the-token-at-all-x"))
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let (status, _, _) = h.send("203.0.113.5", bearer(crate::ADMIN_TOKEN)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let (status, _, _) = h.send("127.0.0.1", bearer(crate::ADMIN_TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        h.finish().await;
    }
);
