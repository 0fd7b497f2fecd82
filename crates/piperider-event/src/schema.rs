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

fn render<T: JsonSchema>() -> String {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}
