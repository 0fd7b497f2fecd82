//! End to end: the real backend on SQLite, the real `piperider` with its
//! detached sender, and the admin API reading back what arrived.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{User, code, sqlite_fixture, stderr, stdout};

const TOKEN: &str = "e2e-admin-token-0123456789abcdef";

/// The backend on a loopback port, on its own runtime thread.
struct Backend {
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Backend {
    fn start() -> Backend {
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

    fn admin(&self, path: &str) -> (u16, Value) {
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
    fn wait_for(&self, command: &str, n: u64) -> Value {
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

#[test]
fn a_run_reaches_the_backend_and_the_admin_api_shows_it() {
    let backend = Backend::start();
    let user = User::new(&backend.endpoint);
    sqlite_fixture(&user.cwd.join("shop.db"));

    // First run: the notice, and nothing recorded.
    let out = user.run(&["init", "--datasource-url", "sqlite://shop.db"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Nothing was sent"),
        "{}",
        stderr(&out)
    );

    let out = user.run(&["run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stats = backend.wait_for("run", 1);
    assert_eq!(
        stats["totals"]["events"], 1,
        "the notice run recorded something: {stats}"
    );
    assert_eq!(stats["totals"]["tables"], 2);
    assert_eq!(stats["totals"]["columns"], 8);
    assert_eq!(stats["totals"]["rows"], 30);
    assert_eq!(stats["active_users"], 1);
    assert_eq!(stats["breakdowns"]["datasource_types"][0]["key"], "sqlite");

    let status: Value =
        serde_json::from_str(&stdout(&user.run(&["telemetry", "status", "--json"]))).unwrap();
    let user_id = status["user_id"].as_str().unwrap().to_string();
    let project_id = status["project_id"].as_str().unwrap().to_string();
    let (code_, report) = backend.admin(&format!("/v1/admin/users/{user_id}"));
    assert_eq!(code_, 200, "{report}");
    assert!(
        report["first_seen"]
            .as_str()
            .is_some_and(|s| s.starts_with("20")),
        "{report}"
    );
    assert!(report["last_seen"].as_str().is_some(), "{report}");
    assert_eq!(report["projects"][0]["project_id"], project_id.as_str());
    assert_eq!(
        report["projects"][0]["datasource_types"],
        serde_json::json!(["sqlite"])
    );
    assert_eq!(report["runtime"]["name"], "rust");

    // A second run is counted once more; the user stays one user.
    assert_eq!(code(&user.run(&["run"])), 0);
    let stats = backend.wait_for("run", 2);
    assert_eq!(stats["total_users"], 1);

    // Held: the user sees what the admin sees, proved by the profile's secret.
    let out = user.run(&["telemetry", "held", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let held: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let (_, report) = backend.admin(&format!("/v1/admin/users/{user_id}"));
    assert_eq!(held, report);
    let out = user.run(&["telemetry", "held"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for line in [
        "  first_seen: 20",
        "  last_seen: 20",
        "  platform.os: ",
        "  device_id: ",
        "  runtime.name: rust",
        "  projects[0].datasource_types: [sqlite]",
    ] {
        assert!(stdout(&out).contains(line), "{line:?} in {}", stdout(&out));
    }
    assert!(stdout(&out).contains(&format!("  projects[0].project_id: {project_id}")));

    // Forget: the backend deletes the user; the CLI gets a new id.
    let out = user.run(&["telemetry", "forget"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(backend.admin(&format!("/v1/admin/users/{user_id}")).0, 404);
    // The new id has nothing stored and no key bound yet: nothing to show.
    let out = user.run(&["telemetry", "held"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("nothing it can prove is yours"),
        "{}",
        stderr(&out)
    );
}
