//! The admin dashboard at `/admin`: log in with the admin token (a session
//! cookie, never the token in a URL), then charts of the CLI and Cloud
//! figures for a date range, drawn on the server as SVG (no script, no
//! network asset), readable with zero, one or thousands of points.

use std::collections::BTreeMap;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{NaiveDate, TimeDelta};
use serde::Deserialize;

use crate::admin::Range;
use crate::edge::body::Expected;
use crate::edge::{Admin, Client, Form, Query, SESSION_TTL, session_cookie, session_of};
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::reports::{Count, Stats};

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

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1c1c1c}header{background:#1f2a44;color:#fff;padding:.6rem 1.5rem;display:flex;gap:1rem;align-items:center}\
header form{margin-left:auto}main{padding:1rem 1.5rem;display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1rem}\
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.75rem 1rem}h2{font-size:1rem;margin:.2rem 0 .5rem}.empty{color:#777;font-style:italic}\
.kpis{grid-column:1/-1;display:flex;gap:1.5rem;flex-wrap:wrap}.kpis div b{display:block;font-size:1.6rem}svg text{font:11px system-ui,sans-serif;fill:#333}";

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
            "<header><b>piperider-ingest</b> admin</header><main><section><h2>Log in</h2><p>{}</p>\
             <form method=post action=/admin/login><label>Admin token <input type=password name=token id=token autofocus></label> \
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

/// A horizontal bar chart of counts by key.
fn bars(counts: &[Count]) -> String {
    if counts.is_empty() {
        return "<p class=empty>No data in this range.</p>".into();
    }
    let max = counts.iter().map(|c| c.count).max().unwrap_or(1).max(1) as f64;
    let row = 20;
    let height = counts.len() * row + 4;
    let mut svg = format!(
        "<svg class=chart role=img width=400 height={height} viewBox=\"0 0 400 {height}\" data-points={}>",
        counts.len()
    );
    for (i, c) in counts.iter().enumerate() {
        let y = i * row + 2;
        let w = (c.count as f64 / max * 230.0).max(1.0);
        svg.push_str(&format!(
            "<text x=0 y={}>{}</text><rect x=120 y={y} width={w:.1} height=14 fill=#3b6fd8><title>{}: {}</title></rect><text x={:.1} y={}>{}</text>",
            y + 11,
            esc(&truncate(&c.key, 20)),
            esc(&c.key),
            c.count,
            124.0 + w,
            y + 11,
            c.count
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// A column chart of one value per day, every day of the range shown (zero where none).
fn daily(series: &[Count], from: NaiveDate, to: NaiveDate) -> String {
    let days = (to - from).num_days() as usize + 1;
    let values: Vec<i64> = (0..days)
        .map(|i| {
            let d = (from + TimeDelta::days(i as i64)).to_string();
            series.iter().find(|c| c.key == d).map_or(0, |c| c.count)
        })
        .collect();
    let total: i64 = values.iter().sum();
    if total == 0 {
        return "<p class=empty>No data in this range.</p>".into();
    }
    let max = *values.iter().max().unwrap_or(&1) as f64;
    let (w, h) = (400.0, 120.0);
    let step = w / days as f64;
    let mut svg = format!(
        "<svg class=chart role=img width=400 height=140 viewBox=\"0 0 400 140\" data-points={}>",
        series.len()
    );
    for (i, v) in values.iter().enumerate() {
        if *v == 0 {
            continue;
        }
        let bh = (*v as f64 / max * h).max(1.0);
        svg.push_str(&format!(
            "<rect x={:.2} y={:.2} width={:.2} height={bh:.2} fill=#2f9e6e><title>{}: {v}</title></rect>",
            i as f64 * step,
            h - bh,
            (step * 0.8).max(0.5),
            from + TimeDelta::days(i as i64)
        ));
    }
    svg.push_str(&format!(
        "<text x=0 y=135>{from}</text><text x=400 y=135 text-anchor=end>{to}</text><text x=400 y=10 text-anchor=end>max {}</text></svg>",
        max as i64
    ));
    svg
}

fn section(title: &str, chart: String) -> String {
    format!("<section><h2>{}</h2>{chart}</section>", esc(title))
}

/// `GET /admin`. A date that is not one is refused before the session is
/// looked at, as `/openapi.json` says.
pub(crate) async fn page(
    admin: Option<Admin>,
    State(app): State<AppState>,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    let (from, to) = range.days()?;
    if admin.is_none() {
        return Ok(login_page(
            "Log in with the admin token to see the figures.",
        ));
    }
    let stats = app.store.stats(from, to).await?;
    let cloud = app
        .store
        .cloud_stats(&from.to_string(), &to.to_string())
        .await?;
    let mut body = header_and_kpis(&stats, from, to);
    for (title, chart) in charts(&stats, &cloud, from, to) {
        body.push_str(&section(&title, chart));
    }
    body.push_str("</main>");
    let mut r = shell("Dashboard", &body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The range form, the log-out button and the headline figures.
fn header_and_kpis(stats: &Stats, from: NaiveDate, to: NaiveDate) -> String {
    format!(
        "<header><b>piperider-ingest</b> dashboard<form method=get action=/admin>From <input type=date name=from value={from}> to <input type=date name=to value={to}> <button type=submit>Show</button></form>\
         <form method=post action=/admin/logout><button type=submit>Log out</button></form></header><main>\
         <div class=kpis><div><b id=active-users>{}</b>active users</div><div><b>{}</b>users in all</div><div><b>{}</b>active projects</div><div><b id=commands>{}</b>commands</div><div><b>{}</b>rows profiled</div></div>",
        stats.active_users,
        stats.total_users,
        stats.active_projects,
        stats.totals.events,
        stats.totals.figures.rows
    )
}

/// Every chart of the page, titled, in order.
fn charts(
    stats: &Stats,
    cloud: &BTreeMap<String, Vec<Count>>,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<(String, String)> {
    let commands_per_day: Vec<Count> = stats
        .daily_totals
        .iter()
        .map(|(day, t)| Count {
            key: day.clone(),
            count: t.events,
        })
        .collect();
    let f = &stats.totals.figures;
    let figures = |pairs: &[(&str, i64)]| -> Vec<Count> {
        pairs
            .iter()
            .map(|(k, v)| Count {
                key: k.to_string(),
                count: *v,
            })
            .collect()
    };
    let empty = Vec::new();
    let b = |name: &str| bars(stats.breakdowns.get(name).unwrap_or(&empty));
    let c = |name: &str| bars(cloud.get(name).unwrap_or(&empty));
    let mut out: Vec<(String, String)> = [
        (
            "Daily active users",
            daily(&stats.daily_active_users, from, to),
        ),
        ("New users (first seen)", daily(&stats.new_users, from, to)),
        ("Users by last seen", daily(&stats.last_seen, from, to)),
        ("Commands per day", daily(&commands_per_day, from, to)),
        ("Commands by type", bars(&stats.commands_by_type)),
        (
            "Tables, columns and rows profiled",
            bars(&figures(&[
                ("tables", f.tables),
                ("columns", f.columns),
                ("rows", f.rows),
            ])),
        ),
        (
            "Assertions",
            bars(&figures(&[
                ("built-in", f.builtin_assertions),
                ("custom", f.custom_assertions),
                ("passed", f.passed_assertions),
                ("failed", f.failed_assertions),
            ])),
        ),
        ("Countries", b("countries")),
        ("Regions", b("regions")),
        ("Platforms", b("platforms")),
        ("Runtime versions", b("runtime_versions")),
        ("App versions", b("app_versions")),
        ("Initial versions", b("initial_versions")),
        ("Data source types", b("datasource_types")),
        ("Cloud: page views by route", c("page_views")),
        ("Cloud: events and actions", c("events")),
        ("Cloud: comparison sources", c("comparison_sources")),
        ("Cloud: trend metrics", c("trend_metrics")),
        ("Cloud: Accept All / Necessary Only", c("consent")),
    ]
    .into_iter()
    .map(|(title, chart)| (title.to_string(), chart))
    .collect();
    for d in &stats.distributions {
        out.push((
            format!("Distribution of {} per command", d.metric.replace('_', " ")),
            bars(&d.buckets),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(n: usize) -> Vec<Count> {
        (0..n)
            .map(|i| Count {
                key: format!("k{i}"),
                count: i as i64 + 1,
            })
            .collect()
    }

    #[test]
    fn charts_read_with_zero_one_and_thousands_of_points() {
        assert!(bars(&[]).contains("No data"));
        assert!(bars(&counts(1)).contains("data-points=1"));
        assert!(bars(&counts(3000)).contains("data-points=3000"));
        let from: NaiveDate = "2020-01-01".parse().unwrap();
        let to: NaiveDate = "2026-12-31".parse().unwrap();
        assert!(daily(&[], from, to).contains("No data"));
        let one = [Count {
            key: "2026-01-01".into(),
            count: 3,
        }];
        assert!(daily(&one, from, to).contains("<rect"));
        let many: Vec<Count> = (0..2500)
            .map(|i| Count {
                key: (from + TimeDelta::days(i)).to_string(),
                count: i % 7 + 1,
            })
            .collect();
        let svg = daily(&many, from, to);
        assert_eq!(svg.matches("<rect").count(), 2500);
        assert!(
            !bars(&[Count {
                key: "<script>".into(),
                count: 1
            }])
            .contains("<script>"),
            "keys are escaped"
        );
    }
}
