//! Generated files: the JSON Schema of the wire format under `docs/schema/`.

use std::collections::BTreeSet;

use crate::{Result, root};

pub(crate) fn run(check: bool) -> Result {
    sync(&root().join("docs/schema"), check)
}

/// Writes (or, with `check`, compares) the schema documents in `dir`.
fn sync(dir: &std::path::Path, check: bool) -> Result {
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
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("xtask: wrote docs/schema/{file}");
        }
    }
    // A schema file the types no longer produce is stale too.
    let expected: BTreeSet<&str> = documents.iter().map(|(f, _)| *f).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
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

#[cfg(test)]
mod tests {
    use super::sync;

    #[test]
    fn check_fails_on_a_changed_missing_or_extra_file() {
        let dir = std::env::temp_dir().join(format!("xtask-codegen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(sync(&dir, true).is_err(), "missing files are stale");
        sync(&dir, false).unwrap();
        sync(&dir, true).unwrap();

        let file = dir.join("cli-event.v1.schema.json");
        let text = std::fs::read_to_string(&file).unwrap();
        // What a field added to a Rust type without codegen looks like.
        std::fs::write(&file, text.replace("\"rows\"", "\"rows\", \"warnings\"")).unwrap();
        let err = sync(&dir, true).unwrap_err();
        assert!(err.contains("cli-event.v1.schema.json"), "{err}");
        sync(&dir, false).unwrap();

        std::fs::write(dir.join("old.v0.schema.json"), "{}").unwrap();
        assert!(
            sync(&dir, true).is_err(),
            "a file no longer generated is stale"
        );
        sync(&dir, false).unwrap();
        sync(&dir, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
