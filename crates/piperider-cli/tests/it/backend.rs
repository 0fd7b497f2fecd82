//! The real backend on SQLite, in-process on a loopback port, and its
//! admin API: shared by the end-to-end suite and the downstream-crate test.

use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "e2e-admin-token-0123456789abcdef";

/// The backend on a loopback port, on its own runtime thread.
pub(crate) struct Backend {
    pub(crate) endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Backend {
    pub(crate) fn start() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let mut config = piperider_ingest::Config::for_database(&format!(
            "sqlite:{}",
            dir.path().join("e2e.db").display()
        ));
        config.admin_token = Some(TOKEN.into());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                piperider_ingest::serve(config, listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        Backend {
            endpoint,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The backend's SQLite file.
    #[allow(dead_code)] // not every suite that shares this file opens it
    pub(crate) fn database(&self) -> std::path::PathBuf {
        self._dir.path().join("e2e.db")
    }

    pub(crate) fn admin(&self, path: &str) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .get(format!("{}{path}", self.endpoint))
            .header("authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Waits until the stats count `n` events of `command`.
    pub(crate) fn wait_for(&self, command: &str, n: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, stats) = self.admin("/v1/admin/stats");
            assert_eq!(status, 200, "{stats}");
            let count = stats["commands_by_type"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["key"] == command)
                .and_then(|c| c["count"].as_u64())
                .unwrap_or(0);
            if count >= n {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "{n} `{command}` event(s) did not arrive: {stats}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
