//! The spool: events waiting to be sent, one file each, under the app folder.
//!
//! One file per event keeps writers independent: an event is written to a
//! temporary name and renamed into place, so a crash mid-write leaves at
//! most a stray temporary file and never touches an earlier event; the
//! sender removes a file only after the backend has answered for it. File
//! names sort by time and carry their size and a tag of the endpoint they
//! were recorded for (a sender pointed elsewhere leaves them), so enforcing
//! the cap needs one directory listing and no reads. A file that cannot be read as an event is
//! moved aside, never fatal.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use piperider_event::EventId;

use crate::files;

/// How much the spool may hold before the oldest events are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Most events on disk (1,000): a machine offline for months keeps the newest.
    pub max_events: usize,
    /// Most bytes on disk (1 MiB).
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits {
            max_events: 1_000,
            max_bytes: 1024 * 1024,
        }
    }
}

/// One waiting event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledEvent {
    /// The file's name: time-ordered, so names sort oldest first.
    pub name: String,
    /// The file's size.
    pub bytes: u64,
}

impl SpooledEvent {
    /// When it was recorded, from its name.
    pub fn recorded_at(&self) -> Option<SystemTime> {
        let micros: u64 = self.name.get(..20)?.parse().ok()?;
        Some(UNIX_EPOCH + Duration::from_micros(micros))
    }

    /// The tag of the endpoint it was recorded for, if it names one.
    fn endpoint_tag(&self) -> Option<&str> {
        let parts: Vec<&str> = self.name.split('-').collect();
        match parts.as_slice() {
            [_, _, tag, _] => tag.strip_prefix('e'),
            _ => None,
        }
    }

    /// Whether it may go to the endpoint of `tag`: it was recorded for
    /// that endpoint, or named none (spooled before events named theirs).
    pub(crate) fn is_for(&self, tag: &str) -> bool {
        self.endpoint_tag().is_none_or(|t| t == tag)
    }
}

/// A short tag of an endpoint, written into the names of the events
/// recorded for it: a sender pointed elsewhere does not send them.
pub(crate) fn endpoint_tag(endpoint: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(endpoint.trim().trim_end_matches('/').as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The spool folder.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    /// The endpoint tag new events are written with, if any.
    tag: Option<String>,
}

/// Keeps two events of one process in one microsecond apart and in order.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

const SUFFIX: &str = ".json";
const TMP_PREFIX: &str = ".tmp-";
const KEEP_CORRUPT: usize = 20;

impl Spool {
    /// The spool in `dir` (created, private, on the first append).
    pub fn new(dir: impl Into<PathBuf>, limits: SpoolLimits) -> Self {
        Spool {
            dir: dir.into(),
            limits,
            tag: None,
        }
    }

    /// The spool whose new events remember `endpoint` as the one they
    /// were recorded for.
    pub fn for_endpoint(mut self, endpoint: &str) -> Self {
        self.tag = Some(endpoint_tag(endpoint));
        self
    }

    /// The spool's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds one serialized event, then drops the oldest events while the
    /// spool is over its limits. Returns how many were dropped.
    pub fn append(&self, json: &[u8], event_id: &EventId) -> io::Result<usize> {
        self.append_unchecked(json, event_id)?;
        self.enforce_limits(0, 0)
    }

    /// Drops the oldest events until `events` more (of at most the largest
    /// event size) fit; done ahead of [`Spool::append_unchecked`] so that
    /// appending needs no directory listing.
    pub fn make_room(&self, events: usize) -> io::Result<usize> {
        self.enforce_limits(events, events * piperider_event::limits::MAX_EVENT_BYTES)
    }

    /// Adds one serialized event without looking at the limits (see [`Spool::make_room`]).
    pub fn append_unchecked(&self, json: &[u8], event_id: &EventId) -> io::Result<()> {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 1000;
        let tag = self
            .tag
            .as_ref()
            .map_or(String::new(), |t| format!("e{t}-"));
        let name = format!(
            "{micros:020}{seq:03}-{}-{tag}{}{SUFFIX}",
            event_id.simple(),
            json.len()
        );
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        files::ensure_private_dir(&self.dir)?;
        let mut file = files::open(&tmp, OpenOptions::new().write(true).create_new(true))?;
        let result = file
            .write_all(json)
            .and_then(|()| fs::rename(&tmp, self.dir.join(&name)));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Drops the oldest events until `extra_events` and `extra_bytes` more fit.
    fn enforce_limits(&self, extra_events: usize, extra_bytes: usize) -> io::Result<usize> {
        let events = self.list()?;
        let mut count = events.len() + extra_events;
        let mut bytes: u64 = events.iter().map(|e| e.bytes).sum::<u64>() + extra_bytes as u64;
        let mut dropped = 0;
        for oldest in &events {
            if count <= self.limits.max_events && bytes <= self.limits.max_bytes {
                break;
            }
            match fs::remove_file(self.dir.join(&oldest.name)) {
                Ok(()) => dropped += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // sent meanwhile
                Err(e) => return Err(e),
            }
            count -= 1;
            bytes -= oldest.bytes;
        }
        if dropped > 0 {
            self.add_dropped(dropped as u64)?;
        }
        Ok(dropped)
    }

    /// Waiting events, oldest first. Stray temporary files older than ten
    /// minutes (left by a crash) are cleaned up on the way.
    pub fn list(&self) -> io::Result<Vec<SpooledEvent>> {
        match fs::symlink_metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
            // A folder that is a link or another user's is not read.
            Ok(_) => files::ensure_private_dir(&self.dir)?,
        }
        let entries = fs::read_dir(&self.dir)?;
        let mut events = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(600));
                if stale {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            if let Some(bytes) = size_from_name(&name) {
                events.push(SpooledEvent { name, bytes });
            }
        }
        events.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(events)
    }

    /// Events waiting; 0 when the folder cannot be read.
    pub fn len(&self) -> usize {
        self.list().map(|l| l.len()).unwrap_or(0)
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An event's bytes: only a regular file of the spool (a link is not
    /// followed), at most the largest event the wire format takes.
    pub fn read(&self, event: &SpooledEvent) -> io::Result<Vec<u8>> {
        files::read(
            &self.dir.join(&event.name),
            piperider_event::limits::MAX_EVENT_BYTES as u64,
        )
    }

    /// Forgets an event the backend has answered for.
    pub fn remove(&self, event: &SpooledEvent) -> io::Result<()> {
        match fs::remove_file(self.dir.join(&event.name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Moves an unreadable event out of the way (the newest few are kept for inspection).
    pub fn set_aside(&self, event: &SpooledEvent) -> io::Result<()> {
        let corrupt = self.corrupt_dir();
        files::ensure_private_dir(&corrupt)?;
        fs::rename(self.dir.join(&event.name), corrupt.join(&event.name))?;
        let mut kept: Vec<_> = fs::read_dir(&corrupt)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        kept.sort();
        let excess = kept.len().saturating_sub(KEEP_CORRUPT);
        for name in kept.into_iter().take(excess) {
            let _ = fs::remove_file(corrupt.join(name));
        }
        Ok(())
    }

    fn corrupt_dir(&self) -> PathBuf {
        self.dir.with_file_name("corrupt")
    }

    /// Every readable event's bytes, oldest first (an unreadable one is left out).
    pub fn contents(&self) -> Vec<Vec<u8>> {
        self.list()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| self.read(e).ok())
            .collect()
    }

    /// Deletes the events recorded before `time`; returns how many.
    pub fn remove_recorded_before(&self, time: SystemTime) -> io::Result<usize> {
        let mut removed = 0;
        for event in self.list()? {
            if event.recorded_at().is_none_or(|t| t >= time) {
                break; // names sort oldest first
            }
            self.remove(&event)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Deletes the events recorded more than `age` ago; returns how many.
    pub fn remove_older_than(&self, age: Duration) -> io::Result<usize> {
        match SystemTime::now().checked_sub(age) {
            Some(cutoff) => self.remove_recorded_before(cutoff),
            None => Ok(0),
        }
    }

    /// Deletes every waiting event; returns how many there were.
    pub fn clear(&self) -> io::Result<usize> {
        let events = self.list()?;
        for event in &events {
            self.remove(event)?;
        }
        Ok(events.len())
    }

    fn dropped_path(&self) -> PathBuf {
        self.dir.with_file_name("dropped-events")
    }

    /// How many events the cap has dropped, ever.
    pub fn dropped(&self) -> u64 {
        files::read(&self.dropped_path(), 64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()?.trim().parse().ok())
            .unwrap_or(0)
    }

    fn add_dropped(&self, n: u64) -> io::Result<()> {
        let path = self.dropped_path();
        let mut file = files::open(
            &path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )?;
        file.lock()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let total = text.trim().parse::<u64>().unwrap_or(0) + n;
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(total.to_string().as_bytes())
    }
}

fn size_from_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (_, size) = stem.rsplit_once('-')?;
    size.parse().ok()
}
