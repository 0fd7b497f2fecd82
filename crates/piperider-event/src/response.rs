//! What the backend answers: one result per event of a batch, in input
//! order, so a sender resends only what must be resent; and the body of a
//! deletion request.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{EventId, OwnerProof, UserId};

/// The answer to `POST /v1/batch`: `results[i]` is about `events[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchResponse {
    pub results: Vec<EventResult>,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventResult {
    /// The event's id, null when the event was too broken to read one.
    pub event_id: Option<EventId>,
    pub status: ResultStatus,
    /// For `rejected`: the field that broke a rule (`stats.rows`, or `.` for the whole event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `rejected`: why, without repeating the offending value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `accepted`: stored now. `duplicate`: stored before (same `event_id`).
/// `rejected`: refused for good; resending it will not help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Accepted,
    Duplicate,
    Rejected,
}

/// The body of `POST /v1/deletion-requests`: delete everything stored for
/// this user, with the owner's proof (action `delete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletionRequest {
    pub user_id: UserId,
    pub proof: OwnerProof,
}
