//! `piperider generate-assertions`: recommended assertions from the latest
//! run, one file per table, `.piperider/assertions/recommended_<table>.yml`.
//!
//! Each file carries a checksum of its own body. A file whose body no longer
//! matches (edited by someone) or that has no checksum (written by someone)
//! is never touched again.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

use crate::assertions::{ColumnSpec, Params, TableSpec, Test, TestName};
use crate::profiler::TableProfile;
use crate::project::Project;
use crate::run::{Summary, latest};
use crate::{CommandError, Finished, out};

const CHECKSUM_PREFIX: &str = "# checksum: ";

pub(crate) fn run() -> Result<Finished, CommandError> {
    let project = Project::find()?;
    let output = latest(&project)?;
    let kind = output.datasource.kind.clone();
    let dir = project.assertions_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = 0u64;
    for table in &output.tables {
        let spec = recommend(table);
        let count = spec.tests.len() + spec.columns.values().map(|c| c.tests.len()).sum::<usize>();
        let path = dir.join(format!("recommended_{}.yml", file_stem(&table.name)));
        let body = serde_yaml::to_string(&BTreeMap::from([(table.name.clone(), spec)]))
            .context("rendering assertions")?;
        match user_owned(&path)? {
            true => out::println(&format!(
                "Left {} alone: it was written or edited by hand.",
                rel(&path, &project.root)
            )),
            false => {
                let text = format!(
                    "# Recommended by `piperider generate-assertions` from run {}.\n\
                     # Edit freely: once edited, this file is never regenerated.\n\
                     {CHECKSUM_PREFIX}{}\n{body}",
                    output.id,
                    checksum(&body)
                );
                let tmp = path.with_extension(format!("yml.{}.tmp", std::process::id()));
                std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("writing {}", path.display()))?;
                written += count as u64;
                out::println(&format!(
                    "Wrote {} ({count} assertions)",
                    rel(&path, &project.root)
                ));
            }
        }
    }
    let summary = Summary {
        builtin_assertions: written,
        custom_assertions: 0,
        passed_assertions: 0,
        failed_assertions: 0,
        ..output.summary
    };
    Ok(Finished::ok(Some(summary.stats()), Some(kind)))
}

fn rel(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A file name that is safe on every filesystem.
fn file_stem(table: &str) -> String {
    table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn checksum(body: &str) -> String {
    Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True when the file exists and is not exactly what this command last wrote.
fn user_owned(path: &Path) -> anyhow::Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let Some(start) = text.find(CHECKSUM_PREFIX) else {
        return Ok(true);
    };
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let recorded = &text[start + CHECKSUM_PREFIX.len()..line_end];
    let body = text.get(line_end + 1..).unwrap_or_default();
    Ok(recorded.trim() != checksum(body))
}

fn number(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Value::from)
}

/// Assertions that hold on the profiled data and would catch a change.
pub(crate) fn recommend(table: &TableProfile) -> TableSpec {
    let rows = table.row_count;
    let mut spec = TableSpec::default();
    spec.tests.push(Test {
        name: TestName::RowCountInRange,
        assert: Some(Params {
            count: Some([Value::from(rows / 2), Value::from((rows * 2).max(1))]),
            ..Params::default()
        }),
    });
    for col in &table.columns {
        let mut tests = Vec::new();
        if rows > 0 && col.nulls == 0 {
            tests.push(Test {
                name: TestName::ColumnNotNull,
                assert: None,
            });
        }
        if rows > 1 && col.distinct == Some(rows - col.nulls) && col.nulls == 0 {
            tests.push(Test {
                name: TestName::ColumnUnique,
                assert: None,
            });
        }
        if col.category == "numeric"
            && let (Some(min), Some(max)) = (
                col.min.as_deref().and_then(number),
                col.max.as_deref().and_then(number),
            )
        {
            tests.push(Test {
                name: TestName::ColumnMinInRange,
                assert: Some(Params {
                    min: Some([min.clone(), max.clone()]),
                    ..Params::default()
                }),
            });
            tests.push(Test {
                name: TestName::ColumnMaxInRange,
                assert: Some(Params {
                    max: Some([min, max]),
                    ..Params::default()
                }),
            });
        }
        // A few repeated values: a category, worth pinning.
        if let Some(values) = &col.values
            && col.distinct.is_some_and(|d| d < rows - col.nulls)
        {
            tests.push(Test {
                name: TestName::ColumnInSet,
                assert: Some(Params {
                    set: Some(values.iter().map(|v| Value::from(v.as_str())).collect()),
                    ..Params::default()
                }),
            });
        }
        if !tests.is_empty() {
            spec.columns.insert(col.name.clone(), ColumnSpec { tests });
        }
    }
    spec
}
