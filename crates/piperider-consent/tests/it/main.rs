//! The consent model: transitions, time to live, policy bumps, tampering,
//! GPC, and a property: nothing but an explicit Accept All ever grants.

use chrono::{DateTime, TimeDelta, Utc};
use piperider_consent::{
    Choice, ConsentRecord, ConsentState, CookieCodec, Policy, may_track, state,
};
use proptest::prelude::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

fn t0() -> DateTime<Utc> {
    "2026-11-30T12:00:00Z".parse().unwrap()
}

#[test]
fn each_choice_leads_to_its_state() {
    let policy = Policy::new(3);
    assert_eq!(state(None, &policy, t0()), ConsentState::Pending);
    let yes = ConsentRecord::new(Choice::AcceptAll, &policy, t0(), false);
    assert_eq!(state(Some(&yes), &policy, t0()), ConsentState::Granted);
    let no = ConsentRecord::new(Choice::NecessaryOnly, &policy, t0(), false);
    assert_eq!(state(Some(&no), &policy, t0()), ConsentState::Denied);
    // Withdrawal is a new decision, replacing the old.
    let withdrawn = ConsentRecord::new(
        Choice::NecessaryOnly,
        &policy,
        t0() + TimeDelta::days(1),
        false,
    );
    assert_eq!(
        state(Some(&withdrawn), &policy, t0() + TimeDelta::days(1)),
        ConsentState::Denied
    );
    assert!(Choice::NecessaryOnly.allows(piperider_consent::Purpose::Necessary));
    assert!(!Choice::NecessaryOnly.allows(piperider_consent::Purpose::Telemetry));
    assert!(Choice::AcceptAll.allows(piperider_consent::Purpose::Telemetry));
}

#[test]
fn the_ttl_counts_from_the_decision_not_the_visits() {
    let policy = Policy::new(1);
    let yes = ConsentRecord::new(Choice::AcceptAll, &policy, t0(), false);
    let edge = t0() + Policy::DEFAULT_TTL;
    assert_eq!(
        state(Some(&yes), &policy, edge - TimeDelta::seconds(1)),
        ConsentState::Granted
    );
    assert_eq!(state(Some(&yes), &policy, edge), ConsentState::Pending);
    assert_eq!(Policy::DEFAULT_TTL, TimeDelta::days(182));
    // A decision dated in the future is not believed.
    let future = ConsentRecord::new(
        Choice::AcceptAll,
        &policy,
        t0() + TimeDelta::hours(1),
        false,
    );
    assert_eq!(state(Some(&future), &policy, t0()), ConsentState::Pending);
}

#[test]
fn an_accept_all_names_its_visitor_and_withdrawing_gives_it_up() {
    let policy = Policy::new(1);
    let yes = ConsentRecord::new(Choice::AcceptAll, &policy, t0(), false);
    let visitor = yes.visitor.clone().expect("Accept All names a visitor");
    let again = ConsentRecord::after(Some(&yes), Choice::AcceptAll, &policy, t0(), false);
    assert_eq!(
        again.visitor.as_ref(),
        Some(&visitor),
        "confirming keeps the visitor"
    );
    assert_eq!(again.withdrawn(Some(&yes)), None);
    let no = ConsentRecord::after(Some(&yes), Choice::NecessaryOnly, &policy, t0(), false);
    assert_eq!(no.visitor, None);
    assert_eq!(no.withdrawn(Some(&yes)), Some(&visitor));
    assert_eq!(no.withdrawn(None), None);
    // The cookie carries it, and tracking holds to it.
    let codec = CookieCodec::new(SECRET);
    let cookie = codec.encode(&yes);
    assert_eq!(codec.decode(&cookie), Some(yes.clone()));
    assert!(piperider_consent::may_track_visitor(
        Some(&cookie),
        &codec,
        &policy,
        t0(),
        &visitor
    ));
    let stranger = piperider_event::VisitorId::random();
    assert!(!piperider_consent::may_track_visitor(
        Some(&cookie),
        &codec,
        &policy,
        t0(),
        &stranger
    ));
    // A cookie from before records named a visitor still reads, for any visitor.
    let mut old = yes.clone();
    old.visitor = None;
    let old_cookie = codec.encode(&old);
    assert!(!old_cookie.is_empty());
    assert!(piperider_consent::may_track_visitor(
        Some(&old_cookie),
        &codec,
        &policy,
        t0(),
        &stranger
    ));
}

#[test]
fn a_decision_waits_the_interval_after_the_last() {
    use piperider_consent::DECISION_INTERVAL_SECS as I;
    let record = ConsentRecord::new(Choice::AcceptAll, &Policy::new(1), t0(), false);
    let after = |secs: i64| record.wait_before_next(t0() + TimeDelta::seconds(secs));
    assert_eq!(after(0), I);
    assert_eq!(after(1), I - 1);
    assert_eq!(after(I as i64), 0);
    assert_eq!(after(3600), 0);
    // A record dated ahead of the clock waits the whole interval.
    assert_eq!(after(-30), I);
}

#[test]
fn a_policy_bump_makes_earlier_decisions_pending() {
    let old = Policy::new(1);
    let new = Policy::new(2);
    for choice in [Choice::AcceptAll, Choice::NecessaryOnly] {
        let r = ConsentRecord::new(choice, &old, t0(), false);
        assert_eq!(state(Some(&r), &new, t0()), ConsentState::Pending);
    }
}

#[test]
fn a_tampered_or_foreign_cookie_reads_as_pending() {
    let policy = Policy::new(1);
    let codec = CookieCodec::new(SECRET);
    let no = ConsentRecord::new(Choice::NecessaryOnly, &policy, t0(), false);
    let cookie = codec.encode(&no);
    assert_eq!(codec.decode(&cookie), Some(no.clone()));
    assert!(!may_track(Some(&cookie), &codec, &policy, t0()));

    // Flip the choice in the payload, keep the signature: refused.
    let (payload, tag) = cookie.split_once('.').unwrap();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json = String::from_utf8(engine.decode(payload).unwrap()).unwrap();
    let forged = format!(
        "{}.{tag}",
        engine.encode(json.replace("necessary_only", "accept_all"))
    );
    assert_eq!(codec.decode(&forged), None);
    assert!(!may_track(Some(&forged), &codec, &policy, t0()));

    // Signed with another secret, unsigned, garbage, oversized.
    let yes = ConsentRecord::new(Choice::AcceptAll, &policy, t0(), false);
    let other = CookieCodec::new(b"another secret entirely, also 32+ bytes").encode(&yes);
    for bad in [
        other.as_str(),
        payload,
        "",
        ".",
        "accept_all",
        &"a".repeat(5000),
    ] {
        assert_eq!(codec.decode(bad), None, "{bad:?}");
        assert!(!may_track(Some(bad), &codec, &policy, t0()));
    }
    assert!(may_track(Some(&codec.encode(&yes)), &codec, &policy, t0()));
    assert!(!may_track(None, &codec, &policy, t0()));
}

#[test]
fn gpc_never_grants() {
    let policy = Policy::new(1);
    let codec = CookieCodec::new(SECRET);
    // The signal is recorded with a refusal...
    let no = ConsentRecord::new(Choice::NecessaryOnly, &policy, t0(), true);
    assert!(!may_track(Some(&codec.encode(&no)), &codec, &policy, t0()));
    // ...and only an explicit Accept All, made with the signal on, grants.
    let yes = ConsentRecord::new(Choice::AcceptAll, &policy, t0(), true);
    assert!(may_track(Some(&codec.encode(&yes)), &codec, &policy, t0()));
}

/// What can happen to a visitor's cookie jar and the server's policy.
#[derive(Debug, Clone)]
enum Input {
    NecessaryOnly { gpc: bool },
    Gpc,
    BumpPolicy,
    Wait(i64),
    Tamper,
    ClearCookies,
    ForgeAcceptAll,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        any::<bool>().prop_map(|gpc| Input::NecessaryOnly { gpc }),
        Just(Input::Gpc),
        Just(Input::BumpPolicy),
        (0i64..400).prop_map(Input::Wait),
        Just(Input::Tamper),
        Just(Input::ClearCookies),
        Just(Input::ForgeAcceptAll),
    ]
}

proptest! {
    #[test]
    fn nothing_but_an_explicit_accept_all_ever_grants(inputs in proptest::collection::vec(input(), 0..40)) {
        let codec = CookieCodec::new(SECRET);
        let mut policy = Policy::new(1);
        let mut now = t0();
        let mut cookie: Option<String> = None;
        for i in inputs {
            match i {
                Input::NecessaryOnly { gpc } => {
                    cookie = Some(codec.encode(&ConsentRecord::new(Choice::NecessaryOnly, &policy, now, gpc)));
                }
                Input::Gpc => {}
                Input::BumpPolicy => policy = Policy::new(policy.version + 1),
                Input::Wait(days) => now += TimeDelta::days(days),
                Input::Tamper => {
                    if let Some(c) = &cookie {
                        let mut bytes = c.clone().into_bytes();
                        let last = bytes.len() - 1;
                        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
                        cookie = Some(String::from_utf8(bytes).unwrap());
                    }
                }
                Input::ClearCookies => cookie = None,
                Input::ForgeAcceptAll => {
                    let forged = CookieCodec::new(b"an attacker's own secret, 32 bytes long")
                        .encode(&ConsentRecord::new(Choice::AcceptAll, &policy, now, false));
                    cookie = Some(forged);
                }
            }
            prop_assert!(!may_track(cookie.as_deref(), &codec, &policy, now), "granted without Accept All");
            let record = cookie.as_deref().and_then(|c| codec.decode(c));
            prop_assert_ne!(state(record.as_ref(), &policy, now), ConsentState::Granted);
        }
    }

    #[test]
    fn decoding_arbitrary_cookies_never_panics(s in "\\PC{0,600}") {
        let _ = CookieCodec::new(SECRET).decode(&s);
    }
}
