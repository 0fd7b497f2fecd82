//! `piperider-ingest`: the telemetry backend.
//!
//! Durable, idempotent ingestion of CLI events (`POST /v1/batch`), country
//! and region from the client address (then forgotten), rollups kept at
//! ingest, deletion requests, retention, the Cloud consent endpoints and
//! consent-gated Cloud events, and an admin API and dashboard, on an
//! embedded SQLite database or on PostgreSQL.
//!
//! The map: [`config`] (flags), [`storage`] (the one way to the database),
//! [`edge`] (routes, admission, auth, body extractors), the handlers
//! (`ingest`, `cloud`, `admin`, `dashboard`), [`geo`], `metrics`, `openapi`.
//! [`app`] builds the router from an [`AppState`]; [`serve`] runs it on a
//! listener until a shutdown signal, then finishes in-flight commits.

mod admin;
mod cloud;
pub mod config;
mod dashboard;
pub mod edge;
mod error;
pub mod geo;
mod ingest;
mod metrics;
mod openapi;
mod state;
pub mod storage;

use std::net::SocketAddr;
use std::time::Duration;

pub use config::{Config, ConfigError};
pub use edge::app;
pub use error::ApiError;
pub use geo::Geo;
pub use state::{AppState, Shared};
pub use storage::{StorageError, Store};

/// Deletes raw events past the retention period, hourly, and trims idle rate-limit buckets.
fn start_maintenance(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let days = i64::from(state.config.retention_days);
            let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(days);
            match state.store.prune_events(cutoff.timestamp_millis()).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "retention: raw events deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention run failed"),
            }
            state.limits.shrink();
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
    serve_router(config, listener, shutdown, |router| router).await
}

/// [`serve`], with `extend` adding to the router first (the dev stack adds
/// its demo site this way).
pub async fn serve_router(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    extend: impl FnOnce(axum::Router) -> axum::Router,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("database {}: {e}", redact(&config.database_url)))?;
    let geo = match &config.geoip_db {
        Some(path) => Geo::open(path)?,
        None => Geo::default(),
    };
    let state = AppState::new(config, store.clone(), geo).await?;
    let maintenance = start_maintenance(&state);
    let router = extend(app(state));
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    maintenance.abort();
    // In-flight requests are done: the writers drain their queues and stop.
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
