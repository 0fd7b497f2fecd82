//! The public summary: off unless asked for, floors on every group,
//! distinct users (a heavy user counts once), cacheable.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;

use crate::{CLIENT_IP, Db, Harness, event, on_both};

async fn get(h: &Harness, path: &str, etag: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::get(path);
    if let Some(tag) = etag {
        request = request.header("if-none-match", tag);
    }
    let (status, headers, body) = h
        .send(CLIENT_IP, request.body(Body::empty()).unwrap())
        .await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// `n` users from England (the client address), each running `run` five
/// times in a project of their own.
async fn users(h: &Harness, first: u32, n: u32) {
    for i in first..first + n {
        let user = format!("{:032x}", 0xabc000 + i);
        let project = format!("{:032x}", 0xdef000 + i);
        let events: Vec<Value> = (0..5)
            .map(|_| {
                let mut e = event(&user);
                e["project"]["project_id"] = project.clone().into();
                e
            })
            .collect();
        let (status, body) = h.post_batch(&events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

fn dimension<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

on_both!(
    a_country_is_shown_from_ten_users_on_and_each_user_counts_once,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |c| c.public_stats = true).await else {
            return;
        };
        users(&h, 0, 9).await;
        let (status, headers, body) = get(&h, "/v1/public/summary", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let nine: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(nine["window"], "30d");
        assert_eq!(
            nine["active_users"],
            Value::Null,
            "9 users are under the floor"
        );
        let country = dimension(&nine, "country");
        assert_eq!(country["groups"], serde_json::json!([]), "{nine}");
        assert_eq!(country["other"]["users"], Value::Null);
        assert_eq!(headers["cache-control"], "public, max-age=600", "cacheable");
        let tag = headers["etag"].to_str().unwrap().to_string();
        let (status, _, _) = get(&h, "/v1/public/summary", Some(&tag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);

        users(&h, 9, 1).await;
        // The 30-day answer is cached; the 90-day one is computed now.
        let (_, _, again) = get(&h, "/v1/public/summary?window=30d", None).await;
        assert_eq!(again, body, "served from the cache");
        let (status, _, body) = get(&h, "/v1/public/summary?window=90d", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ten: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ten["active_users"], 10);
        assert_eq!(
            dimension(&ten, "country")["groups"],
            serde_json::json!([{"key": "GB", "users": 10}])
        );
        // Fifty `run` events from ten users: ten users.
        assert_eq!(
            dimension(&ten, "command")["groups"],
            serde_json::json!([{"key": "run", "users": 10}])
        );
        assert_eq!(
            dimension(&ten, "datasource_type")["groups"][0]["users"],
            10,
            "{ten}"
        );
        // A region needs twenty.
        let region = dimension(&ten, "region");
        assert_eq!(region["groups"], serde_json::json!([]));
        assert_eq!(region["other"]["users"], Value::Null);
        assert_eq!(
            ten["floors"],
            serde_json::json!({"groups": 10, "regions": 20})
        );

        let (status, headers, page) = get(&h, "/public?window=90d", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(page.contains("<th scope=row>GB</th><td>10</td>"), "{page}");
        assert!(page.contains("<b>10</b> active users"), "{page}");

        let (status, _, body) = get(&h, "/v1/public/summary?window=7d%3Cscript%3E", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(!body.contains("script"), "{body}");
        h.finish().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_summary_is_off_unless_asked_for() {
    let Some(h) = Harness::start(Db::Sqlite, |_| {}).await else {
        return;
    };
    users(&h, 0, 10).await;
    for path in ["/v1/public/summary", "/public"] {
        let (status, _, body) = get(&h, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    h.finish().await;
}
