//! The bench's load generator: keep-alive HTTP/1.1 connections over
//! loopback, each sending requests back to back (or paced to a target
//! rate), with latencies recorded. Written here so the bench needs no tool
//! a fresh machine lacks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What one load phase measured.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies_us: Vec<u64>,
}

impl Outcome {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i] as f64 / 1000.0
    }
}

/// Makes the body of the n-th request.
pub(crate) type BodyFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// Sends requests from `connections` connections for `duration`; with
/// `rate`, paces the total to that many requests per second.
pub(crate) async fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
    rate: Option<f64>,
    body: BodyFn,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let per_connection_interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (stop, body, path) = (stop.clone(), body.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome {
                requests: 0,
                failures: 0,
                elapsed: Duration::ZERO,
                latencies_us: Vec::new(),
            };
            let Ok(stream) = TcpStream::connect(addr).await else {
                out.failures += 1;
                return out;
            };
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut n = c as u64;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(interval) = per_connection_interval {
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    }
                    next += interval;
                }
                let payload = body(n);
                n += connections as u64;
                let request = format!(
                    "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
                    payload.len()
                );
                let sent = Instant::now();
                if write.write_all(request.as_bytes()).await.is_err() {
                    out.failures += 1;
                    break;
                }
                match read_response(&mut read).await {
                    Some(200) => {
                        out.requests += 1;
                        out.latencies_us.push(sent.elapsed().as_micros() as u64);
                    }
                    Some(_) => out.failures += 1,
                    None => {
                        out.failures += 1;
                        break;
                    }
                }
            }
            out
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Outcome {
        requests: 0,
        failures: 0,
        elapsed: started.elapsed(),
        latencies_us: Vec::new(),
    };
    for t in tasks {
        if let Ok(o) = t.await {
            total.requests += o.requests;
            total.failures += o.failures;
            total.latencies_us.extend(o.latencies_us);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Reads one response; returns its status, `None` when the connection broke.
pub(crate) async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> Option<u16> {
    let mut line = String::new();
    read.read_line(&mut line).await.ok()?;
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        if read.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    read.read_exact(&mut body).await.ok()?;
    Some(status)
}

/// One GET, returning the status and body.
pub(crate) async fn get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (read, mut write) = stream.into_split();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: bench\r\n{auth}connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut read = BufReader::new(read);
    let mut all = String::new();
    read.read_to_string(&mut all).await.ok()?;
    let status = all.split_whitespace().nth(1)?.parse().ok()?;
    let body = all
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Posts `bodies` (gzip, taken in turn by connection) from `connections`
/// connections, back to back, for `duration`, whatever the answers;
/// returns how many were answered. A connection the server closes is
/// opened again.
pub(crate) async fn flood(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    bodies: Arc<Vec<Vec<u8>>>,
) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (stop, bodies) = (stop.clone(), bodies.clone());
            tokio::spawn(async move {
                let body = &bodies[c % bodies.len()];
                let head = format!(
                    "POST /v1/batch HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n\
                     content-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let mut answered = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(stream) = TcpStream::connect(addr).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    while !stop.load(Ordering::Relaxed) {
                        let sent = write.write_all(head.as_bytes()).await.is_ok()
                            && write.write_all(body).await.is_ok();
                        if !sent || read_response(&mut read).await.is_none() {
                            break;
                        }
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap_or(0);
    }
    answered
}
