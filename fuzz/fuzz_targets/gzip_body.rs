//! Any bytes through the backend's gzip body path, then the batch parse:
//! sent as they are, gzip-compressed, or compressed and then damaged (a
//! flipped byte, a cut). Nothing may panic; what comes out is within the
//! decompressed-size cap and is what was compressed.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use piperider_event::RawBatch;

/// The cap of a decompressed body (`edge/body.rs`).
const CAP: usize = 8 * 1024 * 1024;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("writing to memory");
    e.finish().expect("writing to memory")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = match mode % 4 {
        0 => rest.to_vec(),
        1 => gzip(rest),
        2 => {
            let mut g = gzip(rest);
            let at = usize::from(mode) * 7 % g.len();
            g[at] ^= 0x5a;
            g
        }
        _ => {
            let mut g = gzip(rest);
            g.truncate(usize::from(mode) % g.len());
            g
        }
    };
    let Ok(out) = piperider_ingest::edge::gunzip_now(&body) else {
        return;
    };
    assert!(out.len() <= CAP);
    if mode % 4 == 1 {
        assert_eq!(out, rest, "a whole gzip body came out changed");
    }
    if let Ok(batch) = RawBatch::parse(&out) {
        assert!(batch.events.len() <= piperider_event::limits::MAX_BATCH_EVENTS + 1);
    }
});
