//! Golden fixtures: each validates against the committed JSON Schema, parses,
//! passes validation and serializes back to the same JSON.

use chrono::{DateTime, TimeDelta, Utc};
use piperider_event::{CliEvent, CloudEvent, CloudEventType, WireEvent, schema};
use serde_json::Value;

use crate::{fixtures, schema_dir};

fn committed_schema(file: &str) -> Value {
    let path = schema_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask codegen`", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn check_golden<E: WireEvent + std::fmt::Debug>(kind: &str, schema_file: &str) -> Vec<E> {
    let validator = jsonschema::validator_for(&committed_schema(schema_file)).unwrap();
    let mut events = Vec::new();
    for (name, text) in fixtures(kind) {
        let value: Value = serde_json::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{kind}/{name} breaks the schema: {errors:?}"
        );

        let ts: DateTime<Utc> = value["timestamp"].as_str().unwrap().parse().unwrap();
        let event = E::parse(text.as_bytes(), ts + TimeDelta::minutes(1))
            .unwrap_or_else(|e| panic!("{kind}/{name}: {e}"));
        let back = serde_json::to_value(&event).unwrap();
        assert_eq!(back, value, "{kind}/{name} does not round-trip");
        events.push(event);
    }
    events
}

#[test]
fn cli_fixtures_match_schema_and_round_trip() {
    let events: Vec<CliEvent> = check_golden("cli", "cli-event.v1.schema.json");
    let run = events
        .iter()
        .find(|e| e.event_type.as_str() == "run")
        .unwrap();
    let stats = run.stats.unwrap();
    assert_eq!((stats.tables, stats.columns, stats.rows), (2, 8, 30));
}

#[test]
fn cloud_fixtures_cover_every_event_type() {
    let events: Vec<CloudEvent> = check_golden("cloud", "cloud-event.v1.schema.json");
    for kind in CloudEventType::ALL {
        assert!(
            events.iter().any(|e| e.event_type == kind),
            "no golden fixture for {kind}"
        );
    }
}

#[test]
fn batches_match_schema() {
    let events: Vec<Value> = fixtures("cli")
        .into_iter()
        .map(|(_, t)| serde_json::from_str(&t).unwrap())
        .collect();
    let batch = serde_json::json!({ "events": events });
    let validator =
        jsonschema::validator_for(&committed_schema("cli-batch.v1.schema.json")).unwrap();
    assert!(validator.is_valid(&batch));
    assert!(!validator.is_valid(&serde_json::json!({ "events": [{"event_type": "run"}] })));
    assert!(!validator.is_valid(&serde_json::json!({ "events": [], "extra": 1 })));
}

#[test]
fn committed_schema_is_fresh() {
    for (file, text) in schema::documents() {
        let path = schema_dir().join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is stale: the Rust types changed; run `cargo xtask codegen` and commit",
            path.display()
        );
    }
}

#[test]
fn the_schema_rejects_what_the_parser_rejects() {
    let validator =
        jsonschema::validator_for(&committed_schema("cli-event.v1.schema.json")).unwrap();
    let (_, text) = fixtures("cli")
        .into_iter()
        .find(|(n, _)| n == "run.json")
        .unwrap();
    let good: Value = serde_json::from_str(&text).unwrap();
    let cases: [(&str, Value); 5] = [
        ("/user_id", Value::from("NOT-HEX")),
        ("/outcome/status", Value::from("crashed")),
        ("/platform/os", Value::from("x".repeat(33))),
        ("/stats/rows", Value::from(-1)),
        ("/event_type", Value::from("Run Command")),
    ];
    for (pointer, bad) in cases {
        let mut value = good.clone();
        *value.pointer_mut(pointer).unwrap() = bad;
        assert!(
            !validator.is_valid(&value),
            "schema accepted a bad {pointer}"
        );
    }
}
