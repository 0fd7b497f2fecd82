//! Cloud consent over HTTP: the cookie, the audit trail, and Cloud events
//! stored only with a valid, current Accept All.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::{CLIENT_IP, Db, Harness, on_both};

fn cloud_event() -> Value {
    json!({
        "schema_version": 1,
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": "page_view",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "visitor_id": "c0ffee0123456789abcdef0123456789",
        "route": "/reports/:id"
    })
}

/// A Cloud event of the visitor an Accept All's answer named.
fn visitors_event(answer: &Value) -> Value {
    let mut e = cloud_event();
    e["visitor_id"] = answer["visitor_id"].clone();
    e
}

/// Chooses on the banner; returns the cookie's `name=value`.
async fn choose(h: &Harness, choice: &str, gpc: bool) -> (Value, String) {
    let mut request = Request::post("/v1/consent").header("content-type", "application/json");
    if gpc {
        request = request.header("sec-gpc", "1");
    }
    let (status, headers, body) = h
        .send(
            CLIENT_IP,
            request
                .body(Body::from(json!({"choice": choice}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let set_cookie = headers
        .get("set-cookie")
        .expect("a consent cookie")
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["Path=/", "SameSite=Lax", "Max-Age=15724800"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    assert!(
        !set_cookie.contains("HttpOnly"),
        "the page script must be able to read it"
    );
    let pair = set_cookie.split(';').next().unwrap().to_string();
    (serde_json::from_slice(&body).unwrap(), pair)
}

async fn post_event(h: &Harness, cookie: Option<&str>, event: &Value) -> StatusCode {
    let mut request = Request::post("/v1/cloud/events").header("content-type", "application/json");
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    h.send(
        CLIENT_IP,
        request.body(Body::from(event.to_string())).unwrap(),
    )
    .await
    .0
}

on_both!(
    cloud_events_are_stored_only_with_a_current_accept_all,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        // No cookie.
        assert_eq!(
            post_event(&h, None, &cloud_event()).await,
            StatusCode::NO_CONTENT
        );
        // Necessary Only.
        let (answer, necessary) = choose(&h, "necessary_only", false).await;
        assert_eq!(answer["state"], "denied");
        assert_eq!(
            post_event(&h, Some(&necessary), &cloud_event()).await,
            StatusCode::NO_CONTENT
        );
        // An edited cookie: Necessary Only rewritten by hand to say Accept All.
        let (name, value) = necessary.split_once('=').unwrap();
        let (payload, tag) = value.split_once('.').unwrap();
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let json = String::from_utf8(engine.decode(payload).unwrap())
            .unwrap()
            .replace("necessary_only", "accept_all");
        let edited = format!("{name}={}.{tag}", engine.encode(json));
        assert_eq!(
            post_event(&h, Some(&edited), &cloud_event()).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            h.store().count_cloud_events().await.unwrap(),
            0,
            "stored without consent"
        );

        // Accept All: stored.
        let (answer, accepted) = choose(&h, "accept_all", true).await;
        assert_eq!(answer["state"], "granted");
        assert_eq!(
            post_event(
                &h,
                Some(&format!("other=1; {accepted}")),
                &visitors_event(&answer)
            )
            .await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(h.store().count_cloud_events().await.unwrap(), 1);
        // An invalid event is refused even with consent.
        let mut bad = cloud_event();
        bad["route"] = json!("/reports/12345?tab=2");
        assert_eq!(
            post_event(&h, Some(&accepted), &bad).await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(h.store().count_cloud_events().await.unwrap(), 1);

        // GET /v1/consent reads the cookie back.
        let request = Request::get("/v1/consent")
            .header("cookie", accepted.clone())
            .body(Body::empty())
            .unwrap();
        let (_, _, body) = h.send(CLIENT_IP, request).await;
        let current: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(current["state"], "granted");
        assert_eq!(current["choice"], "accept_all");
        let (_, _, body) = h
            .send(
                CLIENT_IP,
                Request::get("/v1/consent").body(Body::empty()).unwrap(),
            )
            .await;
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["state"],
            "pending"
        );

        // Every decision is in the audit trail, without an address.
        assert_eq!(h.store().count_consent_decisions().await.unwrap(), 2);
        let metrics = h.metrics().await;
        assert!(
            metrics.contains(
                "piperider_ingest_events_total{outcome=\"dropped\",reason=\"no_consent\"} 3"
            ),
            "{metrics}"
        );
        h.finish().await;
    }
);

on_both!(
    an_older_policy_version_stores_nothing,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (answer, accepted) = choose(&h, "accept_all", false).await;
        assert_eq!(
            post_event(&h, Some(&accepted), &visitors_event(&answer)).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(h.store().count_cloud_events().await.unwrap(), 1);
        // The same database, the policy bumped: the old Accept All no longer counts.
        let bumped = h.with_config(|c| c.consent_policy_version = 2).await;
        assert_eq!(
            post_event(&bumped, Some(&accepted), &visitors_event(&answer)).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(bumped.store().count_cloud_events().await.unwrap(), 1);
        let request = Request::get("/v1/consent")
            .header("cookie", accepted)
            .body(Body::empty())
            .unwrap();
        let (_, _, body) = bumped.send(CLIENT_IP, request).await;
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["state"],
            "pending"
        );
        h.finish().await;
    }
);

on_both!(consent_requests_check_their_input, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    for body in [
        json!({}),
        json!({"choice": "everything"}),
        json!({"choice": "accept_all", "extra": 1}),
        json!({"choice": "accept_all", "source": "popup"}),
    ] {
        let request = Request::post("/v1/consent")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        assert_eq!(
            h.send(CLIENT_IP, request).await.0,
            StatusCode::BAD_REQUEST,
            "{body}"
        );
    }
    assert_eq!(h.store().count_consent_decisions().await.unwrap(), 0);
    h.finish().await;
});

on_both!(
    a_cloud_event_stamped_ahead_counts_today,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (answer, cookie) = choose(&h, "accept_all", false).await;
        let now = chrono::Utc::now();
        let mut e = visitors_event(&answer);
        e["timestamp"] = json!((now + chrono::TimeDelta::minutes(23 * 60 + 59)).to_rfc3339());
        assert_eq!(
            post_event(&h, Some(&cookie), &e).await,
            StatusCode::NO_CONTENT
        );
        let days = h.query_text("SELECT day FROM cloud_events").await;
        // Stored at the receiver's now (this day, or the next if midnight passed meanwhile).
        let latest = chrono::Utc::now().date_naive().to_string();
        assert_eq!(days.len(), 1);
        assert!(
            days[0] == now.date_naive().to_string() || days[0] == latest,
            "stored for {}",
            days[0]
        );
        h.finish().await;
    }
);

/// `POST /v1/consent` from `ip`, with `cookie` if any: status, headers, and
/// the new cookie's `name=value` when one was set.
async fn decide(
    h: &Harness,
    ip: &str,
    cookie: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Option<String>) {
    let mut request = Request::post("/v1/consent").header("content-type", "application/json");
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    let body = Body::from(json!({"choice": "accept_all"}).to_string());
    let (status, headers, _) = h.send(ip, request.body(body).unwrap()).await;
    let set = headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
    (status, headers, set)
}

on_both!(
    a_flood_of_consent_decisions_stays_bounded,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |c| c.rate_limit_ip = 50).await else {
            return;
        };
        // 2,000 decisions from one address, no cookie kept: the address's
        // limit (50 a second, bursts of 100) answers 429 past it, and
        // only the answered decisions are rows.
        let started = std::time::Instant::now();
        let mut accepted = 0i64;
        for _ in 0..2_000 {
            match decide(&h, "198.51.100.9", None).await.0 {
                StatusCode::OK => accepted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("a consent post answered {other}"),
            }
        }
        let allowed = 100 + 50 * (started.elapsed().as_secs() as i64 + 1);
        assert!(
            (100..=allowed).contains(&accepted),
            "{accepted} of 2,000 accepted; at most {allowed} allowed"
        );
        assert_eq!(h.store().count_consent_decisions().await.unwrap(), accepted);

        // One browser that keeps its cookie: a decision younger than the
        // interval is refused for the rest of it, and adds no row.
        let (status, _, cookie) = decide(&h, CLIENT_IP, None).await;
        assert_eq!(status, StatusCode::OK);
        let cookie = cookie.expect("a consent cookie");
        for _ in 0..20 {
            let (status, headers, set) = decide(&h, CLIENT_IP, Some(&cookie)).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(
                (1..=piperider_consent::DECISION_INTERVAL_SECS).contains(&wait),
                "{wait}"
            );
            assert!(set.is_none(), "a refused decision set a cookie");
        }
        assert_eq!(
            h.store().count_consent_decisions().await.unwrap(),
            accepted + 1
        );
        // Once the interval is over, the same browser decides again.
        tokio::time::sleep(std::time::Duration::from_secs(
            piperider_consent::DECISION_INTERVAL_SECS,
        ))
        .await;
        assert_eq!(decide(&h, CLIENT_IP, Some(&cookie)).await.0, StatusCode::OK);
        // The retention job empties the audit trail once it is past its days.
        let later = chrono::Utc::now()
            + chrono::TimeDelta::days(i64::from(h.state.config().consent_retention_days) + 1);
        h.state.run_retention(later).await.unwrap();
        assert_eq!(h.store().count_consent_decisions().await.unwrap(), 0);
        h.finish().await;
    }
);

on_both!(
    withdrawing_deletes_the_visitors_cloud_events,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (answer, accepted) = choose(&h, "accept_all", false).await;
        assert_eq!(answer["state"], "granted");
        let visitor = answer["visitor_id"]
            .as_str()
            .expect("a visitor id")
            .to_string();
        let mut mine = cloud_event();
        mine["visitor_id"] = json!(visitor);
        for _ in 0..3 {
            mine["event_id"] = json!(uuid::Uuid::new_v4().to_string());
            assert_eq!(
                post_event(&h, Some(&accepted), &mine).await,
                StatusCode::NO_CONTENT
            );
        }
        // An id the Accept All did not name is not stored under it.
        assert_eq!(
            post_event(&h, Some(&accepted), &cloud_event()).await,
            StatusCode::NO_CONTENT
        );
        // Another visitor's events, which stay.
        let (other_answer, other) = choose(&h, "accept_all", false).await;
        let mut theirs = cloud_event();
        theirs["visitor_id"] = other_answer["visitor_id"].clone();
        assert_eq!(
            post_event(&h, Some(&other), &theirs).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(h.store().count_cloud_events().await.unwrap(), 4);
        // Confirming Accept All keeps the visitor; withdrawing deletes its events.
        tokio::time::sleep(std::time::Duration::from_secs(
            piperider_consent::DECISION_INTERVAL_SECS,
        ))
        .await;
        let request = Request::post("/v1/consent")
            .header("content-type", "application/json")
            .header("cookie", &accepted)
            .body(Body::from(
                json!({"choice": "necessary_only", "source": "settings"}).to_string(),
            ))
            .unwrap();
        let (status, _, body) = h.send(CLIENT_IP, request).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["state"], "denied");
        assert_eq!(answer["visitor_id"], Value::Null);
        assert_eq!(
            h.store().count_cloud_events().await.unwrap(),
            1,
            "the withdrawn visitor's events stayed, or another's went"
        );
        let left = h.query_text("SELECT visitor_id FROM cloud_events").await;
        assert_eq!(left, [other_answer["visitor_id"].as_str().unwrap()]);
        h.finish().await;
    }
);
