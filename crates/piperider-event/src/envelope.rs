//! What every event shares (version, id, time, the parse-and-validate path)
//! and the batch envelope `{"events": [...]}`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::shape_error;
use crate::limits::{MAX_AGE, MAX_EVENT_BYTES, MAX_FUTURE_SKEW};
use crate::{EventError, EventId, SCHEMA_VERSION, Violation};

/// What the backend needs of any event type.
pub trait WireEvent: Serialize + DeserializeOwned + JsonSchema {
    fn event_id(&self) -> EventId;

    fn timestamp(&self) -> DateTime<Utc>;

    /// Checks every rule beyond the JSON shape: limits, the timestamp window
    /// around `now`, and consistency between fields.
    fn validate(&self, now: DateTime<Utc>) -> Result<(), Violation>;

    /// Reads one event from its JSON bytes and validates it: the size limit
    /// first, then the shape (naming the field that is wrong, missing or
    /// unknown), then [`WireEvent::validate`].
    fn parse(raw: &[u8], now: DateTime<Utc>) -> Result<Self, EventError> {
        if raw.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge {
                size: raw.len(),
                limit: MAX_EVENT_BYTES,
            });
        }
        // Valid events are read without tracking the path (which costs a
        // third of the parse); an invalid one is read again to name the field.
        let event: Self = match serde_json::from_slice(raw) {
            Ok(event) => event,
            Err(_) => {
                let mut de = serde_json::Deserializer::from_slice(raw);
                let event: Self = serde_path_to_error::deserialize(&mut de).map_err(shape_error)?;
                de.end()
                    .map_err(|e| EventError::Shape(Violation::new(".", e.to_string())))?;
                event
            }
        };
        event.validate(now).map_err(EventError::Invalid)?;
        Ok(event)
    }
}

pub(crate) fn check_envelope(
    schema_version: u8,
    event_id: EventId,
    timestamp: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Violation> {
    if schema_version != SCHEMA_VERSION {
        return Err(Violation::new(
            "schema_version",
            format!("unsupported version; this receiver speaks version {SCHEMA_VERSION}"),
        ));
    }
    if event_id.is_nil() {
        return Err(Violation::new("event_id", "must not be the nil UUID"));
    }
    if timestamp > now + MAX_FUTURE_SKEW {
        return Err(Violation::new(
            "timestamp",
            format!(
                "is more than {} hours in the future",
                MAX_FUTURE_SKEW.num_hours()
            ),
        ));
    }
    if timestamp < now - MAX_AGE {
        return Err(Violation::new(
            "timestamp",
            format!("is more than {} days in the past", MAX_AGE.num_days()),
        ));
    }
    Ok(())
}

/// A batch of events as a sender writes it: `{"events": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch<E> {
    #[schemars(length(max = crate::limits::MAX_BATCH_EVENTS))]
    pub events: Vec<E>,
}

/// A batch as a receiver first reads it: the envelope checked, each event
/// kept as raw JSON so that one bad event does not spoil its neighbours.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch<'a> {
    #[serde(borrow)]
    pub events: Vec<&'a RawValue>,
}

impl<'a> RawBatch<'a> {
    /// Reads the envelope. An error here means the whole body is unusable
    /// (not JSON, not an object, no `events` array).
    pub fn parse(body: &'a [u8]) -> Result<Self, Violation> {
        // As for events: the path is tracked only to explain a failure.
        if let Ok(batch) = serde_json::from_slice(body) {
            return Ok(batch);
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let batch: RawBatch<'a> =
            serde_path_to_error::deserialize(&mut de).map_err(|e| match shape_error(e) {
                EventError::Shape(v) => v,
                other => Violation::new(".", other.to_string()),
            })?;
        de.end().map_err(|e| Violation::new(".", e.to_string()))?;
        Ok(batch)
    }
}
