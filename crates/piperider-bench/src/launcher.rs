//! The one way the load tools start a backend: a release
//! `piperider-ingest` process on its own database and a free loopback
//! port, rate limits off, with an admin token of its own. It can be
//! stopped with SIGKILL or SIGTERM and started again on the same port and
//! database (and makes sure that what answers there then is itself, not
//! another process that took the port meanwhile); it is killed when
//! dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// A free port on the loopback address.
pub(crate) fn free_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

/// How much the backend says on stderr.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Log {
    /// Warnings and errors on this process's stderr.
    Warnings,
    /// Nothing: a case that stops the backend on purpose hundreds of times.
    Silent,
}

/// One blocking request to `addr` with `token` as its bearer token (and
/// `body` as JSON when not empty): the status and the body of the answer.
pub(crate) fn request(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let what = format!("{method} {path}");
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{what}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{what} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("{what}: {e}"))?;
    let mut all = String::new();
    stream
        .read_to_string(&mut all)
        .map_err(|e| format!("{what}: {e}"))?;
    let status = all
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: no status in {all:?}"))?;
    let body = all.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

#[derive(Debug)]
pub(crate) struct Backend {
    child: Option<Child>,
    pub(crate) addr: SocketAddr,
    database_url: String,
    log: Log,
    /// More arguments for the backend.
    extra: Vec<String>,
    /// Its admin token, unlike any other backend's.
    pub(crate) token: String,
}

impl Backend {
    /// Starts a backend on a free port and waits until it listens.
    pub(crate) fn start(database_url: &str, log: Log) -> Result<Backend> {
        Backend::start_with(database_url, log, &[])
    }

    /// [`Backend::start`] with more arguments for the backend.
    pub(crate) fn start_with(database_url: &str, log: Log, extra: &[&str]) -> Result<Backend> {
        let mut backend = Backend {
            child: None,
            addr: free_addr()?,
            database_url: database_url.to_string(),
            log,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            token: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        };
        backend.restart()?;
        Ok(backend)
    }

    /// Starts the process (again) on the same port and database.
    pub(crate) fn restart(&mut self) -> Result {
        let (level, stderr) = match self.log {
            Log::Warnings => ("warn", Stdio::inherit()),
            Log::Silent => ("off", Stdio::null()),
        };
        let mut child = Command::new(crate::binary("piperider-ingest"))
            .args(["--listen", &self.addr.to_string()])
            .args(["--database-url", &self.database_url])
            .args(["--rate-limit-ip", "0", "--rate-limit-user", "0"])
            .args(["--admin-token", &self.token])
            .args(&self.extra)
            .env("PIPERIDER_INGEST_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting piperider-ingest: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "piperider-ingest exited during start-up ({status})"
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("piperider-ingest did not start listening within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only this process knows the token: another one on the port
        // (a backend of another run that took it while this was down)
        // refuses it.
        let answer = self.get("/v1/admin/charts");
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "piperider-ingest exited during start-up ({status})"
            ));
        }
        match answer {
            Ok((200, _)) => {
                self.child = Some(child);
                Ok(())
            }
            answer => {
                let _ = child.kill();
                let _ = child.wait();
                Err(match answer {
                    Ok((401, _)) => format!(
                        "another process answers on {} instead of the backend started there",
                        self.addr
                    ),
                    other => format!(
                        "the backend on {} answered {other:?} at start-up",
                        self.addr
                    ),
                })
            }
        }
    }

    /// SIGTERM: the service stops accepting, finishes in-flight requests
    /// and commits, and exits.
    pub(crate) fn terminate(&mut self) -> Result {
        if let Some(mut c) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("kill -TERM failed".into());
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().map_err(|e| e.to_string())?.is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    return Err("piperider-ingest did not stop within 15 s of SIGTERM".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// SIGKILL: no shutdown, no last commit.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Peak resident memory so far, in MB (Linux).
    /// Starts a new peak for [`Backend::peak_rss_mb`] (Linux's `clear_refs`),
    /// so that each phase's peak is its own.
    pub(crate) fn reset_peak_rss(&self) -> Result {
        let pid = self
            .child
            .as_ref()
            .ok_or("the backend is not running")?
            .id();
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .map_err(|e| format!("resetting the backend's peak memory: {e}"))
    }

    /// CPU time the backend has used so far, in seconds (Linux's `/proc`):
    /// all of its threads, those that have ended included, and the one
    /// named `thread` alone.
    pub(crate) fn cpu_s(&self, thread: &str) -> Option<(f64, f64)> {
        let pid = self.child.as_ref()?.id();
        let all = process_cpu_s(pid)?;
        let mut named = 0.0;
        // A thread may end while it is read: it is skipped.
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some((name, s)) = named_ticks(&stat)
                && name == thread
            {
                named += s;
            }
        }
        Some((all, named))
    }

    /// The backend's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn peak_rss_mb(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    /// `GET path` with the admin token: the status and the body.
    pub(crate) fn get(&self, path: &str) -> Result<(u16, String)> {
        self.request("GET", path, "")
    }

    /// One blocking request with the admin token (and `body` as JSON when
    /// not empty): the status and the body of the answer.
    pub(crate) fn request(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        request(self.addr, &self.token, method, path, body)
    }

    /// Events counted by the rollups (the stats API's total).
    pub(crate) fn rolled_up(&self) -> Result<u64> {
        let (v, body) = self.get_json("/v1/admin/stats")?;
        v["totals"]["events"]
            .as_u64()
            .ok_or_else(|| format!("stats without totals.events: {body}"))
    }

    /// The events the dashboard's cube counts over the last 30 days.
    pub(crate) fn in_cube(&self) -> Result<u64> {
        let (v, body) = self.get_json("/v1/admin/charts/summary")?;
        if v["columns"][3]["name"] != "events" {
            return Err(format!("the summary's fourth column is not events: {body}"));
        }
        v["rows"][0][3]
            .as_u64()
            .ok_or_else(|| format!("a summary without events: {body}"))
    }

    /// `GET path` answered 200: its JSON and its text.
    fn get_json(&self, path: &str) -> Result<(serde_json::Value, String)> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            return Err(format!("GET {path} answered {status}: {body}"));
        }
        let v = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok((v, body))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The name and CPU seconds (user and system) in one `/proc` `stat` line.
/// `/proc` counts in USER_HZ ticks: 100 a second on x86-64 and Linux's
/// other common architectures.
fn named_ticks(stat: &str) -> Option<(&str, f64)> {
    // `pid (name) state ...`: utime and stime are the 12th and 13th
    // fields after the name.
    let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((name, (user + system) / 100.0))
}

/// CPU time process `pid` has used so far, in seconds: all of its threads,
/// those that have ended included.
pub(crate) fn process_cpu_s(pid: u32) -> Option<f64> {
    Some(named_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?.1)
}

/// A helper process (the no-op server) killed when dropped.
#[derive(Debug)]
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
