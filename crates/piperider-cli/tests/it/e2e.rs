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
