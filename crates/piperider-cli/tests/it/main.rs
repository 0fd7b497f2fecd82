//! The `piperider` binary, run as a user runs it, against real SQLite files,
//! the machine's PostgreSQL, and a loopback telemetry sink.

mod backend;
mod browser;
mod commands;
mod e2e;
mod modes;
mod postgres;
mod telemetry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub(crate) const PIPERIDER_PROFILE: &str =
    "user_id: 3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b\nanonymous_tracking: true\n";

/// A user (home folder and environment) and a working folder, in a temporary folder.
pub(crate) struct User {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: PathBuf,
}

impl User {
    /// A user who has run piperider before (PipeRider's own profile), sending to `endpoint`.
    pub(crate) fn returning(endpoint: &str) -> User {
        let u = User::new(endpoint);
        std::fs::create_dir_all(u.home()).unwrap();
        std::fs::write(u.home().join("profile.yml"), PIPERIDER_PROFILE).unwrap();
        u
    }

    /// A user who never ran piperider.
    pub(crate) fn new(endpoint: &str) -> User {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("shop");
        std::fs::create_dir_all(&cwd).unwrap();
        User {
            env: vec![
                ("PIPERIDER_TELEMETRY_ENDPOINT".into(), endpoint.into()),
                ("PIPERIDER_TELEMETRY_RETRY_BASE_MS".into(), "50".into()),
            ],
            dir,
            cwd,
        }
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home/.piperider")
    }

    pub(crate) fn set(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_piperider"));
        cmd.args(args).current_dir(&self.cwd).env_clear();
        for var in ["PATH", "LANG"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("HOME", self.dir.path().join("home"));
        cmd.env("PIPERIDER_HOME", self.home());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub(crate) fn spool_len(&self) -> usize {
        std::fs::read_dir(self.home().join("telemetry/spool"))
            .map(|d| {
                d.filter(|e| {
                    !e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with('.')
                })
                .count()
            })
            .unwrap_or(0)
    }

    /// Waits for the spool to empty (the detached sender finished), up to `timeout`.
    pub(crate) fn wait_spool_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.spool_len() == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Executes SQL statements on a database URL through sqlx (the tests' own fixtures).
pub(crate) fn execute(url: &str, statements: &[&str]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        for s in statements {
            sqlx::query(s)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        conn.close().await.unwrap();
    });
}

/// The fixture: `customers` (3 columns, 10 rows) and `orders` (5 columns, 20 rows).
pub(crate) fn fixture_statements() -> Vec<String> {
    let mut s = vec![
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT)".to_string(),
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, total NUMERIC(10,2) NOT NULL, status TEXT NOT NULL, created_at DATE NOT NULL)".to_string(),
    ];
    for i in 1..=10 {
        s.push(format!(
            "INSERT INTO customers VALUES ({i}, 'customer {i}', 'c{i}@example.com')"
        ));
    }
    for i in 1..=20 {
        let status = ["new", "paid", "shipped"][i % 3];
        s.push(format!(
            "INSERT INTO orders VALUES ({i}, {}, {}.50, '{status}', '2026-01-{i:02}')",
            i % 10 + 1,
            i * 10
        ));
    }
    s
}

/// A SQLite file with the fixture, at `path`.
pub(crate) fn sqlite_fixture(path: &Path) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let statements = fixture_statements();
    execute(
        &url,
        &statements.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

pub(crate) const ORDERS_ASSERTIONS: &str = "\
orders:
  tests:
  - name: assert_row_count_in_range
    assert: {count: [1, 100000]}
  columns:
    id:
      tests:
      - name: assert_column_not_null
      - name: assert_column_unique
    total:
      tests:
      - name: assert_column_min_in_range
        assert: {min: [0, 1000]}
    status:
      tests:
      - name: assert_column_in_set
        assert: {set: [new, paid, shipped]}
  custom:
  - name: no_negative_totals
    sql: select 1 from orders where total < 0
";
