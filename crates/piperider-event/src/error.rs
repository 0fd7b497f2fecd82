//! Why an event was refused, with the field that broke the rule.

use std::fmt;

/// One broken rule: the JSON path of the offending field (`stats.rows`,
/// `platform.os`, or `.` for the event itself) and why it was refused.
///
/// The reason never repeats the offending value: values can be large or hold
/// things that must not end up in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The JSON path of the field that broke the rule.
    pub field: String,
    /// The rule, in words; never the value.
    pub reason: String,
}

impl Violation {
    /// A broken rule of `field`; `reason` must not quote the value.
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
    TooLarge {
        /// The event's size in bytes.
        size: usize,
        /// The most bytes an event may have.
        limit: usize,
    },
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

/// Turns a serde error with its path into a [`Violation`] naming the field,
/// with none of the input in it: serde quotes unknown fields and variants
/// and the values it could not read, and those are the client's bytes.
pub(crate) fn shape_error(err: serde_path_to_error::Error<serde_json::Error>) -> EventError {
    let mut path = err.path().to_string();
    let message = without_input(&err.into_inner().to_string());
    // An unknown field's path ends in the field's own (client-chosen) name.
    if message.starts_with("unknown field") {
        path = path
            .rfind('.')
            .map_or(String::new(), |i| path[..i].to_string());
    }
    let field = if path.is_empty() {
        ".".to_string()
    } else {
        path
    };
    EventError::Shape(Violation::new(field, message))
}

/// serde_json's message without the parts that repeat the input: the
/// quoted unknown field or variant, the value it could not read, what it
/// found; and without " at line L column C" (the field path says more).
fn without_input(message: &str) -> String {
    let message = message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i]);
    for what in ["unknown field", "unknown variant"] {
        if let Some(rest) = message
            .strip_prefix(what)
            .and_then(|r| r.strip_prefix(" `"))
        {
            // serde's own text: ", expected ..." or ", there are no ..." (the last one).
            let tail = ["`, expected ", "`, there are no "]
                .iter()
                .find_map(|t| rest.rfind(t))
                .map_or("", |i| &rest[i + 1..]);
            return format!("{what}{tail}");
        }
    }
    for what in ["invalid value", "invalid type"] {
        if let Some(rest) = message
            .strip_prefix(what)
            .and_then(|r| r.strip_prefix(": "))
        {
            // "<kind> <the value>, expected <what>": the kind's first word and what was expected.
            let kind: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            let expected = rest.rfind(", expected ").map_or("", |i| &rest[i..]);
            return format!("{what}: {kind}{expected}");
        }
    }
    // Other parsers (ids, timestamps) may say what they found; keep what they wanted.
    let message = message.find(", found").map_or(message, |i| &message[..i]);
    message.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::without_input;

    #[test]
    fn serde_messages_lose_the_input() {
        for (message, want) in [
            (
                "unknown variant `se`cr`, et`, expected one of `ok`, `error` at line 1 column 9",
                "unknown variant, expected one of `ok`, `error`",
            ),
            (
                "unknown field `secret`, expected `os` or `arch`",
                "unknown field, expected `os` or `arch`",
            ),
            (
                "unknown field `secret`, there are no fields",
                "unknown field, there are no fields",
            ),
            (
                "invalid type: string \"secret, expected x\", expected u64",
                "invalid type: string, expected u64",
            ),
            (
                "invalid value: integer `-7`, expected u64",
                "invalid value: integer, expected u64",
            ),
            (
                "UUID parsing failed: invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `Z` at 1",
                "UUID parsing failed: invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-]",
            ),
        ] {
            assert_eq!(without_input(message), want);
            assert!(!without_input(message).contains("secret"));
        }
    }
}
