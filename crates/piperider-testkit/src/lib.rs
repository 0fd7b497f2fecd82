//! Test support: a loopback HTTP sink standing in for the ingestion
//! backend, so collector and CLI tests can count exactly what was sent.
//!
//! The sink listens on 127.0.0.1 only. It speaks just enough HTTP/1.1 for
//! the collector's sender: one request per connection, `Content-Length`
//! bodies, and answers `POST /v1/batch` with per-event results
//! (`duplicate` for an event id it has seen before).
//!
//! [`cli_event`] is a valid CLI event to start a backend test from;
//! [`nats::Cluster`] NATS JetStream servers for the queue-mode tests.

pub mod nats;
pub mod postgres;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piperider_event::{
    BatchResponse, DeletionRequest, EventResult, OwnerAction, OwnerKey, OwnerProof, ResultStatus,
    UserId,
};

/// How the sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with a result per event.
    Accept = 0,
    /// Accepts the connection, reads the request, never answers.
    Blackhole = 1,
    /// 503 with `Retry-After: 1`.
    Unavailable = 2,
    /// 429 with `Retry-After: 1`.
    Throttle = 3,
    /// 400 with a body that is no batch response, to every request (a
    /// wrong endpoint, a proxy).
    BadRequest = 4,
}

/// One request the sink saw.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<Request>>,
    seen: Mutex<HashSet<String>>,
    /// Event ids in the order they were first accepted.
    accepted: Mutex<Vec<serde_json::Value>>,
    connections: Mutex<u64>,
}

/// A running sink; stops when dropped.
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Sink {
    pub fn start(mode: Mode) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        Self::serve(listener, mode)
    }

    /// A sink on a given loopback address (to bring a backend "back" where it was).
    pub fn start_at(addr: SocketAddr, mode: Mode) -> Sink {
        assert!(
            addr.ip().is_loopback(),
            "tests talk only to loopback addresses"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr) {
                Ok(listener) => return Self::serve(listener, mode),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    }

    fn serve(listener: TcpListener, mode: Mode) -> Sink {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let sink = Sink {
            addr,
            mode: Arc::new(AtomicU8::new(mode as u8)),
            stop: Arc::new(AtomicBool::new(false)),
            shared: Arc::new(Shared::default()),
        };
        let (mode, stop, shared) = (sink.mode.clone(), sink.stop.clone(), sink.shared.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        *shared.connections.lock().unwrap() += 1;
                        let (mode, stop, shared) = (mode.clone(), stop.clone(), shared.clone());
                        std::thread::spawn(move || handle(stream, &mode, &stop, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        sink
    }

    /// A base URL on which nothing listens: connections are refused.
    pub fn refused_endpoint() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Every TCP connection made to the sink, answered or not.
    pub fn connections(&self) -> u64 {
        *self.shared.connections.lock().unwrap()
    }

    /// The distinct events accepted, in the order they first arrived.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// Every event posted, duplicates included.
    pub fn posted_events(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| r.path == "/v1/batch")
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until `n` distinct events have been accepted or `timeout` passes.
    pub fn wait_for_events(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if events.len() >= n || Instant::now() >= deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(stream: TcpStream, mode: &AtomicU8, stop: &AtomicBool, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut content_length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    shared.requests.lock().unwrap().push(Request {
        method,
        path: path.clone(),
        body: body.clone(),
    });
    let mut stream = stream;
    let mode = mode.load(Ordering::Relaxed);
    let (status, extra, reply) = if mode == Mode::Blackhole as u8 {
        // Hold the connection open without answering until the sink stops.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    } else if mode == Mode::Unavailable as u8 {
        (
            "503 Service Unavailable",
            "Retry-After: 1\r\n",
            "{}".to_string(),
        )
    } else if mode == Mode::BadRequest as u8 {
        (
            "400 Bad Request",
            "",
            r#"{"error":"bad_request"}"#.to_string(),
        )
    } else if mode == Mode::Throttle as u8 {
        (
            "429 Too Many Requests",
            "Retry-After: 1\r\n",
            "{}".to_string(),
        )
    } else if path == "/v1/batch" {
        ("200 OK", "", batch_reply(&body, shared))
    } else if path == "/v1/deletion-requests" {
        deletion_reply(&body, shared)
    } else if let Some(user) = path.strip_prefix("/v1/users/") {
        held_reply(user, authorization.as_deref(), shared)
    } else {
        ("404 Not Found", "", "{}".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{reply}",
        reply.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// The owner key the first accepted event of `user` carried, as the
/// backend binds it.
fn bound_key(user: &UserId, shared: &Shared) -> Option<OwnerKey> {
    shared
        .accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["user_id"] == user.as_str())
        .find_map(|e| serde_json::from_value(e["owner_key"].clone()).ok())
}

fn proved(user: &UserId, action: OwnerAction, proof: &OwnerProof, shared: &Shared) -> bool {
    bound_key(user, shared)
        .is_some_and(|key| key.verify(action, user, proof, chrono::Utc::now()).is_ok())
}

const NOT_PROVED: (&str, &str) = ("403 Forbidden", "");

/// A deletion request, checked as the backend checks it: 202 with the
/// owner's proof, 403 without, 400 for a body that is not one.
fn deletion_reply(body: &[u8], shared: &Shared) -> (&'static str, &'static str, String) {
    match serde_json::from_slice::<DeletionRequest>(body) {
        Ok(r) if proved(&r.user_id, OwnerAction::Delete, &r.proof, shared) => {
            ("202 Accepted", "", "{}".to_string())
        }
        Ok(_) => (
            NOT_PROVED.0,
            NOT_PROVED.1,
            r#"{"error":"not_proved"}"#.to_string(),
        ),
        Err(_) => (
            "400 Bad Request",
            "",
            r#"{"error":"bad_request"}"#.to_string(),
        ),
    }
}

/// `GET /v1/users/{user}`: with the owner's proof, what the sink holds of
/// the user (its accepted events).
fn held_reply(
    user: &str,
    authorization: Option<&str>,
    shared: &Shared,
) -> (&'static str, &'static str, String) {
    let Ok(user) = user.parse::<UserId>() else {
        return (
            "400 Bad Request",
            "",
            r#"{"error":"bad_request"}"#.to_string(),
        );
    };
    let Some(authorization) = authorization else {
        return (
            "401 Unauthorized",
            "",
            r#"{"error":"unauthorized"}"#.to_string(),
        );
    };
    match OwnerProof::from_header(authorization) {
        Some(proof) if proved(&user, OwnerAction::Read, &proof, shared) => {
            let stored = shared
                .accepted
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e["user_id"] == user.as_str())
                .count();
            (
                "200 OK",
                "",
                serde_json::json!({"user_id": user.as_str(), "events_stored": stored}).to_string(),
            )
        }
        _ => (
            NOT_PROVED.0,
            NOT_PROVED.1,
            r#"{"error":"not_proved"}"#.to_string(),
        ),
    }
}

fn batch_reply(body: &[u8], shared: &Shared) -> String {
    let events = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["events"].as_array().cloned())
        .unwrap_or_default();
    let mut seen = shared.seen.lock().unwrap();
    let results = events
        .into_iter()
        .map(|event| {
            let id = event["event_id"].as_str().unwrap_or_default().to_string();
            let status = if seen.insert(id.clone()) {
                shared.accepted.lock().unwrap().push(event);
                ResultStatus::Accepted
            } else {
                ResultStatus::Duplicate
            };
            EventResult {
                event_id: id.parse().ok(),
                status,
                field: None,
                reason: None,
            }
        })
        .collect();
    serde_json::to_string(&BatchResponse {
        results,
        receipt: None,
    })
    .expect("serializes")
}

/// A valid CLI event of `user_id` in project `project_id`: the `run` of the
/// wire format's contract, with a fresh event id, stamped now. Tests edit
/// it to make the case they need.
pub fn cli_event(user_id: &str, project_id: &str) -> serde_json::Value {
    serde_json::json!({
        "schema_version": 1,
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": "run",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "user_id": user_id,
        "device_id": "9b2e4c7a1d3f5e8b0a6c2d4f7e9b1a3c5d7f9e2b4a6c8d0e1f3a5b7c9d2e4f6a",
        "platform": {"os": "linux", "arch": "x86_64", "os_version": "6.1.0-18-amd64"},
        "runtime": {"name": "python", "version": "3.11.7"},
        "app_version": "0.2.0",
        "initial_version": "0.1.0",
        "ci": null,
        "project": {"project_id": project_id, "datasource_type": "sqlite"},
        "stats": {"tables": 2, "columns": 8, "rows": 30, "builtin_assertions": 4, "custom_assertions": 1, "passed_assertions": 4, "failed_assertions": 1},
        "outcome": {"status": "ok", "duration_ms": 812}
    })
}
