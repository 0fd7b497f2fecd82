//! The HTTP edge's errors: one enum, grouped by status, each answered as
//! `{"error": "...", "reason": "..."}`. Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    /// An owner's request without a proof.
    #[error("no proof of ownership")]
    ProofMissing,
    /// An owner's request whose proof does not count: a wrong signature, a
    /// time out of the window, or a user id with no bound key (one answer
    /// for all, so it says nothing of what is stored).
    #[error("proof of ownership refused")]
    NotProved,
    #[error("not found")]
    NotFound,
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request timeout")]
    Timeout,
    #[error("payload too large: {0}")]
    TooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("storage unavailable")]
    Unavailable { retry_after_secs: u64 },
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, Option<u64>) {
        match self {
            ApiError::BadRequest(r) => (StatusCode::BAD_REQUEST, "bad_request", r.clone(), None),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <admin token>".into(),
                None,
            ),
            ApiError::ProofMissing => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: PipeRider-Owner at=<seconds>, signature=<hex> (see docs/api.md)".into(),
                None,
            ),
            ApiError::NotProved => (
                StatusCode::FORBIDDEN,
                "not_proved",
                "the proof is not one of this user id's owner: signed by the key bound to the id, within 15 minutes of the server's clock".into(),
                None,
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "nothing is stored under that id".into(),
                None,
            ),
            ApiError::NoRoute => (
                StatusCode::NOT_FOUND,
                "not_found",
                "there is no such route; see /openapi.json".into(),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see /openapi.json".into(),
                None,
            ),
            ApiError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request took too long; nothing more was done".into(),
                None,
            ),
            ApiError::TooLarge(r) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", r.clone(), None),
            ApiError::UnsupportedMediaType(r) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                r.clone(),
                None,
            ),
            ApiError::TooManyRequests { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "slow down and retry after the Retry-After delay".into(),
                Some(*retry_after_secs),
            ),
            ApiError::Unavailable { retry_after_secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage is unavailable; nothing was stored; retry after the Retry-After delay"
                    .into(),
                Some(*retry_after_secs),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, reason, retry_after) = self.parts();
        let mut response = (
            status,
            axum::Json(json!({ "error": error, "reason": reason })),
        )
            .into_response();
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<crate::storage::StorageError> for ApiError {
    /// A storage failure: logged here (its text names no client input sent
    /// back), answered as 503 with nothing stored; data the database refused
    /// (the request failed alone, see `storage::group`) is a 400.
    fn from(e: crate::storage::StorageError) -> Self {
        if e.is_data() {
            tracing::warn!(error = %e, "the database refused a request's data");
            return ApiError::BadRequest(
                "the database refused this request's events; nothing of it was stored".into(),
            );
        }
        tracing::error!(error = %e, "storage error");
        ApiError::Unavailable {
            retry_after_secs: 5,
        }
    }
}
