//! `POST /v1/batch`, and the owner's requests: `POST /v1/deletion-requests`
//! and `GET /v1/users/{user_id}`, each with a proof of ownership.

use std::collections::BTreeSet;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use piperider_event::{
    Batch, BatchResponse, CliEvent, DeletionRequest, EventError, EventResult, OwnerAction,
    OwnerProof, RawBatch, Receipt, ResultStatus, UserId, WireEvent, limits,
};

use crate::edge::body::{self, Expected};
use crate::edge::{Client, Json, JsonBody, PathText};
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::{EventRow, Owner, QuarantineRow, Written};

fn reason_label(err: &EventError) -> &'static str {
    match err {
        EventError::TooLarge { .. } => "too_large",
        EventError::Shape(_) => "shape",
        EventError::Invalid(_) => "invalid",
        _ => "other",
    }
}

/// One batch's events sorted into what is stored and what is refused.
#[derive(Default)]
struct Sorted {
    /// Per event, its result when it was refused here.
    results: Vec<Option<EventResult>>,
    rows: Vec<EventRow>,
    /// The position of each row's event in the batch.
    slots: Vec<usize>,
    quarantine: Vec<QuarantineRow>,
    /// When the batch was received, milliseconds (every row's `received_at`).
    received_at: i64,
}

/// Sorts each event of a batch, read at `now`: a valid one becomes a row,
/// an invalid one (with why, and its raw JSON) a rejection naming its field
/// and reason, and a quarantine row.
fn sort<'a>(
    app: &AppState,
    events: impl Iterator<Item = Result<CliEvent, (EventError, &'a [u8])>>,
    client: Client,
    now: chrono::DateTime<chrono::Utc>,
) -> Sorted {
    // The address is used here, for the lookup, and nowhere else.
    let place = app.geo.lookup(client.ip);
    let received_at = now.timestamp_millis();
    let mut sorted = Sorted {
        received_at,
        ..Sorted::default()
    };
    for (i, event) in events.enumerate() {
        match event {
            Ok(event) => {
                sorted.slots.push(i);
                let (country, region) = (place.country.clone(), place.region.clone());
                sorted
                    .rows
                    .push(EventRow::new(event, country, region, received_at));
                sorted.results.push(None);
            }
            Err((err, raw)) => {
                app.metrics.count_event("rejected", reason_label(&err));
                let (field, reason) = match &err {
                    EventError::Shape(v) | EventError::Invalid(v) => {
                        (v.field.clone(), v.reason.clone())
                    }
                    other => (".".to_string(), other.to_string()),
                };
                let value = serde_json::from_slice::<serde_json::Value>(raw).ok();
                // Kept with the salted hash of its user id, so it goes with the user.
                let user_id = value
                    .as_ref()
                    .and_then(|v| v.get("user_id")?.as_str()?.parse::<UserId>().ok())
                    .map(String::from);
                sorted.quarantine.push(QuarantineRow::new(
                    received_at,
                    &field,
                    &reason,
                    raw.len(),
                    value.as_ref(),
                    user_id,
                ));
                let event_id = value.and_then(|v| v.get("event_id")?.as_str()?.parse().ok());
                sorted.results.push(Some(EventResult {
                    event_id,
                    status: ResultStatus::Rejected,
                    field: Some(field),
                    reason: Some(reason),
                }));
            }
        }
    }
    sorted
}

/// The result of a stored event, counted in the metrics.
fn result_of(app: &AppState, outcome: Written, event_id: &str) -> EventResult {
    let (status, label, reason) = match outcome {
        Written::Accepted => (ResultStatus::Accepted, ("accepted", "stored"), None),
        Written::Duplicate => (ResultStatus::Duplicate, ("duplicate", "seen_before"), None),
        Written::DeletedUser => (
            ResultStatus::Rejected,
            ("dropped", "deleted_user"),
            Some("this user asked for deletion; events for it are not stored".to_string()),
        ),
    };
    app.metrics.count_event(label.0, label.1);
    EventResult {
        event_id: event_id.parse().ok(),
        status,
        field: reason.as_ref().map(|_| "user_id".to_string()),
        reason,
    }
}

/// `POST /v1/batch`: each event accepted, duplicate or rejected, in input order.
pub(crate) async fn batch(
    State(app): State<AppState>,
    Extension(client): Extension<Client>,
    JsonBody(bytes, heavy): JsonBody,
) -> Result<Response, ApiError> {
    // A large batch is parsed on the heavy path, under the permit it was
    // decompressed with, if it was.
    let heavy = match heavy {
        Some(permit) => Some(permit),
        None if bytes.len() > body::HEAVY_BYTES => Some(body::Heavy::acquire().await?),
        None => None,
    };
    let parse = {
        let app = app.clone();
        move || -> Result<Sorted, ApiError> {
            let now = chrono::Utc::now();
            // Most bodies are valid through and through: read in one pass.
            if let Some(events) = Batch::<CliEvent>::parse_valid(&bytes, now) {
                return Ok(sort(&app, events.into_iter().map(Ok), client, now));
            }
            let batch = RawBatch::parse(&bytes)
                .map_err(|v| ApiError::BadRequest(format!("{}: {}", v.field, v.reason)))?;
            if batch.events.len() > limits::MAX_BATCH_EVENTS {
                return Err(ApiError::TooLarge(format!(
                    "more than {} events in one batch",
                    limits::MAX_BATCH_EVENTS
                )));
            }
            let events = batch.events.iter().map(|raw| {
                let raw = raw.get().as_bytes();
                CliEvent::parse(raw, now).map_err(|err| (err, raw))
            });
            Ok(sort(&app, events, client, now))
        }
    };
    let Sorted {
        mut results,
        rows,
        slots,
        quarantine,
        received_at,
    } = match heavy {
        Some(permit) => permit.run(parse).await?.0?,
        None => parse()?,
    };
    let users: BTreeSet<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
    for user in users {
        app.limits.check_user(user)?;
    }
    // Each row's id and digest, in input order, for the receipt.
    let mut digests: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.event_id.clone(), r.stored_fields().digest()))
        .collect();
    if !rows.is_empty() || !quarantine.is_empty() {
        let written = app.store.write(rows, quarantine).await?;
        let mut stored = Vec::with_capacity(digests.len());
        for ((slot, outcome), (id, digest)) in slots.into_iter().zip(written).zip(digests) {
            results[slot] = Some(result_of(&app, outcome, &id));
            if outcome == Written::Accepted {
                stored.push((id, digest));
            }
        }
        digests = stored;
    }
    let receipt = Receipt {
        received_at,
        digest: piperider_event::batch_digest(
            digests.iter().map(|(id, d)| (id.as_str(), d.as_str())),
        ),
    };
    let results: Vec<EventResult> = results.into_iter().flatten().collect();
    let all_rejected =
        !results.is_empty() && results.iter().all(|r| r.status == ResultStatus::Rejected);
    // A batch of nothing but invalid events is a bad request; the body still says why, event by event.
    let status = if all_rejected {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(BatchResponse {
            results,
            receipt: Some(receipt),
        }),
    )
        .into_response())
}

impl Expected for DeletionRequest {
    const EXPECTED: &'static str = "{\"user_id\": \"<32 hex digits>\"}";
}

/// `POST /v1/deletion-requests`: deletes everything stored for a user id
/// and drops events for it that arrive later.
pub(crate) async fn deletion_request(
    State(app): State<AppState>,
    Json(request): Json<DeletionRequest>,
) -> Result<Response, ApiError> {
    // A repeat of a deletion that was carried out (its answer lost to a
    // timeout, say) is answered as done: the asker learns it is.
    if let Standing::Live = app
        .check_owner(OwnerAction::Delete, &request.user_id, &request.proof)
        .await?
    {
        app.delete_user(request.user_id.as_str()).await?;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /v1/users/{user_id}` with the owner's proof in `Authorization`:
/// everything stored about the user (the admin API's user report). Without
/// a proof 401, with one that does not count 403, whatever is stored.
pub(crate) async fn held(
    State(app): State<AppState>,
    headers: HeaderMap,
    PathText(raw): PathText,
) -> Result<Response, ApiError> {
    let user_id: UserId = raw
        .parse()
        .map_err(|_| ApiError::BadRequest("a user id is 32 lowercase hex digits".into()))?;
    let proof = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::ProofMissing)?;
    let proof = OwnerProof::from_header(proof).ok_or(ApiError::NotProved)?;
    if let Standing::Deleted = app.check_owner(OwnerAction::Read, &user_id, &proof).await? {
        return Err(ApiError::NotFound);
    }
    let report = app
        .store
        .user_report(user_id.as_str())
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut response = axum::Json(report).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What a counted proof found: the user as stored, or already deleted.
enum Standing {
    Live,
    Deleted,
}

impl AppState {
    /// Deletes everything stored about a user (`POST /v1/deletion-requests`
    /// and the admin API's `DELETE`).
    pub(crate) async fn delete_user(&self, user_id: &str) -> Result<(), ApiError> {
        let now = chrono::Utc::now().timestamp_millis();
        let existed = self.store.delete_user(user_id, now).await?;
        if self.store.is_queue_node() {
            tracing::info!("deletion request queued for the writers");
        } else {
            tracing::info!(existed, "deletion request carried out");
        }
        Ok(())
    }

    /// Whether `proof` is the owner's of `user_id` for `action`: signed by
    /// the key bound to the id (or kept by its tombstone), within the
    /// window. A user id with no key (a CI pseudonym, or nothing stored)
    /// is never proved.
    async fn check_owner(
        &self,
        action: OwnerAction,
        user_id: &UserId,
        proof: &OwnerProof,
    ) -> Result<Standing, ApiError> {
        let (key, standing) = match self.store.owner(user_id.as_str()).await? {
            Owner::Bound(key) => (key, Standing::Live),
            Owner::Deleted(key) => (key, Standing::Deleted),
            Owner::Unknown => return Err(ApiError::NotProved),
        };
        key.verify(action, user_id, proof, chrono::Utc::now())
            .map_err(|_| ApiError::NotProved)?;
        Ok(standing)
    }
}
