//! Bad files give errors that name the file, line and column, and are never overwritten.

use piperider_profile::{ConfigStore, NewProfile, ProfileError, ProfileStore};

use crate::temp_file;

fn assert_untouched(path: &std::path::Path, bytes: &[u8]) {
    assert_eq!(
        std::fs::read(path).unwrap(),
        bytes,
        "{} was changed",
        path.display()
    );
}

#[test]
fn a_malformed_profile_names_path_line_and_column_and_is_left_alone() {
    let text = "user_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3\nanonymous_tracking: [unclosed\n# trailing comment\n";
    let (_dir, path) = temp_file("profile.yml", text);
    let store = ProfileStore::new(&path);

    let err = store.load().unwrap_err();
    match &err {
        ProfileError::Syntax {
            path: p,
            line,
            column,
            message,
        } => {
            assert_eq!(p, &path);
            // The parser notices at the end of input, and says where the sequence opened.
            assert_eq!((*line, *column), (4, 1));
            assert!(
                message.contains("flow sequence at line 2 column 21"),
                "{message}"
            );
        }
        other => panic!("expected a syntax error, got {other}"),
    }
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}:4:1: ", path.display())),
        "{shown}"
    );

    // No write path may replace it either.
    assert!(store.set_tracking(false).is_err());
    assert!(store.set_value("k", "v").is_err());
    assert!(store.create(&NewProfile::default()).is_err());
    assert_untouched(&path, text.as_bytes());
}

#[test]
fn duplicate_keys_are_a_syntax_error() {
    let text = "user_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3\nanonymous_tracking: true\nanonymous_tracking: false\n";
    let (_dir, path) = temp_file("profile.yml", text);
    assert!(matches!(
        ProfileStore::new(&path).load(),
        Err(ProfileError::Syntax { .. })
    ));
    assert_untouched(&path, text.as_bytes());
}

#[test]
fn a_profile_without_user_id_is_an_error_not_a_fresh_start() {
    let text = "# tracking off on purpose\nanonymous_tracking: false\n";
    let (_dir, path) = temp_file("profile.yml", text);
    let store = ProfileStore::new(&path);
    let err = store.load().unwrap_err();
    assert!(
        matches!(&err, ProfileError::Field { field, .. } if field == "user_id"),
        "{err}"
    );
    // create() never replaces it with a new profile that has tracking on.
    assert!(store.create(&NewProfile::default()).is_err());
    assert_untouched(&path, text.as_bytes());
}

#[test]
fn a_bad_tracking_value_is_an_error_at_its_line() {
    let text = "user_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3\n\nanonymous_tracking: maybe\n";
    let (_dir, path) = temp_file("profile.yml", text);
    let err = ProfileStore::new(&path).load().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3:1: `anonymous_tracking` must be true or false (yes/no and on/off are read too)",
            path.display()
        )
    );
    for bad in ["1", "null", "~", "[true]", "{a: 1}", "''"] {
        let text =
            format!("user_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3\nanonymous_tracking: {bad}\n");
        let (_dir, path) = temp_file("profile.yml", &text);
        assert!(
            ProfileStore::new(&path).load().is_err(),
            "{bad} was accepted"
        );
    }
}

#[test]
fn a_bad_tracking_value_can_be_fixed_by_an_edit() {
    let text = "user_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3\nanonymous_tracking: maybe # hmm\n";
    let (_dir, path) = temp_file("profile.yml", text);
    let store = ProfileStore::new(&path);
    store.set_tracking(false).unwrap();
    assert!(!store.load().unwrap().unwrap().anonymous_tracking);
    assert!(std::fs::read_to_string(&path).unwrap().contains("# hmm"));
}

#[test]
fn not_a_mapping_and_not_utf8() {
    let (_dir, path) = temp_file("profile.yml", "- a\n- b\n");
    let err = ProfileStore::new(&path).load().unwrap_err();
    assert!(matches!(err, ProfileError::Field { .. }), "{err}");

    let (_dir, path) = temp_file("profile.yml", "");
    std::fs::write(&path, b"user_id: ab\n\xff\xfe\n").unwrap();
    let err = ProfileStore::new(&path).load().unwrap_err();
    assert!(
        matches!(
            err,
            ProfileError::Syntax {
                line: 2,
                column: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(ProfileStore::new(&path).set_tracking(false).is_err());
    assert_untouched(&path, b"user_id: ab\n\xff\xfe\n");
}

#[test]
fn a_bad_project_id_names_its_field() {
    let text = "dataSources: []\ntelemetry:\n  id: not-an-id\n";
    let (_dir, path) = temp_file("config.yml", text);
    let err = ConfigStore::new(&path).load().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3:3: `telemetry.id` must be 32 hex digits (a UUID)",
            path.display()
        )
    );
}

#[test]
fn editing_a_missing_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::new(dir.path().join("profile.yml"));
    assert!(matches!(
        store.set_tracking(false),
        Err(ProfileError::Missing { .. })
    ));
    assert!(store.load().unwrap().is_none());
    assert!(!store.path().exists(), "an edit must not create the file");
}

#[test]
fn an_existing_config_is_never_clobbered() {
    let text = "dataSources: []\n";
    let (_dir, path) = temp_file(".piperider/config.yml", text);
    let store = ConfigStore::new(&path);
    assert!(!store.create("dataSources: [x]\n").unwrap());
    assert_untouched(&path, text.as_bytes());
    assert!(
        store.create("a: [\n").is_err(),
        "malformed text is refused before writing"
    );
}

#[test]
fn a_bad_mode_or_time_names_its_line_and_is_left_alone() {
    for (line, expected) in [
        ("telemetry_mode: upload", "must be on, local or off"),
        ("uploading_since: yesterday", "RFC 3339"),
    ] {
        let text = format!(
            "user_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3\nanonymous_tracking: true\n{line}\n"
        );
        let (_dir, path) = temp_file("profile.yml", &text);
        let err = ProfileStore::new(&path).load().unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains(expected), "{shown}");
        assert!(shown.contains(":3:"), "the line is named: {shown}");
        assert_untouched(&path, text.as_bytes());
    }
}
