//! What every event shares (version, id, time, the parse-and-validate path)
//! and the batch envelope `{"events": [...]}`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::shape_error;
use crate::limits::{MAX_AGE, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, MAX_FUTURE_SKEW};
use crate::{EventError, EventId, SCHEMA_VERSION, Violation};

/// What the backend needs of any event type.
pub trait WireEvent: Serialize + DeserializeOwned + JsonSchema {
    /// The id the backend stores once: resends of an event are duplicates.
    fn event_id(&self) -> EventId;

    /// When the event happened, checked against the receiver's clock.
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
        // Bytes that are not UTF-8 fail below, named.
        let event: Self = match read_json(raw) {
            Some(event) => event,
            None => {
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

/// `bytes` read as JSON when they are UTF-8 and JSON of a `T`, else
/// `None` (the caller reads them again to say what is wrong). Checked as
/// UTF-8 once and read as text: a fifth faster than serde_json's reading
/// of bytes, which checks each string as UTF-8 again.
///
/// ```
/// let n: Option<u32> = piperider_event::read_json(b"7");
/// assert_eq!(n, Some(7));
/// assert_eq!(piperider_event::read_json::<u32>(b"\xff"), None);
/// ```
pub fn read_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()
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
    /// At most 500 events (`MAX_BATCH_EVENTS`), answered one result each, in this order.
    #[schemars(length(max = crate::limits::MAX_BATCH_EVENTS))]
    pub events: Vec<E>,
}

impl<E: WireEvent> Batch<E> {
    /// The events of a body in which every event is valid, read in one
    /// pass; `None` when anything in it is wrong, or the body is larger
    /// than one event may be. A receiver then reads it the long way
    /// ([`RawBatch::parse`], then [`WireEvent::parse`] for each event),
    /// which says what is wrong event by event.
    ///
    /// Whatever this accepts, the long way accepts as the same events:
    /// the envelope and each event go through the same `Deserialize` and
    /// [`WireEvent::validate`], and no event of a body within
    /// [`MAX_EVENT_BYTES`] can be over that limit. It saves the long way's
    /// first pass, which keeps each event's raw JSON for a rejection that a
    /// valid body never needs.
    pub fn parse_valid(body: &[u8], now: DateTime<Utc>) -> Option<Vec<E>> {
        if body.len() > MAX_EVENT_BYTES {
            return None;
        }
        let batch: Batch<E> = read_json(body)?;
        let valid = batch.events.len() <= MAX_BATCH_EVENTS
            && batch.events.iter().all(|e| e.validate(now).is_ok());
        valid.then_some(batch.events)
    }
}

/// A batch as a receiver first reads it: the envelope checked, each event
/// kept as raw JSON so that one bad event does not spoil its neighbours.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch<'a> {
    /// The events, at most one more than [`MAX_BATCH_EVENTS`]: past that
    /// the rest are read over without being kept, so an envelope of
    /// millions of tiny entries costs no more memory than one too many.
    /// `events.len() > MAX_BATCH_EVENTS` means the batch is too large.
    #[serde(borrow, deserialize_with = "at_most_one_too_many")]
    pub events: Vec<&'a RawValue>,
}

/// Keeps the first `MAX_BATCH_EVENTS + 1` entries of the array and skips
/// the others (still checking that they are JSON).
fn at_most_one_too_many<'de, D>(deserializer: D) -> Result<Vec<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Capped;
    impl<'de> serde::de::Visitor<'de> for Capped {
        type Value = Vec<&'de RawValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of events")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut events =
                Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH_EVENTS + 1));
            while events.len() <= MAX_BATCH_EVENTS {
                match seq.next_element()? {
                    Some(event) => events.push(event),
                    None => return Ok(events),
                }
            }
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(events)
        }
    }
    deserializer.deserialize_seq(Capped)
}

impl<'a> RawBatch<'a> {
    /// Reads the envelope. An error here means the whole body is unusable
    /// (not JSON, not an object, no `events` array).
    pub fn parse(body: &'a [u8]) -> Result<Self, Violation> {
        // As for events: the path is tracked only to explain a failure.
        if let Some(batch) = read_json(body) {
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

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn the_envelope_keeps_at_most_one_event_too_many() {
        let mut body = String::from("{\"events\":[0");
        body.push_str(&",{\"x\":[1,2]}".repeat(100_000));
        body.push_str("]}");
        let batch = RawBatch::parse(body.as_bytes()).unwrap();
        assert_eq!(batch.events.len(), MAX_BATCH_EVENTS + 1);
        assert!(batch.events.capacity() < 2 * (MAX_BATCH_EVENTS + 1));
        let exact = format!("{{\"events\":[{}]}}", vec!["0"; MAX_BATCH_EVENTS].join(","));
        assert_eq!(
            RawBatch::parse(exact.as_bytes()).unwrap().events.len(),
            MAX_BATCH_EVENTS
        );
        // What is skipped must still be JSON.
        let broken = format!("{{\"events\":[{}, nope]}}", vec!["0"; 600].join(","));
        assert!(RawBatch::parse(broken.as_bytes()).is_err());
    }
}
