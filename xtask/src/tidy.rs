//! Tidy: the rules of the workspace that the compiler does not check.
//!
//! - Layering: each crate may depend only on the workspace crates listed
//!   below, and never, even transitively, on the third-party crates listed
//!   as forbidden for it (the event crate knows no HTTP, SQL or YAML, the
//!   CLI side no axum or sqlx, the backend no ureq, xtask no server or
//!   database stack).
//! - clap only in crates that build a binary.
//! - Every crate lives one level under `crates/`, its directory named as its
//!   package, opts into `[lints] workspace = true`, and takes every
//!   dependency from `[workspace.dependencies]`.
//! - No `#[ignore]`d tests: a failing test is fixed, not hidden.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::{Result, cargo, root};

struct Layer {
    krate: &'static str,
    internal: &'static [&'static str],
    forbidden: &'static [&'static str],
}

const LAYERS: &[Layer] = &[
    Layer {
        krate: "piperider-event",
        internal: &[],
        forbidden: &[
            "axum",
            "sqlx",
            "ureq",
            "hyper",
            "tokio",
            "clap",
            "serde_yaml",
            "yaml-edit",
            "rusqlite",
        ],
    },
    Layer {
        krate: "piperider-profile",
        internal: &["piperider-event"],
        forbidden: &["axum", "sqlx", "ureq", "hyper", "tokio", "clap", "rusqlite"],
    },
    Layer {
        krate: "piperider-consent",
        internal: &["piperider-event"],
        forbidden: &[
            "axum",
            "hyper",
            "tokio",
            "sqlx",
            "ureq",
            "clap",
            "serde_yaml",
        ],
    },
    Layer {
        krate: "piperider-collector",
        internal: &["piperider-event", "piperider-profile"],
        forbidden: &["axum", "sqlx", "hyper", "tokio", "clap", "rusqlite"],
    },
    Layer {
        krate: "piperider-ingest",
        internal: &["piperider-event", "piperider-consent"],
        forbidden: &[
            "ureq",
            "piperider-profile",
            "piperider-collector",
            "piperider-cli",
        ],
    },
    Layer {
        krate: "piperider-demo-cloud",
        internal: &["piperider-ingest", "piperider-consent", "piperider-event"],
        forbidden: &[
            "ureq",
            "piperider-profile",
            "piperider-collector",
            "piperider-cli",
        ],
    },
    Layer {
        krate: "piperider-cli",
        internal: &[
            "piperider-collector",
            "piperider-profile",
            "piperider-event",
        ],
        forbidden: &["axum", "piperider-ingest"],
    },
    Layer {
        krate: "piperider-testkit",
        internal: &["piperider-event"],
        forbidden: &["axum", "sqlx", "ureq", "tokio"],
    },
    Layer {
        krate: "piperider-bench",
        internal: &["piperider-event", "piperider-testkit"],
        forbidden: &[
            "ureq",
            "piperider-profile",
            "piperider-collector",
            "piperider-cli",
            "piperider-ingest",
        ],
    },
    Layer {
        krate: "xtask",
        internal: &["piperider-event", "piperider-testkit"],
        // Its tasks start in seconds: the load tools and their servers live in piperider-bench.
        forbidden: &["axum", "sqlx", "tokio", "hyper"],
    },
];

pub(crate) fn run() -> Result {
    eprintln!("xtask: == tidy");
    let metadata = cargo_metadata()?;
    let mut problems = Vec::new();
    check_layers(&metadata, &mut problems);
    check_manifests(&metadata, &mut problems);
    check_no_ignored_tests(&root(), &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        ))
    }
}

fn cargo_metadata() -> Result<Value> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn check_layers<'a>(metadata: &'a Value, problems: &mut Vec<String>) {
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (str_of(p, "id"), p))
        .collect();
    fn name_in<'a>(packages: &BTreeMap<&'a str, &'a Value>, id: &'a str) -> &'a str {
        packages.get(id).map(|p| str_of(p, "name")).unwrap_or(id)
    }
    let name_of = |id: &'a str| name_in(&packages, id);
    // Normal (non-dev, non-build) dependency edges of the resolved graph.
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let deps = node["deps"].as_array().into_iter().flatten().filter(|d| {
            d["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null())
        });
        edges.insert(str_of(node, "id"), deps.map(|d| str_of(d, "pkg")).collect());
    }
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let member_names: BTreeSet<&str> = members.iter().map(|id| name_of(id)).collect();

    for id in &members {
        let name = name_of(id);
        let Some(layer) = LAYERS.iter().find(|l| l.krate == name) else {
            problems.push(format!(
                "{name}: not in the layering table of xtask/src/tidy.rs; add it with its allowed dependencies"
            ));
            continue;
        };
        let package = packages[id];
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = str_of(dep, "name");
            let is_dev = str_of(dep, "kind") == "dev";
            if member_names.contains(dep_name) && !is_dev && !layer.internal.contains(&dep_name) {
                problems.push(format!(
                    "{name} depends on {dep_name}, which its layer does not allow (docs/architecture.md)"
                ));
            }
        }
        // Everything reachable through normal dependencies.
        let mut seen = BTreeSet::new();
        let mut stack = vec![*id];
        while let Some(next) = stack.pop() {
            for dep in edges.get(next).into_iter().flatten() {
                if seen.insert(*dep) {
                    stack.push(dep);
                }
            }
        }
        for dep in seen {
            let dep_name = name_of(dep);
            if layer.forbidden.contains(&dep_name) {
                problems.push(format!(
                    "{name} reaches {dep_name}, which its layer forbids"
                ));
            }
        }
        let direct_clap = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| str_of(d, "name") == "clap" && d["kind"].is_null());
        let has_bin = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
            });
        if direct_clap && !has_bin {
            problems.push(format!(
                "{name} depends on clap but builds no binary; clap belongs to binaries"
            ));
        }
    }
}

fn check_manifests(metadata: &Value, problems: &mut Vec<String>) {
    let root = root();
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        if !members.contains(str_of(package, "id")) {
            continue;
        }
        let name = str_of(package, "name");
        let manifest = Path::new(str_of(package, "manifest_path"));
        let dir = manifest.parent().unwrap_or(Path::new(""));
        let rel = dir.strip_prefix(&root).unwrap_or(dir);
        let expected = if name == "xtask" {
            Path::new("xtask").to_path_buf()
        } else {
            Path::new("crates").join(name)
        };
        if rel != expected {
            problems.push(format!(
                "{name} lives at {}, expected {} (directory name = package name)",
                rel.display(),
                expected.display()
            ));
        }
        let text = match std::fs::read_to_string(manifest) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: {e}", manifest.display()));
                continue;
            }
        };
        check_publishing(name, package, problems);
        if !text.contains("[lints]\nworkspace = true") {
            problems.push(format!(
                "{name}: Cargo.toml lacks `[lints] workspace = true`"
            ));
        }
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            let is_dep_section = section.ends_with("dependencies]");
            if !is_dep_section || line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !line.contains("workspace = true") {
                problems.push(format!(
                    "{name}: `{line}` in {section}: take the version from [workspace.dependencies] (`dep.workspace = true`)"
                ));
            }
        }
    }
}

/// The boundary crates carry what a registry needs; every other crate is
/// `publish = false`, so nothing internal is packaged by mistake.
fn check_publishing(name: &str, package: &Value, problems: &mut Vec<String>) {
    let publishable = package["publish"].as_array().is_none_or(|r| !r.is_empty());
    if !crate::BOUNDARY_CRATES.contains(&name) {
        if publishable {
            problems.push(format!(
                "{name}: only the boundary crates are published; add `publish.workspace = true`"
            ));
        }
        return;
    }
    if !publishable {
        problems.push(format!("{name}: a boundary crate must be publishable"));
    }
    for key in [
        "description",
        "license",
        "repository",
        "readme",
        "rust_version",
    ] {
        if package[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!(
                "{name}: Cargo.toml lacks `{}`, which a registry needs",
                key.replace('_', "-")
            ));
        }
    }
    for key in ["keywords", "categories"] {
        if package[key].as_array().is_none_or(Vec::is_empty) {
            problems.push(format!(
                "{name}: Cargo.toml lacks `{key}`, which a registry needs"
            ));
        }
    }
}

fn check_no_ignored_tests(root: &Path, problems: &mut Vec<String>) {
    let mut stack = vec![root.join("crates"), root.join("xtask")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                // Split so that this file does not match itself.
                let needle = concat!("#[", "ignore");
                for (i, line) in text.lines().enumerate() {
                    if line.trim_start().starts_with(needle) {
                        problems.push(format!(
                            "{}:{}: an ignored test; fix it instead of hiding it",
                            path.strip_prefix(root).unwrap_or(&path).display(),
                            i + 1
                        ));
                    }
                }
            }
        }
    }
}
