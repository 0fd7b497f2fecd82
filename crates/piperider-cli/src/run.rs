//! `piperider run`: profile every table, evaluate the assertions, write
//! `run.json`. Exit code 0 when every assertion passes, 1 when any fails.

use std::path::{Path, PathBuf};

use anyhow::Context;
use piperider_event::Stats;
use serde::{Deserialize, Serialize};

use crate::assertions::{self, AssertionResult};
use crate::profiler::{Db, TableProfile};
use crate::project::Project;
use crate::{CommandError, Finished, out};

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The data source to profile (the first configured one by default).
    #[arg(long)]
    datasource: Option<String>,
}

/// What `run.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunOutput {
    pub(crate) id: String,
    pub(crate) created_at: String,
    pub(crate) datasource: DataSourceInfo,
    pub(crate) tables: Vec<TableProfile>,
    pub(crate) assertions: Vec<AssertionResult>,
    pub(crate) summary: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DataSourceInfo {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) tables: u64,
    pub(crate) columns: u64,
    pub(crate) rows: u64,
    pub(crate) builtin_assertions: u64,
    pub(crate) custom_assertions: u64,
    pub(crate) passed_assertions: u64,
    pub(crate) failed_assertions: u64,
}

impl Summary {
    pub(crate) fn of(tables: &[TableProfile], results: &[AssertionResult]) -> Summary {
        let count =
            |f: &dyn Fn(&AssertionResult) -> bool| results.iter().filter(|r| f(r)).count() as u64;
        Summary {
            tables: tables.len() as u64,
            columns: tables.iter().map(|t| t.columns.len() as u64).sum(),
            rows: tables.iter().map(|t| t.row_count).sum(),
            builtin_assertions: count(&|r| r.kind == "builtin"),
            custom_assertions: count(&|r| r.kind == "custom"),
            passed_assertions: count(&|r| r.passed),
            failed_assertions: count(&|r| !r.passed),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            tables: self.tables,
            columns: self.columns,
            rows: self.rows,
            builtin_assertions: self.builtin_assertions,
            custom_assertions: self.custom_assertions,
            passed_assertions: self.passed_assertions,
            failed_assertions: self.failed_assertions,
        }
    }
}

pub(crate) fn run(args: &RunArgs) -> Result<Finished, CommandError> {
    let project = Project::find()?;
    let source = project.data_source(args.datasource.as_deref())?.clone();
    let kind = source.kind().to_string();
    let with_kind = |err: anyhow::Error| CommandError {
        error: err,
        datasource_type: Some(kind.clone()),
    };
    // Assertion files are read before connecting: a typo fails fast.
    let files = assertions::load_all(&project.assertions_dir()).map_err(with_kind)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(with_kind)?;
    let (tables, results) = runtime
        .block_on(async {
            let db = Db::connect(&project, &source).await?;
            let mut tables = Vec::new();
            for table in db.tables().await? {
                tables.push(db.profile(&table).await?);
            }
            let results = assertions::evaluate(&files, &tables, &db).await;
            db.close().await;
            Ok::<_, anyhow::Error>((tables, results?))
        })
        .map_err(with_kind)?;

    let now = chrono::Utc::now();
    let mut output = RunOutput {
        id: now.format("%Y%m%dT%H%M%S%.3fZ").to_string(),
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        datasource: DataSourceInfo {
            name: source.name().to_string(),
            kind: kind.clone(),
        },
        summary: Summary::of(&tables, &results),
        tables,
        assertions: results,
    };
    let written = write_output(&project, &mut output).map_err(with_kind)?;
    print_summary(&output, &written, &project.root);
    let failed = output.summary.failed_assertions > 0;
    Ok(Finished {
        exit: u8::from(failed),
        ..Finished::ok(Some(output.summary.stats()), Some(kind))
    })
}

/// Writes `outputs/<id>/run.json` (a fresh folder: two runs in the same
/// millisecond get `-2`, `-3`, ...) and replaces `outputs/latest/run.json`
/// atomically. Fixes `output.id` to the folder's name.
fn write_output(project: &Project, output: &mut RunOutput) -> anyhow::Result<PathBuf> {
    let outputs = project.outputs();
    std::fs::create_dir_all(&outputs).with_context(|| format!("creating {}", outputs.display()))?;
    let base = output.id.clone();
    let mut n = 1;
    let dir = loop {
        let dir = outputs.join(&output.id);
        match std::fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {
                n += 1;
                output.id = format!("{base}-{n}");
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    };
    let json = serde_json::to_vec_pretty(output)?;
    let path = dir.join("run.json");
    std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    let latest = outputs.join("latest");
    std::fs::create_dir_all(&latest).with_context(|| format!("creating {}", latest.display()))?;
    // A name of its own, so concurrent runs never rename each other's file.
    let tmp = latest.join(format!(
        ".run.json.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&tmp, &json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, latest.join("run.json"))
        .with_context(|| format!("writing {}", latest.display()))?;
    Ok(path)
}

/// The latest `run.json` of the project.
pub(crate) fn latest(project: &Project) -> anyhow::Result<RunOutput> {
    let path = project.outputs().join("latest/run.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: no run yet; run `piperider run` first", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run.json this version can read", path.display()))
}

fn print_summary(output: &RunOutput, written: &Path, root: &Path) {
    let s = &output.summary;
    out::println(&format!(
        "Profiled {} table(s), {} column(s), {} row(s) from `{}` ({}).",
        s.tables, s.columns, s.rows, output.datasource.name, output.datasource.kind
    ));
    if s.builtin_assertions + s.custom_assertions > 0 {
        out::println(&format!(
            "Assertions: {} passed, {} failed.",
            s.passed_assertions, s.failed_assertions
        ));
        for r in output.assertions.iter().filter(|r| !r.passed) {
            let target = match &r.column {
                Some(c) => format!("{}.{c}", r.table),
                None => r.table.clone(),
            };
            out::println(&format!(
                "  FAILED {target} {} ({}): expected {}, got {}",
                r.name, r.file, r.expected, r.actual
            ));
        }
    } else {
        out::println("No assertions yet: `piperider generate-assertions` recommends some.");
    }
    out::println(&format!(
        "Wrote {}",
        written.strip_prefix(root).unwrap_or(written).display()
    ));
}
