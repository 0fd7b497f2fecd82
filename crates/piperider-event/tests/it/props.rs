//! Property tests: the parser never panics, and valid events round-trip.

use chrono::{DateTime, Utc};
use piperider_event::{CliEvent, CloudEvent, RawBatch, WireEvent};
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    "2026-11-30T04:41:13Z".parse().unwrap()
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = CliEvent::parse(&raw, now());
        let _ = CloudEvent::parse(&raw, now());
        let _ = RawBatch::parse(&raw);
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
