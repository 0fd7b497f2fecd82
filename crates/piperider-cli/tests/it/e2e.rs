//! End to end: the real backend on SQLite, the real `piperider` with its
//! detached sender, and the admin API reading back what arrived.

use serde_json::Value;

use crate::backend::Backend;
use crate::{User, code, sqlite_fixture, stderr, stdout};

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

/// `telemetry sent --json`, its exit code and the batches.
fn sent(user: &User, args: &[&str]) -> (i32, Vec<Value>) {
    let mut all = vec!["telemetry", "sent", "--json"];
    all.extend_from_slice(args);
    let out = user.run(&all);
    let batches: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    (code(&out), batches.as_array().unwrap().clone())
}

#[test]
fn the_record_of_what_was_sent_checks_each_receipt_and_catches_a_changed_event() {
    let backend = Backend::start();
    let user = User::returning(&backend.endpoint);
    sqlite_fixture(&user.cwd.join("shop.db"));
    assert_eq!(
        code(&user.run(&["init", "--datasource-url", "sqlite://shop.db"])),
        0
    );
    assert!(user.wait_spool_empty(std::time::Duration::from_secs(15)));
    assert_eq!(code(&user.run(&["run"])), 0);
    assert!(user.wait_spool_empty(std::time::Duration::from_secs(15)));
    backend.wait_for("run", 1);

    // Every batch kept byte for byte, its receipt matching what was sent,
    // and the backend holding each event as it was sent.
    let (exit, batches) = sent(&user, &[]);
    assert_eq!(exit, 0, "{batches:?}");
    assert_eq!(batches.len(), 2, "{batches:?}");
    for b in &batches {
        assert_eq!(b["receipt"], "matches", "{b}");
        assert_eq!(b["held"]["state"], "as_sent", "{b}");
        assert_eq!(b["accepted"], 1);
    }
    let run_batch: Value = serde_json::from_str(batches[1]["body"].as_str().unwrap()).unwrap();
    let run_id = run_batch["events"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(run_batch["events"][0]["event_type"], "run");

    // One byte of the stored run changed on the server: that batch, and only it.
    crate::execute(
        &format!("sqlite://{}", backend.database().display()),
        &[&format!(
            "UPDATE events SET rows = rows + 1 WHERE event_id = '{}'",
            uuid::Uuid::parse_str(&run_id).unwrap()
        )],
    );
    let (exit, batches) = sent(&user, &[]);
    assert_eq!(exit, 1, "a changed event is a failure");
    assert_eq!(batches[0]["held"]["state"], "as_sent");
    assert_eq!(batches[1]["held"]["state"], "changed");
    assert_eq!(
        batches[1]["held"]["event_ids"],
        serde_json::json!([uuid::Uuid::parse_str(&run_id).unwrap().to_string()])
    );
    let out = user.run(&["telemetry", "sent"]);
    assert!(
        stdout(&out).contains("CHANGED on the backend"),
        "{}",
        stdout(&out)
    );
    // Offline, only the receipts are checked: both still match.
    let (exit, batches) = sent(&user, &["--offline"]);
    assert_eq!(exit, 0);
    assert_eq!(batches[1]["held"]["state"], "not_checked");

    // A receipt that does not match the bytes sent (here: the kept copy
    // edited) is reported too.
    let dir = user.home().join("telemetry/sent");
    let mut kept: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "batch"))
        .collect();
    kept.sort();
    let text = std::fs::read_to_string(&kept[1]).unwrap();
    assert!(text.contains("\"rows\":30"), "{text}");
    std::fs::write(&kept[1], text.replace("\"rows\":30", "\"rows\":31")).unwrap();
    let (exit, batches) = sent(&user, &["--offline"]);
    assert_eq!(exit, 1);
    assert_eq!(batches[0]["receipt"], "matches");
    assert_eq!(batches[1]["receipt"], "differs");

    assert_eq!(code(&user.run(&["telemetry", "clean"])), 0);
    assert_eq!(sent(&user, &[]).1.len(), 0);
}
