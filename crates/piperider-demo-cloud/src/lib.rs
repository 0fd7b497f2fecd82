//! A small PipeRider-Cloud-like site, served beside the backend by the
//! `piperider-demo-cloud` binary (`cargo xtask dev`), so a person or a
//! browser test can perform every tracked action: log in and out (a
//! strictly necessary, HttpOnly session cookie), a report list with upload
//! and share, a comparison with a choice of sources, a historical trend
//! with a metric selector, a profile page and a feedback form. Every page
//! loads `/consent.js` and names its route template in `data-route`.

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

const SESSION_COOKIE: &str = "piperider_session";

fn logged_in(headers: &HeaderMap) -> bool {
    let values = headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok());
    piperider_consent::cookie_value(values, SESSION_COOKIE).is_some_and(|v| !v.is_empty())
}

fn page(route: &str, title: &str, headers: &HeaderMap, body: &str) -> Html<String> {
    let account = if logged_in(headers) {
        r#"<form method="post" action="/logout" data-track="logout" class="inline"><button type="submit" id="logout">Log out</button></form>"#
    } else {
        r#"<a href="/login" id="login-link">Log in</a>"#
    };
    Html(format!(
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · PipeRider Cloud (demo)</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;margin:0}}header,main,footer{{padding:.75rem 1.5rem}}header{{background:#1f2a44;color:#fff}}
header a,header button{{color:#fff;margin-right:1rem}}.inline{{display:inline}}#consent-banner{{position:fixed;bottom:0;left:0;right:0;background:#fff;border-top:2px solid #1f2a44;padding:1rem 1.5rem}}
.consent-choice{{font:inherit;padding:.5rem 1.2rem;margin-right:.5rem;border:1px solid #1f2a44;background:#fff;color:#1f2a44;border-radius:4px}}</style>
<script src="/consent.js" defer></script></head>
<body data-route="{route}"><header><b>PipeRider Cloud</b> (demo) · <a href="/">Reports</a><a href="/compare">Compare</a><a href="/trend">Trend</a><a href="/profile">Profile</a><a href="/feedback">Feedback</a>{account}</header>
<main><h1>{title}</h1>{body}</main>
<footer><a href="#" id="cookie-settings">Cookie settings</a></footer></body></html>"##
    ))
}

async fn home(headers: HeaderMap) -> Html<String> {
    page(
        "/",
        "Reports",
        &headers,
        r#"<ul><li><a href="/reports/1" id="report-1">Warehouse run, Nov 29</a></li><li><a href="/reports/2">Warehouse run, Nov 30</a></li></ul>
<form method="post" action="/demo/submit?next=/" data-track="upload_report"><button type="submit" id="upload">Upload a report</button></form>"#,
    )
}

async fn login_page(headers: HeaderMap) -> Html<String> {
    page(
        "/login",
        "Log in",
        &headers,
        r#"<form method="post" action="/login" data-track="login"><label>Email <input name="email" id="email" value="ada@example.com"></label> <button type="submit" id="login">Log in</button></form>"#,
    )
}

async fn report(headers: HeaderMap, Path(id): Path<u32>) -> Html<String> {
    page(
        "/reports/:id",
        &format!("Report {id}"),
        &headers,
        r#"<p>Tables: 2 · Rows: 30 · Assertions: 5 passed, 1 failed</p><button type="button" id="share" data-track="share_report">Share</button>"#,
    )
}

async fn compare(headers: HeaderMap) -> Html<String> {
    page(
        "/compare",
        "Compare reports",
        &headers,
        r#"<form method="post" action="/demo/submit?next=/compare" data-track="compare_reports">
<select data-source id="base"><option>upload</option><option>cli</option></select>
<select data-source id="target"><option>cli</option><option>upload</option></select>
<button type="submit" id="compare" data-track="comparison_sources">Compare</button></form>"#,
    )
}

async fn trend(headers: HeaderMap) -> Html<String> {
    page(
        "/trend",
        "Historical trend",
        &headers,
        r#"<label>Metric <select id="metric" data-track="trend_metric_selected"><option>row_count</option><option>null_ratio</option><option>failed_assertions</option></select></label>"#,
    )
}

async fn profile(headers: HeaderMap) -> Html<String> {
    page(
        "/profile",
        "Profile",
        &headers,
        r#"<form method="post" action="/demo/submit?next=/profile" data-track="update_profile"><label>Name <input id="name" value="Ada"></label> <button type="submit" id="save-profile">Save</button></form>"#,
    )
}

async fn feedback(headers: HeaderMap) -> Html<String> {
    page(
        "/feedback",
        "Feedback",
        &headers,
        r#"<button type="button" id="open-feedback" data-track="open_feedback_form" onclick="document.getElementById('feedback-form').hidden=false">Give feedback</button>
<form id="feedback-form" hidden method="post" action="/demo/submit?next=/feedback" data-track="submit_feedback"><textarea id="feedback-text">Nice.</textarea><button type="submit" id="send-feedback">Send</button></form>"#,
    )
}

fn session_cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

async fn login() -> Response {
    let mut r = Redirect::to("/").into_response();
    let value = uuid::Uuid::new_v4().simple().to_string();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&value, 86_400));
    r
}

async fn logout() -> Response {
    let mut r = Redirect::to("/").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0));
    r
}

#[derive(Debug, Deserialize)]
struct Next {
    next: String,
}

async fn submit(Query(next): Query<Next>) -> Response {
    if is_own_page(&next.next) {
        Redirect::to(&next.next).into_response()
    } else {
        StatusCode::BAD_REQUEST.into_response()
    }
}

/// Only a path of this site's own pages: `/` and lowercase segments.
/// Browsers read `/\evil.com` and `//evil.com` as another site, so no
/// backslash, second slash, scheme, escape or query gets through.
fn is_own_page(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && next.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'/' | b'-' | b'_')
        })
}

/// The demo site's routes.
/// The site's pages and form actions, to merge into the service's router.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/reports/{id}", get(report))
        .route("/compare", get(compare))
        .route("/trend", get(trend))
        .route("/profile", get(profile))
        .route("/feedback", get(feedback))
        .route("/demo/submit", post(submit))
}

#[cfg(test)]
mod tests {
    use super::is_own_page;

    #[test]
    fn redirects_stay_on_the_site() {
        for own in ["/", "/compare", "/profile", "/feedback"] {
            assert!(is_own_page(own), "{own}");
        }
        for other in [
            "/\\evil.com",
            "//evil.com",
            "https://evil.com",
            "/%5Cevil.com",
            "/\t/evil.com",
            "evil.com",
            "",
        ] {
            assert!(!is_own_page(other), "{other}");
        }
    }
}
