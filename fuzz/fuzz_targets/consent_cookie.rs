//! Any text as a consent cookie: decoding never panics, and only a cookie
//! this codec signed decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piperider_consent::CookieCodec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let codec = CookieCodec::new(b"0123456789abcdef0123456789abcdef-fuzz-secret");
    if let Some(record) = codec.decode(text) {
        // Whatever decodes, encodes back to a cookie that decodes the same.
        assert_eq!(codec.decode(&codec.encode(&record)), Some(record));
    }
});
