//! `GET /openapi.json`: an OpenAPI 3.1 document of every route, every
//! status it can answer and every content type, whose schemas are
//! generated from the same Rust types the service reads and writes. A test
//! holds its paths and methods against the router's ([`crate::edge::routes`]).

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use piperider_consent::ConsentAnswer;
use piperider_event::{Batch, BatchResponse, CliEvent, CloudEvent, DeletionRequest};

use crate::edge::body::{MAX_BODY_BYTES, MAX_DECOMPRESSED_BYTES};
use crate::storage::reports::{Stats, UserReport};

fn reference<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// The one error shape every refusal takes.
fn error_schema() -> Value {
    json!({"type": "object", "required": ["error", "reason"], "additionalProperties": false,
        "properties": {"error": {"type": "string"}, "reason": {"type": "string"}}})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// A response: `content` may be null (no body).
fn response(description: &str, content: Value) -> Value {
    let mut r = json!({"description": description});
    if !content.is_null() {
        r["content"] = content;
    }
    r
}

/// An error response in the one error shape.
fn error(description: &str) -> Value {
    response(
        description,
        json_content(json!({"$ref": "#/components/schemas/Error"})),
    )
}

/// The statuses every route may answer whatever it does.
fn common(responses: &mut Map<String, Value>) {
    responses.insert(
        "408".into(),
        error("The request took longer than the configured timeout"),
    );
    responses.insert("405".into(), error("The route does not take this method"));
}

/// The statuses of a route behind the admission layer.
fn admitted(responses: &mut Map<String, Value>) {
    responses.insert("413".into(), error(&format!("The body is larger than {MAX_BODY_BYTES} bytes as sent or {MAX_DECOMPRESSED_BYTES} decompressed")));
    responses.insert(
        "429".into(),
        error(
            "Rate limited: too many requests from this address (or for this user); see Retry-After",
        ),
    );
}

/// The statuses of a route with a JSON body.
fn json_body(responses: &mut Map<String, Value>) {
    responses.insert(
        "400".into(),
        error("The body is not what the route takes (the reason says what is)"),
    );
    responses.insert(
        "415".into(),
        error("Content-Type is not application/json, or Content-Encoding is neither gzip nor none"),
    );
}

fn unavailable(responses: &mut Map<String, Value>) {
    responses.insert(
        "503".into(),
        error("Storage unavailable; nothing was stored; see Retry-After"),
    );
}

fn admin(responses: &mut Map<String, Value>) {
    responses.insert(
        "401".into(),
        error("No admin token (Authorization: Bearer) or dashboard session"),
    );
    responses.insert(
        "429".into(),
        error("Too many wrong admin tokens from this address lately; see Retry-After"),
    );
}

/// One operation: its summary, request body, own responses and the shared ones `extra` adds.
fn op(
    summary: &str,
    body: Option<Value>,
    own: Value,
    extra: &[fn(&mut Map<String, Value>)],
) -> Value {
    let mut shared = Map::new();
    common(&mut shared);
    for add in extra {
        add(&mut shared);
    }
    // A route's own answer for a status wins over the shared one.
    let mut responses = shared;
    responses.extend(own.as_object().cloned().unwrap_or_default());
    let mut o = json!({"summary": summary, "responses": responses});
    if let Some(content) = body {
        o["requestBody"] = json!({"required": true, "content": content});
    }
    o
}

fn user_id_parameter() -> Value {
    json!([{"name": "user_id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}])
}

fn text(media: &str) -> Value {
    json!({media: {"schema": {"type": "string"}}})
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
    let chart = reference::<crate::storage::insights::Chart>(&mut generator);
    let user = reference::<UserReport>(&mut generator);
    let cloud_event = reference::<CloudEvent>(&mut generator);
    let consent = reference::<ConsentAnswer>(&mut generator);
    let public_summary = reference::<crate::storage::public::PublicSummary>(&mut generator);
    let mut schemas = generator.take_definitions(true);
    schemas.insert("Error".into(), error_schema());
    let decision = json!({"type": "object", "required": ["choice"], "additionalProperties": false,
        "properties": {"choice": {"enum": ["accept_all", "necessary_only"]}, "source": {"enum": ["banner", "settings"]}}});
    let login = json!({"application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}}});
    let html = text("text/html");
    let redirect = json!({"303": response("Redirected to the dashboard", Value::Null)});
    let mut document = json!({
        "openapi": "3.1.0",
        "info": info(),
        "paths": {
            "/v1/batch": {"post": op(
                &format!("Store a batch of CLI events (gzip allowed; at most {} events)", piperider_event::limits::MAX_BATCH_EVENTS),
                Some(json_content(batch)),
                json!({
                    "200": response("A result per event, in input order: accepted, duplicate or rejected (with the field and reason). Sent only after the events are committed.", json_content(batch_response.clone())),
                    "400": response("A malformed envelope (the one error shape), or every event rejected (a result per event)", json!({"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Error"}, batch_response]}}})),
                    "413": error(&format!("The body is larger than {MAX_BODY_BYTES} bytes as sent or {MAX_DECOMPRESSED_BYTES} decompressed, or holds more than {} events", piperider_event::limits::MAX_BATCH_EVENTS))
                }),
                &[json_body, admitted, unavailable])},
            "/v1/deletion-requests": {"post": op(
                "Delete everything stored for a user id, with the owner's proof (action `delete`); later events for it are dropped",
                Some(json_content(deletion)),
                json!({"202": response("Deleted", Value::Null), "403": not_proved()}),
                &[json_body, admitted, unavailable])},
            "/v1/users/{user_id}": {"get": owner_get(user.clone())},
            "/v1/consent": {
                "post": op("Record a Cloud visitor's choice (audit trail) and set the signed piperider_consent cookie; a choice sent with a consent cookie younger than the decision interval (2 s) answers 429 with Retry-After",
                    Some(json_content(decision)),
                    json!({"200": response("The state now (granted or denied), with Set-Cookie", json_content(consent.clone()))}),
                    &[json_body, admitted, unavailable]),
                "get": op("The state the request's consent cookie gives (pending, granted, denied)", None,
                    json!({"200": response("The state", json_content(consent))}), &[admitted, unavailable])
            },
            "/v1/consent/receipt": {"get": op(
                "The chain record of the decision the request's signed consent cookie names (its proof, with its hash and the hash it links to)",
                None,
                json!({"200": response("{\"records\": [chain records]}", json_content(json!({"type": "object"}))),
                       "404": error("No valid consent cookie, or no record of its decision")}),
                &[admitted, unavailable])},
            "/v1/cloud/events": {"post": op(
                "Store one Cloud event, only for a request with a valid, current Accept All cookie",
                Some(json_content(cloud_event)),
                json!({"204": response("Stored with consent; without consent nothing is stored and the answer is the same", Value::Null)}),
                &[json_body, admitted, unavailable])},
            "/admin/login": {"post": op("Log in to the dashboard with the admin token (a session cookie)", Some(login),
                json!({"303": response("Logged in: redirected to the dashboard, with Set-Cookie", Value::Null),
                       "200": response("Not the admin token: the log-in page again", html.clone()),
                       "400": error("The form has no token"),
                       "415": error("Content-Type is not application/x-www-form-urlencoded")}),
                &[admitted])},
            "/v1/public/summary": {"get": public_op(
                "Distinct users per platform, app version, runtime version, data source type, country, region and command over the window; a group under 10 users (20 for a region) is folded into \"other\". Only with --public-stats",
                json_content(public_summary))},
            "/public": {"get": public_op("The public summary as a page. Only with --public-stats", html.clone())},
            "/admin/logout": {"post": op("End the dashboard session", None, redirect, &[])},
            "/consent.js": {"get": op("The Cloud consent banner and consent-gated tracker", None,
                json!({"200": response("The script", text("text/javascript"))}), &[])},
            "/healthz": {"get": op("The process is up", None, json!({"200": response("ok", text("text/plain"))}), &[])},
            "/readyz": {"get": op("The database answers and a write could start", None,
                json!({"200": response("ready", text("text/plain"))}), &[unavailable])},
            "/metrics": {"get": op("Prometheus metrics", None,
                json!({"200": response("OpenMetrics text", text("application/openmetrics-text"))}), &[])},
            "/openapi.json": {"get": op("This document", None,
                json!({"200": response("OpenAPI 3.1", json_content(json!({"type": "object"})))}), &[])}
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}
        }
    });
    if let Some(paths) = document["paths"].as_object_mut() {
        paths.extend(admin_paths(stats, user));
        paths.extend(chart_paths(chart));
    }
    document
}

/// The document's title, version and the rule every refusal follows.
fn info() -> Value {
    json!({
        "title": "piperider-ingest",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "PipeRider telemetry ingestion, privacy, Cloud consent and admin API. Every refusal is a JSON object {\"error\", \"reason\"}; a reason never repeats the input."
    })
}

/// A public summary read: `?window=`, cacheable, 404 when switched off.
fn public_op(summary: &str, content: Value) -> Value {
    let mut o = op(
        summary,
        None,
        json!({"200": response("The summary (Cache-Control: public, an ETag)", content),
               "304": response("Not modified (If-None-Match)", Value::Null),
               "400": error("The window is not 30d, 90d or 365d"),
               "404": error("The public summary is switched off (no --public-stats)")}),
        &[admitted, unavailable],
    );
    o["parameters"] = json!([{"name": "window", "in": "query", "schema": {"enum": ["30d", "90d", "365d"], "default": "30d"}}]);
    o
}

/// The 403 of an owner's request whose proof does not count.
fn not_proved() -> Value {
    error(
        "The proof does not count: not signed by the key bound to this user id (a user id with none, such as a CI pseudonym, is never proved), or made more than 15 minutes from the server's clock",
    )
}

/// `GET /v1/users/{user_id}`: the owner's right of access.
fn owner_get(user: Value) -> Value {
    let mut o = op(
        "Everything stored about one user, for its owner: Authorization: PipeRider-Owner at=<seconds>, signature=<hex of the Ed25519 signature, action `read`>",
        None,
        json!({"200": response("The user", json_content(user)),
               "400": error("Not a user id"),
               "401": error("No proof (Authorization: PipeRider-Owner ...)"),
               "403": not_proved(),
               "404": error("Proved, but nothing is stored for that id")}),
        &[admitted, unavailable],
    );
    o["parameters"] = user_id_parameter();
    o
}

/// The dashboard's charts: the list, and each chart's numbers as JSON or
/// CSV (under `/v1/admin` with the token or a session, and under `/admin`,
/// where the dashboard's session cookie is sent, for its download links).
fn chart_paths(chart: Value) -> Map<String, Value> {
    use crate::storage::cube::{CI, DIMENSIONS, INTERACTIVE};
    use crate::storage::insights::CHARTS;
    let names: Vec<&str> = CHARTS.iter().map(|(n, _)| *n).collect();
    let mut parameters = vec![
        json!({"name": "name", "in": "path", "required": true, "schema": {"enum": names}}),
        json!({"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}}),
        json!({"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}}),
        json!({"name": "format", "in": "query", "schema": {"enum": ["json", "csv"], "default": "json"}}),
    ];
    for d in DIMENSIONS {
        let schema = if d == "ci" {
            json!({"enum": [CI, INTERACTIVE]})
        } else {
            json!({"type": "string", "maxLength": crate::admin::MAX_FILTER_CHARS, "pattern": piperider_event::limits::PRINTABLE_PATTERN})
        };
        parameters.push(json!({"name": d, "in": "query", "description": format!("only events whose {d} is this value"), "schema": schema}));
    }
    let mut one = op(
        "One dashboard chart's numbers for a date range (default: the last 30 days) under the filters given: a table of columns and rows, with which numbers are estimates and how exact they are",
        None,
        json!({"200": response("The chart", json!({"application/json": {"schema": chart}, "text/csv": {"schema": {"type": "string"}}})),
               "400": error("No chart of that name, or a date, filter or format is not what the route takes")}),
        &[admin, unavailable],
    );
    one["security"] = json!([{"admin": []}]);
    one["parameters"] = json!(parameters);
    let mut list = op(
        "The dashboard charts' names and titles",
        None,
        json!({"200": response("{\"charts\": [{name, title}]}", json_content(json!({"type": "object"})))}),
        &[admin],
    );
    list["security"] = json!([{"admin": []}]);
    Map::from_iter([
        ("/v1/admin/charts".to_string(), json!({"get": list})),
        (
            "/v1/admin/charts/{name}".to_string(),
            json!({"get": one.clone()}),
        ),
        ("/admin/charts/{name}".to_string(), json!({"get": one})),
    ])
}

/// The admin API and the dashboard: figures, a user's data, its deletion.
fn admin_paths(stats: Value, user: Value) -> Map<String, Value> {
    let range = json!([
        {"name": "from", "in": "query", "schema": {"type": "string", "format": "date", "pattern": "^[2-9][0-9]{3}-"}},
        {"name": "to", "in": "query", "schema": {"type": "string", "format": "date", "pattern": "^[2-9][0-9]{3}-"}}
    ]);
    let html = text("text/html");
    let mut stats_op = op(
        "Dashboard figures for a date range (default: the last 30 days)",
        None,
        json!({"200": response("Figures", json_content(stats)), "400": error("A date is not YYYY-MM-DD, `from` is after `to`, or the range is over ten years")}),
        &[admin, unavailable],
    );
    stats_op["security"] = json!([{"admin": []}]);
    stats_op["parameters"] = range.clone();
    let mut user_get = op(
        "Everything stored about one user",
        None,
        json!({"200": response("The user", json_content(user)), "400": error("Not a user id"), "404": error("Nothing is stored for that id")}),
        &[admin, unavailable],
    );
    let mut user_delete = op(
        "Delete everything stored about one user",
        None,
        json!({"204": response("Deleted", Value::Null), "400": error("Not a user id")}),
        &[admin, unavailable],
    );
    for o in [&mut user_get, &mut user_delete] {
        o["security"] = json!([{"admin": []}]);
        o["parameters"] = user_id_parameter();
    }
    let mut dashboard = op(
        "The dashboard (or its log-in page without a session)",
        None,
        json!({"200": response("HTML", html.clone()), "400": error("A date is not YYYY-MM-DD, or the range is wrong")}),
        &[unavailable],
    );
    dashboard["parameters"] = range;
    let mut records = op(
        "The consent records' chain, oldest first, with the anchor the first links to: JSON ({anchor, records, next_after}) or CSV",
        None,
        json!({"200": response("A page of records", json!({"application/json": {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}}})),
               "400": error("A parameter is not a number, or format is not json or csv")}),
        &[admin, unavailable],
    );
    records["security"] = json!([{"admin": []}]);
    records["parameters"] = json!([
        {"name": "after", "in": "query", "description": "the number of the last record already read (default 0)", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
        {"name": "limit", "in": "query", "description": "records per page, 1 to 10000 (the default)", "schema": {"type": "string", "pattern": "^([1-9][0-9]{0,3}|10000)$"}},
        {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"], "default": "json"}}
    ]);
    Map::from_iter([
        (
            "/v1/admin/consent-records".to_string(),
            json!({"get": records}),
        ),
        ("/admin".to_string(), json!({"get": dashboard})),
        ("/v1/admin/stats".to_string(), json!({"get": stats_op})),
        (
            "/v1/admin/users/{user_id}".to_string(),
            json!({"get": user_get, "delete": user_delete}),
        ),
    ])
}
