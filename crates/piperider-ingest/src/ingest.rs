//! `POST /v1/batch` and `POST /v1/deletion-requests`.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use piperider_event::{
    BatchResponse, CliEvent, DeletionRequest, EventError, EventResult, RawBatch, ResultStatus,
    WireEvent, limits,
};

use crate::error::ApiError;
use crate::geo::{Place, client_ip};
use crate::store::{EventRow, QuarantineRow, Written};
use crate::{AppState, hash_user};

/// Largest request body as sent (gzip or not).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest body after decompression.
pub(crate) const MAX_DECOMPRESSED_BYTES: usize = 8 * 1024 * 1024;
/// How much of an invalid event the quarantine keeps.
const EXCERPT_BYTES: usize = 1024;

/// Reads a JSON body: size-limited, gzip decompressed with a cap while
/// streaming (a gzip bomb stops at the cap), JSON content type required.
pub(crate) async fn read_json_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    const JSON: &str = "application/json";
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start();
    if !content_type
        .get(..JSON.len())
        .is_some_and(|t| t.eq_ignore_ascii_case(JSON))
    {
        return Err(ApiError::UnsupportedMediaType(
            "send Content-Type: application/json".into(),
        ));
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim();
    let gzip = encoding.eq_ignore_ascii_case("gzip");
    if !gzip && !encoding.eq_ignore_ascii_case("identity") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding `{encoding}` is not supported (gzip or none)"
        )));
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > MAX_BODY_BYTES
    {
        return Err(ApiError::TooLarge(format!(
            "the body is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let raw: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::TooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"))
        })?;
    let bytes = if gzip {
        let mut out = Vec::new();
        let mut decoder =
            flate2::read::GzDecoder::new(&raw[..]).take(MAX_DECOMPRESSED_BYTES as u64 + 1);
        decoder
            .read_to_end(&mut out)
            .map_err(|_| ApiError::BadRequest("the body is not valid gzip".into()))?;
        if out.len() > MAX_DECOMPRESSED_BYTES {
            return Err(ApiError::TooLarge(format!(
                "the body decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"
            )));
        }
        Bytes::from(out)
    } else {
        raw
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the body is empty".into()));
    }
    Ok(bytes)
}

fn excerpt(raw: &[u8]) -> String {
    let end = raw.len().min(EXCERPT_BYTES);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn reason_label(err: &EventError) -> &'static str {
    match err {
        EventError::TooLarge { .. } => "too_large",
        EventError::Shape(_) => "shape",
        EventError::Invalid(_) => "invalid",
        _ => "other",
    }
}

fn row(event: CliEvent, place: &Place, received_at: i64) -> EventRow {
    let (project_id, datasource_type) = match event.project {
        Some(p) => (Some(p.project_id.into()), p.datasource_type),
        None => (None, None),
    };
    EventRow {
        event_id: event.event_id.to_string(),
        received_at,
        ts: event.timestamp.timestamp_millis(),
        day: crate::store::day(event.timestamp),
        event_type: event.event_type.to_string(),
        user_id: event.user_id.into(),
        device_id: event.device_id.into(),
        os: event.platform.os,
        arch: event.platform.arch,
        os_version: event.platform.os_version,
        runtime_name: event.runtime.name,
        runtime_version: event.runtime.version,
        app_version: event.app_version,
        initial_version: event.initial_version,
        ci: event.ci,
        project_id,
        datasource_type,
        stats: event.stats.map(|s| {
            [
                s.tables,
                s.columns,
                s.rows,
                s.builtin_assertions,
                s.custom_assertions,
                s.passed_assertions,
                s.failed_assertions,
            ]
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        }),
        status: event.outcome.status.as_str().to_string(),
        duration_ms: i64::try_from(event.outcome.duration_ms).unwrap_or(i64::MAX),
        country: place.country.clone(),
        region: place.region.clone(),
    }
}

/// What every client request goes through first: the client's address
/// (through trusted proxies only), its rate limit, and a JSON body read
/// within the limits. The address is returned for the geo lookup only.
async fn admit(
    app: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<(std::net::IpAddr, Bytes), ApiError> {
    let ip = client_ip(peer, headers, &app.config.trusted_proxies);
    app.limits.check_ip(ip)?;
    let bytes = read_json_body(headers, body).await?;
    Ok((ip, bytes))
}

/// `POST /v1/batch`: each event accepted, duplicate or rejected, in input order.
pub(crate) async fn batch(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (ip, bytes) = admit(&app, peer, &headers, body).await?;
    let batch = RawBatch::parse(&bytes)
        .map_err(|v| ApiError::BadRequest(format!("{}: {}", v.field, v.reason)))?;
    if batch.events.len() > limits::MAX_BATCH_EVENTS {
        return Err(ApiError::TooLarge(format!(
            "{} events in one batch; at most {} are taken",
            batch.events.len(),
            limits::MAX_BATCH_EVENTS
        )));
    }
    // The address is used here, for the lookup, and nowhere else.
    let place = app.geo.lookup(ip);

    let now = chrono::Utc::now();
    let received_at = now.timestamp_millis();
    let mut results: Vec<Option<EventResult>> = Vec::with_capacity(batch.events.len());
    let mut rows = Vec::new();
    let mut slots = Vec::new();
    let mut ids = Vec::new();
    let mut quarantine = Vec::new();
    for (i, raw) in batch.events.iter().enumerate() {
        let raw = raw.get().as_bytes();
        match CliEvent::parse(raw, now) {
            Ok(event) => {
                slots.push(i);
                ids.push(event.event_id);
                rows.push(row(event, &place, received_at));
                results.push(None);
            }
            Err(err) => {
                app.metrics.count_event("rejected", reason_label(&err));
                let (field, reason) = match &err {
                    EventError::Shape(v) | EventError::Invalid(v) => {
                        (v.field.clone(), v.reason.clone())
                    }
                    other => (".".to_string(), other.to_string()),
                };
                quarantine.push(QuarantineRow {
                    received_at,
                    field: field.clone(),
                    reason: reason.clone(),
                    size: raw.len() as i64,
                    excerpt: excerpt(raw),
                });
                let event_id = serde_json::from_slice::<serde_json::Value>(raw)
                    .ok()
                    .and_then(|v| v.get("event_id")?.as_str()?.parse().ok());
                results.push(Some(EventResult {
                    event_id,
                    status: ResultStatus::Rejected,
                    field: Some(field),
                    reason: Some(reason),
                }));
            }
        }
    }
    let users: BTreeSet<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
    for user in &users {
        app.limits.check_user(user)?;
    }
    let hashes: HashMap<String, String> = users
        .iter()
        .map(|u| (u.to_string(), hash_user(&app.salt, u)))
        .collect();
    if !rows.is_empty() || !quarantine.is_empty() {
        let written = app
            .writer
            .write(rows, hashes, quarantine)
            .await
            .map_err(|()| ApiError::Unavailable {
                retry_after_secs: 5,
            })?;
        for ((slot, outcome), id) in slots.into_iter().zip(written).zip(ids) {
            let (status, reason) = match outcome {
                Written::Accepted => (ResultStatus::Accepted, None),
                Written::Duplicate => (ResultStatus::Duplicate, None),
                Written::DeletedUser => (
                    ResultStatus::Rejected,
                    Some("this user asked for deletion; events for it are not stored".to_string()),
                ),
            };
            let label = match outcome {
                Written::Accepted => ("accepted", "stored"),
                Written::Duplicate => ("duplicate", "seen_before"),
                Written::DeletedUser => ("dropped", "deleted_user"),
            };
            app.metrics.count_event(label.0, label.1);
            results[slot] = Some(EventResult {
                event_id: Some(id),
                status,
                field: reason.as_ref().map(|_| "user_id".to_string()),
                reason,
            });
        }
    }
    let results: Vec<EventResult> = results.into_iter().flatten().collect();
    let all_rejected =
        !results.is_empty() && results.iter().all(|r| r.status == ResultStatus::Rejected);
    // A batch of nothing but invalid events is a bad request; the body still says why, event by event.
    let status = if all_rejected {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(BatchResponse { results })).into_response())
}

/// `POST /v1/deletion-requests`: deletes everything stored for a user id
/// and drops events for it that arrive later.
pub(crate) async fn deletion_request(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (_, bytes) = admit(&app, peer, &headers, body).await?;
    let request: DeletionRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"user_id\": \"<32 hex digits>\"}}: {e}"
        ))
    })?;
    app.delete_user(request.user_id.as_str()).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
