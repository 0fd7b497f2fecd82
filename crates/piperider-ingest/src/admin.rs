//! The admin API (`/v1/admin/...`): figures for a date range, everything
//! stored about one user, and deleting it. Every route takes the
//! [`Admin`] extractor: without the admin token it answers 401.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, TimeDelta};
use piperider_event::UserId;
use serde::Deserialize;

use crate::edge::body::Expected;
use crate::edge::{Admin, PathText, Query};
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::cube::{CI, DIMENSIONS, INTERACTIVE};
use crate::storage::insights::{CHARTS, Filters};

/// A date range in a query string (`?from=YYYY-MM-DD&to=YYYY-MM-DD`).
#[derive(Debug, Deserialize)]
pub(crate) struct Range {
    from: Option<String>,
    to: Option<String>,
}

impl Expected for Range {
    const EXPECTED: &'static str = "?from=YYYY-MM-DD&to=YYYY-MM-DD";
}

/// Longest range a request may ask for, in days.
const MAX_RANGE_DAYS: i64 = 3660;

/// The years a date may fall in: what telemetry can hold, with room for
/// date arithmetic on either side (chrono's own range ends at ±262,143).
const YEARS: std::ops::RangeInclusive<i32> = 2000..=9999;

fn day(value: Option<&str>, default: NaiveDate, name: &str) -> Result<NaiveDate, ApiError> {
    use chrono::Datelike;
    let refused = || {
        ApiError::BadRequest(format!(
            "`{name}` must be a date as YYYY-MM-DD between {}-01-01 and {}-12-31",
            YEARS.start(),
            YEARS.end()
        ))
    };
    match value {
        None | Some("") => Ok(default),
        Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .filter(|d| YEARS.contains(&d.year()))
            .ok_or_else(refused),
    }
}

impl Range {
    /// The days `from..=to` asked for: the last 30 days by default, at
    /// most ten years, `from` not after `to`.
    pub(crate) fn days(&self) -> Result<(NaiveDate, NaiveDate), ApiError> {
        let today = chrono::Utc::now().date_naive();
        let to = day(self.to.as_deref(), today, "to")?;
        let from = day(
            self.from.as_deref(),
            to.checked_sub_signed(TimeDelta::days(29)).unwrap_or(to),
            "from",
        )?;
        if from > to {
            return Err(ApiError::BadRequest("`from` is after `to`".into()));
        }
        if (to - from).num_days() > MAX_RANGE_DAYS {
            return Err(ApiError::BadRequest(
                "choose a range of at most ten years".into(),
            ));
        }
        Ok((from, to))
    }
}

/// `GET /v1/admin/stats?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: the last 30 days).
pub(crate) async fn stats(
    _: Admin,
    State(app): State<AppState>,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    let (from, to) = range.days()?;
    Ok(axum::Json(app.store.stats(from, to).await?).into_response())
}

/// `?from=&to=` with the chart filters and `format=json|csv`.
#[derive(Debug, Deserialize)]
pub(crate) struct ChartQuery {
    #[serde(flatten)]
    range: Range,
    #[serde(flatten)]
    filters: FilterQuery,
    format: Option<String>,
}

/// The chart filters in a query string: one optional value per dimension.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct FilterQuery {
    pub(crate) os: Option<String>,
    pub(crate) app_version: Option<String>,
    pub(crate) datasource_type: Option<String>,
    pub(crate) ci: Option<String>,
    pub(crate) country: Option<String>,
}

impl Expected for ChartQuery {
    const EXPECTED: &'static str = "?from=YYYY-MM-DD&to=YYYY-MM-DD&os=&app_version=&datasource_type=&ci=ci|interactive&country=&format=json|csv";
}

/// Longest filter value (the longest stored value of any dimension).
pub(crate) const MAX_FILTER_CHARS: usize = 128;

impl FilterQuery {
    /// The filters, each checked: an empty value means none; `ci` is
    /// `ci` or `interactive`.
    pub(crate) fn filters(&self) -> Result<Filters, ApiError> {
        let values = [
            &self.os,
            &self.app_version,
            &self.datasource_type,
            &self.ci,
            &self.country,
        ];
        let mut out: [Option<String>; 5] = Default::default();
        for (i, v) in values.into_iter().enumerate() {
            let name = DIMENSIONS[i];
            match v.as_deref() {
                None | Some("") => {}
                Some(v)
                    if v.chars().count() > MAX_FILTER_CHARS || v.chars().any(char::is_control) =>
                {
                    return Err(ApiError::BadRequest(format!(
                        "`{name}` must be at most {MAX_FILTER_CHARS} printable characters"
                    )));
                }
                Some(v) if name == "ci" && v != CI && v != INTERACTIVE => {
                    return Err(ApiError::BadRequest(format!(
                        "`ci` must be {CI} or {INTERACTIVE}"
                    )));
                }
                Some(v) => out[i] = Some(v.to_string()),
            }
        }
        Ok(Filters(out))
    }
}

/// `GET /v1/admin/charts`: the charts' names and titles.
pub(crate) async fn charts(_: Admin) -> Response {
    let list: Vec<serde_json::Value> = CHARTS
        .iter()
        .map(|(name, title)| serde_json::json!({"name": name, "title": title}))
        .collect();
    axum::Json(serde_json::json!({ "charts": list })).into_response()
}

/// `GET /v1/admin/charts/{name}`: one chart's numbers as JSON or CSV.
pub(crate) async fn chart(
    _: Admin,
    State(app): State<AppState>,
    PathText(name): PathText,
    Query(q): Query<ChartQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = q.range.days()?;
    let filters = q.filters.filters()?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::BadRequest("format must be json or csv".into())),
    };
    let Some(chart) = app.store.chart(&name, from, to, &filters).await? else {
        return Err(ApiError::BadRequest(
            "no chart of that name (GET /v1/admin/charts lists them)".into(),
        ));
    };
    if !csv {
        return Ok(axum::Json(chart).into_response());
    }
    let disposition = format!("attachment; filename=\"{}_{from}_{to}.csv\"", chart.name);
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        chart.to_csv(),
    )
        .into_response())
}

fn user_id(PathText(raw): PathText) -> Result<UserId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest("a user id is 32 lowercase hex digits".into()))
}

/// `GET /v1/admin/users/{user_id}`: everything stored about the user.
pub(crate) async fn user(
    _: Admin,
    State(app): State<AppState>,
    raw: PathText,
) -> Result<Response, ApiError> {
    let id = user_id(raw)?;
    match app.store.user_report(id.as_str()).await? {
        Some(report) => Ok(axum::Json(report).into_response()),
        None => Err(ApiError::NotFound),
    }
}

/// `DELETE /v1/admin/users/{user_id}`.
pub(crate) async fn delete_user(
    _: Admin,
    State(app): State<AppState>,
    raw: PathText,
) -> Result<Response, ApiError> {
    let id = user_id(raw)?;
    app.delete_user(id.as_str()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `?after=SEQ&limit=N&format=json|csv`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ChainQuery {
    after: Option<String>,
    limit: Option<String>,
    format: Option<String>,
}

impl ChainQuery {
    /// `after` (0 to 18 digits) and `limit` (1 to 10,000), read strictly.
    fn page(&self) -> Result<(u64, usize), ApiError> {
        use crate::storage::consent_chain::PAGE;
        let digits = |s: &str, most: usize| {
            !s.is_empty() && s.len() <= most && s.bytes().all(|b| b.is_ascii_digit())
        };
        let after = match self.after.as_deref() {
            None => 0,
            Some(s) if digits(s, 18) => s.parse().unwrap_or(0),
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "after must be a record's number".into(),
                ));
            }
        };
        let limit = match self.limit.as_deref() {
            None => PAGE,
            Some(s) if digits(s, 5) => s.parse().unwrap_or(0),
            Some(_) => 0,
        };
        if !(1..=PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!("limit must be 1 to {PAGE}")));
        }
        Ok((after, limit))
    }
}

impl Expected for ChainQuery {
    const EXPECTED: &'static str = "?after=<seq>&limit=<at most 10000>&format=json|csv";
}

/// `GET /v1/admin/consent-records`: the consent chain, page by page, as
/// JSON (with the anchor the first record links to) or CSV.
pub(crate) async fn consent_records(
    _: Admin,
    State(app): State<AppState>,
    Query(q): Query<ChainQuery>,
) -> Result<Response, ApiError> {
    let (after, limit) = q.page()?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::BadRequest("format must be json or csv".into())),
    };
    let page = app.store.consent_records(after, limit).await?;
    let next_after = page.links.last().map(|l| l.entry.seq);
    if !csv {
        return Ok(axum::Json(serde_json::json!({
            "anchor": {"seq": page.anchor.0, "hash": page.anchor.1},
            "records": page.links,
            "next_after": next_after,
        }))
        .into_response());
    }
    let mut text = String::from(
        "seq,consent_id,decided_at,kind,policy_version,banner_hash,gpc,source,expires_at,prev_hash,hash\n",
    );
    for l in &page.links {
        let e = &l.entry;
        // Every field is an id, a number, a hash or a fixed word: no quoting needed.
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            e.seq,
            e.consent_id,
            e.decided_at,
            e.kind.as_str(),
            e.policy_version,
            e.banner_hash,
            e.gpc,
            e.source,
            e.expires_at,
            l.prev_hash,
            l.hash
        ));
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        text,
    )
        .into_response())
}
