//! Any bytes as a batch body: the envelope (at most one event too many is
//! kept), then every event in it as a CLI event and as a Cloud event.
//! Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piperider_event::{CliEvent, CloudEvent, RawBatch, WireEvent};

fuzz_target!(|data: &[u8]| {
    let now = chrono::Utc::now();
    let Ok(batch) = RawBatch::parse(data) else {
        return;
    };
    assert!(batch.events.len() <= piperider_event::limits::MAX_BATCH_EVENTS + 1);
    for raw in &batch.events {
        let raw = raw.get().as_bytes();
        let _ = CliEvent::parse(raw, now);
        let _ = CloudEvent::parse(raw, now);
    }
});
