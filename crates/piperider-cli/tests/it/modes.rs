//! The three modes through the real binary: `on`, `local` (recorded on
//! this machine, never sent) and `off`, from the profile and from
//! `PIPERIDER_TELEMETRY`.

use std::path::Path;
use std::time::Duration;

use piperider_testkit::{Mode, Sink};
use serde_json::Value;

use crate::{User, code, sqlite_fixture, stderr, stdout};

fn status(user: &User) -> Value {
    let out = user.run(&["telemetry", "status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.push(path.clone());
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// The `event_id`s `telemetry show` prints after its "kept" heading.
fn kept_locally(user: &User) -> Vec<String> {
    let out = user.run(&["telemetry", "show"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn local_mode_records_a_week_of_commands_sends_nothing_and_on_sends_only_what_follows() {
    let sink = Sink::start(Mode::Accept);
    let user = User::returning(&sink.endpoint());
    sqlite_fixture(&user.cwd.join("shop.db"));
    let out = user.run(&["telemetry", "local"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = status(&user);
    assert_eq!(s["mode"], "local");
    assert_eq!(s["mode_source"], "profile");
    assert_eq!(s["reason"], "local");
    // A week of work: init, then a run and a report each day.
    assert_eq!(
        code(&user.run(&["init", "--datasource-url", "sqlite://shop.db"])),
        0
    );
    for _ in 0..7 {
        let out = user.run(&["run"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(code(&user.run(&["generate-report"])), 0);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.connections(), 0, "local mode reached the backend");
    assert_eq!(user.spool_len(), 0, "local mode spooled an event");
    let kept = kept_locally(&user);
    assert_eq!(kept.len(), 15, "init, 7 runs and 7 reports kept locally");
    assert_eq!(status(&user)["local_events"], 15);

    let out = user.run(&["telemetry", "enable"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let profile = std::fs::read_to_string(user.home().join("profile.yml")).unwrap();
    assert!(profile.contains("uploading_since: "), "{profile}");
    assert!(!profile.contains("telemetry_mode"), "{profile}");
    let s = status(&user);
    assert_eq!(
        (s["mode"].as_str(), s["reason"].as_str()),
        (Some("on"), Some("enabled"))
    );
    assert_eq!(code(&user.run(&["run"])), 0);
    sink.wait_for_events(1, Duration::from_secs(15));
    assert!(user.wait_spool_empty(Duration::from_secs(15)));
    std::thread::sleep(Duration::from_millis(300));
    let events = sink.events();
    assert_eq!(events.len(), 1, "only the run after the switch is sent");
    assert_eq!(events[0]["event_type"], "run");
    let sent = events[0]["event_id"].as_str().unwrap().to_string();
    assert!(!kept.contains(&sent));
    // The local records stay on the machine until cleaned.
    assert_eq!(kept_locally(&user).len(), 15);
    let out = user.run(&["telemetry", "clean"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(kept_locally(&user).is_empty());
}

#[test]
fn off_from_the_environment_with_an_empty_home_creates_no_file_and_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let mut user = User::new(&sink.endpoint());
    user.set("PIPERIDER_TELEMETRY", "off");
    sqlite_fixture(&user.cwd.join("shop.db"));
    let home = user.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    for args in [
        &["init", "--datasource-url", "sqlite://shop.db"][..],
        &["run"],
        &["generate-assertions"],
        &["generate-report"],
        &["telemetry", "status"],
        &["telemetry", "show"],
    ] {
        let out = user.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    }
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(files_under(&home), Vec::<std::path::PathBuf>::new());
    assert_eq!(sink.connections(), 0);
    let s = status(&user);
    assert_eq!(
        (s["enabled"].as_bool(), s["mode"].as_str()),
        (Some(false), Some("off"))
    );
    assert_eq!(s["mode_source"], "PIPERIDER_TELEMETRY");
    assert_eq!(s["reason"], "PIPERIDER_TELEMETRY=off");
    assert_eq!(files_under(&home), Vec::<std::path::PathBuf>::new());
}

#[test]
fn the_environment_narrows_the_profile_and_an_unknown_value_means_off() {
    let sink = Sink::start(Mode::Accept);
    let mut user = User::returning(&sink.endpoint());
    sqlite_fixture(&user.cwd.join("shop.db"));
    user.set("PIPERIDER_TELEMETRY", "LOCAL");
    assert_eq!(
        code(&user.run(&["init", "--datasource-url", "sqlite://shop.db"])),
        0
    );
    let s = status(&user);
    assert_eq!(
        (s["mode"].as_str(), s["mode_source"].as_str()),
        (Some("local"), Some("PIPERIDER_TELEMETRY"))
    );
    assert_eq!(kept_locally(&user).len(), 1);
    // `on` in the environment does not lift the profile's off.
    let profile = user.home().join("profile.yml");
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(
        &profile,
        text.replace("anonymous_tracking: true", "anonymous_tracking: false"),
    )
    .unwrap();
    user.set("PIPERIDER_TELEMETRY", "on");
    let s = status(&user);
    assert_eq!(
        (s["mode"].as_str(), s["mode_source"].as_str()),
        (Some("off"), Some("profile"))
    );
    assert_eq!(code(&user.run(&["run"])), 0);
    // Nor a profile's local.
    std::fs::write(&profile, format!("{text}telemetry_mode: local\n")).unwrap();
    let s = status(&user);
    assert_eq!(
        (s["mode"].as_str(), s["reason"].as_str()),
        (Some("local"), Some("local"))
    );
    user.set("PIPERIDER_TELEMETRY", "upload-please");
    let s = status(&user);
    assert_eq!(
        (s["enabled"].as_bool(), s["mode"].as_str()),
        (Some(false), Some("off"))
    );
    assert_eq!(s["reason"], "PIPERIDER_TELEMETRY_unknown");
    assert_eq!(code(&user.run(&["run"])), 0);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(sink.connections(), 0);
    assert_eq!(
        kept_locally(&user).len(),
        1,
        "only the init of the local mode"
    );
    // The text status names the mode and where it came from.
    user.set("PIPERIDER_TELEMETRY", "");
    let out = stdout(&user.run(&["telemetry", "status"]));
    assert!(out.starts_with("Telemetry is local: "), "{out}");
    assert!(
        out.contains("mode:           local (from profile)"),
        "{out}"
    );
}
