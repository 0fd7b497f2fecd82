//! Builds a CLI event from the types, sends it through the wire format's
//! own parse (size, shape, rules), and shows how a broken one is refused:
//! by field and reason, never repeating the value.
//!
//! `cargo run -p piperider-event --example validate`

use piperider_event::{
    CliEvent, CommandName, Outcome, Platform, Runtime, Stats, Status, UserId, WireEvent,
};

fn main() {
    let now = chrono::Utc::now();
    let event = CliEvent {
        schema_version: piperider_event::SCHEMA_VERSION,
        event_id: uuid::Uuid::now_v7(),
        event_type: CommandName::RUN,
        timestamp: now,
        user_id: UserId::random(),
        owner_key: None,
        device_id: "9b2e4c7a1d3f5e8b0a6c2d4f7e9b1a3c"
            .parse()
            .expect("32 hex digits"),
        platform: Platform {
            os: "linux".into(),
            arch: "x86_64".into(),
            os_version: "6.1.0".into(),
        },
        runtime: Runtime {
            name: "python".into(),
            version: "3.11.7".into(),
        },
        app_version: "0.2.0".into(),
        initial_version: "0.1.0".into(),
        ci: None,
        project: None,
        stats: Some(Stats {
            tables: 2,
            columns: 8,
            rows: 30,
            builtin_assertions: 4,
            custom_assertions: 1,
            passed_assertions: 4,
            failed_assertions: 1,
        }),
        outcome: Outcome {
            status: Status::Ok,
            duration_ms: 812,
        },
    };
    let json = serde_json::to_vec(&event).expect("an event serializes");
    let parsed = CliEvent::parse(&json, now).expect("the event it built is valid");
    assert_eq!(parsed, event);
    println!("valid: {}", String::from_utf8_lossy(&json));

    // A count below zero is refused, by field.
    let mut broken: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    broken["stats"]["rows"] = serde_json::json!(-7);
    let refused = CliEvent::parse(&serde_json::to_vec(&broken).expect("JSON"), now)
        .expect_err("a negative row count is refused");
    println!("refused at {}: {refused}", refused.field());
    assert_eq!(refused.field(), "stats.rows");
    assert!(
        !refused.to_string().contains("-7"),
        "the reason repeats the value"
    );
}
