//! Generated files: the JSON Schema of the wire format under `docs/schema/`.

use std::collections::BTreeSet;

use crate::{Result, root};

pub(crate) fn run(check: bool) -> Result {
    let dir = root().join("docs/schema");
    let documents = piperider_event::schema::documents();
    let mut stale = Vec::new();
    for (file, text) in &documents {
        let path = dir.join(file);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(text.as_str()) {
            continue;
        }
        if check {
            stale.push(format!("docs/schema/{file}"));
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("xtask: wrote docs/schema/{file}");
        }
    }
    // A schema file the types no longer produce is stale too.
    let expected: BTreeSet<&str> = documents.iter().map(|(f, _)| *f).collect();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".schema.json") && !expected.contains(name.as_str()) {
                if check {
                    stale.push(format!("docs/schema/{name} (no longer generated)"));
                } else {
                    std::fs::remove_file(entry.path()).map_err(|e| format!("{name}: {e}"))?;
                    eprintln!("xtask: removed docs/schema/{name}");
                }
            }
        }
    }
    if stale.is_empty() {
        if check {
            eprintln!("xtask: == codegen --check: generated files are up to date");
        }
        Ok(())
    } else {
        Err(format!(
            "generated files are stale (the Rust types changed): {}\n       run `cargo xtask codegen` and commit the result",
            stale.join(", ")
        ))
    }
}
