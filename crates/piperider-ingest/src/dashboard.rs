//! The admin dashboard at `/admin`: log in with the admin token (a session
//! cookie, never the token in a URL), then the charts of
//! `/v1/admin/charts` for a date range and filters, drawn on the server
//! (no script, no network asset). The URL holds the range and filters, so
//! a view can be shared and the back button works; a bar of a breakdown is
//! a link that adds its value as a filter. Every chart has a title, a text
//! alternative, a table of its numbers and CSV and JSON downloads.

use std::fmt::Write as _;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::Value;

use crate::admin::{FilterQuery, Range};
use crate::edge::body::Expected;
use crate::edge::{Admin, Client, Form, Query, SESSION_TTL, session_cookie, session_of};
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::cube::DIMENSIONS;
use crate::storage::insights::{CHARTS, Chart, ChartColumn, Filters};
use crate::storage::reports::Count;

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn shell(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{} · piperider-ingest</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    ))
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1c1c1c}\
header{background:#1f2a44;color:#fff;padding:.6rem 1rem;display:flex;gap:.5rem 1rem;align-items:center;flex-wrap:wrap}header h1{font-size:1.1rem;margin:0}\
header form{display:flex;gap:.4rem;align-items:center;flex-wrap:wrap}header a{color:#fff}\
main{padding:1rem;display:grid;grid-template-columns:repeat(auto-fill,minmax(min(420px,100%),1fr));gap:1rem}\
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.75rem 1rem;min-width:0}h2{font-size:1rem;margin:.2rem 0 .5rem}\
.empty{color:#4d4d4d;font-style:italic}.wide{grid-column:1/-1}.note{color:#4d4d4d;font-size:.85rem}\
.kpis{display:flex;gap:1.5rem;flex-wrap:wrap}.kpis div b{display:block;font-size:1.5rem}\
.filters{display:flex;gap:.5rem;flex-wrap:wrap;align-items:center}.filters a{background:#e8eefc;color:#1a3d8f;border-radius:1rem;padding:.1rem .6rem;text-decoration:none}\
.filters a:hover,.filters a:focus{text-decoration:underline}\
svg{max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#1c1c1c}\
ol.bars{list-style:none;margin:0;padding:0}ol.bars li{margin:.15rem 0}ol.bars a,ol.bars span.row{display:grid;grid-template-columns:minmax(5rem,9rem) 1fr auto;gap:.5rem;align-items:center;color:#1c1c1c;text-decoration:none}\
ol.bars a:hover .label,ol.bars a:focus .label{text-decoration:underline}ol.bars .bar{background:#2f63c9;height:.8rem;border-radius:2px;min-width:2px}\
.label{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}table{border-collapse:collapse;font-size:.85rem;display:block;overflow-x:auto;max-width:100%}\
th,td{border-bottom:1px solid #dde1e6;padding:.15rem .5rem;text-align:right}th:first-child,td:first-child{text-align:left}\
.links{font-size:.85rem;margin-top:.4rem}details{margin-top:.4rem}a:focus,button:focus,input:focus,summary:focus{outline:2px solid #1a3d8f;outline-offset:2px}";

#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    token: String,
}

impl Expected for Login {
    const EXPECTED: &'static str = "with the field `token`";
}

fn login_page(message: &str) -> Response {
    shell(
        "Log in",
        &format!(
            "<header><h1>piperider-ingest admin</h1></header><main><section><h2>Log in</h2><p>{}</p>\
             <form method=post action=/admin/login><label for=token>Admin token</label> <input type=password name=token id=token autocomplete=current-password autofocus> \
             <button type=submit id=login>Log in</button></form></section></main>",
            esc(message)
        ),
    )
    .into_response()
}

/// `POST /admin/login`. The session cookie is `Secure` (and `__Host-`)
/// whenever the consent cookie would be: `--cookie-secure`, or https as a
/// trusted proxy says.
pub(crate) async fn login(
    State(app): State<AppState>,
    Extension(client): Extension<Client>,
    Form(form): Form<Login>,
) -> Result<Response, ApiError> {
    app.admin_failures.check(client.ip)?;
    if !app.is_admin_token(&form.token) {
        app.admin_failures.note(client.ip);
        return Ok(login_page("That is not the admin token."));
    }
    let id = app.admin_sessions.create();
    let secure = app.config.cookie_secure || client.https;
    let mut r = Redirect::to("/admin").into_response();
    if let Some(v) = session_cookie(&id, SESSION_TTL.as_secs(), secure) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// `POST /admin/logout`: ends the session and clears both cookies.
pub(crate) async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_of(&headers) {
        app.admin_sessions.end(id);
    }
    let mut r = Redirect::to("/admin").into_response();
    for secure in [false, true] {
        if let Some(v) = session_cookie("", 0, secure) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// A number with thousands separators (`19,382,061,282`).
pub(crate) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A cell as the page shows it: integers with separators, shares as
/// percentages, text escaped, a dash for none.
fn cell(v: &Value, unit: &str) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => esc(s),
        Value::Number(n) if unit == "share" => {
            format!("{:.1}%", n.as_f64().unwrap_or(0.0) * 100.0)
        }
        Value::Number(n) => match n.as_i64() {
            Some(i) => thousands(i),
            None => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
        },
        other => esc(&other.to_string()),
    }
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn column(chart: &Chart, name: &str) -> Option<usize> {
    chart.columns.iter().position(|c| c.name == name)
}

/// The page's query string for these range and filters, with one filter
/// changed (`None` removes it).
fn query(
    from: NaiveDate,
    to: NaiveDate,
    f: &Filters,
    change: Option<(usize, Option<&str>)>,
) -> String {
    let mut q = format!("from={from}&to={to}");
    for (d, name) in DIMENSIONS.iter().enumerate() {
        let v = match change {
            Some((c, v)) if c == d => v.map(str::to_string),
            _ => f.0[d].clone(),
        };
        if let Some(v) = v {
            let _ = write!(q, "&{name}={}", urlencode(&v));
        }
    }
    q
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The numbers as a table, folded away under the chart.
fn table(chart: &Chart) -> String {
    if chart.rows.is_empty() {
        return String::new();
    }
    let mut t = format!(
        "<details><summary>Table of the numbers</summary><table><caption class=note>{}</caption><thead><tr>",
        esc(&chart.title)
    );
    for c in &chart.columns {
        let _ = write!(t, "<th scope=col>{}</th>", esc(&c.name.replace('_', " ")));
    }
    t.push_str("</tr></thead><tbody>");
    for row in chart.rows.iter().take(1_000) {
        t.push_str("<tr>");
        for (v, c) in row.iter().zip(&chart.columns) {
            let _ = write!(t, "<td>{}</td>", cell(v, &c.unit));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table></details>");
    t
}

fn empty() -> String {
    "<p class=empty>No events in this range and under these filters. Events arrive through \
     POST /v1/batch from a PipeRider CLI with telemetry on; choose a wider range or remove a filter.</p>"
        .into()
}

/// A column chart of one column of a time series (one row per period),
/// with a y axis in the column's unit; its text alternative names the
/// range, the highest value and the total.
fn columns(chart: &Chart, value: &str, id: &str) -> String {
    let (Some(v), Some(first)) = (column(chart, value), chart.columns.first()) else {
        return empty();
    };
    let points: Vec<(String, f64)> = chart
        .rows
        .iter()
        .map(|r| (r[0].as_str().unwrap_or("").to_string(), number(&r[v])))
        .collect();
    if points.iter().all(|(_, n)| *n == 0.0) {
        return empty();
    }
    let unit = &chart.columns[v].unit;
    let share = unit == "share";
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let (left, w, h) = (56.0, 344.0, 120.0);
    let step = w / points.len() as f64;
    let show = |x: f64| {
        if share {
            format!("{:.1}%", x * 100.0)
        } else {
            thousands(x.round() as i64)
        }
    };
    let (top_key, top) = points
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .cloned()
        .unwrap_or_default();
    let described = format!(
        "{} ({} per {}) from {} to {}: highest {} on {}.",
        chart.title,
        value.replace('_', " "),
        first.unit,
        points.first().map_or("", |p| p.0.as_str()),
        points.last().map_or("", |p| p.0.as_str()),
        show(top),
        top_key
    );
    let mut svg = format!(
        "<svg class=chart role=img aria-labelledby={id}-t {id}-d width=400 height=150 viewBox=\"0 0 400 150\" data-points={}>\
         <title id={id}-t>{}</title><desc id={id}-d>{}</desc>\
         <text x=0 y=10>{}</text><text x=0 y=124>0</text><text x=0 y=146 class=unit>{}</text>",
        points.len(),
        esc(&chart.title),
        esc(&described),
        esc(&show(max)),
        esc(unit)
    );
    for (i, (k, n)) in points.iter().enumerate() {
        if *n <= 0.0 {
            continue;
        }
        let bh = (n / max * h).max(1.0);
        let _ = write!(
            svg,
            "<rect x={:.2} y={:.2} width={:.2} height={bh:.2} fill=#2f63c9><title>{}: {}</title></rect>",
            left + i as f64 * step,
            h + 4.0 - bh,
            (step * 0.8).max(0.5),
            esc(k),
            esc(&show(*n))
        );
    }
    let _ = write!(
        svg,
        "<text x={left} y=140>{}</text><text x=400 y=140 text-anchor=end>{}</text></svg>",
        esc(points.first().map_or("", |p| p.0.as_str())),
        esc(points.last().map_or("", |p| p.0.as_str()))
    );
    svg
}

/// Makes the page's query string with a filter set to a value.
type FilterLink<'a> = &'a dyn Fn(usize, &str) -> String;

/// Horizontal bars of `value` by the first column; with `filter`, each bar
/// is a link that adds its key as that filter.
fn bars_of(chart: &Chart, value: &str, filter: Option<(usize, FilterLink<'_>)>) -> String {
    let Some(v) = column(chart, value) else {
        return empty();
    };
    if chart.rows.is_empty() {
        return empty();
    }
    let unit = chart.columns[v].unit.clone();
    let max = chart
        .rows
        .iter()
        .map(|r| number(&r[v]))
        .fold(0.0, f64::max)
        .max(1e-9);
    let mut out = format!("<ol class=bars aria-label=\"{}\">", esc(&chart.title));
    for r in chart.rows.iter().take(30) {
        let key = r[0].as_str().unwrap_or("");
        let pct = number(&r[v]) / max * 100.0;
        let inner = format!(
            "<span class=label>{}</span><span class=bar style=\"width:{pct:.1}%\" aria-hidden=true></span><span>{}</span>",
            esc(key),
            cell(&r[v], &unit)
        );
        match &filter {
            Some((d, link)) => {
                let _ = write!(
                    out,
                    "<li><a href=\"/admin?{}\" title=\"Filter by {} {}\">{inner}</a></li>",
                    esc(&link(*d, key)),
                    DIMENSIONS[*d].replace('_', " "),
                    esc(key)
                );
            }
            None => {
                let _ = write!(out, "<li><span class=row>{inner}</span></li>");
            }
        }
    }
    out.push_str("</ol>");
    if chart.rows.len() > 30 {
        let _ = write!(
            out,
            "<p class=note>The first 30 of {}; the table and downloads hold all.</p>",
            thousands(chart.rows.len() as i64)
        );
    }
    out
}

/// The chart's section: its title, the drawing, the table, the downloads.
fn section(chart: &Chart, drawing: String, q: &str, wide: bool) -> String {
    let estimated = if chart.estimated {
        "<p class=note>Distinct counts past 2,048 and percentiles are estimates (see the JSON's accuracy).</p>"
    } else {
        ""
    };
    format!(
        "<section id=chart-{name} class=\"{}\"><h2>{}</h2>{drawing}{estimated}{}\
         <p class=links>Download the numbers: <a href=\"/admin/charts/{name}?{q}&amp;format=csv\" download>CSV</a> · \
         <a href=\"/admin/charts/{name}?{q}&amp;format=json\">JSON</a></p></section>",
        if wide { "wide" } else { "" },
        esc(&chart.title),
        table(chart),
        name = chart.name,
        q = esc(q),
    )
}

/// The page's query: the range and the filters.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(flatten)]
    range: Range,
    #[serde(flatten)]
    filters: FilterQuery,
}

impl Expected for PageQuery {
    const EXPECTED: &'static str =
        "?from=YYYY-MM-DD&to=YYYY-MM-DD&os=&app_version=&datasource_type=&ci=&country=";
}

/// Charts the page reads at once.
const CHARTS_AT_ONCE: usize = 3;

/// `GET /admin`. A date or filter that is not one is refused before the
/// session is looked at, as `/openapi.json` says.
pub(crate) async fn page(
    admin: Option<Admin>,
    State(app): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = q.range.days()?;
    let filters = q.filters.filters()?;
    if admin.is_none() {
        return Ok(login_page(
            "Log in with the admin token to see the figures.",
        ));
    }
    // A few charts read at once (the SQLite pool holds four connections),
    // drawn in their order. Boxed first: a stream mapping names to reads
    // through a closure is not `Send` for every lifetime, as the router needs.
    type Read<'a> = std::pin::Pin<
        Box<dyn Future<Output = Result<Option<Chart>, crate::StorageError>> + Send + 'a>,
    >;
    let reads: Vec<Read<'_>> = CHARTS
        .iter()
        .map(|&(name, _)| Box::pin(app.store.chart(name, from, to, &filters)) as Read<'_>)
        .collect();
    let charts: Vec<_> = futures_util::stream::iter(reads)
        .buffered(CHARTS_AT_ONCE)
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    let cloud = app
        .store
        .cloud_stats(&from.to_string(), &to.to_string())
        .await?;
    let body = render(&charts, &cloud, from, to, &filters);
    let mut r = shell("Dashboard", &body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The whole page below the head.
fn render(
    charts: &[Chart],
    cloud: &std::collections::BTreeMap<String, Vec<Count>>,
    from: NaiveDate,
    to: NaiveDate,
    filters: &Filters,
) -> String {
    let q = query(from, to, filters, None);
    let link = |d: usize, v: &str| query(from, to, filters, Some((d, Some(v))));
    let mut hidden = String::new();
    for (d, name) in DIMENSIONS.iter().enumerate() {
        if let Some(v) = &filters.0[d] {
            let _ = write!(
                hidden,
                "<input type=hidden name={name} value=\"{}\">",
                esc(v)
            );
        }
    }
    let mut out = format!(
        "<header><h1>piperider-ingest dashboard</h1><form method=get action=/admin aria-label=\"Date range\">\
         <label for=from>From</label> <input type=date id=from name=from value={from}> <label for=to>to</label> \
         <input type=date id=to name=to value={to}>{hidden} <button type=submit>Show</button></form>\
         <form method=post action=/admin/logout><button type=submit>Log out</button></form></header><main>"
    );
    // Filters: each a link that removes it.
    let mut chips = String::new();
    for (d, name) in DIMENSIONS.iter().enumerate() {
        if let Some(v) = &filters.0[d] {
            let _ = write!(
                chips,
                "<a class=filter href=\"/admin?{}\" aria-label=\"Remove the filter {} {}\">{}: {} ✕</a>",
                esc(&query(from, to, filters, Some((d, None)))),
                name.replace('_', " "),
                esc(v),
                name.replace('_', " "),
                esc(v)
            );
        }
    }
    let _ = write!(
        out,
        "<section class=wide><h2>Filters</h2><div class=filters>{}</div><p class=note>Every CLI chart below is \
         filtered. Click a bar of a breakdown to add its value; the address keeps the filters.</p></section>",
        if chips.is_empty() {
            "<span>None: all events.</span>".to_string()
        } else {
            chips
        }
    );
    let by = |name: &str| charts.iter().find(|c| c.name == name);
    if let Some(s) = by("summary") {
        let mut kpis = String::from("<div class=kpis>");
        if let Some(row) = s.rows.first() {
            for (v, c) in row.iter().zip(&s.columns) {
                let _ = write!(
                    kpis,
                    "<div><b id={}>{}</b>{}</div>",
                    c.name.replace('_', "-"),
                    cell(v, &c.unit),
                    esc(&c.name.replace('_', " "))
                );
            }
        }
        kpis.push_str("</div>");
        out.push_str(&section(s, kpis, &q, true));
    }
    for c in charts {
        let drawing = match c.name.as_str() {
            "summary" => continue,
            "active_users_daily" | "active_users_weekly" => columns(c, "users", &c.name),
            "active_users_monthly" => columns(c, "stickiness", &c.name),
            "commands_daily" => {
                // One column per day: the commands of every type.
                let mut per_day: std::collections::BTreeMap<String, i64> = Default::default();
                for r in &c.rows {
                    *per_day
                        .entry(r[0].as_str().unwrap_or("").to_string())
                        .or_default() += r[2].as_i64().unwrap_or(0);
                }
                let total = Chart {
                    name: c.name.clone(),
                    title: c.title.clone(),
                    from: c.from.clone(),
                    to: c.to.clone(),
                    filters: c.filters.clone(),
                    columns: vec![c.columns[0].clone(), c.columns[2].clone()],
                    rows: per_day
                        .into_iter()
                        .map(|(d, n)| vec![Value::from(d), Value::from(n)])
                        .collect(),
                    estimated: false,
                    accuracy: String::new(),
                };
                columns(&total, "events", &c.name)
            }
            "figures_daily" => {
                // Each figure on its own scale.
                let mut all = String::new();
                for f in c.columns.iter().skip(1) {
                    let _ = write!(
                        all,
                        "<h3 class=note>{}</h3>",
                        esc(&f.name.replace('_', " "))
                    );
                    all.push_str(&columns(c, &f.name, &format!("{}-{}", c.name, f.name)));
                }
                all
            }
            "retention" | "version_adoption" | "projects_by_datasource" => {
                if c.rows.is_empty() {
                    empty()
                } else {
                    "<p class=note>See the table.</p>".into()
                }
            }
            "ci_share" => columns(c, "ci_event_share", &c.name),
            "errors_by_command" | "errors_by_version" => bars_of(c, "error_rate", None),
            "durations" => bars_of(c, "p50_ms", None),
            name => {
                let dim = name.trim_start_matches("users_by_");
                match DIMENSIONS.iter().position(|d| *d == dim) {
                    Some(d) => bars_of(c, "users", Some((d, &link))),
                    None => bars_of(c, "users", None),
                }
            }
        };
        let wide = matches!(
            c.name.as_str(),
            "retention" | "version_adoption" | "figures_daily"
        );
        let mut s = section(c, drawing, &q, wide);
        if wide {
            // Open by default: the table is the chart.
            s = s.replacen("<details>", "<details open>", 1);
        }
        out.push_str(&s);
    }
    for (key, title) in [
        ("page_views", "Cloud: page views by route"),
        ("events", "Cloud: events and actions"),
        ("comparison_sources", "Cloud: comparison sources"),
        ("trend_metrics", "Cloud: trend metrics"),
        ("consent", "Cloud: Accept All / Necessary Only"),
    ] {
        let counts = cloud.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let chart = Chart {
            name: format!("cloud-{key}"),
            title: title.into(),
            from: from.to_string(),
            to: to.to_string(),
            filters: Default::default(),
            columns: vec![
                ChartColumn {
                    name: "key".into(),
                    unit: "name".into(),
                    estimate: false,
                },
                ChartColumn {
                    name: "count".into(),
                    unit: "events".into(),
                    estimate: false,
                },
            ],
            rows: counts
                .iter()
                .map(|c| vec![Value::from(c.key.clone()), Value::from(c.count)])
                .collect(),
            estimated: false,
            accuracy: String::new(),
        };
        let _ = write!(
            out,
            "<section id=chart-{}><h2>{}</h2>{}<p class=note>Cloud visitors with consent; the CLI filters do not apply.</p></section>",
            chart.name,
            esc(&chart.title),
            bars_of(&chart, "count", None)
        );
    }
    out.push_str("</main>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(rows: Vec<Vec<Value>>) -> Chart {
        Chart {
            name: "active_users_daily".into(),
            title: "Daily".into(),
            from: "2026-01-01".into(),
            to: "2026-01-31".into(),
            filters: Default::default(),
            columns: vec![
                ChartColumn {
                    name: "day".into(),
                    unit: "day".into(),
                    estimate: false,
                },
                ChartColumn {
                    name: "users".into(),
                    unit: "users".into(),
                    estimate: true,
                },
            ],
            rows,
            estimated: false,
            accuracy: String::new(),
        }
    }

    #[test]
    fn numbers_have_separators() {
        assert_eq!(thousands(19_382_061_282), "19,382,061,282");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(-1_000), "-1,000");
        assert_eq!(cell(&Value::from(0.125), "share"), "12.5%");
    }

    #[test]
    fn charts_read_with_zero_one_and_thousands_of_points() {
        assert!(columns(&chart(vec![]), "users", "x").contains("No events"));
        let one = chart(vec![vec![Value::from("2026-01-01"), Value::from(3)]]);
        let svg = columns(&one, "users", "x");
        assert!(
            svg.contains("data-points=1") && svg.contains("<desc"),
            "{svg}"
        );
        let many = chart(
            (0..2500)
                .map(|i| vec![Value::from(format!("d{i}")), Value::from(i % 7 + 1)])
                .collect(),
        );
        assert_eq!(columns(&many, "users", "x").matches("<rect").count(), 2500);
        let hostile = chart(vec![vec![Value::from("<script>"), Value::from(1)]]);
        assert!(
            !bars_of(&hostile, "users", None).contains("<script>"),
            "keys are escaped"
        );
        assert!(!columns(&hostile, "users", "x").contains("<script>"));
    }

    #[test]
    fn a_filter_link_keeps_the_others_and_encodes_its_value() {
        let f = Filters([Some("linux".into()), None, None, None, None]);
        let (from, to) = ("2026-01-01".parse().unwrap(), "2026-01-31".parse().unwrap());
        assert_eq!(
            query(from, to, &f, Some((4, Some("a&b")))),
            "from=2026-01-01&to=2026-01-31&os=linux&country=a%26b"
        );
        assert_eq!(
            query(from, to, &f, Some((0, None))),
            "from=2026-01-01&to=2026-01-31"
        );
    }
}
