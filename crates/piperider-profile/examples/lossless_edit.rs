//! A lossless edit: a profile with comments, an unknown key and its own
//! order, switched off with one call; every other byte stays as it was.
//!
//! `cargo run -p piperider-profile --example lossless_edit`

use piperider_profile::ProfileStore;

const PROFILE: &str = "\
# PipeRider's profile, edited by hand.
user_id: 3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b

# Cloud settings stay untouched.
cloud_api_token: keep-me   # a comment at the end of a line
anonymous_tracking: true
";

fn main() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("profile.yml");
    std::fs::write(&path, PROFILE).expect("written");
    let store = ProfileStore::new(&path);
    let profile = store.load().expect("readable").expect("present");
    println!(
        "user {} tracking {}",
        profile.user_id, profile.anonymous_tracking
    );

    store.set_tracking(false).expect("edited");
    let after = std::fs::read_to_string(&path).expect("readable");
    print!("{after}");
    assert_eq!(
        after,
        PROFILE.replace("anonymous_tracking: true", "anonymous_tracking: false")
    );

    // A file it cannot read is an error naming the place, and is left alone.
    std::fs::write(&path, "user_id: [unclosed\n").expect("written");
    let err = store
        .set_tracking(true)
        .expect_err("a malformed file is refused");
    println!("refused: {err}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("readable"),
        "user_id: [unclosed\n"
    );
}
