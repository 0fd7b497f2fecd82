//! What one recorded command becomes.

use chrono::Utc;
use piperider_collector::{Recorded, Spool, SpoolLimits};
use piperider_event::{CliEvent, Status, WireEvent};
use piperider_testkit::{Mode, Sink};

use crate::{PIPERIDER_PROFILE, PROJECT_ID, World, quick_policy, read, run_record};

#[test]
fn the_event_matches_the_wire_format_and_the_command() {
    let sink = Sink::start(Mode::Accept);
    let mut world = World::with_profile(&sink.endpoint());
    world.project(&format!(
        "dataSources:\n- name: local\n  type: sqlite\n  dbpath: shop.db\ntelemetry:\n  id: {PROJECT_ID}\n"
    ));
    let collector = world.collector();
    assert!(matches!(
        collector.record(&run_record(Status::Ok)),
        Recorded::Queued {
            sender_started: false,
            dropped: 0
        }
    ));
    let report = collector.run_sender(&quick_policy());
    assert_eq!(report.sent, 1);

    let events = sink.events();
    assert_eq!(events.len(), 1);
    let raw = serde_json::to_vec(&events[0]).unwrap();
    let event = CliEvent::parse(&raw, Utc::now()).expect("the sender sent a valid event");
    assert_eq!(event.event_type.as_str(), "run");
    assert_eq!(event.user_id.as_str(), "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b");
    assert_eq!(
        event.device_id.as_str().len(),
        64,
        "a salted machine-id hash"
    );
    assert_eq!(event.app_version, "0.1.0");
    assert_eq!(event.initial_version, "0.1.0");
    assert_eq!(event.ci, None);
    let project = event.project.unwrap();
    assert_eq!(project.project_id.as_str(), PROJECT_ID);
    assert_eq!(project.datasource_type.as_deref(), Some("sqlite"));
    let stats = event.stats.unwrap();
    assert_eq!((stats.tables, stats.columns, stats.rows), (2, 8, 30));
    assert_eq!((stats.passed_assertions, stats.failed_assertions), (4, 1));
    assert_eq!(event.outcome.duration_ms, 812);
    // Exactly the documented keys: nothing else rides along.
    let keys: Vec<&str> = events[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "app_version",
            "ci",
            "device_id",
            "event_id",
            "event_type",
            "initial_version",
            "outcome",
            "owner_key",
            "platform",
            "project",
            "runtime",
            "schema_version",
            "stats",
            "timestamp",
            "user_id"
        ]
    );
}

#[test]
fn outside_a_project_the_project_is_null() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Error));
    collector.run_sender(&quick_policy());
    let events = sink.events();
    assert!(events[0]["project"].is_null());
    assert_eq!(events[0]["outcome"]["status"], "error");
}

#[test]
fn a_piperider_profile_is_used_as_it_is() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    collector.run_sender(&quick_policy());
    assert_eq!(
        sink.events()[0]["user_id"],
        "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b"
    );
    // Every byte of it kept; only the owner secret added, whose public key
    // the event carries.
    let profile = read(&world.profile_path());
    let added = profile
        .strip_prefix(PIPERIDER_PROFILE)
        .expect("the profile's own bytes were changed");
    // A secret that YAML could read as a number (`0b...`) is written quoted.
    let secret = added
        .strip_prefix("telemetry_secret: ")
        .and_then(|s| s.strip_suffix('\n'))
        .map(|s| s.trim_matches('\''))
        .and_then(piperider_event::OwnerSecret::from_hex)
        .unwrap_or_else(|| panic!("more than the owner secret was added: {added:?}"));
    assert_eq!(
        sink.events()[0]["owner_key"],
        secret.public_key().to_string()
    );
    // Added once: the next event leaves the profile as it is.
    collector.record(&run_record(Status::Ok));
    assert_eq!(read(&world.profile_path()), profile);
}

#[test]
fn debug_mode_prints_and_sends_nothing() {
    let sink = Sink::start(Mode::Accept);
    let mut world = World::with_profile(&sink.endpoint());
    world.set("PIPERIDER_TELEMETRY_DEBUG", "1");
    let collector = world.collector();
    assert_eq!(collector.record(&run_record(Status::Ok)), Recorded::Printed);
    assert_eq!(world.spool_files(), 0);
    collector.run_sender(&quick_policy());
    assert_eq!(sink.connections(), 0);
}

#[test]
fn the_spool_cap_drops_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(
        dir.path().join("spool"),
        SpoolLimits {
            max_events: 5,
            max_bytes: 1 << 20,
        },
    );
    let ids: Vec<_> = (0..8).map(|_| uuid::Uuid::new_v4()).collect();
    let mut dropped = 0;
    for (i, id) in ids.iter().enumerate() {
        dropped += spool
            .append(format!("{{\"n\":{i}}}").as_bytes(), id)
            .unwrap();
    }
    assert_eq!(dropped, 3);
    assert_eq!(spool.dropped(), 3);
    let kept: Vec<String> = spool
        .list()
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(spool.read(e).unwrap()).unwrap())
        .collect();
    assert_eq!(
        kept,
        [
            "{\"n\":3}",
            "{\"n\":4}",
            "{\"n\":5}",
            "{\"n\":6}",
            "{\"n\":7}"
        ]
    );

    let bytes = Spool::new(
        dir.path().join("b"),
        SpoolLimits {
            max_events: 100,
            max_bytes: 50,
        },
    );
    for id in &ids {
        bytes.append(&[b' '; 20], id).unwrap();
    }
    assert_eq!(
        bytes.list().unwrap().len(),
        2,
        "50 bytes hold two 20-byte events"
    );
}

#[test]
fn the_default_cap_holds_through_the_collector() {
    let world = World::with_profile("http://127.0.0.1:9");
    let collector = world.collector();
    for _ in 0..1_010 {
        collector.record(&run_record(Status::Ok));
    }
    let status = collector.status();
    assert_eq!(status.pending_events, 1_000);
    assert_eq!(status.dropped_events, 10);
}

#[test]
fn a_crash_mid_write_leaves_earlier_events_intact() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("spool"), SpoolLimits::default());
    spool.append(b"{\"a\":1}", &uuid::Uuid::new_v4()).unwrap();
    // What a crash between write and rename leaves behind.
    std::fs::write(
        dir.path()
            .join("spool/.tmp-00000000000000000000000-x-5.json"),
        b"{\"b\"",
    )
    .unwrap();
    let events = spool.list().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(spool.read(&events[0]).unwrap(), b"{\"a\":1}");
}
