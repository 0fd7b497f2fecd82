//! Property tests: the parser never panics, and valid events round-trip.

use chrono::{DateTime, Utc};
use piperider_event::{Batch, CliEvent, CloudEvent, RawBatch, WireEvent};
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    "2026-11-30T04:41:13Z".parse().unwrap()
}

/// One event of a test batch: a golden CLI event, perhaps broken in one way.
fn event_text(fixture: usize, edit: usize) -> String {
    let fixtures = crate::fixtures("cli");
    let mut value: serde_json::Value =
        serde_json::from_str(&fixtures[fixture % fixtures.len()].1).unwrap();
    let edits: [fn(&mut serde_json::Value); 8] = [
        |_| {},
        |_| {},
        |v| v["user_id"] = "ABC".into(),
        |v| v["timestamp"] = "2031-01-01T00:00:00Z".into(),
        |v| v["schema_version"] = 2.into(),
        |v| v["secret"] = "x".into(),
        |v| v["outcome"]["status"] = "crashed".into(),
        |v| {
            v.as_object_mut().unwrap().remove("outcome");
        },
    ];
    edits[edit % edits.len()](&mut value);
    value.to_string()
}

/// The long way: the envelope, then each event on its own; `None` when
/// the envelope is unusable or too many events.
fn long_way(body: &[u8]) -> Option<Vec<Result<CliEvent, String>>> {
    let batch = RawBatch::parse(body).ok()?;
    (batch.events.len() <= piperider_event::limits::MAX_BATCH_EVENTS).then(|| {
        batch
            .events
            .iter()
            .map(|raw| CliEvent::parse(raw.get().as_bytes(), now()).map_err(|e| e.to_string()))
            .collect()
    })
}

proptest! {
    /// The one-pass read of a batch accepts exactly the bodies whose every
    /// event the long way accepts (when the body is no larger than one
    /// event may be), as the same events.
    #[test]
    fn the_one_pass_read_agrees_with_the_long_way(
        events in proptest::collection::vec((0usize..3, 0usize..16), 0..4),
        envelope in 0usize..6,
        padding in prop_oneof![Just(0usize), Just(40_000usize)],
    ) {
        let texts: Vec<String> = events.iter().map(|&(f, e)| event_text(f, e)).collect();
        let spaces = " ".repeat(padding);
        let body = match envelope {
            0 => format!("{{\"events\":[{}{spaces}]}}", texts.join(",")),
            1 => format!("{{\"events\":[{}],\"extra\":1}}", texts.join(",")),
            2 => format!("{{\"events\":[{}]}} x", texts.join(",")),
            3 => format!("[{}]", texts.join(",")),
            _ => format!("{spaces}{{ \"events\" : [ {} ] }}\n", texts.join(" , ")),
        };
        let fast = Batch::<CliEvent>::parse_valid(body.as_bytes(), now());
        let long = long_way(body.as_bytes());
        let all_valid = long.as_ref().filter(|events| events.iter().all(Result::is_ok));
        match (&fast, all_valid) {
            (Some(fast), Some(long)) => {
                let long: Vec<_> = long.iter().map(|e| serde_json::to_value(e.as_ref().unwrap()).unwrap()).collect();
                let fast: Vec<_> = fast.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
                prop_assert_eq!(fast, long);
            }
            (Some(_), None) => prop_assert!(false, "the one-pass read accepted what the long way refuses: {:?}", long),
            (None, Some(_)) => prop_assert!(
                body.len() > piperider_event::limits::MAX_EVENT_BYTES,
                "a valid body within one event's size was left to the long way"
            ),
            (None, None) => {}
        }
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = CliEvent::parse(&raw, now());
        let _ = CloudEvent::parse(&raw, now());
        let _ = RawBatch::parse(&raw);
        let _ = Batch::<CliEvent>::parse_valid(&raw, now());
    }

    #[test]
    fn valid_stats_round_trip(
        tables in 0u64..1000, columns in 0u64..10_000, rows in 0u64..=piperider_event::limits::MAX_ROWS,
        builtin in 0u64..100, custom in 0u64..100, failed_share in 0u64..=100,
    ) {
        let (_, text) = crate::fixtures("cli").into_iter().find(|(n, _)| n == "run.json").unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let total = builtin + custom;
        let failed = total * failed_share / 100;
        value["stats"] = serde_json::json!({
            "tables": tables, "columns": columns, "rows": rows,
            "builtin_assertions": builtin, "custom_assertions": custom,
            "passed_assertions": total - failed, "failed_assertions": failed,
        });
        let raw = serde_json::to_vec(&value).unwrap();
        let event = CliEvent::parse(&raw, now()).unwrap();
        prop_assert_eq!(serde_json::to_value(&event).unwrap(), value);
    }
}
