//! Integration tests of the wire format through its public API.

mod docs;
mod golden;
mod invalid;
mod props;

use std::path::{Path, PathBuf};

pub(crate) fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn schema_dir() -> PathBuf {
    crate_dir().join("../../docs/schema")
}

/// The golden fixtures of one kind (`cli` or `cloud`), sorted by file name.
pub(crate) fn fixtures(kind: &str) -> Vec<(String, String)> {
    let dir = crate_dir().join("tests/fixtures").join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}
