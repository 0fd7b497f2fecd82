//! Verifiable consent records: each decision is an append-only record
//! chained to the one before it by its hash, so that editing, inserting or
//! removing a record anywhere breaks every link after it.
//!
//! A record holds what the controller must be able to show (GDPR Art.
//! 7(1)): which decision, when, under which policy version, the SHA-256 of
//! the banner text shown, whether the browser sent the Global Privacy
//! Control signal, where it was made (banner or settings) and until when it
//! counts. Its hash covers all of that and the previous record's hash. The
//! chain starts at [`GENESIS`] or, once old records are pruned, at an anchor:
//! the hash of the last record pruned, kept by whoever keeps the chain.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash the first record of a chain links to: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record says was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Accept All.
    AcceptAll,
    /// Necessary Only, with no Accept All in force before it.
    NecessaryOnly,
    /// Necessary Only replacing an Accept All: consent withdrawn.
    Withdraw,
}

impl DecisionKind {
    /// `accept_all`, `necessary_only` or `withdraw`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::AcceptAll => "accept_all",
            DecisionKind::NecessaryOnly => "necessary_only",
            DecisionKind::Withdraw => "withdraw",
        }
    }

    /// Reads [`DecisionKind::as_str`]'s names.
    pub fn parse(s: &str) -> Option<DecisionKind> {
        match s {
            "accept_all" => Some(DecisionKind::AcceptAll),
            "necessary_only" => Some(DecisionKind::NecessaryOnly),
            "withdraw" => Some(DecisionKind::Withdraw),
            _ => None,
        }
    }
}

/// One decision, as chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// Its place in the chain, from 1, without gaps.
    pub seq: u64,
    /// The decision's id (the one the visitor's cookie names).
    pub consent_id: String,
    /// When it was made, seconds since the epoch (UTC).
    pub decided_at: i64,
    /// What was decided.
    pub kind: DecisionKind,
    /// The consent policy's version shown.
    pub policy_version: u32,
    /// The SHA-256 of the banner text shown ([`banner_hash`]).
    pub banner_hash: String,
    /// Whether the browser sent `Sec-GPC: 1`.
    pub gpc: bool,
    /// `banner` or `settings`.
    pub source: String,
    /// When the decision stops counting, seconds since the epoch.
    pub expires_at: i64,
}

impl ChainEntry {
    /// The record's hash when it follows a record whose hash is
    /// `prev_hash`: the SHA-256 (64 lowercase hex digits) of one compact
    /// JSON array of its fields in the order above, then `prev_hash`.
    pub fn link(&self, prev_hash: &str) -> String {
        let canonical = serde_json::json!([
            self.seq,
            self.consent_id,
            self.decided_at,
            self.kind.as_str(),
            self.policy_version,
            self.banner_hash,
            self.gpc,
            self.source,
            self.expires_at,
            prev_hash,
        ]);
        hex(&Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// A stored record: the entry, the hash it links to and its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The decision.
    #[serde(flatten)]
    pub entry: ChainEntry,
    /// The hash of the record before it (or the anchor, or [`GENESIS`]).
    pub prev_hash: String,
    /// Its own hash, [`ChainEntry::link`] of `prev_hash`.
    pub hash: String,
}

/// Where a chain first fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {seq}: {reason}")]
pub struct BrokenLink {
    /// The first record that does not hold.
    pub seq: u64,
    /// Why.
    pub reason: &'static str,
}

/// Checks `links` (in order) from `anchor`: the hash and sequence number
/// the first one must follow (`(0, GENESIS)` for a chain never pruned).
/// Returns how many records hold, or the first that does not.
pub fn verify<I>(anchor: (u64, &str), links: I) -> Result<u64, BrokenLink>
where
    I: IntoIterator<Item = ChainLink>,
{
    let (mut seq, mut prev) = (anchor.0, anchor.1.to_string());
    let mut checked = 0;
    for link in links {
        let at = link.entry.seq;
        if at != seq + 1 {
            return Err(BrokenLink {
                seq: at,
                reason: "out of sequence: a record before it is missing or was added",
            });
        }
        if link.prev_hash != prev {
            return Err(BrokenLink {
                seq: at,
                reason: "does not link to the record before it",
            });
        }
        if link.entry.link(&prev) != link.hash {
            return Err(BrokenLink {
                seq: at,
                reason: "its content does not match its hash: edited",
            });
        }
        seq = at;
        prev = link.hash;
        checked += 1;
    }
    Ok(checked)
}

/// The banner's text, as the browser script shows it.
macro_rules! banner_text {
    () => {
        "PipeRider Cloud uses a session cookie to keep you logged in. With your consent it also records which pages you visit and which features you use, to improve the product. You can change your mind at any time under \"Cookie settings\"."
    };
}
pub(crate) use banner_text;

/// What the banner adds when the browser sent the Global Privacy Control signal.
macro_rules! gpc_text {
    () => {
        "Your browser sent a Global Privacy Control signal, and it is honoured: nothing is recorded for telemetry unless you choose Accept All."
    };
}
pub(crate) use gpc_text;

/// The banner's text.
pub const BANNER_TEXT: &str = banner_text!();
/// The line the banner adds under a Global Privacy Control signal.
pub const GPC_TEXT: &str = gpc_text!();

/// The SHA-256 of the banner text a visitor saw: [`BANNER_TEXT`], and with
/// the Global Privacy Control signal a newline and [`GPC_TEXT`].
pub fn banner_hash(gpc: bool) -> String {
    let mut h = Sha256::new();
    h.update(BANNER_TEXT.as_bytes());
    if gpc {
        h.update(b"\n");
        h.update(GPC_TEXT.as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<ChainLink> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let entry = ChainEntry {
                    seq,
                    consent_id: format!("{seq:032x}"),
                    decided_at: 1_800_000_000 + seq as i64,
                    kind: DecisionKind::AcceptAll,
                    policy_version: 1,
                    banner_hash: banner_hash(seq % 2 == 0),
                    gpc: seq % 2 == 0,
                    source: "banner".into(),
                    expires_at: 1_816_000_000,
                };
                let hash = entry.link(&prev);
                let link = ChainLink {
                    entry,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                link
            })
            .collect()
    }

    #[test]
    fn an_edit_a_removal_or_an_insertion_breaks_the_chain_where_it_happened() {
        assert_eq!(verify((0, GENESIS), chain(5)), Ok(5));
        let mut edited = chain(5);
        edited[2].entry.kind = DecisionKind::Withdraw;
        assert_eq!(verify((0, GENESIS), edited).unwrap_err().seq, 3);
        let mut removed = chain(5);
        removed.remove(1);
        assert_eq!(verify((0, GENESIS), removed).unwrap_err().seq, 3);
        // A record re-hashed after an edit still breaks the next link.
        let mut rehashed = chain(5);
        rehashed[1].entry.gpc = !rehashed[1].entry.gpc;
        rehashed[1].hash = rehashed[1].entry.link(&rehashed[1].prev_hash);
        let broken = verify((0, GENESIS), rehashed).unwrap_err();
        assert_eq!(
            (broken.seq, broken.reason),
            (3, "does not link to the record before it")
        );
        // Pruned: the rest holds from the anchor.
        let all = chain(5);
        let anchor = (2, all[1].hash.clone());
        assert_eq!(verify((anchor.0, &anchor.1), all[2..].to_vec()), Ok(3));
        assert!(verify((0, GENESIS), all[2..].to_vec()).is_err());
        assert_ne!(banner_hash(true), banner_hash(false));
    }
}
