//! Assertions in `.piperider/assertions/*.yml`, PipeRider's style:
//!
//! ```yaml
//! orders:
//!   tests:
//!   - name: assert_row_count_in_range
//!     assert: {count: [1, 100000]}
//!   columns:
//!     id:
//!       tests:
//!       - name: assert_column_not_null
//!       - name: assert_column_unique
//!   custom:
//!   - name: no_negative_totals
//!     sql: select 1 from orders where total < 0
//! ```
//!
//! A custom assertion passes when its query returns no rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::profiler::{Db, TableProfile};
use crate::project::yaml_error;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tests: Vec<Test>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) columns: BTreeMap<String, ColumnSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) custom: Vec<Custom>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ColumnSpec {
    #[serde(default)]
    pub(crate) tests: Vec<Test>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Test {
    pub(crate) name: TestName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) assert: Option<Params>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) enum TestName {
    #[serde(rename = "assert_row_count_in_range")]
    RowCountInRange,
    #[serde(rename = "assert_column_not_null")]
    ColumnNotNull,
    #[serde(rename = "assert_column_unique")]
    ColumnUnique,
    #[serde(rename = "assert_column_min_in_range")]
    ColumnMinInRange,
    #[serde(rename = "assert_column_max_in_range")]
    ColumnMaxInRange,
    #[serde(rename = "assert_column_in_set")]
    ColumnInSet,
}

impl TestName {
    fn as_str(self) -> &'static str {
        match self {
            TestName::RowCountInRange => "assert_row_count_in_range",
            TestName::ColumnNotNull => "assert_column_not_null",
            TestName::ColumnUnique => "assert_column_unique",
            TestName::ColumnMinInRange => "assert_column_min_in_range",
            TestName::ColumnMaxInRange => "assert_column_max_in_range",
            TestName::ColumnInSet => "assert_column_in_set",
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<[Value; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min: Option<[Value; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max: Option<[Value; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) set: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Custom {
    pub(crate) name: String,
    pub(crate) sql: String,
}

/// One file's assertions, by table.
#[derive(Debug)]
pub(crate) struct AssertionFile {
    pub(crate) path: PathBuf,
    pub(crate) tables: BTreeMap<String, TableSpec>,
}

/// The outcome of one assertion, as `run.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AssertionResult {
    pub(crate) file: String,
    pub(crate) table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) column: Option<String>,
    pub(crate) name: String,
    /// `builtin` or `custom`.
    pub(crate) kind: String,
    pub(crate) passed: bool,
    pub(crate) expected: serde_json::Value,
    pub(crate) actual: serde_json::Value,
}

/// Every `*.yml` file in the assertions folder, in name order. A file that
/// does not parse is an error naming the file, line and column.
pub(crate) fn load_all(dir: &Path) -> anyhow::Result<Vec<AssertionFile>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    paths.sort();
    paths.into_iter().map(|p| load(&p)).collect()
}

pub(crate) fn load(path: &Path) -> anyhow::Result<AssertionFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let tables: Option<BTreeMap<String, Option<TableSpec>>> =
        serde_yaml::from_str(&text).map_err(|e| yaml_error(path, &e))?;
    Ok(AssertionFile {
        path: path.to_path_buf(),
        tables: tables
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
    })
}

fn range_of<'a>(
    params: &'a Option<Params>,
    pick: fn(&Params) -> &Option<[Value; 2]>,
    at: &str,
    key: &str,
) -> anyhow::Result<&'a [Value; 2]> {
    let range = params.as_ref().and_then(|p| pick(p).as_ref());
    let Some(range) = range else {
        bail!("{at}: needs `assert: {{{key}: [low, high]}}`");
    };
    for bound in range {
        if !(bound.is_null() || bound.is_number() || bound.is_string()) {
            bail!("{at}: the bounds of `{key}` must be numbers, strings or null");
        }
    }
    Ok(range)
}

/// Whether `value` lies within `[low, high]` (a null bound is open). Numbers
/// compare as numbers, anything else as text (ISO dates sort correctly).
fn within(value: &str, range: &[Value; 2]) -> bool {
    let cmp = |bound: &Value| -> Option<std::cmp::Ordering> {
        match (bound, value.parse::<f64>()) {
            (Value::Number(n), Ok(v)) => v.partial_cmp(&n.as_f64()?),
            (Value::Number(n), Err(_)) => Some(value.cmp(&n.to_string())),
            (Value::String(s), _) => Some(value.cmp(s.as_str())),
            _ => None,
        }
    };
    let low_ok =
        range[0].is_null() || cmp(&range[0]).is_some_and(|o| o != std::cmp::Ordering::Less);
    let high_ok =
        range[1].is_null() || cmp(&range[1]).is_some_and(|o| o != std::cmp::Ordering::Greater);
    low_ok && high_ok
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Evaluates every assertion of every file against the profiles (and the
/// database, for sets and custom queries). An assertion on a table or
/// column that does not exist, or a custom query that fails, is an error.
pub(crate) async fn evaluate(
    files: &[AssertionFile],
    profiles: &[TableProfile],
    db: &Db,
) -> anyhow::Result<Vec<AssertionResult>> {
    let mut results = Vec::new();
    for file in files {
        let file_name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (table, spec) in &file.tables {
            let Some(profile) = profiles.iter().find(|p| &p.name == table) else {
                bail!(
                    "{}: table `{table}` does not exist in the data source",
                    file.path.display()
                );
            };
            for (i, test) in spec.tests.iter().enumerate() {
                let at = format!("{}: {table}.tests[{i}]", file.path.display());
                let result = match test.name {
                    TestName::RowCountInRange => {
                        let range = range_of(&test.assert, |p| &p.count, &at, "count")?;
                        let actual = profile.row_count.to_string();
                        (
                            within(&actual, range),
                            serde_json::json!({"count": range}),
                            serde_json::json!(profile.row_count),
                        )
                    }
                    other => bail!(
                        "{at}: {} is a column assertion; put it under columns.<name>.tests",
                        other.as_str()
                    ),
                };
                results.push(AssertionResult {
                    file: file_name.clone(),
                    table: table.clone(),
                    column: None,
                    name: test.name.as_str().to_string(),
                    kind: "builtin".into(),
                    passed: result.0,
                    expected: result.1,
                    actual: result.2,
                });
            }
            for (column, col_spec) in &spec.columns {
                let Some(col) = profile.columns.iter().find(|c| &c.name == column) else {
                    bail!(
                        "{}: column `{table}.{column}` does not exist in the data source",
                        file.path.display()
                    );
                };
                for (i, test) in col_spec.tests.iter().enumerate() {
                    let at = format!(
                        "{}: {table}.columns.{column}.tests[{i}]",
                        file.path.display()
                    );
                    let (passed, expected, actual) = match test.name {
                        TestName::ColumnNotNull => (
                            col.nulls == 0,
                            serde_json::json!({"nulls": 0}),
                            serde_json::json!({"nulls": col.nulls}),
                        ),
                        TestName::ColumnUnique => {
                            let non_null = profile.row_count - col.nulls;
                            let distinct = col.distinct.with_context(|| {
                                format!("{at}: the column's type has no distinct count")
                            })?;
                            (
                                distinct == non_null,
                                serde_json::json!({"duplicates": 0}),
                                serde_json::json!({"duplicates": non_null - distinct.min(non_null)}),
                            )
                        }
                        TestName::ColumnMinInRange | TestName::ColumnMaxInRange => {
                            let is_min = test.name == TestName::ColumnMinInRange;
                            let key = if is_min { "min" } else { "max" };
                            let range = if is_min {
                                range_of(&test.assert, |p| &p.min, &at, key)?
                            } else {
                                range_of(&test.assert, |p| &p.max, &at, key)?
                            };
                            let value = if is_min { &col.min } else { &col.max };
                            let Some(value) = value else {
                                bail!(
                                    "{at}: the column has no {key} (empty, all null, or a type without order)"
                                );
                            };
                            (
                                within(value, range),
                                serde_json::json!({ key: range }),
                                serde_json::json!({ key: value }),
                            )
                        }
                        TestName::ColumnInSet => {
                            let set = test
                                .assert
                                .as_ref()
                                .and_then(|p| p.set.as_ref())
                                .with_context(|| {
                                    format!("{at}: needs `assert: {{set: [a, b, ...]}}`")
                                })?;
                            let set: Vec<String> = set
                                .iter()
                                .map(|v| {
                                    text_of(v).with_context(|| {
                                        format!(
                                            "{at}: set members must be strings, numbers or booleans"
                                        )
                                    })
                                })
                                .collect::<anyhow::Result<_>>()?;
                            let outside = db.count_outside(table, column, &set).await?;
                            (
                                outside == 0,
                                serde_json::json!({"set": set}),
                                serde_json::json!({"rows_outside_set": outside}),
                            )
                        }
                        TestName::RowCountInRange => bail!(
                            "{at}: assert_row_count_in_range is a table assertion; put it under {table}.tests"
                        ),
                    };
                    results.push(AssertionResult {
                        file: file_name.clone(),
                        table: table.clone(),
                        column: Some(column.clone()),
                        name: test.name.as_str().to_string(),
                        kind: "builtin".into(),
                        passed,
                        expected,
                        actual,
                    });
                }
            }
            for custom in &spec.custom {
                let returns_rows = db.returns_rows(&custom.sql).await.with_context(|| {
                    format!(
                        "{}: custom assertion `{}` on {table}: its query failed",
                        file.path.display(),
                        custom.name
                    )
                })?;
                results.push(AssertionResult {
                    file: file_name.clone(),
                    table: table.clone(),
                    column: None,
                    name: custom.name.clone(),
                    kind: "custom".into(),
                    passed: !returns_rows,
                    expected: serde_json::json!("no rows"),
                    actual: serde_json::json!(if returns_rows {
                        "rows returned"
                    } else {
                        "no rows"
                    }),
                });
            }
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |a: &str, b: &str| -> [Value; 2] {
            [
                serde_yaml::from_str(a).unwrap(),
                serde_yaml::from_str(b).unwrap(),
            ]
        };
        assert!(within("10", &r("1", "100")));
        assert!(!within("0", &r("1", "100")));
        assert!(within("100", &r("1", "100")));
        assert!(within("5.5", &r("null", "6")));
        assert!(within("2026-01-02", &r("'2026-01-01'", "null")));
        assert!(!within("2025-12-31", &r("'2026-01-01'", "null")));
        assert!(
            within("9", &r("2", "10")),
            "numbers compare as numbers, not text"
        );
    }

    #[test]
    fn parse_errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.yml");
        std::fs::write(
            &path,
            "orders:\n  columns:\n    id:\n      tests:\n      - name: assert_column_nul\n",
        )
        .unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:5:", path.display())), "{err}");
        assert!(err.contains("assert_column_nul"), "{err}");
        std::fs::write(&path, "orders:\n  tests: [\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:3:1", path.display())), "{err}");
    }
}
