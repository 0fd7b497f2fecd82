//! The HTTP edge: every route, and every rule that holds across routes as
//! one layer or one extractor.
//!
//! - Client routes (`/v1/batch`, `/v1/deletion-requests`, `/v1/consent`,
//!   `/v1/cloud/events`, `/v1/users/{user_id}`, `/admin/login`, the public
//!   summary and page) are admitted (`admission`) by the one outer layer: the
//!   client's address under one proxy-trust rule, its rate limit, the body
//!   limit.
//! - Admin routes take the `auth::Admin` extractor.
//! - Inputs come through the `body` extractors; every refusal, an unknown
//!   route or method and a timeout included, is the one JSON error shape.
//! - Every request is counted and timed, and given at most the configured
//!   time, its refusal then in the one shape too: the same layer around
//!   every route (`outer`).
//!
//! The route list is written once, in [`app`]; [`routes`] reads it back so a
//! test can hold it against `/openapi.json`.

mod admission;
mod auth;
pub(crate) mod body;
mod outer;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

pub(crate) use admission::{Client, Limits, canonical};
pub(crate) use auth::{Admin, Failures, SESSION_TTL, Sessions, session_cookie, session_of};
#[cfg(any(test, feature = "fuzzing"))]
pub use body::gunzip_now;
pub(crate) use body::{Form, Json, JsonBody, PathText, Query};

use crate::error::ApiError;
use crate::state::AppState;
use crate::{admin, cloud, dashboard, ingest, openapi, public};

/// Whether a route faces anonymous clients (admission) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Face {
    Client,
    Other,
}

/// One method of one route.
struct Entry {
    path: &'static str,
    method: &'static str,
    /// `method`, parsed.
    http_method: axum::http::Method,
    face: Face,
    route: MethodRouter<AppState>,
}

fn entry<H, T>(method: &'static str, path: &'static str, face: Face, handler: H) -> Entry
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let http_method = axum::http::Method::from_bytes(method.as_bytes())
        .expect("the table names standard methods");
    let filter =
        MethodFilter::try_from(http_method.clone()).expect("the table names standard methods");
    Entry {
        path,
        method,
        http_method,
        face,
        route: on(filter, handler),
    }
}

/// The service's routes, written once.
fn table() -> Vec<Entry> {
    use Face::{Client, Other};
    vec![
        entry("POST", "/v1/batch", Client, ingest::batch),
        entry(
            "POST",
            "/v1/deletion-requests",
            Client,
            ingest::deletion_request,
        ),
        entry("GET", "/v1/users/{user_id}", Client, ingest::held),
        entry("POST", "/v1/consent", Client, cloud::decide),
        entry("GET", "/v1/consent", Client, cloud::current),
        entry("GET", "/v1/consent/receipt", Client, cloud::receipt),
        entry("POST", "/v1/cloud/events", Client, cloud::event),
        entry("POST", "/admin/login", Client, dashboard::login),
        entry("GET", "/v1/public/summary", Client, public::summary),
        entry("GET", "/public", Client, public::page),
        entry("GET", "/admin", Other, dashboard::page),
        entry("POST", "/admin/logout", Other, dashboard::logout),
        entry("GET", "/v1/admin/stats", Other, admin::stats),
        entry("GET", "/v1/admin/charts", Other, admin::charts),
        entry("GET", "/v1/admin/charts/{name}", Other, admin::chart),
        entry("GET", "/admin/charts/{name}", Other, admin::chart),
        entry("GET", "/v1/admin/users/{user_id}", Other, admin::user),
        entry(
            "GET",
            "/v1/admin/consent-records",
            Other,
            admin::consent_records,
        ),
        entry(
            "DELETE",
            "/v1/admin/users/{user_id}",
            Other,
            admin::delete_user,
        ),
        entry("GET", "/consent.js", Other, consent_script),
        entry("GET", "/healthz", Other, || async { "ok" }),
        entry("GET", "/readyz", Other, readyz),
        entry("GET", "/metrics", Other, metrics_text),
        entry("GET", "/openapi.json", Other, || async {
            axum::Json(openapi::document())
        }),
    ]
}

/// Every route as (path, method in upper case), in the router's order:
/// what a test holds against `/openapi.json`.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|e| (e.path, e.method)).collect()
}

/// The client routes' paths (those the outer layer admits first).
pub fn client_routes() -> Vec<(&'static str, &'static str)> {
    table()
        .into_iter()
        .filter(|e| e.face == Face::Client)
        .map(|e| (e.path, e.method))
        .collect()
}

/// The router: ingestion, privacy, Cloud, admin and operations endpoints.
pub fn app(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    let mut paths: BTreeMap<&str, MethodRouter<AppState>> = BTreeMap::new();
    let mut clients = Vec::new();
    for e in table() {
        if e.face == Face::Client {
            // A GET route answers HEAD too (axum), so HEAD is admitted with it.
            if e.http_method == axum::http::Method::GET {
                clients.push((e.path, axum::http::Method::HEAD));
            }
            clients.push((e.path, e.http_method));
        }
        let merged = match paths.remove(e.path) {
            Some(other) => other.merge(e.route),
            None => e.route,
        };
        paths.insert(e.path, merged);
    }
    let mut router = Router::new();
    for (path, methods) in paths {
        router = router.route(
            path,
            methods.fallback(|| async { ApiError::MethodNotAllowed }),
        );
    }
    router
        .fallback(|| async { ApiError::NoRoute })
        .layer(outer::OuterLayer {
            app: state.clone(),
            timeout,
            clients: clients.into(),
        })
        .with_state(state)
}

async fn consent_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        piperider_consent::BROWSER_SCRIPT,
    )
        .into_response()
}

/// Ready when the database answers and a write could start (SQLite's
/// write lock can be taken), within two seconds.
async fn readyz(State(app): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), app.store.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        _ => ApiError::Unavailable {
            retry_after_secs: 5,
        }
        .into_response(),
    }
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
