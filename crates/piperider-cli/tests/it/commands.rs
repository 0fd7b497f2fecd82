//! The data commands on SQLite: real figures, exit codes, bad input.

use std::time::Duration;

use piperider_testkit::{Mode, Sink};
use serde_json::Value;

use crate::{ORDERS_ASSERTIONS, User, code, sqlite_fixture, stderr, stdout};

/// A returning user with an initialised SQLite project holding the fixture.
fn sqlite_project(sink: &Sink) -> User {
    let user = User::returning(&sink.endpoint());
    sqlite_fixture(&user.cwd.join("shop.db"));
    let init = user.run(&[
        "init",
        "--name",
        "shop",
        "--datasource-url",
        "sqlite://shop.db",
    ]);
    assert_eq!(code(&init), 0, "{}", stderr(&init));
    user
}

fn run_json(user: &User) -> Value {
    let text =
        std::fs::read_to_string(user.cwd.join(".piperider/outputs/latest/run.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn event_of(sink: &Sink, command: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(e) = sink
            .events()
            .into_iter()
            .rev()
            .find(|e| e["event_type"] == command)
        {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{command}` event arrived"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn init_writes_piperider_shaped_config_with_a_telemetry_id() {
    let sink = Sink::start(Mode::Accept);
    let user = sqlite_project(&sink);
    let config = std::fs::read_to_string(user.cwd.join(".piperider/config.yml")).unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    assert_eq!(value["dataSources"][0]["type"], "sqlite");
    assert_eq!(value["dataSources"][0]["dbpath"], "shop.db");
    let id = value["telemetry"]["id"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(user.cwd.join(".piperider/assertions").is_dir());
    assert!(
        std::fs::read_to_string(user.cwd.join(".piperider/.gitignore"))
            .unwrap()
            .contains("credentials.yml")
    );

    // A second init refuses, says what to do, and changes nothing.
    let again = user.run(&["init", "--datasource-url", "sqlite://other.db"]);
    assert_eq!(code(&again), 2);
    assert!(stderr(&again).contains("already"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_to_string(user.cwd.join(".piperider/config.yml")).unwrap(),
        config
    );
    let event = event_of(&sink, "init");
    assert_eq!(event["project"]["project_id"], id);
    assert_eq!(event["project"]["datasource_type"], "sqlite");
    assert!(event["stats"].is_null());
}

#[test]
fn init_keeps_passwords_out_of_the_config() {
    let user = User::returning(&Sink::refused_endpoint());
    let out = user.run(&[
        "init",
        "--datasource-url",
        "postgres://ada:s3cret@127.0.0.1:5432/shop",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let config = std::fs::read_to_string(user.cwd.join(".piperider/config.yml")).unwrap();
    assert!(!config.contains("s3cret"), "{config}");
    assert!(
        config.contains("type: postgres") && config.contains("dbname: shop"),
        "{config}"
    );
    let credentials = std::fs::read_to_string(user.cwd.join(".piperider/credentials.yml")).unwrap();
    assert!(credentials.contains("s3cret"));
}

#[test]
fn run_reports_real_figures_in_run_json_and_in_the_event() {
    let sink = Sink::start(Mode::Accept);
    let user = sqlite_project(&sink);
    std::fs::write(
        user.cwd.join(".piperider/assertions/orders.yml"),
        ORDERS_ASSERTIONS,
    )
    .unwrap();
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    let run = run_json(&user);
    let s = &run["summary"];
    assert_eq!(
        (
            s["tables"].as_u64(),
            s["columns"].as_u64(),
            s["rows"].as_u64()
        ),
        (Some(2), Some(8), Some(30))
    );
    assert_eq!(
        (
            s["builtin_assertions"].as_u64(),
            s["custom_assertions"].as_u64()
        ),
        (Some(5), Some(1))
    );
    assert_eq!(
        (
            s["passed_assertions"].as_u64(),
            s["failed_assertions"].as_u64()
        ),
        (Some(6), Some(0))
    );
    let orders = run["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    let status = orders["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "status")
        .unwrap();
    assert_eq!(status["distinct"], 3);
    assert_eq!(status["nulls"], 0);
    let total = orders["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "total")
        .unwrap();
    assert_eq!(
        (total["min"].as_str(), total["max"].as_str()),
        (Some("10.5"), Some("200.5"))
    );

    let event = event_of(&sink, "run");
    let stats = &event["stats"];
    assert_eq!(
        stats,
        &serde_json::json!({
            "tables": 2, "columns": 8, "rows": 30, "builtin_assertions": 5, "custom_assertions": 1,
            "passed_assertions": 6, "failed_assertions": 0
        })
    );
    assert_eq!(event["outcome"]["status"], "ok");
    assert_eq!(event["project"]["datasource_type"], "sqlite");
    assert!(run["id"].as_str().is_some());
}

#[test]
fn failing_assertions_exit_1_with_the_right_counts() {
    let sink = Sink::start(Mode::Accept);
    let user = sqlite_project(&sink);
    let failing = ORDERS_ASSERTIONS
        .replace("{min: [0, 1000]}", "{min: [100, 1000]}")
        .replace("total < 0", "total > 100");
    std::fs::write(user.cwd.join(".piperider/assertions/orders.yml"), failing).unwrap();
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("FAILED orders.total assert_column_min_in_range"),
        "{}",
        stdout(&out)
    );
    let s = &run_json(&user)["summary"];
    assert_eq!(
        (
            s["passed_assertions"].as_u64(),
            s["failed_assertions"].as_u64()
        ),
        (Some(4), Some(2))
    );
    let event = event_of(&sink, "run");
    assert_eq!(event["stats"]["failed_assertions"], 2);
    assert_eq!(event["stats"]["passed_assertions"], 4);
    assert_eq!(
        event["outcome"]["status"], "ok",
        "failed assertions are a finished run"
    );
}

#[test]
fn recommended_assertions_pass_on_the_data_they_came_from() {
    let sink = Sink::start(Mode::Accept);
    let user = sqlite_project(&sink);
    assert_eq!(code(&user.run(&["run"])), 0);
    let out = user.run(&["generate-assertions"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let generated = user
        .cwd
        .join(".piperider/assertions/recommended_orders.yml");
    assert!(generated.is_file());
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let s = &run_json(&user)["summary"];
    assert!(s["builtin_assertions"].as_u64().unwrap() >= 10, "{s}");
    assert_eq!(s["failed_assertions"], 0);

    // A file the user edited is never regenerated.
    let edited = format!(
        "{}\n# tightened by hand\n",
        std::fs::read_to_string(&generated).unwrap()
    );
    std::fs::write(&generated, &edited).unwrap();
    let mine = user
        .cwd
        .join(".piperider/assertions/recommended_customers.yml");
    std::fs::write(&mine, "customers:\n  tests: []\n").unwrap();
    let out = user.run(&["generate-assertions"]);
    assert_eq!(code(&out), 0);
    assert_eq!(std::fs::read_to_string(&generated).unwrap(), edited);
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        "customers:\n  tests: []\n"
    );
    let event = event_of(&sink, "generate-assertions");
    assert_eq!(event["stats"]["tables"], 2);
}

#[test]
fn the_report_is_one_self_contained_file() {
    let sink = Sink::start(Mode::Accept);
    let user = sqlite_project(&sink);
    std::fs::write(
        user.cwd.join(".piperider/assertions/orders.yml"),
        ORDERS_ASSERTIONS,
    )
    .unwrap();
    assert_eq!(code(&user.run(&["run"])), 0);
    let out = user.run(&["generate-report"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let path = stdout(&out).trim().to_string();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.contains("<h2>orders</h2>") && html.contains("no_negative_totals"));
    for needle in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(needle),
            "the report refers to something outside itself: {needle}"
        );
    }
    if let Some(requests) = crate::browser::page_requests(std::path::Path::new(&path)) {
        assert!(
            requests.is_empty(),
            "opening the report made requests: {requests:?}"
        );
    }
    let event = event_of(&sink, "generate-report");
    assert_eq!(event["stats"]["passed_assertions"], 6);
}

#[test]
fn bad_input_exits_2_with_a_clear_message_and_an_error_event() {
    let sink = Sink::start(Mode::Accept);
    let user = sqlite_project(&sink);
    let assertions = user.cwd.join(".piperider/assertions/orders.yml");

    std::fs::write(
        &assertions,
        "orders:\n  columns:\n    id:\n      tests: [\n",
    )
    .unwrap();
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains(&format!("{}:5:1", assertions.display())),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        &assertions,
        "orders:\n  columns:\n    nope:\n      tests:\n      - name: assert_column_not_null\n",
    )
    .unwrap();
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("column `orders.nope` does not exist"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        &assertions,
        "refunds:\n  tests:\n  - name: assert_row_count_in_range\n    assert: {count: [0, 1]}\n",
    )
    .unwrap();
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("table `refunds` does not exist"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&assertions).unwrap();

    std::fs::remove_file(user.cwd.join("shop.db")).unwrap();
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    let elsewhere = User::returning(&sink.endpoint());
    let out = elsewhere.run(&["init", "--datasource-url", "mysql://h/db"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not supported"), "{}", stderr(&out));

    // Every failure above sent an error event without any message text.
    assert!(user.wait_spool_empty(Duration::from_secs(15)));
    assert!(elsewhere.wait_spool_empty(Duration::from_secs(15)));
    let errors: Vec<Value> = sink
        .events()
        .into_iter()
        .filter(|e| e["outcome"]["status"] == "error")
        .collect();
    assert_eq!(errors.len(), 5, "{errors:?}");
    for e in &errors {
        let text = e.to_string();
        assert!(
            !text.contains("nope") && !text.contains("refunds") && !text.contains("shop.db"),
            "{text}"
        );
        assert_eq!(e["outcome"].as_object().unwrap().len(), 2, "{text}");
    }
}
