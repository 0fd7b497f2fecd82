//! Purposes, choices, states and the consent record.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use piperider_event::VisitorId;
use serde::{Deserialize, Serialize};

/// The version of the record's own format.
pub const FORMAT_VERSION: u8 = 1;

/// The shortest time, in seconds, between two decisions from one browser:
/// a decision made with a cookie younger than this is refused for the
/// rest of the interval. Each decision is a row of the audit trail, so a
/// page that loops, or a script that follows the cookie it is given, adds
/// at most one row per interval; a client that drops its cookie is held
/// by the per-address limit instead. No person changes their mind twice
/// in this time, and the banner retries after the wait.
pub const DECISION_INTERVAL_SECS: u64 = 2;

/// Why something is stored in the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// The session cookie: always on, needs no consent.
    Necessary,
    /// Cloud telemetry: only with Accept All.
    Telemetry,
}

/// What the visitor chose on the banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// The session cookie and Cloud telemetry.
    AcceptAll,
    /// The session cookie only.
    NecessaryOnly,
}

impl Choice {
    /// Whether this choice lets `purpose` run.
    pub fn allows(self, purpose: Purpose) -> bool {
        match purpose {
            Purpose::Necessary => true,
            Purpose::Telemetry => self == Choice::AcceptAll,
        }
    }

    /// The name on the wire and in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::AcceptAll => "accept_all",
            Choice::NecessaryOnly => "necessary_only",
        }
    }
}

/// Where a visitor stands. Pending is treated as a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// No valid, current decision: show the banner, track nothing.
    Pending,
    /// Accept All, under the current policy and within its time to live.
    Granted,
    /// Necessary Only, under the current policy and within its time to live.
    Denied,
}

/// A random id of one decision, for the audit trail. Never joined to a
/// telemetry id, an account or a CLI user.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConsentId(String);

impl ConsentId {
    /// A fresh id (a UUID v4 as 32 lowercase hex digits) for a new decision.
    pub fn random() -> Self {
        ConsentId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as stored: 32 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_well_formed(&self) -> bool {
        self.0.len() == 32
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl fmt::Debug for ConsentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConsentId({})", self.0)
    }
}

/// One decision, as the cookie carries it and the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRecord {
    /// [`FORMAT_VERSION`].
    pub v: u8,
    /// The policy version the visitor saw.
    pub policy: u32,
    /// What the visitor chose.
    pub choice: Choice,
    /// This decision's own id, which names its row in the audit trail.
    pub id: ConsentId,
    /// When the visitor chose, in seconds since the epoch (UTC).
    pub at: i64,
    /// Whether the browser sent the Global Privacy Control signal then.
    pub gpc: bool,
    /// The Cloud visitor id this Accept All named: the only id its Cloud
    /// events may carry, and the one whose events are deleted when the
    /// visitor withdraws. None for Necessary Only (and in cookies made
    /// before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor: Option<VisitorId>,
}

impl ConsentRecord {
    /// A new decision under `policy`, made `now`; an Accept All names a
    /// fresh visitor id.
    pub fn new(choice: Choice, policy: &Policy, now: DateTime<Utc>, gpc: bool) -> Self {
        Self::after(None, choice, policy, now, gpc)
    }

    /// A new decision replacing `previous` (the browser's record, if it
    /// had a valid one): an Accept All keeps the visitor id an earlier
    /// Accept All named, so a visitor who confirms is one visitor.
    pub fn after(
        previous: Option<&ConsentRecord>,
        choice: Choice,
        policy: &Policy,
        now: DateTime<Utc>,
        gpc: bool,
    ) -> Self {
        let visitor = match choice {
            Choice::AcceptAll => Some(
                previous
                    .and_then(|p| p.visitor.clone())
                    .unwrap_or_else(VisitorId::random),
            ),
            Choice::NecessaryOnly => None,
        };
        ConsentRecord {
            v: FORMAT_VERSION,
            policy: policy.version,
            choice,
            id: ConsentId::random(),
            at: now.timestamp(),
            gpc,
            visitor,
        }
    }

    /// Whether an event of `visitor` may count under this record: the
    /// visitor it named, or any in a record made before records named one.
    pub fn admits(&self, visitor: &VisitorId) -> bool {
        self.visitor.as_ref().is_none_or(|v| v == visitor)
    }

    /// The visitor id whose Cloud events go when `self` replaces
    /// `previous`: the one `previous` named, unless `self` names it too.
    pub fn withdrawn<'a>(&self, previous: Option<&'a ConsentRecord>) -> Option<&'a VisitorId> {
        previous
            .and_then(|p| p.visitor.as_ref())
            .filter(|v| self.visitor.as_ref() != Some(*v))
    }

    /// When the visitor chose; `None` for a time out of range.
    pub fn decided_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.at, 0)
    }

    /// When the record stops counting.
    pub fn expires_at(&self, policy: &Policy) -> Option<DateTime<Utc>> {
        self.decided_at().map(|t| t + policy.ttl)
    }

    /// Seconds the browser holding this record waits before its next
    /// decision counts ([`DECISION_INTERVAL_SECS`] after this one); 0 when
    /// it may decide now. A record dated ahead of `now` waits the whole
    /// interval.
    pub fn wait_before_next(&self, now: DateTime<Utc>) -> u64 {
        let age = now.timestamp().saturating_sub(self.at);
        if age < 0 {
            return DECISION_INTERVAL_SECS;
        }
        DECISION_INTERVAL_SECS.saturating_sub(age.unsigned_abs())
    }
}

/// The consent policy in force: its version (bumping it makes every earlier
/// decision pending again) and how long a decision counts, from the moment
/// it was made (visits do not extend it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Raised when the banner's wording or the purposes change.
    pub version: u32,
    /// How long a decision counts.
    pub ttl: TimeDelta,
}

impl Policy {
    /// The default time to live: 182 days (about six months).
    pub const DEFAULT_TTL: TimeDelta = TimeDelta::days(182);

    /// Policy `version` with the default time to live.
    pub fn new(version: u32) -> Self {
        Policy {
            version,
            ttl: Self::DEFAULT_TTL,
        }
    }
}

/// How far a decision's time may lie ahead of ours before it is not believed.
const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// The state a record puts a visitor in now.
pub fn state(record: Option<&ConsentRecord>, policy: &Policy, now: DateTime<Utc>) -> ConsentState {
    let Some(record) = record else {
        return ConsentState::Pending;
    };
    let Some(decided) = record.decided_at() else {
        return ConsentState::Pending;
    };
    let current = record.v == FORMAT_VERSION
        && record.policy == policy.version
        && record.id.is_well_formed()
        && decided <= now + CLOCK_SKEW
        && now < decided + policy.ttl;
    if !current {
        return ConsentState::Pending;
    }
    match record.choice {
        Choice::AcceptAll => ConsentState::Granted,
        Choice::NecessaryOnly => ConsentState::Denied,
    }
}
