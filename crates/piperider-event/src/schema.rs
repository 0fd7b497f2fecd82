//! The JSON Schema documents of the wire format, generated from the types.
//! `cargo xtask codegen` writes them to `docs/schema/`; `cargo xtask test`
//! fails when the committed files differ from what the types say.

use schemars::{JsonSchema, generate::SchemaSettings};

use crate::{Batch, BatchResponse, CliEvent, CloudEvent, DeletionRequest};

/// Each schema document: its file name under `docs/schema/` and its text.
pub fn documents() -> Vec<(&'static str, String)> {
    vec![
        ("cli-event.v1.schema.json", render::<CliEvent>()),
        ("cli-batch.v1.schema.json", render::<Batch<CliEvent>>()),
        ("cloud-event.v1.schema.json", render::<CloudEvent>()),
        ("cloud-batch.v1.schema.json", render::<Batch<CloudEvent>>()),
        ("batch-response.v1.schema.json", render::<BatchResponse>()),
        (
            "deletion-request.v1.schema.json",
            render::<DeletionRequest>(),
        ),
    ]
}

/// Every property name the CLI event's schema has, at any depth
/// (`event_id`, `platform`, `os`, ...): what a refused event's keys are
/// held against, so a key a client made up is never kept as it is.
pub fn cli_event_keys() -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                    out.extend(props.keys().cloned());
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<CliEvent>();
    let mut keys = std::collections::BTreeSet::new();
    walk(&schema.to_value(), &mut keys);
    keys
}

fn render<T: JsonSchema>() -> String {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}

/// A schemars transform for enums of names whose values are documented:
/// schemars would write each documented value as a `oneOf` branch; this
/// keeps the plain `"enum": [...]` every JSON Schema tool reads as a list
/// of names, and folds each value's doc into the type's description
/// (`` `ok`: Finished as intended.``).
pub(crate) fn names_enum(schema: &mut schemars::Schema) {
    let Some(branches) = schema.get("oneOf").and_then(|b| b.as_array()) else {
        return;
    };
    let mut names = Vec::new();
    let mut lines = Vec::new();
    for branch in branches {
        let Some(name) = branch.get("const").and_then(|c| c.as_str()) else {
            return;
        };
        names.push(serde_json::Value::from(name));
        if let Some(doc) = branch.get("description").and_then(|d| d.as_str()) {
            lines.push(format!("`{name}`: {doc}"));
        }
    }
    schema.remove("oneOf");
    let description = match schema.get("description").and_then(|d| d.as_str()) {
        Some(own) => format!("{own}\n\n{}", lines.join("\n")),
        None => lines.join("\n"),
    };
    schema.insert("description".into(), description.into());
    schema.insert("type".into(), "string".into());
    schema.insert("enum".into(), names.into());
}
