//! The admin API: `Authorization: Bearer <admin token>`, compared in
//! constant time. Without a configured token every admin request is 401.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, TimeDelta};
use piperider_event::UserId;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// Proof that the request carried the admin token.
#[derive(Debug)]
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = app.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(ApiError::Unauthorized);
        };
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Range {
    from: Option<String>,
    to: Option<String>,
}

fn day(value: Option<&str>, default: NaiveDate, name: &str) -> Result<NaiveDate, ApiError> {
    match value {
        None | Some("") => Ok(default),
        Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| ApiError::BadRequest(format!("`{name}` must be a date as YYYY-MM-DD"))),
    }
}

/// `GET /v1/admin/stats?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: the last 30 days).
pub(crate) async fn stats(
    _: Admin,
    State(app): State<AppState>,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    let (from, to) = date_range(range.from.as_deref(), range.to.as_deref())?;
    let stats = load_stats(&app, from, to).await?;
    Ok(axum::Json(stats).into_response())
}

/// The days `from..=to` a request asks for: the last 30 days by default, at
/// most ten years, `from` not after `to`.
pub(crate) fn date_range(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let today = chrono::Utc::now().date_naive();
    let to = day(to, today, "to")?;
    let from = day(from, to - TimeDelta::days(29), "from")?;
    if from > to {
        return Err(ApiError::BadRequest("`from` is after `to`".into()));
    }
    if (to - from).num_days() > 3660 {
        return Err(ApiError::BadRequest(
            "choose a range of at most ten years".into(),
        ));
    }
    Ok((from, to))
}

/// The stats of the days `from..=to`.
pub(crate) async fn load_stats(
    app: &AppState,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<crate::store::Stats, ApiError> {
    let ms = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or(0)
    };
    app.rollups_current().await?;
    app.store
        .stats(
            &from.to_string(),
            &to.to_string(),
            ms(from),
            ms(to + TimeDelta::days(1)),
        )
        .await
        .map_err(|e| app.storage_error(e))
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest("a user id is 32 lowercase hex digits".into()))
}

/// `GET /v1/admin/users/{user_id}`: everything stored about the user.
pub(crate) async fn user(
    _: Admin,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    app.rollups_current().await?;
    match app
        .store
        .user_report(id.as_str())
        .await
        .map_err(|e| app.storage_error(e))?
    {
        Some(report) => Ok(axum::Json(report).into_response()),
        None => Err(ApiError::NotFound),
    }
}

/// `DELETE /v1/admin/users/{user_id}`.
pub(crate) async fn delete_user(
    _: Admin,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = user_id(&raw)?;
    app.delete_user(id.as_str()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
