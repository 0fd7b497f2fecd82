//! The PipeRider telemetry wire format, version 1.
//!
//! This crate is the project's compatibility promise: every type here that is
//! `Serialize` is what travels between the CLI, the browser script and the
//! ingestion backend. It owns the event types, the batch envelope, the
//! validation rules and their limits, and the JSON Schema generated from the
//! types (`cargo xtask codegen` writes it to `docs/schema/`).
//!
//! Invariant: no IO. Nothing here reads files, opens sockets or looks at the
//! clock; functions that need "now" take it as an argument. Fresh random
//! ids and owner secrets take the operating system's random source.

#![warn(missing_docs)]

mod cli;
mod cloud;
mod envelope;
mod error;
mod ids;
pub mod limits;
mod owner;
mod receipt;
mod response;
pub mod schema;
mod text;

pub use cli::{CliEvent, CommandName, Outcome, Platform, Project, Runtime, Stats, Status};
pub use cloud::{CloudEvent, CloudEventType, RouteTemplate};
pub use envelope::{Batch, RawBatch, WireEvent, read_json};
pub use error::{EventError, Violation};
pub use ids::{DeviceId, EventId, ProjectId, UserId, VisitorId};
pub use owner::{
    OwnerAction, OwnerKey, OwnerProof, OwnerSecret, PROOF_SCHEME, PROOF_WINDOW, ProofError,
    proof_message,
};
pub use receipt::{Receipt, StoredFields, batch_digest};
pub use response::{BatchResponse, DeletionRequest, EventResult, ResultStatus};

/// The version of the wire format this crate speaks. Every event carries it in
/// `schema_version`; an event without the field is read as version 1.
pub const SCHEMA_VERSION: u8 = 1;

pub(crate) fn schema_version_default() -> u8 {
    SCHEMA_VERSION
}

/// The README's examples, compiled (and run where they can be) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
