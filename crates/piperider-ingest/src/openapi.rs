//! `GET /openapi.json`: an OpenAPI 3.1 document whose schemas are
//! generated from the same Rust types the service reads and writes.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use piperider_event::{Batch, BatchResponse, CliEvent, CloudEvent, DeletionRequest};

use crate::store::{Stats, UserReport};

fn reference<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

pub(crate) fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "#/components/schemas/".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let batch = reference::<Batch<CliEvent>>(&mut generator);
    let batch_response = reference::<BatchResponse>(&mut generator);
    let deletion = reference::<DeletionRequest>(&mut generator);
    let stats = reference::<Stats>(&mut generator);
    let user = reference::<UserReport>(&mut generator);
    let cloud_event = reference::<CloudEvent>(&mut generator);
    let schemas = generator.take_definitions(true);
    let error = json!({"description": "An error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}, "reason": {"type": "string"}}}}}});
    let bearer = json!([{"admin": []}]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "piperider-ingest",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "PipeRider telemetry ingestion, privacy and admin API."
        },
        "paths": {
            "/v1/batch": {"post": {
                "summary": "Store a batch of CLI events (gzip allowed; at most 500 events, 1 MiB compressed, 8 MiB decompressed)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": batch}}},
                "responses": {
                    "200": {"description": "A result per event, in input order: accepted, duplicate or rejected (with the field and reason). Sent only after the events are committed.",
                            "content": {"application/json": {"schema": batch_response}}},
                    "400": {"description": "A malformed envelope (or every event rejected: the body then lists why, event by event)"},
                    "413": error, "415": error,
                    "429": {"description": "Rate limited; see Retry-After"},
                    "503": {"description": "Storage unavailable; nothing stored; see Retry-After"}
                }
            }},
            "/v1/deletion-requests": {"post": {
                "summary": "Delete everything stored for a user id; later events for it are dropped",
                "requestBody": {"required": true, "content": {"application/json": {"schema": deletion}}},
                "responses": {"202": {"description": "Deleted"}, "400": error, "429": error, "503": error}
            }},
            "/v1/consent": {
                "post": {
                    "summary": "Record a Cloud visitor's choice (audit trail) and set the signed piperider_consent cookie",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["choice"], "additionalProperties": false,
                        "properties": {"choice": {"enum": ["accept_all", "necessary_only"]}, "source": {"enum": ["banner", "settings"]}}}}}},
                    "responses": {"200": {"description": "The state now (granted or denied), with Set-Cookie"}, "400": error}
                },
                "get": {"summary": "The state the request's consent cookie gives (pending, granted, denied)", "responses": {"200": {"description": "The state"}}}
            },
            "/v1/cloud/events": {"post": {
                "summary": "Store one Cloud event, only for a request with a valid, current Accept All cookie",
                "requestBody": {"required": true, "content": {"application/json": {"schema": cloud_event}}},
                "responses": {"204": {"description": "Stored with consent; without consent nothing is stored and the answer is the same"}, "400": error}
            }},
            "/v1/admin/stats": {"get": {
                "summary": "Dashboard figures for a date range",
                "security": bearer,
                "parameters": [
                    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}}
                ],
                "responses": {"200": {"description": "Figures", "content": {"application/json": {"schema": stats}}}, "400": error, "401": error}
            }},
            "/v1/admin/users/{user_id}": {
                "get": {
                    "summary": "Everything stored about one user",
                    "security": bearer,
                    "parameters": [{"name": "user_id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}],
                    "responses": {"200": {"description": "The user", "content": {"application/json": {"schema": user}}}, "401": error, "404": error}
                },
                "delete": {
                    "summary": "Delete everything stored about one user",
                    "security": bearer,
                    "parameters": [{"name": "user_id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}],
                    "responses": {"204": {"description": "Deleted"}, "401": error}
                }
            },
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "The database is reachable", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "OpenMetrics text"}}}}
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}
        }
    })
}
