//! PipeRider Cloud: the consent endpoints and consent-gated Cloud events.
//!
//! `POST /v1/consent` records a decision (the audit trail) and sets the
//! signed `piperider_consent` cookie; `GET /v1/consent` reads it back.
//! `POST /v1/cloud/events` stores an event only for a request whose cookie
//! holds a valid, current Accept All; for anyone else it stores nothing,
//! answers 204 all the same, and counts the drop.

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use piperider_consent::{COOKIE_NAME, Choice, ConsentRecord, ConsentState, state};
use piperider_event::{CloudEvent, EventError, WireEvent};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use crate::ingest::read_json_body;

/// The consent cookie's value in a `Cookie` header, if any.
pub(crate) fn consent_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim().to_string())
}

fn gpc(headers: &HeaderMap) -> bool {
    headers
        .get("sec-gpc")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decision {
    choice: Choice,
    /// Where the choice was made: the first-visit `banner` or the `settings` link.
    #[serde(default)]
    source: Option<String>,
}

fn answer(record: Option<&ConsentRecord>, app: &AppState) -> serde_json::Value {
    let now = chrono::Utc::now();
    let st = state(record, &app.consent_policy, now);
    json!({
        "state": st,
        "policy_version": app.consent_policy.version,
        "choice": record.filter(|_| st != ConsentState::Pending).map(|r| r.choice),
        "expires_at": record
            .filter(|_| st != ConsentState::Pending)
            .and_then(|r| r.expires_at(&app.consent_policy))
            .map(|t| t.to_rfc3339()),
    })
}

/// Whether the visitor reached the site over https: the service's own
/// setting, or a trusted proxy's `X-Forwarded-Proto`.
fn over_https(app: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    let from_trusted_proxy = app
        .config
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&peer.ip()));
    app.config.cookie_secure
        || (from_trusted_proxy
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https")))
}

/// `POST /v1/consent`.
pub(crate) async fn decide(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_json_body(&headers, body).await?;
    let decision: Decision = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"choice\": \"accept_all\" | \"necessary_only\"}}: {e}"
        ))
    })?;
    let source = match decision.source.as_deref() {
        None | Some("banner") => "banner",
        Some("settings") => "settings",
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`source` is `banner` or `settings`".into(),
            ));
        }
    };
    let now = chrono::Utc::now();
    let record = ConsentRecord::new(decision.choice, &app.consent_policy, now, gpc(&headers));
    app.store
        .append_consent(&record, &crate::store::day(now), source)
        .await
        .map_err(|e| app.storage_error(e))?;
    let mut cookie = format!(
        "{COOKIE_NAME}={}; Path=/; SameSite=Lax; Max-Age={}",
        app.consent_codec.encode(&record),
        app.consent_policy.ttl.num_seconds()
    );
    if over_https(&app, peer, &headers) {
        cookie.push_str("; Secure");
    }
    let mut response = (StatusCode::OK, axum::Json(answer(Some(&record), &app))).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /v1/consent`.
pub(crate) async fn current(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let record = consent_cookie(&headers).and_then(|c| app.consent_codec.decode(&c));
    let mut response = axum::Json(answer(record.as_ref(), &app)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /v1/cloud/events`: one Cloud event, stored only with consent.
pub(crate) async fn event(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cookie = consent_cookie(&headers);
    let now = chrono::Utc::now();
    if !piperider_consent::may_track(
        cookie.as_deref(),
        &app.consent_codec,
        &app.consent_policy,
        now,
    ) {
        // Not a word about why: the answer is the same with or without consent.
        app.metrics.count_event("dropped", "no_consent");
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let bytes = read_json_body(&headers, body).await?;
    let event = CloudEvent::parse(&bytes, now).map_err(|e| {
        app.metrics.count_event("rejected", "cloud_invalid");
        match e {
            EventError::Shape(v) | EventError::Invalid(v) => {
                ApiError::BadRequest(format!("{}: {}", v.field, v.reason))
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    })?;
    app.store
        .insert_cloud_event(&event, now.timestamp_millis())
        .await
        .map_err(|e| app.storage_error(e))?;
    app.metrics.count_event("accepted", "cloud");
    Ok(StatusCode::NO_CONTENT.into_response())
}
