//! `piperider generate-report`: one self-contained HTML page of the latest
//! run: inline styles, no scripts, fonts or images from anywhere.

use anyhow::Context;

use crate::project::Project;
use crate::run::{RunOutput, latest};
use crate::{CommandError, Finished, out};

pub(crate) fn run() -> Result<Finished, CommandError> {
    let project = Project::find()?;
    let output = latest(&project)?;
    let html = render(&output);
    let mut written = None;
    for dir in [
        project.outputs().join(&output.id),
        project.outputs().join("latest"),
    ] {
        if dir.is_dir() {
            let path = dir.join("index.html");
            std::fs::write(&path, &html).with_context(|| format!("writing {}", path.display()))?;
            written = Some(path);
        }
    }
    let path = written.context("the run's output folder is gone")?;
    out::println(&path.display().to_string());
    Ok(Finished::ok(
        Some(output.summary.stats()),
        Some(output.datasource.kind.clone()),
    ))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(crate) fn render(run: &RunOutput) -> String {
    let s = &run.summary;
    let mut body = String::new();
    body.push_str(&format!(
        "<h1>PipeRider report</h1><p class=meta>Data source <b>{}</b> ({}) &middot; run {} &middot; {}</p>",
        esc(&run.datasource.name),
        esc(&run.datasource.kind),
        esc(&run.id),
        esc(&run.created_at)
    ));
    body.push_str(&format!(
        "<div class=cards><div><b>{}</b>tables</div><div><b>{}</b>columns</div><div><b>{}</b>rows</div>\
         <div class=ok><b>{}</b>passed</div><div class={}><b>{}</b>failed</div></div>",
        s.tables,
        s.columns,
        s.rows,
        s.passed_assertions,
        if s.failed_assertions > 0 { "bad" } else { "ok" },
        s.failed_assertions
    ));
    if !run.assertions.is_empty() {
        body.push_str("<h2>Assertions</h2><table><tr><th></th><th>Table</th><th>Column</th><th>Assertion</th><th>Expected</th><th>Actual</th></tr>");
        for a in &run.assertions {
            body.push_str(&format!(
                "<tr class={}><td>{}</td><td>{}</td><td>{}</td><td>{} <small>{}</small></td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                if a.passed { "ok" } else { "bad" },
                if a.passed { "&#10003;" } else { "&#10007;" },
                esc(&a.table),
                esc(a.column.as_deref().unwrap_or("")),
                esc(&a.name),
                esc(&a.kind),
                esc(&a.expected.to_string()),
                esc(&a.actual.to_string())
            ));
        }
        body.push_str("</table>");
    }
    for table in &run.tables {
        body.push_str(&format!(
            "<h2>{}</h2><p class=meta>{} rows &middot; {} columns</p><table><tr><th>Column</th><th>Type</th><th>Nulls</th><th>Distinct</th><th>Min</th><th>Max</th></tr>",
            esc(&table.name),
            table.row_count,
            table.columns.len()
        ));
        for c in &table.columns {
            let opt = |v: &Option<String>| esc(v.as_deref().unwrap_or("\u{2013}"));
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.name),
                esc(&c.type_name),
                c.nulls,
                c.distinct.map_or("\u{2013}".to_string(), |d| d.to_string()),
                opt(&c.min),
                opt(&c.max)
            ));
        }
        body.push_str("</table>");
    }
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>PipeRider report: {}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        esc(&run.datasource.name)
    )
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1c1c1c}\
h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e4e4}th{background:#f6f6f6}\
.cards{display:flex;gap:.75rem;flex-wrap:wrap;margin:1rem 0}.cards div{border:1px solid #ddd;border-radius:6px;padding:.5rem .9rem;min-width:6rem}\
.cards b{display:block;font-size:1.5rem}.ok b,tr.ok td:first-child{color:#1b7f3b}.bad b,tr.bad td:first-child{color:#b3261e}code{font-size:.85em}";
