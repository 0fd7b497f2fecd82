//! Each enablement rule, and that every opt-out sends nothing.

use piperider_collector::{Reason, Recorded};
use piperider_event::Status;
use piperider_testkit::{Mode, Sink};

use crate::{PIPERIDER_PROFILE, PROJECT_ID, World, quick_policy, read, run_record};

/// Records a command and runs the sender; asserts the sink saw nothing.
fn assert_sends_nothing(world: &World, sink: &Sink, expected: Reason) {
    let collector = world.collector();
    assert_eq!(
        collector.record(&run_record(Status::Ok)),
        Recorded::Skipped(expected)
    );
    assert_eq!(
        world.spool_files(),
        0,
        "an opted-out command spooled an event"
    );
    collector.run_sender(&quick_policy());
    assert_eq!(sink.connections(), 0, "an opt-out path reached the sink");
}

#[test]
fn do_not_track_sends_nothing_and_status_says_why() {
    let sink = Sink::start(Mode::Accept);
    for value in ["1", "true", "yes", "anything"] {
        let mut world = World::with_profile(&sink.endpoint());
        world.set("DO_NOT_TRACK", value);
        assert_sends_nothing(&world, &sink, Reason::DoNotTrack);
        let status = world.collector().status();
        assert!(!status.enabled);
        assert_eq!(status.reason, "DO_NOT_TRACK");
        assert_eq!(
            status.user_id.as_deref(),
            Some("3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b")
        );
    }
}

#[test]
fn do_not_track_off_values_do_not_disable() {
    let sink = Sink::start(Mode::Accept);
    for value in ["", "0", "false"] {
        let mut world = World::with_profile(&sink.endpoint());
        world.set("DO_NOT_TRACK", value);
        assert!(world.collector().status().enabled, "DO_NOT_TRACK={value:?}");
    }
}

#[test]
fn the_app_variable_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let mut world = World::with_profile(&sink.endpoint());
    world.set("PIPERIDER_TELEMETRY_DISABLED", "1");
    assert_sends_nothing(&world, &sink, Reason::DisabledByEnv);
    assert_eq!(
        world.collector().status().reason,
        "PIPERIDER_TELEMETRY_DISABLED"
    );
}

#[test]
fn the_profile_opt_out_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    world.write_profile(&PIPERIDER_PROFILE.replace("true", "false"));
    assert_sends_nothing(&world, &sink, Reason::ProfileOptOut);
}

#[test]
fn an_unreadable_profile_sends_nothing_and_is_not_replaced() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    for text in [
        "user_id: [\n",
        "anonymous_tracking: true\n",
        "user_id: 3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b\nanonymous_tracking: maybe\n",
    ] {
        world.write_profile(text);
        assert_sends_nothing(&world, &sink, Reason::ProfileUnreadable);
        assert_eq!(
            read(&world.profile_path()),
            text,
            "the profile was rewritten"
        );
    }
}

#[test]
fn a_project_without_telemetry_id_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let mut world = World::with_profile(&sink.endpoint());
    world.project("dataSources: []\ntelemetry:\n");
    assert_sends_nothing(&world, &sink, Reason::ProjectOptOut);
    world.project("dataSources: []\n");
    assert_sends_nothing(&world, &sink, Reason::ProjectOptOut);
}

#[test]
fn the_first_run_creates_the_profile_and_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let mut world = World::new();
    world.set("PIPERIDER_TELEMETRY_ENDPOINT", &sink.endpoint());
    let collector = world.collector();
    assert_eq!(collector.status().reason, "first_run");
    assert_eq!(
        collector.record(&run_record(Status::Ok)),
        Recorded::NoticeShown
    );
    assert_eq!(world.spool_files(), 0);
    collector.run_sender(&quick_policy());
    assert_eq!(sink.connections(), 0, "the notice run sent something");

    let text = read(&world.profile_path());
    assert!(text.contains("anonymous_tracking: true"), "{text}");
    assert!(text.contains("initial_version: 0.1.0"), "{text}");
    // The second run records.
    assert!(matches!(
        world.collector().record(&run_record(Status::Ok)),
        Recorded::Queued { .. }
    ));
}

#[test]
fn ci_writes_no_profile_and_uses_a_pseudonym_per_vendor_and_project() {
    let sink = Sink::start(Mode::Accept);
    let mut world = World::new();
    world.set("PIPERIDER_TELEMETRY_ENDPOINT", &sink.endpoint());
    world.set("GITHUB_ACTIONS", "true");
    world.set("CI", "true");
    world.project(&format!(
        "dataSources: []\ntelemetry:\n  id: {PROJECT_ID}\n"
    ));
    for _ in 0..2 {
        let collector = world.collector();
        assert_eq!(collector.status().reason, "ci");
        assert!(matches!(
            collector.record(&run_record(Status::Ok)),
            Recorded::Queued { .. }
        ));
    }
    assert!(!world.profile_path().exists(), "CI wrote a profile");
    world.collector().run_sender(&quick_policy());
    let events = sink.wait_for_events(2, std::time::Duration::from_secs(5));
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["ci"], "github_actions");
    assert_eq!(
        events[0]["user_id"], events[1]["user_id"],
        "one id per vendor and project"
    );
    assert_ne!(events[0]["user_id"], "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b");
}

#[test]
fn ci_still_honours_the_opt_outs() {
    let sink = Sink::start(Mode::Accept);
    let mut world = World::with_profile(&sink.endpoint());
    world.set("CI", "true");
    world.write_profile(&PIPERIDER_PROFILE.replace("true", "false"));
    assert_sends_nothing(&world, &sink, Reason::ProfileOptOut);
}

#[test]
fn no_endpoint_records_nothing() {
    let world = World::with_profile("");
    let collector = world.collector();
    assert_eq!(
        collector.record(&run_record(Status::Ok)),
        Recorded::Skipped(Reason::NoEndpoint)
    );
    assert_eq!(world.spool_files(), 0);
}

#[test]
fn disable_drops_pending_events_and_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    collector.record(&run_record(Status::Ok));
    assert_eq!(world.spool_files(), 2);
    assert_eq!(collector.disable().unwrap(), 2);
    assert_eq!(world.spool_files(), 0);
    collector.run_sender(&quick_policy());
    assert_eq!(sink.connections(), 0);
    assert!(read(&world.profile_path()).contains("anonymous_tracking: false"));
    collector.enable().unwrap();
    assert!(world.collector().status().enabled);
}

#[test]
fn disable_before_any_profile_creates_one_that_is_off() {
    let mut world = World::new();
    world.set("PIPERIDER_TELEMETRY_ENDPOINT", "http://127.0.0.1:9");
    world.collector().disable().unwrap();
    let status = world.collector().status();
    assert_eq!(status.reason, "profile_opt_out");
}

#[test]
fn an_http_endpoint_off_this_machine_is_refused_and_says_why() {
    for (endpoint, reason) in [
        ("http://telemetry.example.com", "insecure_endpoint"),
        ("http://10.1.2.3:8080", "insecure_endpoint"),
        ("ftp://telemetry.example.com", "insecure_endpoint"),
        ("https://telemetry.example.com", "enabled"),
        ("http://127.0.0.1:9", "enabled"),
        ("http://[::1]:9", "enabled"),
        ("http://localhost:9", "enabled"),
    ] {
        let world = World::with_profile(endpoint);
        let collector = world.collector();
        let status = collector.status();
        assert_eq!(status.reason, reason, "{endpoint}");
        if reason == "insecure_endpoint" {
            assert!(!status.enabled);
            assert!(
                status.explanation.contains("https://"),
                "{}",
                status.explanation
            );
            collector.record(&run_record(Status::Ok));
            assert_eq!(world.spool_files(), 0, "{endpoint}: an event was recorded");
        }
    }
}
