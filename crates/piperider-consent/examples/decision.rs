//! A visitor's decision and its cookie: Accept All names a visitor and
//! lets its events through; an edited cookie or Necessary Only does not;
//! a withdrawal names the visitor whose data goes.
//!
//! `cargo run -p piperider-consent --example decision`

use piperider_consent::{
    Choice, ConsentAnswer, ConsentRecord, CookieCodec, Policy, may_track, may_track_visitor,
    set_cookie,
};

fn main() {
    let policy = Policy::new(1);
    let codec = CookieCodec::new(b"a server secret, 32 bytes or more, from its settings");
    let now = chrono::Utc::now();

    let yes = ConsentRecord::new(Choice::AcceptAll, &policy, now, false);
    let visitor = yes.visitor.clone().expect("Accept All names a visitor");
    println!("Set-Cookie: {}", set_cookie(&codec, &yes, &policy, true));
    let cookie = codec.encode(&yes);
    let answer = ConsentAnswer::of(codec.decode(&cookie).as_ref(), &policy, now);
    println!("{}", serde_json::to_string(&answer).expect("JSON"));
    assert!(may_track_visitor(
        Some(&cookie),
        &codec,
        &policy,
        now,
        &visitor
    ));

    // One character changed: the signature no longer holds; pending, nothing tracked.
    let mut edited = cookie.clone();
    edited.replace_range(0..1, if cookie.starts_with('A') { "B" } else { "A" });
    assert!(!may_track(Some(&edited), &codec, &policy, now));

    // Withdrawal: Necessary Only, and the visitor whose events the server deletes.
    let no = ConsentRecord::after(Some(&yes), Choice::NecessaryOnly, &policy, now, false);
    assert_eq!(no.withdrawn(Some(&yes)), Some(&visitor));
    assert!(!may_track(Some(&codec.encode(&no)), &codec, &policy, now));
    println!("withdrawn: the events of visitor {} go", visitor.as_str());
}
