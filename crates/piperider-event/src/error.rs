//! Why an event was refused, with the field that broke the rule.

use std::fmt;

/// One broken rule: the JSON path of the offending field (`stats.rows`,
/// `platform.os`, or `.` for the event itself) and why it was refused.
///
/// The reason never repeats the offending value: values can be large or hold
/// things that must not end up in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub reason: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Violation {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Violation {}

/// Why one raw event could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The serialized event is larger than [`crate::limits::MAX_EVENT_BYTES`].
    #[error("event is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The JSON does not have the shape of an event (wrong type, missing or unknown field).
    #[error("{0}")]
    Shape(Violation),
    /// The event has the right shape but breaks a rule (limits, timestamps, consistency).
    #[error("{0}")]
    Invalid(Violation),
}

impl EventError {
    /// The field the error names, `.` for the whole event.
    pub fn field(&self) -> &str {
        match self {
            EventError::TooLarge { .. } => ".",
            EventError::Shape(v) | EventError::Invalid(v) => &v.field,
        }
    }
}

/// Turns a serde error with its path into a [`Violation`] naming the field.
pub(crate) fn shape_error(err: serde_path_to_error::Error<serde_json::Error>) -> EventError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let message = inner.to_string();
    // serde_json appends " at line L column C"; the field path says more.
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    let field = if path.is_empty() {
        ".".to_string()
    } else {
        path
    };
    EventError::Shape(Violation::new(field, message))
}
