//! The data commands against the machine's PostgreSQL, one throwaway
//! database per test. Without a server, the tests say so and stop, unless
//! `PIPERIDER_REQUIRE_POSTGRES` is set (CI), where that is a failure.

use piperider_testkit::{Mode, Sink};

use crate::{ORDERS_ASSERTIONS, User, code, execute, fixture_statements, stderr, stdout};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database with the fixture, dropped when the guard goes.
struct Database {
    name: String,
}

impl Database {
    fn create() -> Option<Database> {
        let url =
            std::env::var("PIPERIDER_TEST_POSTGRES_ADMIN_URL").unwrap_or_else(|_| ADMIN_URL.into());
        let reachable = std::net::TcpStream::connect_timeout(
            &"127.0.0.1:5432".parse().unwrap(),
            std::time::Duration::from_secs(2),
        )
        .is_ok();
        if !reachable {
            assert!(
                std::env::var_os("PIPERIDER_REQUIRE_POSTGRES").is_none(),
                "PostgreSQL is required here but 127.0.0.1:5432 does not answer"
            );
            eprintln!("SKIPPED: PostgreSQL is not reachable on 127.0.0.1:5432");
            return None;
        }
        let name = format!("piperider_test_{}", uuid::Uuid::new_v4().simple());
        execute(&url, &[&format!("CREATE DATABASE {name}")]);
        let db_url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let statements = fixture_statements();
        execute(
            &db_url,
            &statements.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        Some(Database { name })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let url =
            std::env::var("PIPERIDER_TEST_POSTGRES_ADMIN_URL").unwrap_or_else(|_| ADMIN_URL.into());
        execute(
            &url,
            &[&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )],
        );
    }
}

#[test]
fn postgres_run_reports_the_same_figures() {
    let Some(db) = Database::create() else { return };
    let sink = Sink::start(Mode::Accept);
    let user = User::returning(&sink.endpoint());
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
    assert_eq!(
        code(&user.run(&["init", "--name", "warehouse", "--datasource-url", &url])),
        0
    );
    std::fs::write(
        user.cwd.join(".piperider/assertions/orders.yml"),
        ORDERS_ASSERTIONS.replace("total < 0", "total > 100"),
    )
    .unwrap();
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(user.cwd.join(".piperider/outputs/latest/run.json")).unwrap(),
    )
    .unwrap();
    let s = &run["summary"];
    assert_eq!(
        s,
        &serde_json::json!({"tables": 2, "columns": 8, "rows": 30, "builtin_assertions": 5, "custom_assertions": 1, "passed_assertions": 5, "failed_assertions": 1})
    );
    assert_eq!(run["datasource"]["type"], "postgres");
    let events = sink.wait_for_events(2, std::time::Duration::from_secs(15));
    let event = events
        .iter()
        .find(|e| e["event_type"] == "run")
        .expect("a run event");
    assert_eq!(&event["stats"], s);
    assert_eq!(event["project"]["datasource_type"], "postgres");

    // Recommended assertions pass on the same data.
    std::fs::remove_file(user.cwd.join(".piperider/assertions/orders.yml")).unwrap();
    assert_eq!(code(&user.run(&["generate-assertions"])), 0);
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

#[test]
fn an_unreachable_postgres_is_exit_2_and_an_error_event() {
    let sink = Sink::start(Mode::Accept);
    let user = User::returning(&sink.endpoint());
    // A loopback port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    assert_eq!(code(&user.run(&["init", "--datasource-url", &url])), 0);
    let out = user.run(&["run"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    let events = sink.wait_for_events(2, std::time::Duration::from_secs(15));
    let event = events
        .iter()
        .find(|e| e["event_type"] == "run")
        .expect("a run event");
    assert_eq!(event["outcome"]["status"], "error");
    assert_eq!(event["project"]["datasource_type"], "postgres");
    assert!(!event.to_string().contains("nowhere"));
}
