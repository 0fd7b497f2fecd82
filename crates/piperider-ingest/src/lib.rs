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
//! listener until a shutdown signal, then finishes in-flight commits;
//! [`run`] is the whole of a binary's `main` after its flags are parsed.

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
mod public;
mod server;
mod state;
pub mod storage;

pub use config::{Config, ConfigError};
pub use edge::app;
pub use error::ApiError;
pub use geo::{Geo, GeoError};
pub use server::{
    Flags, ServeError, Transfer, redact, run, run_transfer, serve, serve_router, shutdown_signal,
};
pub use state::{AppState, Shared};
pub use storage::{RollupHold, StorageError, Store};
