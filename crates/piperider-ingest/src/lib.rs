//! `piperider-ingest`: the telemetry backend.
//!
//! Durable, idempotent ingestion of CLI events (`POST /v1/batch`), country
//! and region from the client address (then forgotten), rollups kept at
//! ingest, deletion requests, retention, and an admin API, on an embedded
//! SQLite database or on PostgreSQL.
//!
//! [`app`] builds the router from an [`AppState`]; [`serve`] runs it on a
//! listener until a shutdown signal, then finishes in-flight commits.

mod admin;
mod cloud;
mod dashboard;
mod demo;
mod error;
pub mod geo;
mod ingest;
mod metrics;
mod openapi;
mod sqlite_writer;
pub mod store;
mod writer;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

pub use error::ApiError;
pub use geo::Geo;
pub use store::Store;

use crate::metrics::Metrics;
use crate::writer::Writer;

/// Configuration: flags, with `PIPERIDER_INGEST_*` environment fallbacks.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_LISTEN",
        default_value = "127.0.0.1:8700"
    )]
    pub listen: SocketAddr,
    /// `sqlite:path.db` (created if missing) or `postgres://user@host:5432/db`.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_DATABASE_URL",
        default_value = "sqlite:piperider-ingest.db"
    )]
    pub database_url: String,
    /// A MaxMind-format City database (.mmdb) for country and region.
    #[arg(long, env = "PIPERIDER_INGEST_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    /// A proxy (CIDR) whose X-Forwarded-For is believed. Repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "PIPERIDER_INGEST_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// The admin API's bearer token. Without one, the admin API answers 401.
    #[arg(long, env = "PIPERIDER_INGEST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (its first line).
    #[arg(
        long,
        env = "PIPERIDER_INGEST_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,
    /// Raw events older than this many days are deleted (the rollups stay).
    #[arg(long, env = "PIPERIDER_INGEST_RETENTION_DAYS", default_value_t = 365)]
    pub retention_days: u32,
    /// Requests per second from one client address (0: no limit).
    #[arg(long, env = "PIPERIDER_INGEST_RATE_LIMIT_IP", default_value_t = 50)]
    pub rate_limit_ip: u32,
    /// Requests per second carrying one user's events (0: no limit).
    #[arg(long, env = "PIPERIDER_INGEST_RATE_LIMIT_USER", default_value_t = 10)]
    pub rate_limit_user: u32,
    /// Longest time one request may take.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_REQUEST_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub request_timeout_secs: u64,
    /// The Cloud consent policy's version; raising it asks every visitor again.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_CONSENT_POLICY_VERSION",
        default_value_t = 1
    )]
    pub consent_policy_version: u32,
    /// Mark the consent cookie `Secure` (serve over https).
    #[arg(long, env = "PIPERIDER_INGEST_COOKIE_SECURE")]
    pub cookie_secure: bool,
    /// Serve the demo PipeRider Cloud site at `/` (for trying the consent banner and Cloud telemetry).
    #[arg(long, env = "PIPERIDER_INGEST_DEMO_CLOUD")]
    pub demo_cloud: bool,
}

impl Config {
    /// Checks what the flags alone cannot, and reads the token file.
    pub fn resolve(mut self) -> anyhow::Result<Config> {
        if let Some(path) = &self.admin_token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--admin-token-file {}: {e}", path.display()))?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                anyhow::bail!("--admin-token-file {}: the file is empty", path.display());
            }
            self.admin_token = Some(token);
        }
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            anyhow::bail!("the admin token is too short: use at least 16 characters");
        }
        if self.retention_days == 0 {
            anyhow::bail!("--retention-days must be at least 1");
        }
        if self.request_timeout_secs == 0 {
            anyhow::bail!("--request-timeout-secs must be at least 1");
        }
        Ok(self)
    }

    /// A configuration for tests and embedding: defaults, this database.
    pub fn for_database(database_url: &str) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_string(),
            geoip_db: None,
            trusted_proxies: Vec::new(),
            admin_token: None,
            admin_token_file: None,
            retention_days: 365,
            rate_limit_ip: 0,
            rate_limit_user: 0,
            request_timeout_secs: 10,
            consent_policy_version: 1,
            cookie_secure: false,
            demo_cloud: false,
        }
    }
}

/// Token buckets per client address and per user id (in memory only).
#[derive(Debug)]
pub(crate) struct Limits {
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    user: Option<DefaultKeyedRateLimiter<String>>,
}

fn quota(per_second: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Limits {
    fn new(config: &Config) -> Self {
        Limits {
            ip: quota(config.rate_limit_ip).map(RateLimiter::keyed),
            user: quota(config.rate_limit_user).map(RateLimiter::keyed),
        }
    }

    fn refused(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> ApiError {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs() + 1,
        }
    }

    pub(crate) fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.ip {
            Some(limiter) => limiter.check_key(&ip).map_err(Self::refused),
            None => Ok(()),
        }
    }

    pub(crate) fn check_user(&self, user: &str) -> Result<(), ApiError> {
        match &self.user {
            Some(limiter) => limiter.check_key(&user.to_string()).map_err(Self::refused),
            None => Ok(()),
        }
    }

    /// Forgets idle buckets, so memory follows recent clients only.
    fn shrink(&self) {
        if let Some(l) = &self.ip {
            l.retain_recent();
        }
        if let Some(l) = &self.user {
            l.retain_recent();
        }
    }
}

/// Everything a request handler needs. Every request clones it (once per
/// extractor), so its clones share one allocation.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares among its clones.
#[derive(Debug)]
pub struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Store,
    pub(crate) geo: Arc<Geo>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) writer: Writer,
    /// Salt of the hashes that remember deleted users.
    pub(crate) salt: Arc<str>,
    /// Signs and checks Cloud consent cookies (its secret lives in the database).
    pub(crate) consent_codec: Arc<piperider_consent::CookieCodec>,
    pub(crate) consent_policy: Arc<piperider_consent::Policy>,
    /// Logged-in dashboard sessions.
    pub(crate) admin_sessions: Arc<dashboard::Sessions>,
}

/// The salted hash by which a deleted user is remembered.
pub(crate) fn hash_user(salt: &str, user_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update([0])
        .chain_update(user_id.as_bytes())
        .finalize();
    hex(&digest)
}

/// Lowercase hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

impl AppState {
    /// Opens the GeoIP database, reads (or makes) the server's salt and
    /// starts the writers. The writers stop once every clone of the state
    /// is dropped; await the returned handles to know they finished.
    pub async fn new(
        config: Config,
        store: Store,
        geo: Geo,
    ) -> anyhow::Result<(AppState, Vec<tokio::task::JoinHandle<()>>)> {
        let salt = store
            .setting("user_hash_salt", || {
                uuid::Uuid::new_v4().simple().to_string()
            })
            .await?;
        let consent_secret = store
            .setting("consent_cookie_secret", || {
                format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                )
            })
            .await?;
        let metrics = Arc::new(Metrics::default());
        let (writer, handles) = Writer::start(store.clone(), metrics.clone())?;
        let state = AppState(Arc::new(Shared {
            admin_sessions: Arc::new(dashboard::Sessions::default()),
            consent_codec: Arc::new(piperider_consent::CookieCodec::new(
                consent_secret.as_bytes(),
            )),
            consent_policy: Arc::new(piperider_consent::Policy::new(
                config.consent_policy_version,
            )),
            limits: Arc::new(Limits::new(&config)),
            config: Arc::new(config),
            store,
            geo: Arc::new(geo),
            metrics,
            writer,
            salt: salt.into(),
        }));
        Ok((state, handles))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A consent cookie value this server would have set for `record`.
    pub fn consent_cookie_for_tests(&self, record: &piperider_consent::ConsentRecord) -> String {
        self.consent_codec.encode(record)
    }

    /// The configuration this state runs with.
    pub fn config_for_tests(&self) -> Arc<Config> {
        self.config.clone()
    }

    pub(crate) fn storage_error(&self, e: sqlx::Error) -> ApiError {
        self.storage_failure(&e)
    }

    pub(crate) fn storage_failure(&self, e: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "storage error");
        ApiError::Unavailable {
            retry_after_secs: 5,
        }
    }

    /// Makes the rollups include every acknowledged event, before they are read.
    pub(crate) async fn rollups_current(&self) -> Result<(), ApiError> {
        self.writer
            .flush()
            .await
            .map_err(|e| self.storage_failure(&e))
    }

    pub(crate) async fn delete_user(&self, user_id: &str) -> Result<(), ApiError> {
        let hash = hash_user(&self.salt, user_id);
        let now = chrono::Utc::now().timestamp_millis();
        let existed = self
            .writer
            .delete_user(user_id, &hash, now)
            .await
            .map_err(|e| self.storage_failure(&e))?;
        tracing::info!(existed, "deletion request carried out");
        Ok(())
    }
}

/// The router: ingestion, privacy, admin and operations endpoints.
pub fn app(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    let demo = if state.config.demo_cloud {
        demo::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(demo)
        .route("/consent.js", get(consent_script))
        .route("/admin", get(dashboard::page))
        .route("/admin/login", post(dashboard::login))
        .route("/admin/logout", post(dashboard::logout))
        .route("/v1/batch", post(ingest::batch))
        .route("/v1/deletion-requests", post(ingest::deletion_request))
        .route("/v1/consent", post(cloud::decide).get(cloud::current))
        .route("/v1/cloud/events", post(cloud::event))
        .route("/v1/admin/stats", get(admin::stats))
        .route(
            "/v1/admin/users/{user_id}",
            get(admin::user).delete(admin::delete_user),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .layer(metrics::ObserveLayer(state.metrics.clone()))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

async fn consent_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        piperider_consent::BROWSER_SCRIPT,
    )
        .into_response()
}

/// Ready when the database answers and, after a failed commit, a write
/// could start again (SQLite's write lock can be taken).
async fn readyz(State(app): State<AppState>) -> Response {
    let failing = app.metrics.storage_failing.get() != 0;
    let store = app.store.clone();
    // Its own task: a probe outliving the deadline still finishes (and rolls back).
    let check = tokio::spawn(async move { store.ready(failing).await });
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(Ok(()))) => {
            if failing {
                app.metrics.storage_failing.set(0);
            }
            (StatusCode::OK, "ready").into_response()
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "storage unavailable",
        )
            .into_response(),
    }
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Deletes raw events past the retention period, hourly, and trims idle rate-limit buckets.
fn start_maintenance(state: &AppState) -> tokio::task::JoinHandle<()> {
    let (store, limits, days) = (
        state.store.clone(),
        state.limits.clone(),
        state.config.retention_days,
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(i64::from(days));
            match store.prune_events(cutoff.timestamp_millis()).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "retention: raw events deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention run failed"),
            }
            limits.shrink();
        }
    })
}

/// Runs the service on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish and their commits complete.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("database {}: {e}", redact(&config.database_url)))?;
    let geo = match &config.geoip_db {
        Some(path) => Geo::open(path)?,
        None => Geo::default(),
    };
    let (state, writers) = AppState::new(config, store.clone(), geo).await?;
    let maintenance = start_maintenance(&state);
    let router = app(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    maintenance.abort();
    // The router and its state are gone: the writers drain the queue and stop.
    for w in writers {
        let _ = w.await;
    }
    store.close().await;
    Ok(())
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests and commits");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_user_is_remembered_by_the_salted_sha256_in_hex() {
        // sha256(b"salt\0" + user id), as computed by Python's hashlib.
        assert_eq!(
            hash_user("salt", "0123456789abcdef0123456789abcdef"),
            "a34fa5a6d765f7c8289522649018124c4372a69816aea7a8c0fe7511cb34ccb8"
        );
    }
}
