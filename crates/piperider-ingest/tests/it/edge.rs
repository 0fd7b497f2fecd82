//! The HTTP edge: every client route behind the one admission layer, the
//! route list against the OpenAPI document, and the one error shape for
//! refusals the handlers never see.

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use serde_json::Value;

use crate::{CLIENT_IP, Db, Harness, on_both};

/// A request each client route takes, as a client would send it.
fn client_request(path: &str, method: &str) -> Request<Body> {
    let (content_type, body) = match (method, path) {
        ("POST", "/admin/login") => (
            "application/x-www-form-urlencoded",
            "token=wrong".to_string(),
        ),
        ("POST", "/v1/consent") => (
            "application/json",
            r#"{"choice":"necessary_only"}"#.to_string(),
        ),
        ("POST", "/v1/deletion-requests") => (
            "application/json",
            r#"{"user_id":"0123456789abcdef0123456789abcdef"}"#.to_string(),
        ),
        ("POST", "/v1/batch") => ("application/json", r#"{"events":[]}"#.to_string()),
        ("POST", _) => ("application/json", "{}".to_string()),
        _ => ("application/json", String::new()),
    };
    Request::builder()
        .method(method)
        .uri(path.replace("{user_id}", crate::USER))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap()
}

on_both!(
    every_client_route_answers_429_once_its_address_is_over_the_limit,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |c| c.rate_limit_ip = 1).await else {
            return;
        };
        // Every route an anonymous client reaches, whatever the router says of itself.
        let routes = [
            ("/v1/batch", "POST"),
            ("/v1/deletion-requests", "POST"),
            ("/v1/users/{user_id}", "GET"),
            ("/v1/consent", "POST"),
            ("/v1/consent", "GET"),
            ("/v1/consent/receipt", "GET"),
            ("/v1/cloud/events", "POST"),
            ("/admin/login", "POST"),
            ("/v1/public/summary", "GET"),
            ("/public", "GET"),
        ];
        let mut listed = piperider_ingest::edge::client_routes();
        listed.sort();
        let mut expected = routes.to_vec();
        expected.sort();
        assert_eq!(listed, expected, "the client routes");
        for (i, (path, method)) in routes.into_iter().enumerate() {
            // Each route from an address of its own: a burst of 2 at 1 per second.
            let ip = format!("198.51.100.{}", i + 1);
            let mut statuses = Vec::new();
            for _ in 0..4 {
                let (status, headers, body) = h.send(&ip, client_request(path, method)).await;
                if status == StatusCode::TOO_MANY_REQUESTS {
                    let error: Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(error["error"], "rate_limited", "{method} {path}");
                    assert!(headers.contains_key("retry-after"), "{method} {path}");
                }
                statuses.push(status);
            }
            assert!(
                statuses[..2]
                    .iter()
                    .all(|s| *s != StatusCode::TOO_MANY_REQUESTS),
                "{method} {path}: {statuses:?}"
            );
            assert_eq!(
                statuses[3],
                StatusCode::TOO_MANY_REQUESTS,
                "{method} {path}: {statuses:?}"
            );
            // A GET route answers HEAD too, under the same limit.
            if method == "GET" {
                let head = Request::head(path.replace("{user_id}", crate::USER))
                    .body(Body::empty())
                    .unwrap();
                let (status, _, _) = h.send(&ip, head).await;
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "HEAD {path}");
            }
            // Another address is not held back by this one.
            let other = format!("203.0.113.{}", i + 1);
            let (status, _, _) = h.send(&other, client_request(path, method)).await;
            assert_ne!(
                status,
                StatusCode::TOO_MANY_REQUESTS,
                "{method} {path} from another address"
            );
        }
        h.finish().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_routes_are_the_documents_paths() {
    let Some(h) = Harness::start(Db::Sqlite, |_| {}).await else {
        return;
    };
    let (status, doc) = h.admin_get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect();
    let mut routed: Vec<(String, String)> = piperider_ingest::edge::routes()
        .into_iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(routed, documented);
    // And every routed method really answers (no 404 or 405 from the router).
    for (path, method) in routed {
        let uri = path.replace("{user_id}", "0123456789abcdef0123456789abcdef");
        let request = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = h.send("127.0.0.1", request).await;
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("\"no_route\"") && !text.contains("method_not_allowed"),
            "{method} {uri}: {status} {text}"
        );
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_outside_the_handlers_take_the_one_error_shape() {
    let Some(h) = Harness::start(Db::Sqlite, |_| {}).await else {
        return;
    };
    let cases = [
        ("GET", "/no/such/route", StatusCode::NOT_FOUND),
        ("PUT", "/v1/batch", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/v1/admin/stats?from=x", StatusCode::BAD_REQUEST),
        ("GET", "/v1/admin/stats?from=%ZZ", StatusCode::BAD_REQUEST),
        // chrono's last day, and its first: out of range, not a panic.
        (
            "GET",
            "/v1/admin/stats?to=%2B262142-12-31",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/admin/stats?from=-262144-01-01",
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/admin?to=%2B262142-12-31", StatusCode::BAD_REQUEST),
        ("GET", "/v1/admin/users/not-an-id", StatusCode::BAD_REQUEST),
    ];
    for (method, uri, expected) in cases {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", crate::ADMIN_TOKEN))
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = h.send("127.0.0.1", request).await;
        assert_eq!(status, expected, "{method} {uri}");
        assert_eq!(
            headers["content-type"], "application/json",
            "{method} {uri}"
        );
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            error["error"].is_string() && error["reason"].is_string(),
            "{method} {uri}: {error}"
        );
        assert!(
            !error["reason"].as_str().unwrap().contains("ZZ"),
            "the reason repeats the input"
        );
    }
    // A form that is not one.
    let request = Request::post("/admin/login")
        .header("content-type", "text/plain")
        .body(Body::from("token=x"))
        .unwrap();
    let (status, headers, _) = h.send(CLIENT_IP, request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(headers["content-type"], "application/json");
    h.finish().await;
}

/// A request that outlives `--request-timeout-secs` (here a body that
/// never finishes) is answered 408 in the one error shape, and counted
/// like any other answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_the_error_shape_and_is_counted() {
    let Some(h) = Harness::start(Db::Sqlite, |c| c.request_timeout_secs = 1).await else {
        return;
    };
    let first: Result<Bytes, std::io::Error> = Ok(Bytes::from_static(b"{\"events\":["));
    let never = futures_util::stream::once(async { first }).chain(futures_util::stream::pending());
    let request = Request::post("/v1/batch")
        .header("content-type", "application/json")
        .body(Body::from_stream(never))
        .unwrap();
    let started = std::time::Instant::now();
    let (status, headers, body) = h.send(CLIENT_IP, request).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(headers["content-type"], "application/json");
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"], "timeout", "{error}");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"piperider_ingest_requests_total{route="/v1/batch",status="408"} 1"#),
        "the timed-out request was not counted:\n{metrics}"
    );
    h.finish().await;
}
