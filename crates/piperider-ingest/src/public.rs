//! The public summary, off unless `--public-stats`: `GET
//! /v1/public/summary?window=30d|90d|365d` (JSON) and `GET /public` (the
//! same as a page). Every group under its floor is folded into "other"
//! (see [`crate::storage::public`]). Each window's answer is computed at
//! most once per [`FRESH_FOR`] and cached, here and by anyone between
//! (`Cache-Control: public`, an `ETag`, `304` for `If-None-Match`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::TimeDelta;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::dashboard::{esc, shell};
use crate::edge::Query;
use crate::edge::body::Expected;
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::public::{PublicSummary, REGION_FLOOR};

/// How long one computed answer is served (and may be cached by others).
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(600);

/// The windows, by name and days.
const WINDOWS: [(&str, i64); 3] = [("30d", 30), ("90d", 90), ("365d", 365)];

/// `?window=30d` (the default), `90d` or `365d`.
#[derive(Debug, Deserialize)]
pub(crate) struct WindowQuery {
    window: Option<String>,
}

impl Expected for WindowQuery {
    const EXPECTED: &'static str = "?window=30d|90d|365d";
}

impl WindowQuery {
    fn window(&self) -> Result<(&'static str, i64), ApiError> {
        let asked = self.window.as_deref().unwrap_or("30d");
        WINDOWS
            .into_iter()
            .find(|(name, _)| *name == asked)
            .ok_or_else(|| ApiError::BadRequest("window must be 30d, 90d or 365d".into()))
    }
}

/// One window's answer, as served.
#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    summary: std::sync::Arc<PublicSummary>,
    json: Bytes,
    etag: HeaderValue,
}

/// The answers computed lately, one per window.
#[derive(Debug, Default)]
pub(crate) struct PublicCache(Mutex<HashMap<&'static str, Cached>>);

async fn cached(app: &AppState, q: &WindowQuery) -> Result<Cached, ApiError> {
    if !app.config.public_stats {
        return Err(ApiError::NoRoute);
    }
    let (window, days) = q.window()?;
    let fresh = app.public_cache.0.lock().ok().and_then(|c| {
        c.get(window)
            .filter(|c| c.at.elapsed() < FRESH_FOR)
            .cloned()
    });
    if let Some(hit) = fresh {
        return Ok(hit);
    }
    let to = chrono::Utc::now().date_naive();
    let from = to - TimeDelta::days(days - 1);
    let from_ms = from
        .and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_millis());
    let raw = app.store.public_counts(from, from_ms).await?;
    let summary = PublicSummary::new(window, from, to, raw);
    // Plain data: serializing it cannot fail.
    let json = Bytes::from(serde_json::to_vec(&summary).unwrap_or_default());
    let entry = Cached {
        at: Instant::now(),
        summary: std::sync::Arc::new(summary),
        etag: etag("", &json),
        json,
    };
    if let Ok(mut c) = app.public_cache.0.lock() {
        c.insert(window, entry.clone());
    }
    Ok(entry)
}

/// A strong tag of `body`: `"` `prefix` and 24 hex digits of its SHA-256 `"`.
fn etag(prefix: &str, body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{prefix}{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// The caching headers of an answer; `304` when the client has it.
fn answer(
    headers: &HeaderMap,
    entry: &Cached,
    content_type: &'static str,
    body: impl IntoResponse,
) -> Response {
    let cache = HeaderValue::from_str(&format!("public, max-age={}", FRESH_FOR.as_secs()))
        .unwrap_or(HeaderValue::from_static("public"));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == entry.etag.as_bytes());
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    };
    response.headers_mut().insert(header::CACHE_CONTROL, cache);
    response
        .headers_mut()
        .insert(header::ETAG, entry.etag.clone());
    response
}

/// `GET /v1/public/summary`.
pub(crate) async fn summary(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<WindowQuery>,
) -> Result<Response, ApiError> {
    let entry = cached(&app, &q).await?;
    Ok(answer(
        &headers,
        &entry,
        "application/json",
        entry.json.clone(),
    ))
}

/// `GET /public`: the summary as a page.
pub(crate) async fn page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<WindowQuery>,
) -> Result<Response, ApiError> {
    let entry = cached(&app, &q).await?;
    let html = render(&entry.summary);
    // The page's tag differs from the JSON's: the same answer, another form.
    let mut entry = entry;
    entry.etag = etag("page-", html.as_bytes());
    Ok(answer(&headers, &entry, "text/html; charset=utf-8", html))
}

fn title(name: &str) -> &str {
    match name {
        "platform" => "Platforms",
        "app_version" => "App versions",
        "runtime_version" => "Runtime versions",
        "datasource_type" => "Data source types",
        "country" => "Countries",
        "region" => "Regions",
        "command" => "Commands",
        other => other,
    }
}

fn number(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn render(s: &PublicSummary) -> String {
    let windows: String = WINDOWS
        .iter()
        .map(|(name, _)| {
            if *name == s.window {
                format!("<b aria-current=page>{name}</b>")
            } else {
                format!("<a href=\"/public?window={name}\">{name}</a>")
            }
        })
        .collect::<Vec<_>>()
        .join(" · ");
    let active = s
        .active_users
        .map_or_else(|| format!("fewer than {}", s.floors.groups), number);
    let mut body = format!(
        "<header><h1>PipeRider usage</h1><nav aria-label=Window>{windows}</nav></header><main>\
         <p class=kpis>{} to {}: <b>{active}</b> active users. Each figure counts distinct users, so \
         one heavy user counts once. A group with fewer than {} users ({REGION_FLOOR} for a region) \
         is shown only within \"other\".</p>",
        esc(&s.from),
        esc(&s.to),
        s.floors.groups
    );
    for d in &s.dimensions {
        body.push_str(&format!(
            "<section><table><caption><h2>{}</h2></caption><thead><tr><th scope=col>{}</th><th scope=col>users</th></tr></thead><tbody>",
            title(&d.name),
            esc(&d.name)
        ));
        for g in &d.groups {
            body.push_str(&format!(
                "<tr><th scope=row>{}</th><td>{}</td></tr>",
                esc(&g.key),
                number(g.users)
            ));
        }
        if let Some(other) = &d.other {
            let users = other
                .users
                .map_or_else(|| format!("fewer than {}", s.floors.groups), number);
            body.push_str(&format!(
                "<tr><th scope=row><i>other</i></th><td>{users}</td></tr>"
            ));
        }
        if d.groups.is_empty() && d.other.is_none() {
            body.push_str("<tr><td colspan=2 class=empty>none in this window</td></tr>");
        }
        body.push_str("</tbody></table></section>");
    }
    body.push_str("</main>");
    shell("PipeRider usage", &body).0
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(super::number(0), "0");
        assert_eq!(super::number(999), "999");
        assert_eq!(super::number(1000), "1,000");
        assert_eq!(super::number(1234567), "1,234,567");
    }
}
