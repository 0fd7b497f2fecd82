//! The consent model's HTTP shapes, free of any HTTP framework: reading a
//! cookie from `Cookie` header values, the `Sec-GPC` signal, the consent
//! cookie's `Set-Cookie` value with its attributes, and the answer of
//! `GET /v1/consent`. A server passes header values in as `&str`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Choice, ConsentRecord, ConsentState, CookieCodec, Policy, state};

/// The value of cookie `name` in `Cookie` header values (`a=1; b=2`), the
/// first one when it is sent more than once. Names are case-sensitive;
/// a value keeps its inner characters as sent, without the surrounding
/// blanks.
pub fn cookie_value<'a>(
    cookie_headers: impl IntoIterator<Item = &'a str>,
    name: &str,
) -> Option<&'a str> {
    cookie_headers
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, value)| value.trim())
}

/// Whether a `Sec-GPC` header value is the Global Privacy Control signal.
/// It never grants anything; it is recorded with the decision.
pub fn gpc(sec_gpc: Option<&str>) -> bool {
    sec_gpc.is_some_and(|v| v.trim() == "1")
}

/// The `Set-Cookie` value that stores `record`: signed, for the whole
/// site, sent on top-level navigations (`SameSite=Lax`), kept for the
/// policy's time to live, and `Secure` when the visitor came over https.
/// Readable by the page's script, which mirrors the decision.
pub fn set_cookie(
    codec: &CookieCodec,
    record: &ConsentRecord,
    policy: &Policy,
    secure: bool,
) -> String {
    let mut cookie = format!(
        "{}={}; Path=/; SameSite=Lax; Max-Age={}",
        crate::COOKIE_NAME,
        codec.encode(record),
        policy.ttl.num_seconds()
    );
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// What `GET /v1/consent` (and `POST /v1/consent`) answer: where the
/// visitor stands now, under which policy, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ConsentAnswer {
    /// Pending (show the banner), granted or denied.
    pub state: ConsentState,
    /// The policy in force, which the banner should name.
    pub policy_version: u32,
    /// The choice in force; `null` while pending.
    pub choice: Option<Choice>,
    /// When the choice stops counting (RFC 3339); `null` while pending.
    pub expires_at: Option<String>,
    /// While granted: the visitor id the Accept All named, the only one
    /// the page's Cloud events may carry; `null` otherwise.
    #[schemars(regex(pattern = "^[0-9a-f]{32}$"))]
    pub visitor_id: Option<String>,
    /// Whether this request carried the Global Privacy Control signal
    /// (`Sec-GPC: 1`): the banner then says that it is honoured.
    #[serde(default)]
    pub gpc: bool,
}

impl ConsentAnswer {
    /// The answer for a request carrying `record` (already decoded), now.
    pub fn of(
        record: Option<&ConsentRecord>,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> ConsentAnswer {
        let st = state(record, policy, now);
        let current = record.filter(|_| st != ConsentState::Pending);
        ConsentAnswer {
            state: st,
            policy_version: policy.version,
            choice: current.map(|r| r.choice),
            expires_at: current
                .and_then(|r| r.expires_at(policy))
                .map(|t| t.to_rfc3339()),
            visitor_id: current
                .filter(|_| st == ConsentState::Granted)
                .and_then(|r| r.visitor.as_ref())
                .map(|v| v.as_str().to_string()),
            gpc: false,
        }
    }

    /// The same answer, saying whether the request carried `Sec-GPC: 1`.
    pub fn with_gpc(mut self, gpc: bool) -> ConsentAnswer {
        self.gpc = gpc;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_among_others_and_headers() {
        let headers = ["a=1; piperider_consent = v.1 ", "piperider_consent=second"];
        assert_eq!(cookie_value(headers, "piperider_consent"), Some("v.1"));
        assert_eq!(
            cookie_value(["xpiperider_consent=1"], "piperider_consent"),
            None
        );
        assert_eq!(cookie_value(["a=b=c"], "a"), Some("b=c"));
        assert_eq!(cookie_value([], "a"), None);
    }

    #[test]
    fn gpc_is_only_the_exact_signal() {
        assert!(gpc(Some(" 1")));
        assert!(!gpc(Some("0")));
        assert!(!gpc(None));
    }

    #[test]
    fn the_cookie_carries_its_attributes() {
        let codec = CookieCodec::new(b"0123456789abcdef0123456789abcdef");
        let policy = Policy::new(1);
        let record = ConsentRecord::new(Choice::AcceptAll, &policy, Utc::now(), false);
        let plain = set_cookie(&codec, &record, &policy, false);
        assert!(plain.starts_with("piperider_consent="));
        assert!(plain.contains("; Path=/; SameSite=Lax; Max-Age=15724800"));
        assert!(!plain.contains("Secure"));
        assert!(set_cookie(&codec, &record, &policy, true).ends_with("; Secure"));
        let answer = ConsentAnswer::of(Some(&record), &policy, Utc::now());
        assert_eq!(answer.state, ConsentState::Granted);
        assert_eq!(ConsentAnswer::of(None, &policy, Utc::now()).choice, None);
    }
}
