//! PipeRider Cloud: the consent endpoints and consent-gated Cloud events.
//!
//! `POST /v1/consent` records a decision (the audit trail) and sets the
//! signed `piperider_consent` cookie; `GET /v1/consent` reads it back. A
//! decision sent with a cookie younger than the consent crate's interval is
//! refused (429) for the rest of it: one browser adds at most one audit row
//! per interval, whatever it repeats.
//! `POST /v1/cloud/events` stores an event only for a request whose cookie
//! holds a valid, current Accept All naming the event's visitor id;
//! withdrawing deletes that visitor's events. For anyone else it stores nothing,
//! answers 204 all the same, and counts the drop. The cookie's attributes,
//! its reading and the answer's shape are the consent crate's.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use piperider_consent::chain::DecisionKind;
use piperider_consent::{COOKIE_NAME, Choice, ConsentAnswer, ConsentRecord, ConsentState};
use piperider_event::{CloudEvent, EventError, WireEvent};
use serde::Deserialize;

use crate::edge::body::Expected;
use crate::edge::{Client, Json, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// The consent cookie's value in a request, if any.
fn consent_cookie(headers: &HeaderMap) -> Option<&str> {
    let values = headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok());
    piperider_consent::cookie_value(values, COOKIE_NAME)
}

/// Where a choice was made: the first-visit `banner` or the `settings` link.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    #[default]
    Banner,
    Settings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decision {
    choice: Choice,
    #[serde(default)]
    source: Source,
}

impl Expected for Decision {
    const EXPECTED: &'static str = "{\"choice\": \"accept_all\" | \"necessary_only\", \"source\": \"banner\" | \"settings\" (optional)}";
}

/// The JSON answer with `no-store` (it depends on the request's cookie).
fn answer(answer: ConsentAnswer) -> Response {
    let mut response = axum::Json(answer).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /v1/consent`.
pub(crate) async fn decide(
    State(app): State<AppState>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    Json(decision): Json<Decision>,
) -> Result<Response, ApiError> {
    let now = chrono::Utc::now();
    let codec = app.consent_codec().await?;
    let previous = consent_cookie(&headers).and_then(|c| codec.decode(c));
    if let Some(previous) = &previous {
        let wait = previous.wait_before_next(now);
        if wait > 0 {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: wait,
            });
        }
    }
    let gpc = piperider_consent::gpc(headers.get("sec-gpc").and_then(|v| v.to_str().ok()));
    let record = ConsentRecord::after(
        previous.as_ref(),
        decision.choice,
        &app.consent_policy,
        now,
        gpc,
    );
    // Withdrawing deletes what the Accept All let through, on the word of
    // the signed cookie that named the visitor.
    let withdrawn = record.withdrawn(previous.as_ref());
    let kind = match (record.choice, &withdrawn) {
        (piperider_consent::Choice::AcceptAll, _) => DecisionKind::AcceptAll,
        (_, Some(_)) => DecisionKind::Withdraw,
        _ => DecisionKind::NecessaryOnly,
    };
    if let Some(gone) = withdrawn {
        let deleted = app.store.delete_visitor(gone.as_str()).await?;
        tracing::info!(
            deleted,
            "consent withdrawn: the visitor's Cloud events deleted"
        );
    }
    let source = match decision.source {
        Source::Banner => "banner",
        Source::Settings => "settings",
    };
    let expires_at = record
        .expires_at(&app.consent_policy)
        .map_or(record.at, |t| t.timestamp());
    app.store
        .append_consent(&record, source, kind, expires_at)
        .await?;
    let secure = app.config.cookie_secure || client.https;
    let cookie = piperider_consent::set_cookie(codec, &record, &app.consent_policy, secure);
    let mut response =
        answer(ConsentAnswer::of(Some(&record), &app.consent_policy, now).with_gpc(gpc));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `GET /v1/consent`.
pub(crate) async fn current(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let codec = app.consent_codec().await?;
    let record = consent_cookie(&headers).and_then(|c| codec.decode(c));
    let gpc = piperider_consent::gpc(headers.get("sec-gpc").and_then(|v| v.to_str().ok()));
    Ok(answer(
        ConsentAnswer::of(record.as_ref(), &app.consent_policy, chrono::Utc::now()).with_gpc(gpc),
    ))
}

/// `GET /v1/consent/receipt`: the chain record of the decision the
/// request's (signed) consent cookie names, so a visitor can keep proof of
/// what they chose; 404 without a valid cookie.
pub(crate) async fn receipt(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let codec = app.consent_codec().await?;
    let record = consent_cookie(&headers)
        .and_then(|c| codec.decode(c))
        .ok_or(ApiError::NotFound)?;
    let links = app.store.consent_receipt(record.id.as_str()).await?;
    if links.is_empty() {
        return Err(ApiError::NotFound);
    }
    let mut response = axum::Json(serde_json::json!({ "records": links })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /v1/cloud/events`: one Cloud event, stored only with consent.
pub(crate) async fn event(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let now = chrono::Utc::now();
    let dropped = || {
        // Not a word about why: the answer is the same with or without consent.
        app.metrics.count_event("dropped", "no_consent");
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    // The cookie is read and its signature checked once: consent first,
    // before the body is read; its visitor once the event is parsed.
    let codec = app.consent_codec().await?;
    let record = consent_cookie(&headers).and_then(|c| codec.decode(c));
    let Some(record) = record.filter(|r| {
        piperider_consent::state(Some(r), &app.consent_policy, now) == ConsentState::Granted
    }) else {
        return dropped();
    };
    let JsonBody(bytes, _) = body?;
    let event = CloudEvent::parse(&bytes, now).map_err(|e| {
        app.metrics.count_event("rejected", "cloud_invalid");
        match e {
            EventError::Shape(v) | EventError::Invalid(v) => {
                ApiError::BadRequest(format!("{}: {}", v.field, v.reason))
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    })?;
    // Only the visitor the Accept All named: what withdrawing deletes.
    if !record.admits(&event.visitor_id) {
        return dropped();
    }
    app.store
        .insert_cloud_event(&event, now.timestamp_millis())
        .await?;
    app.metrics.count_event("accepted", "cloud");
    Ok(StatusCode::NO_CONTENT.into_response())
}
