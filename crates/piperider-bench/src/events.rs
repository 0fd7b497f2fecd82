//! The load's events: `run` events of a thousand users with real-looking
//! ids, made fast enough that the load generator, which shares the
//! machine with the backend, is never the bottleneck.

/// Users the load spreads its events over.
const USERS: u64 = 1_000;

/// One `run` event of user `n % USERS`, appended to `out`: a fresh
/// time-ordered id, as the collector makes them, and the time of the
/// request. User, device and project ids look like real ones: random hex,
/// not a counter padded with zeros. Written piece by piece: the load
/// generator shares the machine with the backend, so its own work per
/// event is kept to a few hundred nanoseconds.
fn push_event(out: &mut String, n: u64, now_ms: u64, timestamp: &str) {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.push_str("{\"schema_version\":1,\"event_id\":\"");
    out.push_str(next_event_id(now_ms).hyphenated().encode_lower(&mut id));
    out.push_str("\",\"event_type\":\"run\",\"timestamp\":\"");
    out.push_str(timestamp);
    out.push_str("\",\"user_id\":\"");
    out.push_str(&IDS.users[(n % USERS) as usize]);
    out.push_str("\",\"device_id\":\"");
    out.push_str(&IDS.devices[(n % USERS) as usize]);
    out.push_str(
        "\",\"platform\":{\"os\":\"linux\",\"arch\":\"x86_64\",\"os_version\":\"6.1.0\"},\
         \"runtime\":{\"name\":\"python\",\"version\":\"3.11.7\"},\"app_version\":\"0.2.0\",\"initial_version\":\"0.1.0\",\
         \"ci\":null,\"project\":{\"project_id\":\"",
    );
    out.push_str(&IDS.projects[(n % (USERS * 2)) as usize]);
    out.push_str(
        "\",\"datasource_type\":\"postgres\"},\
         \"stats\":{\"tables\":12,\"columns\":140,\"rows\":250000,\"builtin_assertions\":40,\"custom_assertions\":3,\
         \"passed_assertions\":41,\"failed_assertions\":2},\"outcome\":{\"status\":\"ok\",\"duration_ms\":2300}}",
    );
}

/// A UUIDv7 of `now_ms` whose random bits are a process-wide counter
/// through splitmix64, all 64 of them: unique in the run, and spread like
/// the random bits of `Uuid::now_v7`, which costs ten times as much.
fn next_event_id(now_ms: u64) -> uuid::Uuid {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let h = splitmix64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    // The builder keeps 12 bits of the first two bytes and 62 of the last
    // eight: the top 12 bits of `h` go to the former, the other 52 to the
    // latter's low bits.
    let mut bits = [0u8; 10];
    bits[..2].copy_from_slice(&((h >> 52) as u16).to_be_bytes());
    bits[2..].copy_from_slice(&(h & ((1 << 52) - 1)).to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(now_ms, &bits).into_uuid()
}

/// A request body of `events` events of user `n % USERS`, stamped now.
pub(crate) fn body(n: u64, events: usize) -> String {
    let now = chrono::Utc::now();
    let timestamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let mut out = String::with_capacity(16 + events * 900);
    out.push_str("{\"events\":[");
    for i in 0..events {
        if i > 0 {
            out.push(',');
        }
        push_event(&mut out, n, now_ms, &timestamp);
    }
    out.push_str("]}");
    out
}

/// The ids of the bench's users, their devices and projects, made once.
struct Ids {
    users: Vec<String>,
    devices: Vec<String>,
    projects: Vec<String>,
}

static IDS: std::sync::LazyLock<Ids> = std::sync::LazyLock::new(|| Ids {
    users: (0..USERS).map(|n| random_hex(1, n, 2)).collect(),
    devices: (0..USERS).map(|n| random_hex(2, n, 4)).collect(),
    projects: (0..USERS * 2).map(|n| random_hex(3, n, 2)).collect(),
});

/// A bijection of 64-bit words whose outputs look random (splitmix64).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `words` 64-bit words of hex, the same for the same `kind` and `n`.
fn random_hex(kind: u64, n: u64, words: u64) -> String {
    (0..words)
        .map(|w| format!("{:016x}", splitmix64(kind << 56 ^ n << 8 ^ w)))
        .collect()
}

/// The worst bodies the limits allow, gzip-compressed: 500 events with
/// every string and figure at its maximum, and an envelope of as many tiny
/// entries as the decompressed-size limit holds.
pub(crate) fn hostile_bodies() -> Vec<Vec<u8>> {
    use piperider_event::limits::*;
    let long = |n: usize| "v".repeat(n);
    let token = |n: usize| "t".repeat(n);
    let events: Vec<serde_json::Value> = (0..MAX_BATCH_EVENTS)
        .map(|_| {
            serde_json::json!({
                "schema_version": 1,
                "event_id": uuid::Uuid::now_v7().to_string(),
                "event_type": token(MAX_NAME_LEN),
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "user_id": IDS.users[0],
                "device_id": IDS.devices[0],
                "platform": {"os": token(MAX_NAME_LEN), "arch": token(MAX_NAME_LEN), "os_version": long(MAX_VERSION_LEN)},
                "runtime": {"name": token(MAX_NAME_LEN), "version": long(MAX_VERSION_LEN)},
                "app_version": long(MAX_VERSION_LEN),
                "initial_version": long(MAX_VERSION_LEN),
                "ci": token(MAX_NAME_LEN),
                "project": {"project_id": IDS.projects[0], "datasource_type": token(MAX_NAME_LEN)},
                "stats": {"tables": MAX_TABLES, "columns": MAX_COLUMNS, "rows": MAX_ROWS,
                    "builtin_assertions": MAX_ASSERTIONS, "custom_assertions": MAX_ASSERTIONS,
                    "passed_assertions": MAX_ASSERTIONS, "failed_assertions": MAX_ASSERTIONS},
                "outcome": {"status": "error", "duration_ms": MAX_DURATION_MS}
            })
        })
        .collect();
    let maximal = serde_json::json!({ "events": events }).to_string();
    // `{"events":[0,0,...]}` within 8 MiB decompressed.
    let mut tiny = String::with_capacity(8_000_100);
    tiny.push_str("{\"events\":[0");
    tiny.push_str(&",0".repeat(3_999_999));
    tiny.push_str("]}");
    [maximal, tiny]
        .iter()
        .map(|json| {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(json.as_bytes()).expect("writing to memory");
            gz.finish().expect("writing to memory")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_event_ids_are_unique_v7_and_parse() {
        let ids: std::collections::HashSet<uuid::Uuid> = (0..100_000)
            .map(|_| next_event_id(1_764_511_200_000))
            .collect();
        assert_eq!(ids.len(), 100_000);
        let id = ids.iter().next().unwrap();
        assert_eq!(id.get_version_num(), 7);
        let body = body(3, 2);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
        assert_eq!(v["events"][0]["user_id"], IDS.users[3]);
    }
}
