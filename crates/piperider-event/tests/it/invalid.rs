//! Bad events are refused with the field that broke the rule.

use chrono::{DateTime, TimeDelta, Utc};
use piperider_event::{CliEvent, CloudEvent, EventError, RawBatch, WireEvent, limits};
use serde_json::{Value, json};

use crate::fixtures;

fn now() -> DateTime<Utc> {
    "2026-11-30T04:41:13Z".parse().unwrap()
}

fn good(kind: &str, name: &str) -> Value {
    let (_, text) = fixtures(kind).into_iter().find(|(n, _)| n == name).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Applies `edit` to the golden `run` event and expects it refused naming `field`.
fn check_cli(edit: impl FnOnce(&mut Value), field: &str) {
    let mut value = good("cli", "run.json");
    edit(&mut value);
    let raw = serde_json::to_vec(&value).unwrap();
    match CliEvent::parse(&raw, now()) {
        Ok(_) => panic!("accepted an event that should break {field}"),
        Err(err) => assert_eq!(err.field(), field, "wrong field for: {err}"),
    }
}

fn set(pointer: &str, v: Value) -> impl FnOnce(&mut Value) {
    let pointer = pointer.to_string();
    move |value: &mut Value| *value.pointer_mut(&pointer).unwrap() = v
}

#[test]
fn cli_events_name_the_bad_field() {
    check_cli(set("/user_id", json!("ABC")), "user_id");
    check_cli(set("/device_id", json!("xyz")), "device_id");
    check_cli(set("/event_id", json!("not-a-uuid")), "event_id");
    check_cli(
        set("/event_id", json!("00000000-0000-0000-0000-000000000000")),
        "event_id",
    );
    check_cli(set("/event_type", json!("")), "event_type");
    check_cli(set("/timestamp", json!("yesterday")), "timestamp");
    check_cli(
        set("/timestamp", json!("2019-01-01T00:00:00Z")),
        "timestamp",
    );
    check_cli(
        set("/timestamp", json!("2031-01-01T00:00:00Z")),
        "timestamp",
    );
    check_cli(set("/platform/os", json!("x".repeat(1 << 20))), ".");
    check_cli(set("/platform/os", json!("x".repeat(100))), "platform.os");
    check_cli(
        set("/platform/os_version", json!("a\u{0}b")),
        "platform.os_version",
    );
    check_cli(set("/runtime/version", json!("")), "runtime.version");
    check_cli(set("/app_version", json!(7)), "app_version");
    check_cli(set("/ci", json!("Git Hub")), "ci");
    check_cli(
        set("/project/project_id", json!("1234")),
        "project.project_id",
    );
    check_cli(
        set(
            "/project/datasource_type",
            json!("'; drop table events; --"),
        ),
        "project.datasource_type",
    );
    check_cli(set("/stats/rows", json!(-3)), "stats.rows");
    check_cli(set("/stats/rows", json!(1u64 << 60)), "stats.rows");
    check_cli(set("/stats/tables", json!(2_000_000)), "stats.tables");
    check_cli(set("/outcome/status", json!("crashed")), "outcome.status");
    check_cli(
        set("/outcome/duration_ms", json!(u64::MAX)),
        "outcome.duration_ms",
    );
    check_cli(set("/schema_version", json!(2)), "schema_version");
    // An unknown field is named by the object that holds it, not by its own (client-chosen) name.
    check_cli(|v| v["secret"] = json!("x"), ".");
    check_cli(
        |v| v["outcome"]["message"] = json!("password=hunter2"),
        "outcome",
    );
    check_cli(
        |v| {
            v.as_object_mut().unwrap().remove("user_id");
        },
        ".",
    );
    check_cli(
        |v| {
            v.as_object_mut().unwrap().remove("outcome");
        },
        ".",
    );
}

#[test]
fn missing_fields_are_named_and_unknown_ones_are_not_repeated() {
    let mut value = good("cli", "run.json");
    value.as_object_mut().unwrap().remove("user_id");
    let err = CliEvent::parse(&serde_json::to_vec(&value).unwrap(), now()).unwrap_err();
    assert!(err.to_string().contains("user_id"), "{err}");

    let mut value = good("cli", "run.json");
    value["stats"]["secret_table_name"] = json!("payroll");
    let err = CliEvent::parse(&serde_json::to_vec(&value).unwrap(), now()).unwrap_err();
    // The object that holds it is named; the client's own key and value are not repeated.
    assert_eq!(err.field(), "stats");
    assert!(err.to_string().contains("unknown field"), "{err}");
    for input in ["secret_table_name", "payroll"] {
        assert!(
            !err.to_string().contains(input),
            "the reason repeats {input}: {err}"
        );
    }
}

#[test]
fn schema_version_defaults_to_one() {
    let mut value = good("cli", "run.json");
    value.as_object_mut().unwrap().remove("schema_version");
    let event = CliEvent::parse(&serde_json::to_vec(&value).unwrap(), now()).unwrap();
    assert_eq!(event.schema_version, 1);
}

#[test]
fn timestamp_window_edges() {
    for (offset, ok) in [
        (limits::MAX_FUTURE_SKEW, true),
        (limits::MAX_FUTURE_SKEW + TimeDelta::seconds(1), false),
        (-limits::MAX_AGE, true),
        (-limits::MAX_AGE - TimeDelta::seconds(1), false),
    ] {
        let mut value = good("cli", "run.json");
        value["timestamp"] = json!((now() + offset).to_rfc3339());
        let result = CliEvent::parse(&serde_json::to_vec(&value).unwrap(), now());
        assert_eq!(result.is_ok(), ok, "offset {offset}: {result:?}");
    }
}

#[test]
fn size_limit_is_checked_before_parsing() {
    let raw = vec![b' '; limits::MAX_EVENT_BYTES + 1];
    assert!(matches!(
        CliEvent::parse(&raw, now()),
        Err(EventError::TooLarge { .. })
    ));
}

#[test]
fn garbage_is_refused_not_panicked_on() {
    for raw in [
        &b""[..],
        b"null",
        b"[]",
        b"{",
        b"\xff\xfe",
        b"{\"events\":[]}",
        b"{} {}",
    ] {
        assert!(CliEvent::parse(raw, now()).is_err());
    }
}

#[test]
fn cloud_rules() {
    let check = |name: &str, edit: &dyn Fn(&mut Value), field: &str| {
        let mut value = good("cloud", name);
        edit(&mut value);
        let err = CloudEvent::parse(&serde_json::to_vec(&value).unwrap(), now())
            .expect_err("should be refused");
        assert_eq!(err.field(), field, "{err}");
    };
    check(
        "comparison_sources.json",
        &|v| {
            v.as_object_mut().unwrap().remove("sources");
        },
        "sources",
    );
    check(
        "comparison_sources.json",
        &|v| v["sources"] = json!([]),
        "sources",
    );
    check(
        "comparison_sources.json",
        &|v| v["sources"] = json!(["Bad Source"]),
        "sources[0]",
    );
    check(
        "page_view.json",
        &|v| v["sources"] = json!(["upload"]),
        "sources",
    );
    check("page_view.json", &|v| v["metric"] = json!("rows"), "metric");
    check(
        "trend_metric_selected.json",
        &|v| {
            v.as_object_mut().unwrap().remove("metric");
        },
        "metric",
    );
    check(
        "page_view.json",
        &|v| v["route"] = json!("/reports/12345?tab=1"),
        "route",
    );
    check(
        "page_view.json",
        &|v| v["route"] = json!("https://cloud.example/reports"),
        "route",
    );
    check(
        "page_view.json",
        &|v| v["event_type"] = json!("scroll"),
        "event_type",
    );
    check(
        "login.json",
        &|v| v["user_email"] = json!("a@b.c"),
        // The unknown field's own name is the client's text: the event is named instead.
        ".",
    );
}

#[test]
fn raw_batches_keep_events_apart() {
    let body = br#"{"events": [{"a": 1}, 5, "x"]}"#;
    let batch = RawBatch::parse(body).unwrap();
    assert_eq!(batch.events.len(), 3);
    assert_eq!(batch.events[1].get(), "5");

    for bad in [
        &b"{}"[..],
        b"[]",
        b"{\"events\": 3}",
        b"{\"events\": [], \"x\": 1}",
        b"",
        b"{\"events\": [}",
    ] {
        assert!(
            RawBatch::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
