//! What the backend answers: one result per event of a batch, in input
//! order, so a sender resends only what must be resent; and the body of a
//! deletion request.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{EventId, OwnerProof, UserId};

/// The answer to `POST /v1/batch`: `results[i]` is about `events[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchResponse {
    /// One result per event sent, in the order sent.
    pub results: Vec<EventResult>,
    /// What was stored of this batch, for the sender to check and keep;
    /// absent from a backend that does not give receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<crate::Receipt>,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventResult {
    /// The event's id, null when the event was too broken to read one.
    pub event_id: Option<EventId>,
    /// Stored now, stored before, or refused for good.
    pub status: ResultStatus,
    /// For `rejected`: the field that broke a rule (`stats.rows`, or `.` for the whole event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `rejected`: why, without repeating the offending value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(transform = crate::schema::names_enum)]
pub enum ResultStatus {
    /// Stored by this request; the sender may forget it.
    Accepted,
    /// Stored by an earlier request (same `event_id`); the sender may forget it.
    Duplicate,
    /// Refused for good (`field` and `reason` say why); resending will not help.
    Rejected,
}

/// The body of `POST /v1/deletion-requests`: delete everything stored for
/// this user, with the owner's proof (action `delete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletionRequest {
    /// The user whose events, rollups and key are deleted.
    pub user_id: UserId,
    /// The owner's signature over `delete`, this user id and a recent time.
    pub proof: OwnerProof,
}
