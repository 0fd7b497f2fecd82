//! `docs/telemetry.md` lists every field of the wire format's JSON Schema,
//! and nothing the schema lacks.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::schema_dir;

/// Leaf field paths of a schema (`platform.os`), following `$ref`s into `$defs`.
fn leaves(schema: &Value, node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(props) = node["properties"].as_object() else {
        return;
    };
    for (name, prop) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let target = std::iter::once(prop)
            .chain(prop["anyOf"].as_array().into_iter().flatten())
            .find_map(|p| p["$ref"].as_str())
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .map(|d| &schema["$defs"][d]);
        match target {
            Some(def) if def["properties"].is_object() => leaves(schema, def, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

/// The backticked names in the first column of the table under `heading`.
fn documented(doc: &str, heading: &str) -> BTreeSet<String> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/telemetry.md lacks {heading:?}"));
    let section = &doc[start + heading.len()..];
    let end = section.find("\n#").unwrap_or(section.len());
    section[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn telemetry_docs_list_exactly_the_schema_fields() {
    let doc_path = crate::crate_dir().join("../../docs/telemetry.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    for (file, heading) in [
        ("cli-event.v1.schema.json", "### What one CLI event holds"),
        (
            "cloud-event.v1.schema.json",
            "### What one Cloud event holds",
        ),
    ] {
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(schema_dir().join(file)).unwrap())
                .unwrap();
        let mut fields = BTreeSet::new();
        leaves(&schema, &schema, "", &mut fields);
        let listed = documented(&doc, heading);
        let missing: Vec<_> = fields.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&fields).collect();
        assert!(
            missing.is_empty(),
            "docs/telemetry.md does not list {missing:?} ({file})"
        );
        assert!(
            extra.is_empty(),
            "docs/telemetry.md lists {extra:?}, which {file} lacks"
        );
        assert!(fields.len() >= 8, "{file}: only {fields:?}");
    }
}
