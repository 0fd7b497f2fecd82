//! The ingestion service through its router and its public API, on SQLite
//! and on the machine's PostgreSQL (a database per test).

mod admin;
mod bad_input;
mod charts;
mod cloud;
mod consent_records;
mod contract;
mod edge;
mod fuzz;
mod ingest;
mod operations;
mod partitions;
mod public;
mod queue;
mod replica;
mod transfer;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use piperider_ingest::{AppState, Config, Geo, Store, app};
use serde_json::{Value, json};
use tower::ServiceExt;

pub(crate) const USER: &str = "5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3";
pub(crate) const PROJECT: &str = "dc243c0c67204d4bb15740617505cb26";
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub(crate) const CLIENT_IP: &str = "81.2.69.142";

/// Everything the service logged during the tests (to look for addresses in).
pub(crate) fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A MaxMind-format City database with 81.2.69.142/31 in England, as the
/// MaxMind test database has it.
pub(crate) fn geo_fixture() -> Geo {
    #[derive(serde::Serialize)]
    struct Iso {
        iso_code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct City {
        country: Iso,
        subdivisions: Vec<Iso>,
    }
    let mut writer = mmdb_writer::Writer::new("GeoLite2-City");
    writer
        .insert(
            "81.2.69.142/31".parse::<ipnet::IpNet>().unwrap(),
            &City {
                country: Iso { iso_code: "GB" },
                subdivisions: vec![Iso { iso_code: "ENG" }],
            },
        )
        .unwrap();
    Geo::from_bytes(writer.to_bytes().unwrap()).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Sqlite,
    Postgres,
}

/// One service instance on its own database.
pub(crate) struct Harness {
    pub(crate) state: AppState,
    pub(crate) dir: tempfile::TempDir,
    pg_database: Option<String>,
}

/// The database taken away by [`Harness::take_storage_away`].
pub(crate) enum Outage {
    SqliteLocked(sqlx::SqliteConnection),
    PostgresClosed(String),
}

impl Outage {
    pub(crate) async fn end(self) {
        use sqlx::Connection;
        match self {
            Outage::SqliteLocked(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Outage::PostgresClosed(name) => {
                pg_admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
            }
        }
    }
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

async fn pg_admin(sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(PG_ADMIN).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// A new, empty PostgreSQL database's name (`None`, said loudly, when
/// PostgreSQL is not reachable outside CI).
pub(crate) async fn new_postgres_database() -> Option<String> {
    if !postgres_available() {
        return None;
    }
    let name = format!("piperider_ingest_test_{}", uuid::Uuid::new_v4().simple());
    pg_admin(&format!("CREATE DATABASE {name}")).await;
    Some(name)
}

pub(crate) fn postgres_available() -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().unwrap(),
        std::time::Duration::from_secs(2),
    )
    .is_ok();
    if !up {
        assert!(
            std::env::var_os("PIPERIDER_REQUIRE_POSTGRES").is_none(),
            "PostgreSQL is required here but 127.0.0.1:5432 does not answer"
        );
        eprintln!("SKIPPED: PostgreSQL is not reachable on 127.0.0.1:5432");
    }
    up
}

impl Harness {
    pub(crate) async fn start(db: Db, tune: impl FnOnce(&mut Config)) -> Option<Harness> {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let (url, pg_database) = match db {
            Db::Sqlite => (
                format!("sqlite:{}", dir.path().join("ingest.db").display()),
                None,
            ),
            Db::Postgres => {
                let name = new_postgres_database().await?;
                (
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    Some(name),
                )
            }
        };
        Some(Self::on(url, dir, pg_database, tune).await)
    }

    /// A harness on a database the test made (a PostgreSQL one is dropped
    /// at [`Harness::finish`]).
    pub(crate) async fn on(
        url: String,
        dir: tempfile::TempDir,
        pg_database: Option<String>,
        tune: impl FnOnce(&mut Config),
    ) -> Harness {
        let mut config = Config::for_database(&url);
        config.admin_token = Some(ADMIN_TOKEN.into());
        config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        tune(&mut config);
        let store = Store::connect(&url).await.unwrap();
        let state = AppState::new(config, store, geo_fixture()).await.unwrap();
        Harness {
            state,
            dir,
            pg_database,
        }
    }

    /// Makes the database unavailable to the service until the returned
    /// outage is ended: on SQLite another connection holds the write lock,
    /// on PostgreSQL the database refuses connections and the service's
    /// are cut.
    pub(crate) async fn take_storage_away(&self) -> Outage {
        match &self.pg_database {
            None => {
                let mut conn = self.sqlite_connection().await;
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Outage::SqliteLocked(conn)
            }
            Some(name) => {
                pg_admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
                pg_admin(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                ))
                .await;
                Outage::PostgresClosed(name.clone())
            }
        }
    }

    /// A connection of the test's own to this harness's SQLite file.
    async fn sqlite_connection(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let path = self.dir.path().join("ingest.db");
        sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap()
    }

    /// Runs `sqlite` or `postgres` (whichever this harness is on) on its
    /// database from a connection of the test's own.
    pub(crate) async fn execute(&self, sqlite: &str, postgres: &str) {
        use sqlx::Connection;
        match &self.pg_database {
            None => {
                let mut conn = self.sqlite_connection().await;
                sqlx::raw_sql(sqlite).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Some(name) => {
                let mut conn = pg_connection(name).await;
                sqlx::raw_sql(postgres).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// The text column of every row `sql` selects, read from a connection
    /// of the test's own.
    pub(crate) async fn query_text(&self, sql: &str) -> Vec<String> {
        match &self.pg_database {
            None => {
                let mut conn = self.sqlite_connection().await;
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
            Some(name) => {
                let mut conn = pg_connection(name).await;
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }

    /// Another service instance on the same database, with its configuration changed.
    pub(crate) async fn with_config(&self, tune: impl FnOnce(&mut Config)) -> Harness {
        let mut config = self.state.config().clone();
        tune(&mut config);
        Self::serving(config, self.store().clone()).await
    }

    /// Another node on this harness's PostgreSQL database: its own store
    /// (pool and writers) and service, as a second process would have.
    pub(crate) async fn another_node(&self) -> Harness {
        let name = self
            .pg_database
            .as_ref()
            .expect("nodes share a PostgreSQL database");
        let store = Store::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
            .await
            .unwrap();
        Self::serving(self.state.config().clone(), store).await
    }

    /// A service on `store` that does not own its database.
    pub(crate) async fn serving(config: Config, store: Store) -> Harness {
        let state = AppState::new(config, store, geo_fixture()).await.unwrap();
        Harness {
            state,
            dir: tempfile::tempdir().unwrap(),
            pg_database: None,
        }
    }

    /// The text `GET /metrics` answers.
    pub(crate) async fn metrics(&self) -> String {
        let (_, _, body) = self
            .send(
                "127.0.0.1",
                Request::get("/metrics").body(Body::empty()).unwrap(),
            )
            .await;
        String::from_utf8_lossy(&body).into_owned()
    }

    pub(crate) fn store(&self) -> &Store {
        self.state.store()
    }

    fn router(&self, peer: &str) -> Router {
        let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
        app(self.state.clone()).layer(MockConnectInfo(peer))
    }

    /// Sends a request from `peer`; returns the status, headers and body.
    pub(crate) async fn send(
        &self,
        peer: &str,
        request: Request<Body>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let response = self.router(peer).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body)
    }

    pub(crate) async fn post_json(&self, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let (status, _, body) = self.send(CLIENT_IP, request).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub(crate) async fn post_batch(&self, events: &[Value]) -> (StatusCode, Value) {
        self.post_json("/v1/batch", json!({ "events": events }).to_string())
            .await
    }

    /// Posts `events` as one batch; each must be answered `accepted`.
    pub(crate) async fn post_accepted(&self, events: &[Value]) {
        let (status, body) = self.post_batch(events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "accepted"),
            "{body}"
        );
    }

    pub(crate) async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = self.send("127.0.0.1", request).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// `DELETE /v1/admin/users/{user}` with the admin token: its status.
    pub(crate) async fn admin_delete_user(&self, user: &str) -> StatusCode {
        let request = Request::delete(format!("/v1/admin/users/{user}"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        self.send("127.0.0.1", request).await.0
    }

    /// The database's URL.
    pub(crate) fn url(&self) -> String {
        match &self.pg_database {
            Some(name) => format!("postgres://postgres@127.0.0.1:5432/{name}"),
            None => format!("sqlite:{}", self.dir.path().join("ingest.db").display()),
        }
    }

    /// Stops the service and starts it again on the same database (what
    /// an operator does around an import).
    pub(crate) async fn reopen(self, between: impl AsyncFnOnce(&str)) -> Harness {
        self.store().close().await;
        let url = self.url();
        between(&url).await;
        let store = Store::connect(&url).await.unwrap();
        let state = AppState::new(self.state.config().clone(), store, geo_fixture())
            .await
            .unwrap();
        Harness {
            state,
            dir: self.dir,
            pg_database: self.pg_database,
        }
    }

    pub(crate) async fn finish(self) {
        self.store().close().await;
        if let Some(name) = &self.pg_database {
            pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

/// Runs `sql` on the database at `url` (the service stopped).
pub(crate) async fn run_sql(url: &str, sql: &str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
}

/// A connection of the test's own to the PostgreSQL database `name`.
async fn pg_connection(name: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    sqlx::PgConnection::connect(&url).await.unwrap()
}

/// A valid CLI event of `user` in the test project, now.
pub(crate) fn event(user: &str) -> Value {
    piperider_testkit::cli_event(user, PROJECT)
}

/// An owner secret of the tests' own (`n` tells several apart).
pub(crate) fn owner(n: u8) -> piperider_event::OwnerSecret {
    piperider_event::OwnerSecret::from_hex(&format!("{n:02x}").repeat(32)).unwrap()
}

/// An event of `user` carrying the public key of `secret`.
pub(crate) fn owned_event(user: &str, secret: &piperider_event::OwnerSecret) -> Value {
    let mut e = event(user);
    e["owner_key"] = json!(secret.public_key().to_string());
    e
}

/// A deletion request for `user` with a proof made by `secret`.
pub(crate) fn deletion(user: &str, secret: &piperider_event::OwnerSecret) -> String {
    let proof = secret.prove(
        piperider_event::OwnerAction::Delete,
        &user.parse().unwrap(),
        chrono::Utc::now(),
    );
    json!({"user_id": user, "proof": proof}).to_string()
}

impl Harness {
    /// `GET /v1/users/{user}` with `authorization`, if any.
    pub(crate) async fn held(
        &self,
        user: &str,
        authorization: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::get(format!("/v1/users/{user}"));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let (status, _, body) = self
            .send(CLIENT_IP, request.body(Body::empty()).unwrap())
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// How many deleted users are remembered.
    pub(crate) async fn tombstones(&self) -> i64 {
        self.query_text("SELECT CAST(COUNT(*) AS TEXT) FROM deleted_users")
            .await[0]
            .parse()
            .unwrap()
    }
}

/// Runs an async test body on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::Db::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::Db::Postgres).await;
            }
        }
    };
}
