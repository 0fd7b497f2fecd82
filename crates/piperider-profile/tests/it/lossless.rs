//! Edits change one key and leave every other byte as it was.

use piperider_profile::{ConfigStore, ProfileStore};

use crate::{fixture, temp_file};

#[test]
fn removing_the_project_id_from_a_piperider_026_config_keeps_every_other_line() {
    let original = fixture("piperider-0.26-config.yml");
    let (_dir, path) = temp_file(".piperider/config.yml", &original);
    let store = ConfigStore::new(&path);
    assert_eq!(
        store.load().unwrap().telemetry_id.unwrap().as_str(),
        "dc243c0c67204d4bb15740617505cb26"
    );

    store.remove_telemetry_id().unwrap();

    let after = std::fs::read_to_string(&path).unwrap();
    let expected: Vec<&str> = original
        .split_inclusive('\n')
        .filter(|line| !line.trim_start().starts_with("id: dc243c0c"))
        .collect();
    let got: Vec<&str> = after.split_inclusive('\n').collect();
    assert_eq!(got, expected, "only the id line may change");
    assert_eq!(store.load().unwrap().telemetry_id, None);
}

#[test]
fn adding_the_project_id_back_restores_the_original_bytes() {
    let original = fixture("piperider-0.26-config.yml");
    let (_dir, path) = temp_file(".piperider/config.yml", &original);
    let store = ConfigStore::new(&path);
    let id = store.load().unwrap().telemetry_id.unwrap();
    store.remove_telemetry_id().unwrap();
    store.set_telemetry_id(&id).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
}

#[test]
fn removing_an_absent_id_changes_nothing() {
    let text = "dataSources: []\n# no telemetry here\n";
    let (_dir, path) = temp_file("config.yml", text);
    ConfigStore::new(&path).remove_telemetry_id().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn turning_tracking_off_keeps_comments_and_unknown_sections() {
    let text = "\
# my PipeRider profile
user_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3
anonymous_tracking: true  # I like to help

cloud:
  # token for PipeRider Cloud
  api_token: pr_3c9e0b2d
  project: acme/warehouse
";
    let (_dir, path) = temp_file("profile.yml", text);
    let store = ProfileStore::new(&path);
    store.set_tracking(false).unwrap();
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        after,
        text.replace("anonymous_tracking: true", "anonymous_tracking: false")
    );
    assert!(!store.load().unwrap().unwrap().anonymous_tracking);
    store.set_tracking(true).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_profile_written_by_piperider_is_read_as_it_is() {
    let text = fixture("piperider-profile.yml");
    let (_dir, path) = temp_file("profile.yml", &text);
    let profile = ProfileStore::new(&path).load().unwrap().unwrap();
    assert_eq!(profile.user_id.as_str(), "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b");
    assert!(profile.anonymous_tracking);
    assert_eq!(profile.initial_version, None);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "reading wrote nothing"
    );
}

#[test]
fn tracking_accepts_yaml_booleans_and_yes_no_on_off() {
    for (value, expected) in [
        ("true", true),
        ("false", false),
        ("True", true),
        ("FALSE", false),
        ("yes", true),
        ("no", false),
        ("On", true),
        ("off", false),
        ("'no'", false),
    ] {
        let text =
            format!("user_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3\nanonymous_tracking: {value}\n");
        let (_dir, path) = temp_file("profile.yml", &text);
        let profile = ProfileStore::new(&path).load().unwrap().unwrap();
        assert_eq!(profile.anonymous_tracking, expected, "{value}");
    }
}

#[test]
fn a_hyphenated_user_id_is_normalized() {
    let text = "user_id: 5F8C0A9E-2B7D-4E1F-A3C6-B9D2E4F7A1C3\nanonymous_tracking: true\n";
    let (_dir, path) = temp_file("profile.yml", text);
    let profile = ProfileStore::new(&path).load().unwrap().unwrap();
    assert_eq!(profile.user_id.as_str(), "5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3");
}

#[test]
fn a_new_profile_has_an_id_tracking_on_and_private_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::new(dir.path().join("home/.piperider/profile.yml"));
    let new = piperider_profile::NewProfile {
        header: vec![
            "PipeRider user profile.".into(),
            "".into(),
            "Set anonymous_tracking: false to turn telemetry off.".into(),
        ],
        initial_version: Some("1.0".into()),
        ..Default::default()
    };
    let (profile, created) = store.create(&new).unwrap();
    assert!(created);
    assert!(profile.anonymous_tracking);
    assert_eq!(
        profile.initial_version.as_deref(),
        Some("1.0"),
        "a version stays a string"
    );
    let text = std::fs::read_to_string(store.path()).unwrap();
    assert!(
        text.starts_with("# PipeRider user profile.\n#\n# Set anonymous_tracking"),
        "{text}"
    );
    // The id is read back as the string it is: an id that looks like a
    // number (`0b70…`, `1234e5…`, all digits) is written quoted, any other
    // plain; both are the same string to a YAML reader.
    let written: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(written["user_id"], profile.user_id.to_string(), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    // A second create keeps the first profile.
    let (again, created) = store.create(&new).unwrap();
    assert!(!created);
    assert_eq!(again.user_id, profile.user_id);
    assert_eq!(std::fs::read_to_string(store.path()).unwrap(), text);
}

#[test]
fn an_edit_keeps_the_file_mode() {
    let (_dir, path) = temp_file("profile.yml", &fixture("piperider-profile.yml"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        ProfileStore::new(&path).set_tracking(false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}

#[test]
fn data_source_types_are_read() {
    let text = "dataSources:\n- name: warehouse\n  type: postgres\n  host: db\n- name: local\n  type: sqlite\n  dbpath: a.db\ntelemetry:\n  id: dc243c0c67204d4bb15740617505cb26\n";
    let (_dir, path) = temp_file("config.yml", text);
    let config = ConfigStore::new(&path).load().unwrap();
    let kinds: Vec<_> = config
        .data_sources
        .iter()
        .map(|d| d.kind.as_deref().unwrap())
        .collect();
    assert_eq!(kinds, ["postgres", "sqlite"]);
}

#[test]
fn switching_modes_edits_only_the_mode_keys_and_round_trips() {
    use piperider_profile::TelemetryMode;
    let original = "# my profile\nuser_id: 3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b   # mine\n\nanonymous_tracking: true\ncloud_token: keep-me\n";
    let (_dir, path) = temp_file("profile.yml", original);
    let store = ProfileStore::new(&path);
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    assert_eq!(store.load().unwrap().unwrap().mode(), TelemetryMode::On);

    store
        .set_mode(TelemetryMode::Local, t("2026-12-01T10:00:00Z"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{original}telemetry_mode: local\n")
    );
    assert_eq!(store.load().unwrap().unwrap().mode(), TelemetryMode::Local);

    store
        .set_mode(TelemetryMode::On, t("2026-12-02T10:00:00.250Z"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{original}uploading_since: 2026-12-02T10:00:00.250Z\n")
    );
    let on = store.load().unwrap().unwrap();
    assert_eq!(
        (on.mode(), on.uploading_since),
        (TelemetryMode::On, Some(t("2026-12-02T10:00:00.250Z")))
    );

    store
        .set_mode(TelemetryMode::Off, t("2026-12-03T10:00:00Z"))
        .unwrap();
    let off = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        off,
        format!(
            "{}uploading_since: 2026-12-02T10:00:00.250Z\n",
            original.replace("tracking: true", "tracking: false")
        )
    );
    // Off wins over a telemetry_mode written by hand.
    std::fs::write(&path, format!("{off}telemetry_mode: local\n")).unwrap();
    assert_eq!(store.load().unwrap().unwrap().mode(), TelemetryMode::Off);
}
