//! The record of what left the machine: every batch the sender delivered,
//! byte for byte, beside the backend's answer to it (per-event results
//! and, from a backend that gives them, a [`Receipt`]).
//!
//! Each batch is two files under `telemetry/sent/`, named by when it was
//! sent, how many events it held and its size: `NAME.batch` (exactly the
//! bytes posted) and `NAME.answer` (the answer, as JSON, with the
//! endpoint). At most [`MAX_EVENTS`] events or [`MAX_BYTES`] of batches
//! are kept, the oldest dropped first, and none older than four weeks.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use piperider_event::{BatchResponse, CliEvent, RawBatch, Receipt, ResultStatus, WireEvent};
use serde::{Deserialize, Serialize};

use crate::files;

/// Most events the log keeps (Dart's and Flutter's local log keeps as many).
pub(crate) const MAX_EVENTS: usize = 2_500;
/// Most bytes of batches the log keeps.
pub(crate) const MAX_BYTES: u64 = 1024 * 1024;

const BATCH: &str = ".batch";
const ANSWER: &str = ".answer";

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// What is kept beside a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    endpoint: String,
    #[serde(flatten)]
    response: BatchResponse,
}

/// The folder of delivered batches.
#[derive(Debug, Clone)]
pub(crate) struct SentLog {
    dir: PathBuf,
}

/// One kept batch's name: when, how many events, how many bytes.
#[derive(Debug, Clone)]
struct Entry {
    stem: String,
    micros: u128,
    events: usize,
    bytes: u64,
}

impl Entry {
    fn parse(name: &str) -> Option<Entry> {
        let stem = name.strip_suffix(BATCH)?;
        let mut parts = stem.split('-');
        let (time, events, bytes) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || time.len() != 23 {
            return None;
        }
        Some(Entry {
            stem: stem.to_string(),
            micros: time.get(..20)?.parse().ok()?,
            events: events.parse().ok()?,
            bytes: bytes.parse().ok()?,
        })
    }
}

impl SentLog {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> SentLog {
        SentLog { dir: dir.into() }
    }

    /// Appends one delivered batch and the answer to it, then drops the
    /// oldest batches over the caps or past `max_age`.
    pub(crate) fn append(
        &self,
        endpoint: &str,
        body: &[u8],
        events: usize,
        response: &BatchResponse,
        max_age: Duration,
    ) -> io::Result<()> {
        files::ensure_private_dir(&self.dir)?;
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 1000;
        let stem = format!("{micros:020}{seq:03}-{events}-{}", body.len());
        let answer = serde_json::to_vec(&Answer {
            endpoint: endpoint.to_string(),
            response: response.clone(),
        })
        .map_err(io::Error::other)?;
        // The answer first: a batch file is only listed once both are there.
        files::write_atomic(&self.dir.join(format!("{stem}{ANSWER}")), &answer)?;
        files::write_atomic(&self.dir.join(format!("{stem}{BATCH}")), body)?;
        self.trim(max_age)
    }

    fn entries(&self) -> io::Result<Vec<Entry>> {
        match fs::symlink_metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
            Ok(_) => files::ensure_private_dir(&self.dir)?,
        }
        let mut entries: Vec<Entry> = fs::read_dir(&self.dir)?
            .filter_map(|e| Entry::parse(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        entries.sort_by(|a, b| a.stem.cmp(&b.stem));
        Ok(entries)
    }

    fn remove(&self, entry: &Entry) -> io::Result<()> {
        for suffix in [BATCH, ANSWER] {
            match fs::remove_file(self.dir.join(format!("{}{suffix}", entry.stem))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Drops the oldest batches until the log is within its caps (the
    /// newest batch always stays) and none is older than `max_age`.
    pub(crate) fn trim(&self, max_age: Duration) -> io::Result<()> {
        let entries = self.entries()?;
        let cutoff = SystemTime::now()
            .checked_sub(max_age)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros());
        let mut events: usize = entries.iter().map(|e| e.events).sum();
        let mut bytes: u64 = entries.iter().map(|e| e.bytes).sum();
        let newest = entries.len().saturating_sub(1);
        for (i, entry) in entries.iter().enumerate() {
            let over = events > MAX_EVENTS || bytes > MAX_BYTES;
            if i == newest || (!over && entry.micros >= cutoff) {
                break;
            }
            self.remove(entry)?;
            events -= entry.events;
            bytes -= entry.bytes;
        }
        Ok(())
    }

    /// Deletes every kept batch; returns how many there were.
    pub(crate) fn clear(&self) -> io::Result<usize> {
        let entries = self.entries()?;
        for entry in &entries {
            self.remove(entry)?;
        }
        Ok(entries.len())
    }

    /// Every kept batch, oldest first, checked against its receipt.
    pub(crate) fn read(&self) -> io::Result<Vec<SentBatch>> {
        let mut batches = Vec::new();
        for entry in self.entries()? {
            // A file that cannot be read (too large, a link) is shown as unreadable.
            let body = files::read(&self.dir.join(format!("{}{BATCH}", entry.stem)), MAX_BYTES);
            let answer = files::read(&self.dir.join(format!("{}{ANSWER}", entry.stem)), MAX_BYTES)
                .ok()
                .and_then(|a| serde_json::from_slice::<Answer>(&a).ok());
            batches.push(match body {
                Ok(body) => SentBatch::check(&entry, body, answer),
                Err(_) => SentBatch::check(&entry, Vec::new(), None),
            });
        }
        Ok(batches)
    }
}

/// Whether a batch's receipt matches what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptCheck {
    /// The backend's digest of what it stored equals the one computed
    /// here from the bytes sent.
    Matches,
    /// It does not: the backend stored something other than what was sent.
    Differs,
    /// The backend gave no receipt (one that does not give them).
    NoReceipt,
    /// The kept files cannot be read as a batch and its answer.
    Unreadable,
}

/// Whether the backend still holds a batch's events as they were sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum HeldCheck {
    /// Not asked (`--offline`, no endpoint, telemetry not on) or the
    /// backend could not be asked: the reason.
    NotChecked {
        /// Why.
        reason: String,
    },
    /// Every stored event of the batch is held with the digest it was sent with.
    AsSent,
    /// Some are held with another digest: changed after they were stored.
    Changed {
        /// The ids of the events that changed.
        event_ids: Vec<String>,
    },
    /// Some are no longer held (deleted, or past the backend's retention),
    /// or not among the newest events the backend lists.
    NotHeld {
        /// How many.
        events: usize,
    },
}

/// One delivered batch, as kept, with what the checks found.
#[derive(Debug, Clone, Serialize)]
pub struct SentBatch {
    /// When it was delivered, RFC 3339.
    pub sent_at: String,
    /// Where to.
    pub endpoint: String,
    /// Events in the batch.
    pub events: usize,
    /// Events the backend stored by this batch (`accepted`).
    pub accepted: usize,
    /// Events it had stored before (`duplicate`).
    pub duplicate: usize,
    /// Events it refused.
    pub rejected: usize,
    /// Whether its receipt matches what was sent.
    pub receipt: ReceiptCheck,
    /// Whether the backend still holds the accepted events as sent.
    pub held: HeldCheck,
    /// Exactly the bytes posted.
    #[serde(serialize_with = "as_text")]
    pub body: Vec<u8>,
    /// Each accepted event's id and digest, computed from `body`.
    #[serde(skip)]
    pub(crate) digests: Vec<(String, String)>,
}

fn as_text<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

impl SentBatch {
    fn check(entry: &Entry, body: Vec<u8>, answer: Option<Answer>) -> SentBatch {
        let sent_at = chrono::DateTime::from_timestamp_micros(entry.micros as i64)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let mut batch = SentBatch {
            sent_at,
            endpoint: String::new(),
            events: entry.events,
            accepted: 0,
            duplicate: 0,
            rejected: 0,
            receipt: ReceiptCheck::Unreadable,
            held: HeldCheck::NotChecked {
                reason: "not asked".into(),
            },
            body,
            digests: Vec::new(),
        };
        let Some(answer) = answer else {
            return batch;
        };
        batch.endpoint = answer.endpoint;
        let results = &answer.response.results;
        for r in results {
            match r.status {
                ResultStatus::Accepted => batch.accepted += 1,
                ResultStatus::Duplicate => batch.duplicate += 1,
                ResultStatus::Rejected => batch.rejected += 1,
            }
        }
        let Some(receipt) = answer.response.receipt else {
            batch.receipt = ReceiptCheck::NoReceipt;
            return batch;
        };
        match accepted_digests(&batch.body, results, &receipt) {
            Some(digests) => {
                let expected = piperider_event::batch_digest(
                    digests.iter().map(|(id, d)| (id.as_str(), d.as_str())),
                );
                batch.receipt = if expected == receipt.digest {
                    ReceiptCheck::Matches
                } else {
                    ReceiptCheck::Differs
                };
                batch.digests = digests;
            }
            None => batch.receipt = ReceiptCheck::Unreadable,
        }
        batch
    }

    /// Holds the accepted events against the digests the backend lists now.
    pub(crate) fn check_held(&mut self, held: &HashMap<String, String>) {
        let mut changed = Vec::new();
        let mut missing = 0;
        for (id, digest) in &self.digests {
            match held.get(id) {
                Some(now) if now == digest => {}
                Some(_) => changed.push(id.clone()),
                None => missing += 1,
            }
        }
        self.held = if !changed.is_empty() {
            HeldCheck::Changed { event_ids: changed }
        } else if missing > 0 {
            HeldCheck::NotHeld { events: missing }
        } else {
            HeldCheck::AsSent
        };
    }
}

/// The id and digest of each event the answer says was accepted, computed
/// from the bytes sent; `None` when they cannot be read as that batch.
fn accepted_digests(
    body: &[u8],
    results: &[piperider_event::EventResult],
    receipt: &Receipt,
) -> Option<Vec<(String, String)>> {
    let batch = RawBatch::parse(body).ok()?;
    if batch.events.len() != results.len() {
        return None;
    }
    // Checked as the backend checked it: at the time it received it.
    let at = chrono::DateTime::from_timestamp_millis(receipt.received_at)?;
    let mut digests = Vec::new();
    for (raw, result) in batch.events.iter().zip(results) {
        if result.status != ResultStatus::Accepted {
            continue;
        }
        let event = CliEvent::parse(raw.get().as_bytes(), at).ok()?;
        let fields = event.stored_fields(receipt.received_at);
        digests.push((fields.event_id.clone(), fields.digest()));
    }
    Some(digests)
}

/// The folder of the sent log under the telemetry folder.
pub(crate) fn dir(telemetry: &Path) -> PathBuf {
    telemetry.join("sent")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(events: usize) -> BatchResponse {
        BatchResponse {
            results: (0..events)
                .map(|_| piperider_event::EventResult {
                    event_id: None,
                    status: ResultStatus::Duplicate,
                    field: None,
                    reason: None,
                })
                .collect(),
            receipt: None,
        }
    }

    const FOUR_WEEKS: Duration = Duration::from_secs(28 * 24 * 3600);

    #[test]
    fn the_log_keeps_the_newest_2500_events_and_1_mib_of_batches() {
        let dir = tempfile::tempdir().unwrap();
        let log = SentLog::new(dir.path().join("sent"));
        for i in 0..26 {
            let body = format!("{{\"events\":[]}} {i:04}");
            log.append(
                "https://t.example",
                body.as_bytes(),
                100,
                &answer(100),
                FOUR_WEEKS,
            )
            .unwrap();
        }
        let kept = log.read().unwrap();
        assert_eq!(kept.len(), 25, "2,500 events in batches of 100");
        assert!(String::from_utf8_lossy(&kept[0].body).ends_with("0001"));
        assert!(String::from_utf8_lossy(&kept[24].body).ends_with("0025"));
        assert_eq!(kept[0].endpoint, "https://t.example");
        assert_eq!(
            (kept[0].duplicate, kept[0].receipt),
            (100, ReceiptCheck::NoReceipt)
        );

        let big = vec![b'x'; 300 * 1024];
        for _ in 0..4 {
            log.append("https://t.example", &big, 1, &answer(1), FOUR_WEEKS)
                .unwrap();
        }
        let kept = log.read().unwrap();
        let bytes: usize = kept.iter().map(|b| b.body.len()).sum();
        assert!(bytes as u64 <= MAX_BYTES, "{bytes}");
        assert_eq!(kept.len(), 3, "three of 300 KiB fit; everything older went");
        assert!(kept.iter().all(|b| b.body.len() == 300 * 1024));
        // A batch of the whole cap leaves room for nothing older.
        log.append(
            "https://t.example",
            &vec![b'y'; 1024 * 1024],
            1,
            &answer(1),
            FOUR_WEEKS,
        )
        .unwrap();
        assert_eq!(log.read().unwrap().len(), 1);
        std::thread::sleep(Duration::from_millis(5));
        log.trim(Duration::from_millis(1)).unwrap();
        assert_eq!(log.read().unwrap().len(), 1, "the newest stays");
        assert_eq!(log.clear().unwrap(), 1);
        assert!(log.read().unwrap().is_empty());
    }
}
