//! The consent cookie: the record as URL-safe base64 JSON, then a dot, then
//! an HMAC-SHA256 of that text under the server's secret. The page script
//! may read the record; only the server can make one that verifies, so a
//! hand-made or edited cookie reads as no decision at all.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::ConsentRecord;

/// The cookie's name.
pub const COOKIE_NAME: &str = "piperider_consent";

/// Longest cookie value read; anything longer is not ours.
const MAX_COOKIE_LEN: usize = 512;

/// Signs and verifies consent cookies with one server secret.
#[derive(Clone)]
pub struct CookieCodec {
    key: Vec<u8>,
}

impl std::fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieCodec(..)")
    }
}

impl CookieCodec {
    /// A codec with this secret (at least 32 bytes of randomness).
    pub fn new(secret: &[u8]) -> Self {
        CookieCodec {
            key: secret.to_vec(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length")
    }

    /// The cookie's value: the record as URL-safe base64 JSON, a dot, and
    /// its HMAC-SHA256, so a browser can read its choice but not forge one.
    pub fn encode(&self, record: &ConsentRecord) -> String {
        let json = serde_json::to_vec(record).expect("a record always serializes");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The record in `cookie`, or `None` when it is malformed, unsigned,
    /// signed with another secret, or edited.
    pub fn decode(&self, cookie: &str) -> Option<ConsentRecord> {
        if cookie.len() > MAX_COOKIE_LEN {
            return None;
        }
        let (payload, tag) = cookie.trim().split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).ok()?;
        let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice(&json).ok()
    }
}
