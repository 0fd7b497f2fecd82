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

/// A gzip body being decompressed: the decoder owns the body, so the work
/// can stop at one size and go on elsewhere (on the blocking pool) from
/// where it stopped.
struct Inflate {
    decoder: flate2::read::GzDecoder<std::io::Cursor<Bytes>>,
    out: Vec<u8>,
    /// The size the gzip trailer states (mod 2^32; a false one only costs
    /// the buffer's doubling).
    said: usize,
}

impl Inflate {
    fn new(raw: Bytes) -> Self {
        let said = raw
            .len()
            .checked_sub(4)
            .and_then(|i| raw.get(i..))
            .and_then(|t| <[u8; 4]>::try_from(t).ok())
            .map_or(0, |t| u32::from_le_bytes(t) as usize);
        Inflate {
            decoder: flate2::read::GzDecoder::new(std::io::Cursor::new(raw)),
            out: Vec::new(),
            said,
        }
    }

    /// Decompresses on until the end (`Ok(true)`) or until more than `cap`
    /// bytes are out (`Ok(false)`; a gzip bomb stops there).
    fn upto(&mut self, cap: usize) -> Result<bool, ApiError> {
        // Room for the stated size at once, so the buffer is not doubled
        // past what it holds.
        let want = self.said.min(cap) + 1;
        self.out.reserve(want.saturating_sub(self.out.len()));
        let room = (cap + 1).saturating_sub(self.out.len()) as u64;
        (&mut self.decoder)
            .take(room)
            .read_to_end(&mut self.out)
            .map_err(|_| ApiError::BadRequest("the body is not valid gzip".into()))?;
        Ok(self.out.len() <= cap)
    }

    fn too_large() -> ApiError {
        ApiError::TooLarge(format!(
            "the body decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"
        ))
    }
}

/// Decompresses `raw`: a small body at once; a larger one goes on, from
/// where it stopped, on the heavy path, whose permit it hands back for the
/// parse that follows; one over the cap is refused.
async fn gunzip(raw: Bytes) -> Result<(Bytes, Option<Heavy>), ApiError> {
    let mut inflate = Inflate::new(raw);
    if inflate.upto(HEAVY_BYTES)? {
        return Ok((inflate.out.into(), None));
    }
    let heavy = Heavy::acquire().await?;
    let (done, heavy) = heavy
        .run(move || {
            inflate
                .upto(MAX_DECOMPRESSED_BYTES)
                .map(|all| (all, inflate.out))
        })
        .await?;
    match done? {
        (true, out) => Ok((out.into(), Some(heavy))),
        (false, _) => Err(Inflate::too_large()),
    }
}

/// The gzip body path as one call, without the permits: what [`gunzip`]
/// decompresses and refuses, for the coverage-guided fuzz target
/// (`fuzz/fuzz_targets/gzip_body.rs`) and the tests.
#[cfg(any(test, feature = "fuzzing"))]
pub fn gunzip_now(raw: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut inflate = Inflate::new(Bytes::copy_from_slice(raw));
    if inflate.upto(HEAVY_BYTES)? || inflate.upto(MAX_DECOMPRESSED_BYTES)? {
        Ok(inflate.out)
    } else {
        Err(Inflate::too_large())
    }
}

/// Bodies larger than this (decompressed) are decompressed and parsed on
/// the heavy path.
pub(crate) const HEAVY_BYTES: usize = 64 * 1024;

/// Permits of the heavy path: one per core, at least two.
static HEAVY: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        std::sync::Arc::new(tokio::sync::Semaphore::new(cores.max(2)))
    });

/// A permit of the heavy path: CPU-heavy work on a large body
/// (decompressing, parsing) runs on the blocking pool, a few bodies at a
/// time, each holding its permit from decompression to the end of its
/// parse. A flood of the largest bodies the limits allow then holds
/// bounded memory (a permit's 8 MiB decompressed and its parse each; the
/// others wait as at most 1 MiB sent) and leaves the async workers to
/// ordinary requests, which never take this path.
#[derive(Debug)]
pub(crate) struct Heavy {
    /// Held for its drop, which gives the permit back.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Heavy {
    fn busy() -> ApiError {
        ApiError::Unavailable {
            retry_after_secs: 1,
        }
    }

    pub(crate) async fn acquire() -> Result<Heavy, ApiError> {
        HEAVY
            .clone()
            .acquire_owned()
            .await
            .map(|permit| Heavy { _permit: permit })
            .map_err(|_| Heavy::busy())
    }

    /// Runs `work` on the blocking pool under this permit; hands the permit back.
    pub(crate) async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(T, Heavy), ApiError> {
        let out = tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| Heavy::busy())?;
        Ok((out, self))
    }
}

#[derive(Debug)]
pub(crate) struct JsonBody(pub(crate) Bytes, pub(crate) Option<Heavy>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        let gzip = json_encoding(request.headers())?;
        let raw = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| too_large())?;
        let (bytes, heavy) = if gzip {
            gunzip(raw).await?
        } else {
            (raw, None)
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest("the body is empty".into()));
        }
        Ok(JsonBody(bytes, heavy))
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
        let JsonBody(bytes, _) = JsonBody::from_request(request, state).await?;
        piperider_event::read_json(&bytes)
            .map(Json)
            .ok_or_else(|| ApiError::BadRequest(format!("expected {}", T::EXPECTED)))
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Bytes that do not repeat within the heavy threshold.
    fn varied(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn a_body_decompresses_whole_across_the_heavy_threshold() {
        for len in [
            0,
            1,
            HEAVY_BYTES - 1,
            HEAVY_BYTES,
            HEAVY_BYTES + 1,
            3 * HEAVY_BYTES + 7,
            MAX_DECOMPRESSED_BYTES,
        ] {
            let body = varied(len);
            assert_eq!(gunzip_now(&gzip(&body)).unwrap(), body, "{len} bytes");
        }
    }

    #[test]
    fn a_body_over_the_cap_or_not_gzip_is_refused() {
        let over = gzip(&vec![b' '; MAX_DECOMPRESSED_BYTES + 1]);
        assert!(matches!(gunzip_now(&over), Err(ApiError::TooLarge(_))));
        // A trailer that lies about the size changes nothing.
        let mut lying = gzip(&varied(HEAVY_BYTES * 2));
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(gunzip_now(&lying), Err(ApiError::BadRequest(_))));
        let mut truncated = gzip(&varied(HEAVY_BYTES * 2));
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            gunzip_now(&truncated),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            gunzip_now(b"not gzip"),
            Err(ApiError::BadRequest(_))
        ));
    }
}
