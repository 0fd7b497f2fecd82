//! PipeRider Cloud consent, modelled once.
//!
//! A visitor's choice is **Accept All** (the necessary session cookie plus
//! telemetry) or **Necessary Only** (the session cookie, no telemetry). The
//! choice lives in a [`ConsentRecord`], kept in a cookie that the server sets
//! and signs ([`CookieCodec`]). [`state`] reads a record against the current
//! [`Policy`]: no record, an unsigned or edited one, one made under an older
//! policy, or one past its time to live is [`ConsentState::Pending`], and
//! pending is treated as a refusal. [`may_track`] is the one decision "may
//! this be tracked?"; the server calls it and the browser script mirrors it.
//!
//! The Global Privacy Control signal (`Sec-GPC: 1`) never grants anything: it
//! is recorded with the decision, and only an explicit Accept All grants.
//!
//! No IO: times come in as arguments.

#![warn(missing_docs)]

pub mod chain;
mod cookie;
mod http;
mod record;

pub use cookie::{COOKIE_NAME, CookieCodec};
pub use http::{ConsentAnswer, cookie_value, gpc, set_cookie};
pub use record::{
    Choice, ConsentId, ConsentRecord, ConsentState, DECISION_INTERVAL_SECS, FORMAT_VERSION, Policy,
    Purpose, state,
};

use chrono::{DateTime, Utc};

/// May telemetry record an event of `visitor` for this request? Only with
/// a valid, current, signed Accept All that named this visitor (or named
/// none, in a cookie made before records named one).
pub fn may_track_visitor(
    cookie: Option<&str>,
    codec: &CookieCodec,
    policy: &Policy,
    now: DateTime<Utc>,
    visitor: &piperider_event::VisitorId,
) -> bool {
    let record = cookie.and_then(|c| codec.decode(c));
    state(record.as_ref(), policy, now) == ConsentState::Granted
        && record.is_some_and(|r| r.admits(visitor))
}

/// May telemetry record this request? Only with a valid, current,
/// signed Accept All.
pub fn may_track(
    cookie: Option<&str>,
    codec: &CookieCodec,
    policy: &Policy,
    now: DateTime<Utc>,
) -> bool {
    let record = cookie.and_then(|c| codec.decode(c));
    state(record.as_ref(), policy, now) == ConsentState::Granted
}

/// The browser script (banner, Cookie settings, consent-gated tracking),
/// with the event types generated from the wire format.
pub const BROWSER_SCRIPT: &str = concat!(
    include_str!("../assets/cloud-events.generated.js"),
    "var CONSENT_BANNER_TEXT = '",
    chain::banner_text!(),
    "';\nvar CONSENT_GPC_TEXT = '",
    chain::gpc_text!(),
    "';\n",
    include_str!("../assets/consent.js")
);

/// The README's examples, compiled (and run where they can be) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
