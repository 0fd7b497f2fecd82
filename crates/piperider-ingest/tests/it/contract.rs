//! The contract: requests made from `/openapi.json` alone, every answer
//! checked against it, on SQLite and PostgreSQL.
//!
//! - A body valid by the document's schema is accepted; one made invalid
//!   in one place is refused (a batch's broken event is rejected on its
//!   own and its valid neighbours are stored); a path or query parameter
//!   made invalid is refused; a body sent as another content type is 415.
//! - Every answer's status is one the document lists for the route, with
//!   its content type, and a JSON body valid by its schema.
//! - A refusal's reason never repeats the value that broke the rule.
//!
//! Values are generated from the schemas themselves (types, bounds,
//! lengths, patterns, enums, required and unknown properties), and every
//! generated value is checked with a JSON Schema validator before it is
//! sent, so the generator cannot drift from the document.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Map, Value, json};

use crate::{ADMIN_TOKEN, CLIENT_IP, Db, Harness};

/// The document, shared by the strategies.
type Doc = Arc<Value>;

/// `schema` with every `$ref` at its top resolved in the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// A validator of `schema` whose `$ref`s resolve in the document.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = match schema {
        Value::Object(map) => map.clone(),
        other => Map::from_iter([("allOf".to_string(), json!([other]))]),
    };
    root.insert("components".into(), doc["components"].clone());
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .unwrap_or_else(|e| panic!("the document's schema {schema} does not compile: {e}"))
}

/// A regex pattern of the document without its anchors (the generator
/// makes whole strings), for proptest's regex strategy.
fn unanchored(pattern: &str) -> String {
    pattern
        .split('|')
        .map(|branch| {
            let branch = branch.strip_prefix('^').unwrap_or(branch);
            branch.strip_suffix('$').unwrap_or(branch).to_string()
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// Strings valid by a string schema: from its pattern (or any text), cut
/// to the longest prefix within `maxLength` that still matches, and half
/// the time grown to exactly `maxLength` by repeating the last character
/// where that still matches: the limits themselves get sent.
fn strings(doc: &Doc, schema: &Value) -> BoxedStrategy<Value> {
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().map(|m| m as usize);
    match schema["format"].as_str() {
        Some("date-time") => {
            // A client sends the time of the event: within the last month.
            return (0i64..30 * 86_400)
                .prop_map(|ago| {
                    let at = chrono::Utc::now() - chrono::TimeDelta::seconds(ago);
                    json!(at.to_rfc3339())
                })
                .boxed();
        }
        Some("date") => {
            return (0i64..3_650)
                .prop_map(|days| {
                    let day = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap()
                        + chrono::TimeDelta::days(days);
                    json!(day.to_string())
                })
                .boxed();
        }
        Some("uuid") => {
            return any::<u128>()
                .prop_map(|n| json!(uuid::Uuid::from_u128(n).to_string()))
                .boxed();
        }
        _ => {}
    }
    let pattern = schema["pattern"].as_str().map(unanchored);
    let base = match &pattern {
        Some(p) => proptest::string::string_regex(p)
            .unwrap_or_else(|e| panic!("pattern {p}: {e}"))
            .boxed(),
        None => proptest::string::string_regex("(?s).{0,40}")
            .unwrap()
            .boxed(),
    };
    let check = validator(doc, schema);
    (base, any::<bool>())
        .prop_filter_map("no prefix of it fits the schema", move |(s, grow)| {
            let chars: Vec<char> = s.chars().collect();
            let keep = max.map_or(chars.len(), |m| m.min(chars.len()));
            let mut best = (min..=keep)
                .rev()
                .map(|n| chars[..n].iter().collect::<String>())
                .find(|c| check.is_valid(&json!(c)))?;
            if let (true, Some(max), Some(last)) = (grow, max, best.chars().last()) {
                let grown: String = best
                    .chars()
                    .chain(std::iter::repeat_n(last, max - best.chars().count()))
                    .collect();
                if check.is_valid(&json!(grown)) {
                    best = grown;
                }
            }
            Some(json!(best))
        })
        .boxed()
}

/// Values valid by `schema` (checked by the caller against the whole
/// schema, which may say more than this walks: `allOf` conditions).
fn valid(doc: &Doc, schema: &Value) -> BoxedStrategy<Value> {
    let schema = resolve(doc, schema).clone();
    if let Some(c) = schema.get("const") {
        return Just(c.clone()).boxed();
    }
    if let Some(values) = schema["enum"].as_array() {
        return proptest::sample::select(values.clone()).boxed();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema[key].as_array() {
            return Union::new(branches.iter().map(|b| valid(doc, b))).boxed();
        }
    }
    if let Some(types) = schema["type"].as_array() {
        return Union::new(types.iter().map(|t| {
            let mut one = schema.clone();
            one["type"] = t.clone();
            valid(doc, &one)
        }))
        .boxed();
    }
    match schema["type"].as_str() {
        Some("null") => Just(Value::Null).boxed(),
        Some("boolean") => any::<bool>().prop_map(Value::Bool).boxed(),
        Some("integer") => {
            let unsigned = schema["format"]
                .as_str()
                .is_some_and(|f| f.starts_with("uint"));
            let min = schema["minimum"]
                .as_i64()
                .unwrap_or(if unsigned { 0 } else { -1_000_000 });
            let max = schema["maximum"].as_i64().unwrap_or(1_000_000_000);
            prop_oneof![Just(min), Just(max), min..=max]
                .prop_map(|n| json!(n))
                .boxed()
        }
        Some("string") => strings(doc, &schema),
        Some("array") => {
            let min = schema["minItems"].as_u64().unwrap_or(0) as usize;
            let max = schema["maxItems"].as_u64().map_or(6, |m| m as usize).min(6);
            proptest::collection::vec(valid(doc, &schema["items"]), min..=max.max(min))
                .prop_map(Value::Array)
                .boxed()
        }
        Some("object") => objects(doc, &schema),
        _ => Just(json!({})).boxed(),
    }
}

/// Objects with every required property and each optional one half the time.
fn objects(doc: &Doc, schema: &Value) -> BoxedStrategy<Value> {
    let required: Vec<String> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect();
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, property)| {
            let name = name.clone();
            let value = valid(doc, property);
            if required.contains(&name) {
                value.prop_map(move |v| Some((name.clone(), v))).boxed()
            } else {
                proptest::option::of(value.prop_map(move |v| (name.clone(), v))).boxed()
            }
        })
        .collect();
    fields
        .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
        .boxed()
}

/// One way to break a value, at a path inside it.
struct Break {
    path: Vec<Value>,
    value: Value,
}

/// Every single change that breaks one rule `schema` states about
/// `value` (at `path`) or about something inside it.
fn breaks(doc: &Value, schema: &Value, value: &Value, path: &[Value], out: &mut Vec<Break>) {
    let schema = resolve(doc, schema);
    let at = |value: Value| Break {
        path: path.to_vec(),
        value,
    };
    // A branch of a union: break what the value is.
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema[key].as_array() {
            if let Some(branch) = branches.iter().find(|b| validator(doc, b).is_valid(value)) {
                breaks(doc, branch, value, path, out);
            }
            return;
        }
    }
    out.push(at(json!({"not": ["what", "this", "takes"]})));
    if let Some(values) = schema["enum"].as_array() {
        out.push(at(json!("not_one_of_them")));
        out.push(at(json!(values.len())));
    }
    match value {
        Value::String(s) => {
            if let Some(max) = schema["maxLength"].as_u64() {
                let c = s.chars().next().unwrap_or('a');
                out.push(at(json!(c.to_string().repeat(max as usize + 1))));
            }
            if schema["minLength"].as_u64().unwrap_or(0) > 0 {
                out.push(at(json!("")));
            }
            if schema.get("pattern").is_some() || schema.get("format").is_some() {
                for wrong in ["Zz", "not a form it takes", "x\u{7}y", "00000000-0000"] {
                    out.push(at(json!(wrong)));
                }
            }
            out.push(at(json!(7)));
        }
        Value::Number(_) => {
            if let Some(max) = schema["maximum"].as_i64() {
                out.push(at(json!(max as i128 + 1)));
            }
            if let Some(min) = schema["minimum"].as_i64() {
                out.push(at(json!(min as i128 - 1)));
            } else if schema["format"]
                .as_str()
                .is_some_and(|f| f.starts_with("uint"))
            {
                out.push(at(json!(-1)));
            }
            out.push(at(json!("12")));
            out.push(at(json!(1.5)));
        }
        Value::Array(items) => {
            if let (Some(max), Some(first)) = (schema["maxItems"].as_u64(), items.first()) {
                out.push(at(Value::Array(vec![first.clone(); max as usize + 1])));
            }
            if schema["minItems"].as_u64().unwrap_or(0) > 0 {
                out.push(at(json!([])));
            }
            for (i, item) in items.iter().enumerate() {
                let mut inner = path.to_vec();
                inner.push(json!(i));
                breaks(doc, &schema["items"], item, &inner, out);
            }
        }
        Value::Object(fields) => {
            if schema["additionalProperties"] == json!(false) {
                let mut more = fields.clone();
                more.insert("unexpected_field".into(), json!("x"));
                out.push(at(Value::Object(more)));
            }
            for required in schema["required"].as_array().into_iter().flatten() {
                let mut fewer = fields.clone();
                if fewer
                    .remove(required.as_str().unwrap_or_default())
                    .is_some()
                {
                    out.push(at(Value::Object(fewer)));
                }
            }
            for (name, field) in fields {
                let mut inner = path.to_vec();
                inner.push(json!(name));
                breaks(doc, &schema["properties"][name], field, &inner, out);
            }
        }
        Value::Null | Value::Bool(_) => out.push(at(json!(3))),
    }
}

/// `value` with the part at `path` replaced.
fn replaced(value: &Value, path: &[Value], with: Value) -> Value {
    let mut value = value.clone();
    let mut node = &mut value;
    for step in path {
        node = match step {
            Value::String(key) => &mut node[key.as_str()],
            Value::Number(i) => &mut node[i.as_u64().unwrap_or(0) as usize],
            _ => unreachable!("paths hold keys and indices"),
        };
    }
    *node = with;
    value
}

/// The `seed`th break (counting round) of `value` that the whole schema
/// refuses: the broken value, where it broke, and the value put there.
/// `as_text`: the value travels as text (a form, a URL), so a broken
/// scalar is sent as its text and counts only if that text is refused.
fn broken(
    doc: &Value,
    schema: &Value,
    value: &Value,
    seed: usize,
    as_text: bool,
) -> Option<(Value, Break)> {
    let mut all = Vec::new();
    breaks(doc, schema, value, &[], &mut all);
    let check = validator(doc, schema);
    let n = all.len();
    let mut all: Vec<Option<Break>> = all.into_iter().map(Some).collect();
    (0..n).find_map(|k| {
        let mut b = all[(seed + k) % n].take()?;
        if as_text {
            match &b.value {
                Value::Object(_) | Value::Array(_) if !b.path.is_empty() => return None,
                Value::Object(_) | Value::Array(_) => {}
                scalar => b.value = json!(param_text(scalar)),
            }
        }
        let v = replaced(value, &b.path, b.value.clone());
        (!check.is_valid(&v)).then_some((v, b))
    })
}

/// How many ways [`broken`] has to break `value`.
fn break_count(doc: &Value, op: &Operation, case: &Case) -> usize {
    let mut all = Vec::new();
    match &op.body {
        Some((_, schema)) => breaks(doc, schema, &case.body, &[], &mut all),
        None => breaks(doc, &op.parameters, &case.parameters, &[], &mut all),
    }
    all.len()
}

/// What a generated request changes from a valid one.
#[derive(Debug, Clone)]
enum Change {
    None,
    /// The `n`th way of breaking one rule of the body or a parameter.
    Break(usize),
    /// The body sent as `text/plain`.
    ContentType,
}

fn changes() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => Just(Change::None),
        5 => any::<usize>().prop_map(Change::Break),
        1 => Just(Change::ContentType),
    ]
}

/// One operation of the document, as the generator reads it.
#[derive(Debug, Clone)]
struct Operation {
    path: String,
    method: String,
    spec: Value,
    /// The request body's media type and schema.
    body: Option<(String, Value)>,
    /// Path and query parameters as one object schema (name → schema), and which are in the path.
    parameters: Value,
    in_path: Vec<String>,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, spec) in item.as_object().unwrap() {
            let body = spec["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.iter().next())
                .map(|(media, c)| (media.clone(), c["schema"].clone()));
            let mut properties = Map::new();
            let mut required = Vec::new();
            let mut in_path = Vec::new();
            for p in spec["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap().to_string();
                properties.insert(name.clone(), p["schema"].clone());
                if p["required"] == json!(true) {
                    required.push(json!(name));
                }
                if p["in"] == "path" {
                    in_path.push(name);
                }
            }
            out.push(Operation {
                path: path.clone(),
                method: method.to_uppercase(),
                spec: spec.clone(),
                body,
                parameters: json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false}),
                in_path,
            });
        }
    }
    out
}

/// A request: the operation, its parameters and body (valid by the
/// document), and the change made to them.
#[derive(Debug, Clone)]
struct Case {
    op: usize,
    parameters: Value,
    body: Value,
    change: Change,
}

/// Requests for each operation, in the order of `ops`.
fn cases(doc: &Doc, ops: &[Operation]) -> Vec<BoxedStrategy<Case>> {
    let per_op: Vec<BoxedStrategy<Case>> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let body = match &op.body {
                Some((_, schema)) => {
                    let check = validator(doc, schema);
                    valid(doc, schema)
                        .prop_filter("valid by the whole schema", move |v| check.is_valid(v))
                        .boxed()
                }
                None => Just(Value::Null).boxed(),
            };
            (valid(doc, &op.parameters), body, changes())
                .prop_map(move |(parameters, body, change)| Case {
                    op: i,
                    parameters,
                    body,
                    change,
                })
                .boxed()
        })
        .collect();
    per_op
}

/// Percent-encodes a form or query value.
fn encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of a parameter as it goes into a URL.
fn param_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The request for a case: where the change goes, and the request.
fn request(
    doc: &Value,
    op: &Operation,
    case: &Case,
    cookie: &str,
) -> (Option<Break>, Request<Body>) {
    let (mut parameters, mut body) = (case.parameters.clone(), case.body.clone());
    let mut broke = None;
    if let Change::Break(seed) = case.change {
        // The body when there is one, else a parameter.
        if let Some((media, schema)) = &op.body {
            let form = media.ends_with("x-www-form-urlencoded");
            if let Some((v, b)) = broken(doc, schema, &body, seed, form) {
                body = v;
                broke = Some(b);
            }
        } else if let Some((v, b)) = broken(doc, &op.parameters, &parameters, seed, true) {
            // Only a parameter's value can be broken in a URL (not a missing path part).
            if b.path.len() == 1 {
                parameters = v;
                broke = Some(b);
            }
        }
    }
    let mut uri = op.path.clone();
    let mut query = Vec::new();
    for (name, value) in parameters.as_object().into_iter().flatten() {
        let text = encoded(&param_text(value));
        if op.in_path.contains(name) {
            uri = uri.replace(&format!("{{{name}}}"), &text);
        } else {
            query.push(format!("{name}={text}"));
        }
    }
    if !query.is_empty() {
        uri = format!("{uri}?{}", query.join("&"));
    }
    let mut builder = Request::builder()
        .method(op.method.as_str())
        .uri(uri)
        .header("cookie", cookie);
    if op.spec.get("security").is_some() {
        builder = builder.header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    }
    let body = match &op.body {
        None => Body::empty(),
        Some((media, _)) => {
            let media = if matches!(case.change, Change::ContentType) {
                "text/plain"
            } else {
                media.as_str()
            };
            builder = builder.header("content-type", media);
            let text = if op
                .body
                .as_ref()
                .is_some_and(|(m, _)| m.ends_with("x-www-form-urlencoded"))
            {
                body.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{}={}", encoded(k), encoded(&param_text(v))))
                    .collect::<Vec<_>>()
                    .join("&")
            } else {
                body.to_string()
            };
            Body::from(text)
        }
    };
    (broke, builder.body(body).unwrap())
}

/// The answer is one the document lists for the operation: its status,
/// its content type, and a JSON body valid by its schema.
fn conforms(
    doc: &Value,
    op: &Operation,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Value>, String> {
    let what = format!("{} {} answered {status}", op.method, op.path);
    let documented = op.spec["responses"]
        .get(status.as_str())
        .ok_or_else(|| format!("{what}, which the document does not list"))?;
    let Some(content) = documented["content"].as_object() else {
        return if body.is_empty() {
            Ok(None)
        } else {
            Err(format!("{what} with a body the document does not list"))
        };
    };
    let media = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim();
    let listed = content.get(media).ok_or_else(|| {
        format!(
            "{what} as {media:?}, not one of {:?}",
            content.keys().collect::<Vec<_>>()
        )
    })?;
    if media != "application/json" {
        return Ok(None);
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("{what}: not JSON: {e}"))?;
    let check = validator(doc, &listed["schema"]);
    if let Some(e) = check.iter_errors(&json).next() {
        return Err(format!(
            "{what} with a body its schema refuses ({e}): {json}"
        ));
    }
    Ok(Some(json))
}

/// Statuses meaning "done" for a valid request of this operation.
fn successes(op: &Operation) -> Vec<String> {
    op.spec["responses"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|s| s.starts_with('2') || s.starts_with('3'))
        .cloned()
        .collect()
}

/// A refusal's reason, if it has one, must not repeat the broken value.
fn never_repeats(answer: &Option<Value>, broke: &Break) -> Result<(), String> {
    let Value::String(text) = &broke.value else {
        return Ok(());
    };
    if text.chars().count() < 5 {
        return Ok(());
    }
    let answer = answer.as_ref().map(Value::to_string).unwrap_or_default();
    let escaped = Value::String(text.clone()).to_string();
    if answer.contains(text.as_str()) || answer.contains(escaped.trim_matches('"')) {
        return Err(format!("the refusal repeats the input {text:?}: {answer}"));
    }
    Ok(())
}

/// Checks what the service did with one case.
fn judge(
    op: &Operation,
    case: &Case,
    broke: &Option<Break>,
    status: StatusCode,
    answer: &Option<Value>,
) -> Result<(), String> {
    let code = status.as_str().to_string();
    let what = format!(
        "{} {} ({:?}) answered {status}: {answer:?}",
        op.method, op.path, case.change
    );
    match (&case.change, broke) {
        (Change::ContentType, _) if op.body.is_some() => {
            if code != "415" {
                return Err(format!("{what}; a body as text/plain must be 415"));
            }
        }
        (Change::Break(_), Some(b)) => {
            never_repeats(answer, b)?;
            // A batch's event broken: that event alone is rejected.
            let in_event = op.path == "/v1/batch" && b.path.len() >= 2 && b.path[0] == "events";
            if in_event {
                let i = b.path[1].as_u64().unwrap() as usize;
                let results = answer
                    .as_ref()
                    .map(|a| a["results"].clone())
                    .unwrap_or_default();
                let events = case.body["events"].as_array().map_or(0, Vec::len);
                for (k, r) in results.as_array().into_iter().flatten().enumerate() {
                    // A neighbour sent before (the same request broken another way) is a duplicate.
                    let want = if k == i {
                        "rejected"
                    } else {
                        "accepted or duplicate"
                    };
                    if !want.split(" or ").any(|w| r["status"] == w) {
                        return Err(format!(
                            "{what}; event {k} should be {want} (event {i} broken at {:?})",
                            b.path
                        ));
                    }
                }
                let want = if events == 1 { "400" } else { "200" };
                if code != want || results.as_array().map_or(0, Vec::len) != events {
                    return Err(format!("{what}; want {want} with a result per event"));
                }
            } else if !matches!(code.as_str(), "400" | "413") {
                return Err(format!(
                    "{what}; broken at {:?} with {}, it must be refused (400, or 413 for too much)",
                    b.path, b.value
                ));
            }
        }
        _ => {
            // (A date range's order, `from` not after `to`, is beyond a schema.)
            let ranged = op.spec["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "from"));
            let needs_valid_parameters_only =
                op.body.is_none() && !op.in_path.is_empty() && !ranged;
            let body_op = op.body.is_some();
            if (body_op || needs_valid_parameters_only) && code == "400" {
                return Err(format!("{what}; the request is valid by the document"));
            }
            // A valid request succeeds, or is refused for want of authority
            // where the document says it may be (a deletion whose proof is
            // not the owner's: the schema cannot say whose key signed it).
            let authority =
                matches!(code.as_str(), "401" | "403") && op.spec["responses"].get(&code).is_some();
            if body_op && !successes(op).contains(&code) && !authority {
                return Err(format!("{what}; a valid request must succeed"));
            }
            if op.path == "/v1/batch" {
                let results = answer
                    .as_ref()
                    .map(|a| a["results"].clone())
                    .unwrap_or_default();
                if results
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["status"] != "accepted" && r["status"] != "duplicate")
                {
                    return Err(format!("{what}; every valid event must be accepted"));
                }
            }
        }
    }
    Ok(())
}

fn contract(db: Db) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The public summary on, so its routes are held to their documents too.
    let Some(h) = runtime.block_on(Harness::start(db, |c| c.public_stats = true)) else {
        return;
    };
    let (status, _, document) = runtime.block_on(h.send(
        CLIENT_IP,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    ));
    assert_eq!(status, StatusCode::OK);
    let doc: Doc = Arc::new(serde_json::from_slice(&document).unwrap());
    // A visitor who chose Accept All, so Cloud events are stored.
    let (_, headers, _) = runtime.block_on(
        h.send(
            CLIENT_IP,
            Request::post("/v1/consent")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"choice":"accept_all"}"#))
                .unwrap(),
        ),
    );
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let ops = operations(&doc);
    let per_op = cases(&doc, &ops);
    let strategy = Union::new(per_op.clone());
    let cases_n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::new(RunnerConfig {
        cases: cases_n,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let mut seen = std::collections::BTreeSet::new();
    let mut sent: u32 = 0;
    let mut check = |case: &Case| {
        // A peer of its own per request: the throttle on wrong admin tokens
        // (tested on its own) never answers for the contract.
        sent += 1;
        let peer = format!("198.18.{}.{}", sent / 250 % 250, sent % 250 + 1);
        let op = &ops[case.op];
        let (broke, req) = request(&doc, op, case, &cookie);
        let (status, headers, body) = runtime.block_on(h.send(&peer, req));
        let verdict = conforms(&doc, op, status, &headers, &body)
            .and_then(|answer| judge(op, case, &broke, status, &answer));
        if let Err(e) = verdict {
            panic!(
                "{e}\nrequest: {case:?}\nbroken: {:?}",
                broke.map(|b| (b.path, b.value))
            );
        }
        seen.insert((op.method.clone(), op.path.clone(), status.as_u16()));
    };
    // Every rule broken once: for each operation, the generated request
    // with the most to break (of ten), then each way of breaking it.
    let mut exhaustive = 0;
    for (i, op) in ops.iter().enumerate() {
        let sample = (0..10)
            .map(|_| per_op[i].new_tree(&mut runner).unwrap().current())
            .max_by_key(|case| break_count(&doc, op, case))
            .unwrap();
        for seed in 0..break_count(&doc, op, &sample) {
            check(&Case {
                change: Change::Break(seed),
                ..sample.clone()
            });
            exhaustive += 1;
        }
        check(&Case {
            change: Change::None,
            ..sample
        });
    }
    // Then requests at random.
    for _ in 0..cases_n {
        check(&strategy.new_tree(&mut runner).unwrap().current());
    }
    runtime.block_on(h.finish());
    eprintln!(
        "contract: every break of one request per route ({exhaustive} requests), then {cases_n} at random; (route, status) pairs seen: {seen:?}"
    );
    // Every operation was tried, accepted and refused.
    for op in &ops {
        assert!(
            seen.iter()
                .any(|(m, p, _)| *m == op.method && *p == op.path),
            "{} {} was never tried",
            op.method,
            op.path
        );
    }
}

#[test]
fn every_answer_is_the_documents_on_sqlite() {
    contract(Db::Sqlite);
}

#[test]
fn every_answer_is_the_documents_on_postgres() {
    contract(Db::Postgres);
}
