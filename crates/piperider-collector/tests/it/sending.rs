//! The sender: offline queues, retries, exactly-once arrival, bad files.

use std::time::{Duration, Instant};

use piperider_collector::{Spool, SpoolLimits};
use piperider_event::Status;
use piperider_testkit::{Mode, Sink};

use crate::{World, quick_policy, run_record};

#[test]
fn offline_events_queue_and_arrive_exactly_once_when_the_backend_returns() {
    let endpoint = Sink::refused_endpoint();
    let world = World::with_profile(&endpoint);
    let collector = world.collector();
    for _ in 0..3 {
        collector.record(&run_record(Status::Ok));
    }
    let report = collector.run_sender(&quick_policy());
    assert_eq!(report.sent, 0);
    assert_eq!(report.failed_attempts, 2);
    assert_eq!(world.spool_files(), 3, "a failed send lost events");

    // The backend comes back at the same address.
    let addr: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    let sink = Sink::start_at(addr, Mode::Accept);
    std::thread::sleep(Duration::from_millis(100)); // past the short backoff
    collector.record(&run_record(Status::Ok));
    let report = collector.run_sender(&quick_policy());
    assert_eq!(report.sent, 4);
    assert_eq!(world.spool_files(), 0);
    assert_eq!(sink.events().len(), 4);
    assert_eq!(sink.posted_events().len(), 4, "an event was sent twice");

    // Nothing left to send, nothing sent again.
    collector.run_sender(&quick_policy());
    assert_eq!(sink.posted_events().len(), 4);
}

#[test]
fn retry_after_is_honoured_across_runs() {
    let sink = Sink::start(Mode::Unavailable);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    let policy = piperider_collector::SenderPolicy {
        attempts_per_run: 1,
        ..quick_policy()
    };
    let report = collector.run_sender(&policy);
    assert_eq!((report.sent, report.failed_attempts), (0, 1));
    let backoff: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.home().join("telemetry/sender-backoff.json")).unwrap(),
    )
    .unwrap();
    let next = backoff["next_attempt_unix_ms"].as_i64().unwrap();
    let wait = next - chrono::Utc::now().timestamp_millis();
    assert!(
        wait > 500 && wait <= 1_000,
        "Retry-After: 1 gave a wait of {wait} ms"
    );

    sink.set_mode(Mode::Accept);
    std::thread::sleep(Duration::from_millis(wait as u64 + 50));
    assert_eq!(collector.run_sender(&policy).sent, 1);
}

#[test]
fn a_throttled_sender_waits_and_then_delivers() {
    let sink = Sink::start(Mode::Throttle);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    let started = Instant::now();
    let handle = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        sink.set_mode(Mode::Accept);
        sink
    });
    let report = collector.run_sender(&quick_policy());
    let sink = handle.join().unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was not waited for"
    );
    assert_eq!(sink.events().len(), 1);
}

#[test]
fn a_never_answering_backend_keeps_the_events() {
    let sink = Sink::start(Mode::Blackhole);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    let policy = piperider_collector::SenderPolicy {
        request_timeout: Duration::from_millis(300),
        attempts_per_run: 1,
        ..quick_policy()
    };
    let report = collector.run_sender(&policy);
    assert_eq!((report.sent, report.failed_attempts), (0, 1));
    assert_eq!(world.spool_files(), 1);
    assert!(sink.connections() >= 1);
}

#[test]
fn unreadable_spool_files_are_set_aside_and_the_rest_sent() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    let spool = Spool::new(world.home().join("telemetry/spool"), SpoolLimits::default());
    spool.append(b"{not json", &uuid::Uuid::new_v4()).unwrap();
    spool.append(b"", &uuid::Uuid::new_v4()).unwrap();
    collector.record(&run_record(Status::Ok));
    let report = collector.run_sender(&quick_policy());
    assert_eq!((report.sent, report.set_aside), (2, 2), "{report:?}");
    assert_eq!(world.spool_files(), 0);
    assert_eq!(
        std::fs::read_dir(world.home().join("telemetry/corrupt"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn show_lists_pending_events_exactly_as_they_will_be_sent() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    collector.record(&run_record(Status::Aborted));
    let pending = collector.pending();
    assert_eq!(pending.len(), 2);
    collector.run_sender(&quick_policy());
    let sent: Vec<Vec<u8>> = sink
        .events()
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let shown: Vec<Vec<u8>> = pending
        .iter()
        .map(|p| {
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(p).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(shown, sent);
}

#[test]
fn reset_and_forget() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    collector.run_sender(&quick_policy());
    let key: piperider_event::OwnerKey =
        serde_json::from_value(sink.events()[0]["owner_key"].clone()).unwrap();
    collector.record(&run_record(Status::Ok));
    let old_profile = std::fs::read_to_string(world.profile_path()).unwrap();
    let new_id = collector.forget().unwrap();
    assert_ne!(new_id.as_str(), "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b");
    assert_eq!(world.spool_files(), 0, "pending events were not dropped");
    let requests: Vec<_> = sink
        .requests()
        .into_iter()
        .filter(|r| r.path != "/v1/batch")
        .collect();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/deletion-requests");
    // The user id and a proof made by the key its events carried; never the secret.
    let body: piperider_event::DeletionRequest = serde_json::from_slice(&requests[0].body).unwrap();
    let old_id: piperider_event::UserId = "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b".parse().unwrap();
    assert_eq!(body.user_id, old_id);
    key.verify(
        piperider_event::OwnerAction::Delete,
        &old_id,
        &body.proof,
        chrono::Utc::now(),
    )
    .unwrap();
    let secret = old_profile
        .lines()
        .find_map(|l| l.strip_prefix("telemetry_secret: "))
        .map(|s| s.trim_matches('\''))
        .unwrap();
    assert!(!String::from_utf8_lossy(&requests[0].body).contains(secret));
    // A new id and a new secret: nothing links them to the old ones.
    assert_eq!(collector.status().user_id.as_deref(), Some(new_id.as_str()));
    let new_profile = std::fs::read_to_string(world.profile_path()).unwrap();
    assert!(
        !new_profile.contains(secret),
        "the secret survived the reset"
    );
    assert!(new_profile.contains("telemetry_secret: "));
}

#[test]
fn forget_is_refused_when_the_backend_cannot_check_the_proof() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    // Nothing of this user was ever stored: the backend holds no key.
    collector.enable().unwrap();
    let err = collector.forget().unwrap_err();
    assert!(
        matches!(err, piperider_collector::ForgetError::NotProved),
        "{err}"
    );
    assert_eq!(
        collector.status().user_id.as_deref(),
        Some("3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b"),
        "the id was reset though nothing was deleted"
    );
}

#[test]
fn forget_fails_loudly_and_keeps_the_id_when_the_backend_is_away() {
    let world = World::with_profile(&Sink::refused_endpoint());
    let collector = world.collector();
    assert!(collector.forget().is_err());
    assert_eq!(
        collector.status().user_id.as_deref(),
        Some("3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b")
    );
}

#[test]
fn a_backend_answering_400_to_everything_loses_no_event() {
    // A wrong endpoint or a proxy: 400 with no result per event.
    let sink = Sink::start(Mode::BadRequest);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    for _ in 0..3 {
        collector.record(&run_record(Status::Ok));
    }
    for _ in 0..5 {
        let report = collector.run_sender(&quick_policy());
        assert_eq!((report.sent, report.rejected), (0, 0), "{report:?}");
        assert!(report.failed_attempts > 0);
        assert_eq!(
            world.spool_files(),
            3,
            "an event left without its own result"
        );
        // The next run would wait out the backoff; this one is made now.
        let _ = std::fs::remove_file(world.home().join("telemetry/sender-backoff.json"));
    }
    sink.set_mode(Mode::Accept);
    let report = collector.run_sender(&quick_policy());
    assert_eq!(report.sent, 3, "{report:?}");
    assert_eq!(sink.events().len(), 3);
    assert_eq!(world.spool_files(), 0);
}

#[cfg(unix)]
#[test]
fn a_link_planted_in_the_spool_is_neither_read_nor_sent() {
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    collector.record(&run_record(Status::Ok));
    // A file only its owner may read, shaped like an event, and a link to
    // it in the spool with an event file's name.
    let outside = world.home().join("../victim-secret.json");
    let mut planted: serde_json::Value = serde_json::from_slice(&collector.pending()[0]).unwrap();
    planted["event_id"] = serde_json::json!(uuid::Uuid::now_v7().to_string());
    planted["app_version"] = serde_json::json!("SECRET-CONTENT");
    let text = planted.to_string();
    std::fs::write(&outside, &text).unwrap();
    let name = format!(
        "00000000000000000001000-{}-{}.json",
        uuid::Uuid::now_v7().simple(),
        text.len()
    );
    std::os::unix::fs::symlink(&outside, world.home().join("telemetry/spool").join(name)).unwrap();
    let report = collector.run_sender(&quick_policy());
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(
        report.set_aside, 1,
        "the link was not set aside: {report:?}"
    );
    for request in sink.requests() {
        assert!(
            !String::from_utf8_lossy(&request.body).contains("SECRET-CONTENT"),
            "the linked file was sent"
        );
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), text);
}

#[cfg(unix)]
#[test]
fn a_telemetry_folder_of_another_user_or_open_to_others_is_not_used_as_it_is() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    let spool = world.home().join("telemetry/spool");
    std::fs::create_dir_all(&spool).unwrap();
    // Open to everyone: tightened to the user alone, then used.
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o777)).unwrap();
    collector.record(&run_record(Status::Ok));
    assert_eq!(std::fs::metadata(&spool).unwrap().mode() & 0o777, 0o700);
    assert_eq!(world.spool_files(), 1);
    // Another user's: refused, nothing written into it, and said so.
    let nobody = 65534;
    if std::os::unix::fs::chown(&spool, Some(nobody), Some(nobody)).is_err() {
        eprintln!("SKIPPED the other-user half: chown needs root here");
        return;
    }
    collector.record(&run_record(Status::Ok));
    assert_eq!(
        world.spool_files(),
        1,
        "an event was written into another user's folder"
    );
    let report = collector.run_sender(&quick_policy());
    assert_eq!(report.sent, 0, "another user's folder was read");
    let log = std::fs::read_to_string(world.home().join("telemetry/telemetry.log")).unwrap();
    assert!(
        log.contains("owned by another user") && log.contains("telemetry does not use it"),
        "{log}"
    );
}

#[test]
fn an_event_goes_only_to_the_endpoint_it_was_recorded_for() {
    let (a, b) = (Sink::start(Mode::Accept), Sink::start(Mode::Accept));
    let mut world = World::with_profile(&a.endpoint());
    world.collector().record(&run_record(Status::Ok));
    // Pointed elsewhere, the sender leaves it.
    world.set("PIPERIDER_TELEMETRY_ENDPOINT", &b.endpoint());
    let report = world.collector().run_sender(&quick_policy());
    assert_eq!(report.sent, 0, "{report:?}");
    assert!(
        b.events().is_empty(),
        "sent to an endpoint it was not recorded for"
    );
    assert_eq!(world.spool_files(), 1);
    // Back to its own endpoint, it goes.
    world.set("PIPERIDER_TELEMETRY_ENDPOINT", &a.endpoint());
    let report = world.collector().run_sender(&quick_policy());
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(a.events().len(), 1);
}

#[test]
fn pending_events_recorded_before_uploading_was_turned_on_are_never_sent() {
    use piperider_collector::{Recorded, TelemetryMode};
    use piperider_profile::ProfileStore;
    let sink = Sink::start(Mode::Accept);
    let world = World::with_profile(&sink.endpoint());
    let collector = world.collector();
    // Recorded while on, never sent (no sender ran): pending.
    for _ in 0..2 {
        assert!(matches!(
            collector.record(&run_record(Status::Ok)),
            Recorded::Queued { .. }
        ));
    }
    // A hand edit to local and back to on through the profile: the two
    // stay in the spool, recorded before uploading was turned on again.
    let store = ProfileStore::new(world.profile_path());
    store
        .set_mode(TelemetryMode::Local, chrono::Utc::now())
        .unwrap();
    assert!(matches!(
        collector.record(&run_record(Status::Ok)),
        Recorded::KeptLocally { dropped: 0 }
    ));
    std::thread::sleep(Duration::from_millis(5));
    store
        .set_mode(TelemetryMode::On, chrono::Utc::now())
        .unwrap();
    assert_eq!(world.spool_files(), 2);
    collector.record(&run_record(Status::Error));
    let report = collector.run_sender(&quick_policy());
    assert_eq!(report.sent, 1);
    assert_eq!(world.spool_files(), 0, "the older two were deleted unsent");
    let events = sink.posted_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["outcome"]["status"], "error");
    // Already on: switching to on again keeps the moment it was turned on.
    let since = store.load().unwrap().unwrap().uploading_since;
    store
        .set_mode(TelemetryMode::On, chrono::Utc::now())
        .unwrap();
    assert_eq!(store.load().unwrap().unwrap().uploading_since, since);
}

#[test]
fn local_records_older_than_four_weeks_are_removed_and_the_rest_kept_within_the_caps() {
    use piperider_collector::{Recorded, TelemetryMode};
    let mut world = World::with_profile(&Sink::refused_endpoint());
    world.set("PIPERIDER_TELEMETRY", "local");
    let collector = world.collector();
    let local = world.home().join("telemetry/local/records");
    std::fs::create_dir_all(&local).unwrap();
    // A record of 29 days ago and one of 27, named as the store names them.
    let day_us: u128 = 86_400 * 1_000_000;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    for (days, id) in [(29, "a"), (27, "b")] {
        let name = format!("{:020}000-{}-2.json", now_us - days * day_us, id.repeat(32));
        std::fs::write(local.join(name), "{}").unwrap();
    }
    collector.start();
    assert!(matches!(
        collector.record(&run_record(Status::Ok)),
        Recorded::KeptLocally { .. }
    ));
    let mut names: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].contains(&"b".repeat(32)), "{names:?}");
    assert_eq!(collector.status().mode, TelemetryMode::Local);
    assert_eq!(world.spool_files(), 0);
}
