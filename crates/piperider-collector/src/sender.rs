//! The sender: a detached process that posts spooled events to the backend.
//!
//! The host command never waits for it. It is the host binary itself,
//! started again with [`SENDER_ARG`] in its own process group with no
//! inherited stdio; one runs at a time (an advisory lock). It removes an
//! event only once the backend has answered for it (`accepted`, `duplicate`,
//! or `rejected` for good), retries with exponential backoff and jitter,
//! honours `Retry-After`, and records when the next attempt is due so that
//! later commands do not start senders while the backend is away.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use piperider_event::{BatchResponse, DeletionRequest, ResultStatus, UserId};
use serde::{Deserialize, Serialize};

use crate::spool::{Spool, SpooledEvent};
use crate::{Paths, log};

/// The argument that makes the host binary run as the sender.
pub const SENDER_ARG: &str = "__telemetry-sender";
/// How long a detached sender stays after the spool empties, so that a
/// burst of commands (a script) shares one sender and one connection
/// instead of starting a process each.
pub(crate) const LINGER: Duration = Duration::from_secs(2);
/// How often a lingering sender looks at the spool.
const LINGER_POLL: Duration = Duration::from_millis(25);

/// How the sender paces itself.
#[derive(Debug, Clone)]
pub struct SenderPolicy {
    /// Most events per request (100; the backend takes up to 500).
    pub batch_events: usize,
    /// Most bytes per request body (512 KiB, under the backend's 1 MiB).
    pub batch_bytes: usize,
    /// How long to wait for a connection (3 s): a detached sender may wait,
    /// but should not hang on a dead address.
    pub connect_timeout: Duration,
    /// How long to wait for a whole answer (10 s).
    pub request_timeout: Duration,
    /// Attempts within one sender run before it leaves the rest to a later command.
    pub attempts_per_run: u32,
    /// First backoff delay; doubles with each consecutive failure.
    pub base_backoff: Duration,
    /// The longest backoff (an hour), so a long outage is retried hourly.
    pub max_backoff: Duration,
    /// How long to wait for more events once the spool is empty.
    pub linger: Duration,
}

impl Default for SenderPolicy {
    fn default() -> Self {
        SenderPolicy {
            batch_events: 100,
            batch_bytes: 512 * 1024,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            attempts_per_run: 4,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            linger: Duration::ZERO,
        }
    }
}

/// Kept between sender runs: consecutive failures and when to try again.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Backoff {
    failures: u32,
    next_attempt_unix_ms: i64,
}

impl Backoff {
    fn load(path: &Path) -> Self {
        crate::files::read(path, 4096)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, path: &Path) {
        if let Ok(text) = serde_json::to_vec(self) {
            let _ = crate::files::write_atomic(path, &text);
        }
    }

    fn due(&self) -> bool {
        now_ms() >= self.next_attempt_unix_ms
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether no backoff forbids starting a sender now.
pub(crate) fn backoff_due(paths: &Paths) -> bool {
    Backoff::load(&paths.backoff).due()
}

/// Whether a sender holds the lock. A sender re-reads the spool after it
/// lets go of the lock, so an event spooled before this check is sent.
pub(crate) fn lock_is_held(path: &Path) -> bool {
    match crate::files::open(path, OpenOptions::new().read(true)) {
        Ok(file) => match file.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => false,
        },
        Err(_) => false,
    }
}

/// Starts `exe SENDER_ARG` detached: its own process group (so Ctrl-C in
/// the terminal does not reach it), no stdin, stdout or stderr.
pub(crate) fn spawn_detached(exe: &Path) -> io::Result<()> {
    let mut cmd = Command::new(exe);
    cmd.arg(SENDER_ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.spawn().map(drop)
}

/// What one sender run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// Events the backend stored (accepted or duplicate), now off the disk.
    pub sent: usize,
    /// Events the backend refused for good, now off the disk (and logged).
    pub rejected: usize,
    /// Spool files that were not events, moved out of the way.
    pub set_aside: usize,
    /// Requests that failed and were backed off from.
    pub failed_attempts: u32,
    /// Another sender held the lock; this one did nothing.
    pub already_running: bool,
    /// Events were left for a later run.
    pub left_behind: usize,
}

enum Failure {
    /// Try again later (network error, 5xx, 429, timeouts), after this long if the server said.
    Retry(Option<Duration>),
    /// The batch is too large for the server (413): send smaller batches.
    /// One event alone refused so is kept, as for [`Failure::Retry`].
    Split,
}

/// Runs one sender pass over the spool, holding the sender lock, and
/// counts what is left once the lock is released.
pub(crate) fn run(
    paths: &Paths,
    endpoint: &str,
    policy: &SenderPolicy,
    allowed: &dyn Fn() -> bool,
) -> SendReport {
    let Some(lock) = try_lock(&paths.sender_lock) else {
        return SendReport {
            already_running: true,
            ..SendReport::default()
        };
    };
    let spool = Spool::new(&paths.spool, Default::default());
    let mut report = pass(paths, endpoint, policy, &spool, allowed);
    drop(lock);
    // An event spooled while the lock was held, by a command that saw the
    // lock and so started no sender, is ours to send.
    report.left_behind = spool.len();
    report
}

/// `allowed` is asked before every post: telemetry switched off while the
/// sender runs (or lingers) stops it before it sends anything more.
fn pass(
    paths: &Paths,
    endpoint: &str,
    policy: &SenderPolicy,
    spool: &Spool,
    allowed: &dyn Fn() -> bool,
) -> SendReport {
    let mut report = SendReport::default();
    let agent = agent(policy);
    let url = format!("{}/v1/batch", endpoint.trim_end_matches('/'));
    let mut backoff = Backoff::load(&paths.backoff);
    let mut batch_limit = policy.batch_events;
    let mut attempts = 0;
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        let batch = match next_batch(
            spool,
            endpoint,
            batch_limit,
            policy.batch_bytes,
            &mut report,
            paths,
        ) {
            Ok(b) => b,
            Err(e) => {
                log::append(&paths.log, &format!("sender: reading the spool: {e}"));
                break;
            }
        };
        if batch.is_empty() {
            let idle = idle_since.get_or_insert_with(std::time::Instant::now);
            if idle.elapsed() >= policy.linger {
                break;
            }
            std::thread::sleep(LINGER_POLL);
            continue;
        }
        idle_since = None;
        attempts += 1;
        if !allowed() {
            break;
        }
        let body = batch_body(&batch);
        match post_batch(&agent, &url, &body, batch.len()) {
            Ok(response) => {
                backoff = Backoff::default();
                batch_limit = policy.batch_events;
                // What left the machine, kept before the spool lets go of it.
                let kept = crate::sent::SentLog::new(&paths.sent).append(
                    endpoint,
                    &body,
                    batch.len(),
                    &response,
                    crate::record::LOCAL_KEPT_FOR,
                );
                if let Err(e) = kept {
                    log::append(&paths.log, &format!("sender: keeping the sent batch: {e}"));
                }
                settle(spool, &batch, &response, &mut report, paths);
            }
            Err(Failure::Split) if batch.len() > 1 => {
                batch_limit = (batch.len() / 2).max(1);
                continue;
            }
            // An event leaves the spool only on its own result: an answer
            // without one (a wrong endpoint, a proxy's limit, an outage) is
            // waited out with backoff.
            Err(failure) => {
                let after = match failure {
                    Failure::Retry(after) => after,
                    Failure::Split => None,
                };
                report.failed_attempts += 1;
                backoff.failures = backoff.failures.saturating_add(1);
                let delay = after.unwrap_or_else(|| jittered(policy, backoff.failures));
                if attempts >= policy.attempts_per_run {
                    backoff.next_attempt_unix_ms = now_ms() + delay.as_millis() as i64;
                    break;
                }
                std::thread::sleep(delay.min(policy.max_backoff));
            }
        }
        if attempts >= policy.attempts_per_run.saturating_mul(50) {
            break; // a bound on one run's work, whatever happens
        }
    }
    backoff.save(&paths.backoff);
    report
}

/// Full jitter between half and all of `base * 2^(failures-1)`, capped.
fn jittered(policy: &SenderPolicy, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = policy
        .base_backoff
        .saturating_mul(1 << exp)
        .min(policy.max_backoff);
    let ms = full.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

fn try_lock(path: &Path) -> Option<File> {
    if let Some(dir) = path.parent() {
        crate::files::ensure_private_dir(dir).ok()?;
    }
    let file = crate::files::open(
        path,
        OpenOptions::new().create(true).truncate(false).write(true),
    )
    .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

fn agent(policy: &SenderPolicy) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(policy.connect_timeout))
        .timeout_global(Some(policy.request_timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("piperider-collector/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The oldest events that fit one batch, with their bytes. Unreadable files are set aside.
fn next_batch(
    spool: &Spool,
    endpoint: &str,
    max_events: usize,
    max_bytes: usize,
    report: &mut SendReport,
    paths: &Paths,
) -> io::Result<Vec<(SpooledEvent, Vec<u8>)>> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    // Only the events recorded for this endpoint (or naming none).
    let tag = crate::spool::endpoint_tag(endpoint);
    for event in spool.list()?.into_iter().filter(|e| e.is_for(&tag)) {
        if batch.len() >= max_events
            || (bytes + event.bytes as usize > max_bytes && !batch.is_empty())
        {
            break;
        }
        // A file that cannot be read as one of ours (a link, not a regular
        // file, too large, not an event) is set aside, never followed.
        let raw = match spool.read(&event) {
            Ok(raw) => Some(raw),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => None,
        };
        let is_event = raw.as_ref().is_some_and(|raw| {
            raw.len() as u64 == event.bytes
                && serde_json::from_slice::<serde_json::Value>(raw).is_ok_and(|v| v.is_object())
        });
        let Some(raw) = raw.filter(|_| is_event) else {
            log::append(
                &paths.log,
                &format!("sender: set aside unreadable spool file {}", event.name),
            );
            let _ = spool.set_aside(&event);
            report.set_aside += 1;
            continue;
        };
        bytes += raw.len();
        batch.push((event, raw));
    }
    Ok(batch)
}

/// The batch envelope around the spooled events, exactly as posted.
fn batch_body(batch: &[(SpooledEvent, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|(_, r)| r.len() + 1).sum::<usize>() + 16);
    body.extend_from_slice(b"{\"events\":[");
    for (i, (_, raw)) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(raw);
    }
    body.extend_from_slice(b"]}");
    body
}

fn post_batch(
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
    events: usize,
) -> Result<BatchResponse, Failure> {
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .map_err(|_| Failure::Retry(None))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut results = || -> Option<BatchResponse> {
        let text = response
            .body_mut()
            .with_config()
            .limit(4 * 1024 * 1024)
            .read_to_string()
            .ok()?;
        let parsed: BatchResponse = serde_json::from_str(&text).ok()?;
        (parsed.results.len() == events).then_some(parsed)
    };
    match status {
        200 => results().ok_or(Failure::Retry(None)),
        // Every event refused: the body says why, event by event. A 400
        // without a result per event is not the backend's answer about the
        // events (a wrong endpoint, a proxy): nothing is dropped for it.
        400 => results().ok_or(Failure::Retry(retry_after)),
        413 => Err(Failure::Split),
        _ => Err(Failure::Retry(retry_after)),
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at a day.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let secs = match value.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64
        }
    };
    Some(Duration::from_secs(secs.min(86_400)))
}

/// Forgets every event the backend answered for; keeps the rest.
fn settle(
    spool: &Spool,
    batch: &[(SpooledEvent, Vec<u8>)],
    response: &BatchResponse,
    report: &mut SendReport,
    paths: &Paths,
) {
    for ((event, _), result) in batch.iter().zip(&response.results) {
        let expected = event_id_from_name(&event.name);
        if let (Some(got), Some(expected)) = (result.event_id, expected)
            && got.simple().to_string() != expected
        {
            log::append(
                &paths.log,
                &format!("sender: result for {got} answered {expected}; kept"),
            );
            continue;
        }
        if result.status == ResultStatus::Rejected {
            log::append(
                &paths.rejected_log,
                &format!(
                    "{}: rejected: {}: {}",
                    expected.unwrap_or("?"),
                    result.field.as_deref().unwrap_or("."),
                    result.reason.as_deref().unwrap_or("")
                ),
            );
            report.rejected += 1;
        } else {
            report.sent += 1;
        }
        let _ = spool.remove(event);
    }
}

fn event_id_from_name(name: &str) -> Option<&str> {
    name.split('-').nth(1)
}

/// What the backend answered to a request that needs the owner's proof.
#[derive(Debug)]
pub(crate) enum OwnerAnswer {
    /// Done: the answer's body.
    Done(Vec<u8>),
    /// The backend could not check that the id is this user's (it holds no
    /// key for it, or another one).
    NotProved,
}

/// Asks the backend to delete everything stored for `user_id`, with a
/// proof made by `secret`.
pub(crate) fn request_deletion(
    endpoint: &str,
    user_id: &UserId,
    secret: &piperider_event::OwnerSecret,
    policy: &SenderPolicy,
) -> Result<OwnerAnswer, String> {
    let url = format!("{}/v1/deletion-requests", endpoint.trim_end_matches('/'));
    let proof = secret.prove(
        piperider_event::OwnerAction::Delete,
        user_id,
        chrono::Utc::now(),
    );
    let body = serde_json::to_vec(&DeletionRequest {
        user_id: user_id.clone(),
        proof,
    })
    .map_err(|e| e.to_string())?;
    let response = agent(policy)
        .post(&url)
        .header("content-type", "application/json")
        .send(body);
    owner_answer(&url, response)
}

/// Fetches everything the backend holds for `user_id`, with a proof made
/// by `secret`.
pub(crate) fn request_held(
    endpoint: &str,
    user_id: &UserId,
    secret: &piperider_event::OwnerSecret,
    policy: &SenderPolicy,
) -> Result<OwnerAnswer, String> {
    let url = format!(
        "{}/v1/users/{}",
        endpoint.trim_end_matches('/'),
        user_id.as_str()
    );
    let proof = secret.prove(
        piperider_event::OwnerAction::Read,
        user_id,
        chrono::Utc::now(),
    );
    let response = agent(policy)
        .get(&url)
        .header("authorization", &proof.to_header())
        .call();
    owner_answer(&url, response)
}

fn owner_answer(
    url: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<OwnerAnswer, String> {
    let mut response = response.map_err(|e| format!("{url}: {e}"))?;
    match response.status().as_u16() {
        200..=299 => response
            .body_mut()
            .with_config()
            .limit(MAX_OWNER_ANSWER_BYTES)
            .read_to_vec()
            .map(OwnerAnswer::Done)
            .map_err(|e| format!("{url}: {e}")),
        401 | 403 => Ok(OwnerAnswer::NotProved),
        status => Err(format!("{url} answered {status}")),
    }
}

/// Largest answer to an owner's request that is read.
const MAX_OWNER_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = SenderPolicy {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        };
        for failures in 1..30 {
            let d = jittered(&policy, failures);
            let full = Duration::from_millis(100 * (1u64 << (failures - 1).min(20)))
                .min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
        }
    }

    #[test]
    fn event_ids_come_from_file_names() {
        assert_eq!(
            event_id_from_name("01764477613512000001-6f1c2d3e4b5a4c7d8e9f0a1b2c3d4e5f-812.json"),
            Some("6f1c2d3e4b5a4c7d8e9f0a1b2c3d4e5f")
        );
    }
}
