//! The extractors every handler takes its input through, each refusing in
//! the one JSON error shape ([`ApiError`]) with a reason that never repeats
//! the input: a JSON body (content type, gzip, size caps), a typed JSON
//! body, a query string, a path parameter and a form.

use std::io::Read;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body as sent (gzip or not).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest body after decompression.
pub(crate) const MAX_DECOMPRESSED_BYTES: usize = 8 * 1024 * 1024;

fn too_large() -> ApiError {
    ApiError::TooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"))
}

/// Whether the body is gzip; refuses a content type other than JSON and
/// an encoding other than gzip or none.
fn json_encoding(headers: &HeaderMap) -> Result<bool, ApiError> {
    const JSON: &str = "application/json";
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start();
    if !content_type
        .get(..JSON.len())
        .is_some_and(|t| t.eq_ignore_ascii_case(JSON))
    {
        return Err(ApiError::UnsupportedMediaType(
            "send Content-Type: application/json".into(),
        ));
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim();
    if encoding.eq_ignore_ascii_case("gzip") {
        Ok(true)
    } else if encoding.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(ApiError::UnsupportedMediaType(
            "Content-Encoding must be gzip or none".into(),
        ))
    }
}

/// Decompresses `raw`, stopping at the cap (a gzip bomb stops there).
fn gunzip(raw: &[u8]) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::BadRequest("the body is not valid gzip".into()))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the body decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"
        )));
    }
    Ok(Bytes::from(out))
}

/// A JSON request body's bytes: JSON content type required, at most
/// [`MAX_BODY_BYTES`] as sent, gzip decompressed to at most
/// [`MAX_DECOMPRESSED_BYTES`], not empty.
#[derive(Debug)]
pub(crate) struct JsonBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        let gzip = json_encoding(request.headers())?;
        let raw = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| too_large())?;
        let bytes = if gzip { gunzip(&raw)? } else { raw };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest("the body is empty".into()));
        }
        Ok(JsonBody(bytes))
    }
}

/// A JSON body read as `T`; a body that is not one answers 400 with
/// `expected`, the shape the route takes.
pub(crate) trait Expected {
    /// What the route takes, said in the 400's reason.
    const EXPECTED: &'static str;
}

/// A typed JSON body ([`JsonBody`], then `T`).
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Expected> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBody(bytes) = JsonBody::from_request(request, state).await?;
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|_| ApiError::BadRequest(format!("expected {}", T::EXPECTED)))
    }
}

/// A query string read as `T`.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Expected> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|_| ApiError::BadRequest(format!("expected a query string {}", T::EXPECTED)))
    }
}

/// A path parameter as text.
#[derive(Debug)]
pub(crate) struct PathText(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| PathText(p.0))
            .map_err(|_| ApiError::BadRequest("the path parameter is not valid text".into()))
    }
}

/// An `application/x-www-form-urlencoded` body read as `T`.
#[derive(Debug)]
pub(crate) struct Form<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Expected> FromRequest<S> for Form<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::FormRejection;
        axum::Form::<T>::from_request(request, state)
            .await
            .map(|f| Form(f.0))
            .map_err(|e| match e {
                FormRejection::InvalidFormContentType(_) => ApiError::UnsupportedMediaType(
                    "send Content-Type: application/x-www-form-urlencoded".into(),
                ),
                FormRejection::BytesRejection(_) => too_large(),
                _ => ApiError::BadRequest(format!("expected a form {}", T::EXPECTED)),
            })
    }
}
