//! Telemetry through the real binary: the detached sender, every opt-out,
//! offline queues, a stalled backend, and exit codes that never change.

use std::time::{Duration, Instant};

use piperider_event::{CliEvent, WireEvent};
use piperider_testkit::{Mode, Sink};
use serde_json::Value;

use crate::{PIPERIDER_PROFILE, User, code, sqlite_fixture, stderr, stdout};

/// A returning user inside an initialised SQLite project, with the init event delivered.
fn project(sink: &Sink) -> User {
    let user = User::returning(&sink.endpoint());
    sqlite_fixture(&user.cwd.join("shop.db"));
    let out = user.run(&["init", "--datasource-url", "sqlite://shop.db"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        user.wait_spool_empty(Duration::from_secs(15)),
        "the init event was not delivered"
    );
    user
}

/// Runs `run`, waits long enough for a sender to have started and finished,
/// and asserts nothing reached the sink.
fn assert_run_sends_nothing(user: &User, sink: &Sink) {
    let before = sink.connections();
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(user.spool_len(), 0, "an opted-out command spooled an event");
    assert_eq!(
        sink.connections(),
        before,
        "an opted-out command reached the sink"
    );
}

#[test]
fn an_event_reaches_the_backend_through_the_detached_sender() {
    let sink = Sink::start(Mode::Accept);
    let user = project(&sink);
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 0);
    let events = sink.wait_for_events(2, Duration::from_secs(15));
    assert_eq!(events.len(), 2, "init and run");
    let run = &events[1];
    let parsed = CliEvent::parse(&serde_json::to_vec(run).unwrap(), chrono::Utc::now()).unwrap();
    assert_eq!(parsed.event_type.as_str(), "run");
    assert_eq!(parsed.user_id.as_str(), "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b");
    assert_eq!(parsed.runtime.name, "rust");
    assert_eq!(parsed.stats.unwrap().rows, 30);
    assert!(user.wait_spool_empty(Duration::from_secs(5)));
    assert_eq!(sink.posted_events().len(), 2, "an event was posted twice");
    // PipeRider's profile kept byte for byte; only the owner secret added.
    let profile = std::fs::read_to_string(user.home().join("profile.yml")).unwrap();
    let added = profile
        .strip_prefix(PIPERIDER_PROFILE)
        .expect("PipeRider's profile was rewritten");
    assert!(
        added.starts_with("telemetry_secret: ") && added.lines().count() == 1,
        "{added:?}"
    );
}

#[test]
fn every_opt_out_path_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let mut user = project(&sink);

    user.set("DO_NOT_TRACK", "1");
    assert_run_sends_nothing(&user, &sink);
    user.set("DO_NOT_TRACK", "");

    user.set("PIPERIDER_TELEMETRY_DISABLED", "true");
    assert_run_sends_nothing(&user, &sink);
    user.set("PIPERIDER_TELEMETRY_DISABLED", "0");

    let profile = user.home().join("profile.yml");
    std::fs::write(&profile, PIPERIDER_PROFILE.replace("true", "false")).unwrap();
    assert_run_sends_nothing(&user, &sink);
    std::fs::write(&profile, PIPERIDER_PROFILE).unwrap();

    let config = user.cwd.join(".piperider/config.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    let without_id: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("id:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, without_id).unwrap();
    assert_run_sends_nothing(&user, &sink);
    std::fs::write(&config, text).unwrap();

    // With every switch back on, the next run is delivered.
    let before = sink.events().len();
    assert_eq!(code(&user.run(&["run"])), 0);
    assert_eq!(
        sink.wait_for_events(before + 1, Duration::from_secs(15))
            .len(),
        before + 1
    );
}

#[test]
fn the_notice_run_sends_nothing_and_prints_the_notice() {
    let sink = Sink::start(Mode::Accept);
    let user = User::new(&sink.endpoint());
    let out = user.run(&["init"]);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("piperider telemetry disable"),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(sink.connections(), 0);
    assert!(user.home().join("profile.yml").is_file());
    let again = user.run(&["telemetry", "status"]);
    assert!(
        !stderr(&again).contains("telemetry disable"),
        "the notice is shown once"
    );
}

#[test]
fn status_json_says_do_not_track_even_when_the_profile_says_yes() {
    let mut user = User::returning(&Sink::refused_endpoint());
    user.set("DO_NOT_TRACK", "1");
    let out = user.run(&["telemetry", "status", "--json"]);
    assert_eq!(code(&out), 0);
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["enabled"], false);
    assert_eq!(status["reason"], "DO_NOT_TRACK");
    assert_eq!(status["user_id"], "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b");
    for key in ["project_id", "pending_events", "endpoint"] {
        assert!(status.get(key).is_some(), "status --json lacks {key}");
    }
    let human = user.run(&["telemetry", "status"]);
    assert!(
        stdout(&human).contains("disabled because DO_NOT_TRACK is set"),
        "{}",
        stdout(&human)
    );
}

#[test]
fn offline_runs_queue_and_arrive_exactly_once_after_the_backend_returns() {
    let endpoint = Sink::refused_endpoint();
    let user = User::returning(&endpoint);
    sqlite_fixture(&user.cwd.join("shop.db"));
    assert_eq!(
        code(&user.run(&["init", "--datasource-url", "sqlite://shop.db"])),
        0
    );
    assert_eq!(code(&user.run(&["run"])), 0);
    assert_eq!(code(&user.run(&["run"])), 0);
    assert_eq!(user.spool_len(), 3, "offline events must wait in the spool");

    // Let the offline senders give up, then bring the backend back.
    std::thread::sleep(Duration::from_millis(800));
    let addr: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    let sink = Sink::start_at(addr, Mode::Accept);
    std::thread::sleep(Duration::from_millis(400)); // past the sender's backoff
    assert_eq!(code(&user.run(&["run"])), 0);
    let events = sink.wait_for_events(4, Duration::from_secs(15));
    assert_eq!(events.len(), 4);
    assert!(user.wait_spool_empty(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.posted_events().len(), 4, "an event arrived twice");
}

#[test]
fn a_never_answering_backend_does_not_hold_up_the_command() {
    let sink = Sink::start(Mode::Blackhole);
    let user = User::returning(&sink.endpoint());
    sqlite_fixture(&user.cwd.join("shop.db"));
    assert_eq!(
        code(&user.run(&["init", "--datasource-url", "sqlite://shop.db"])),
        0
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.connections() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sink.connections() >= 1, "the sender never reached the sink");
    // The sender now waits on a request that will not be answered (10 s
    // timeout); the command must not.
    let started = Instant::now();
    let out = user.run(&["run"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 0);
    assert!(
        took < Duration::from_secs(5),
        "the command waited on the backend: {took:?}"
    );
    assert!(
        user.spool_len() >= 1,
        "events were dropped while the backend stalled"
    );
}

#[test]
fn debug_mode_prints_the_event_and_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let mut user = project(&sink);
    let before = sink.connections();
    user.set("PIPERIDER_TELEMETRY_DEBUG", "1");
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 0);
    let line = stderr(&out)
        .lines()
        .find(|l| l.starts_with('{'))
        .map(str::to_string)
        .expect("a JSON line on stderr");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event_type"], "run");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(sink.connections(), before);
    assert_eq!(user.spool_len(), 0);
}

#[test]
fn telemetry_commands_record_nothing() {
    let sink = Sink::start(Mode::Accept);
    let user = project(&sink);
    let before = sink.connections();
    for args in [
        &["telemetry", "status"][..],
        &["telemetry", "status", "--json"],
        &["telemetry", "show"],
        &["telemetry", "enable"],
        &["config", "enable-user-tracking"],
        &["completions", "bash"],
    ] {
        assert_eq!(code(&user.run(args)), 0, "{args:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(user.spool_len(), 0);
    assert_eq!(sink.connections(), before);
}

#[test]
fn disable_and_piperiders_spelling_turn_everything_off() {
    let sink = Sink::start(Mode::Accept);
    let mut user = project(&sink);
    user.set("PIPERIDER_TELEMETRY_ENDPOINT", &Sink::refused_endpoint());
    assert_eq!(code(&user.run(&["run"])), 0);
    assert_eq!(user.spool_len(), 1);
    user.set("PIPERIDER_TELEMETRY_ENDPOINT", &sink.endpoint());
    let out = user.run(&["config", "disable-user-tracking"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(user.spool_len(), 0, "disable deletes pending events");
    let profile = std::fs::read_to_string(user.home().join("profile.yml")).unwrap();
    assert!(
        profile.starts_with(&PIPERIDER_PROFILE.replace("true", "false")),
        "{profile}"
    );
    let before = sink.connections();
    assert_run_sends_nothing(&user, &sink);
    assert_eq!(sink.connections(), before, "disabling sent something");
    assert_eq!(code(&user.run(&["telemetry", "enable"])), 0);
    // Back as it was, the owner secret added by the first run kept, and
    // the moment uploading was turned on again added.
    let enabled = std::fs::read_to_string(user.home().join("profile.yml")).unwrap();
    let added = enabled
        .strip_prefix(&profile.replace("anonymous_tracking: false", "anonymous_tracking: true"))
        .unwrap_or_else(|| panic!("{enabled}"));
    assert!(
        added.starts_with("uploading_since: ") && added.lines().count() == 1,
        "{added:?}"
    );
}

#[test]
fn show_prints_pending_events_and_reset_forgets_them() {
    let user = User::returning(&Sink::refused_endpoint());
    assert_eq!(code(&user.run(&["init"])), 0);
    let out = user.run(&["telemetry", "show"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1);
    let event: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["event_type"], "init");
    let out = user.run(&["telemetry", "reset"]);
    assert_eq!(code(&out), 0);
    assert_eq!(user.spool_len(), 0);
    let status: Value =
        serde_json::from_str(&stdout(&user.run(&["telemetry", "status", "--json"]))).unwrap();
    assert_ne!(status["user_id"], "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b");
}

/// Replaces the telemetry folder with a plain file, once the sender the
/// last command started has let go of it: it may still be writing in it
/// after the command has returned.
fn replace_dir_with_a_file(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(lock) = std::fs::File::open(dir.join("sender.lock")) {
            let _ = lock.lock();
        }
        match std::fs::remove_dir_all(dir).and_then(|()| std::fs::write(dir, "not a folder")) {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("replacing {} with a file: {e}", dir.display()),
        }
    }
}

#[test]
fn telemetry_never_changes_the_exit_code() {
    let sink = Sink::start(Mode::Accept);
    let mut user = project(&sink);
    std::fs::write(
        user.cwd.join(".piperider/assertions/a.yml"),
        "orders:\n  tests:\n  - name: assert_row_count_in_range\n    assert: {count: [100, 200]}\n",
    )
    .unwrap();
    assert_eq!(code(&user.run(&["run"])), 1);
    user.set("DO_NOT_TRACK", "1");
    assert_eq!(code(&user.run(&["run"])), 1);
    user.set("DO_NOT_TRACK", "");
    // A broken profile, an unwritable spool, a garbage endpoint: same exit code, profile untouched.
    let profile = user.home().join("profile.yml");
    std::fs::write(&profile, "user_id: [broken\n").unwrap();
    assert_eq!(code(&user.run(&["run"])), 1);
    assert_eq!(
        std::fs::read_to_string(&profile).unwrap(),
        "user_id: [broken\n"
    );
    std::fs::write(&profile, PIPERIDER_PROFILE).unwrap();
    replace_dir_with_a_file(&user.home().join("telemetry"));
    assert_eq!(code(&user.run(&["run"])), 1);
    user.set("PIPERIDER_TELEMETRY_ENDPOINT", "::not a url::");
    std::fs::remove_file(user.home().join("telemetry")).unwrap();
    assert_eq!(code(&user.run(&["run"])), 1);
    std::fs::remove_file(user.cwd.join(".piperider/assertions/a.yml")).unwrap();
    assert_eq!(code(&user.run(&["run"])), 0);
}

#[test]
fn ctrl_c_records_one_aborted_event_and_exits_130() {
    let sink = Sink::start(Mode::Accept);
    let user = project(&sink);
    // A custom assertion that keeps SQLite busy for seconds.
    std::fs::write(
        user.cwd.join(".piperider/assertions/slow.yml"),
        "orders:\n  custom:\n  - name: slow\n    sql: WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000) SELECT 1 FROM c WHERE x < 0\n",
    )
    .unwrap();
    let mut child = user.command(&["run"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let events = sink.wait_for_events(2, Duration::from_secs(15));
    let runs: Vec<&Value> = events.iter().filter(|e| e["event_type"] == "run").collect();
    assert_eq!(runs.len(), 1, "{events:?}");
    assert_eq!(runs[0]["outcome"]["status"], "aborted");
    assert!(runs[0]["stats"].is_null());
}
