//! Identifiers on the wire: users, projects, devices, Cloud visitors, events.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::Violation;

/// The idempotency key of an event, made by the client (a UUID; the nil UUID is refused).
pub type EventId = uuid::Uuid;

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

macro_rules! hex_id {
    ($name:ident, $min:literal ..= $max:literal, $pattern:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh random id (a UUID v4 as 32 lowercase hex digits).
            pub fn random() -> Self {
                $name(uuid::Uuid::new_v4().simple().to_string())
            }

            /// The id as sent: lowercase hex digits.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Violation;
            fn try_from(s: String) -> Result<Self, Violation> {
                if (($min)..=($max)).contains(&s.len()) && is_lower_hex(&s) {
                    Ok($name(s))
                } else {
                    Err(Violation::new(
                        ".",
                        concat!("must match ", $pattern),
                    ))
                }
            }
        }

        impl FromStr for $name {
            type Err = Violation;
            fn from_str(s: &str) -> Result<Self, Violation> {
                Self::try_from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $doc,
                })
            }
        }
    };
}

hex_id!(
    UserId,
    32..=32,
    "^[0-9a-f]{32}$",
    "A CLI user: a UUID v4 as 32 lowercase hex digits, kept in `profile.yml` as `user_id`."
);
hex_id!(
    ProjectId,
    32..=32,
    "^[0-9a-f]{32}$",
    "A project: a UUID v4 as 32 lowercase hex digits, kept in `.piperider/config.yml` as `telemetry.id`."
);
hex_id!(
    DeviceId,
    32..=64,
    "^[0-9a-f]{32,64}$",
    "A device: the SHA-256 of the machine id with an app-specific salt (64 hex digits), or a random id kept in the profile where no machine id exists (32 hex digits)."
);
hex_id!(
    VisitorId,
    32..=32,
    "^[0-9a-f]{32}$",
    "A Cloud visitor who chose Accept All: random, 32 lowercase hex digits, deleted on withdrawal, never joined to a consent id or a CLI user id."
);

impl DeviceId {
    /// The device id made by hashing: a SHA-256 digest as 64 lowercase hex digits.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        use std::fmt::Write;
        let mut s = String::with_capacity(64);
        for b in digest {
            let _ = write!(s, "{b:02x}");
        }
        DeviceId(s)
    }
}
