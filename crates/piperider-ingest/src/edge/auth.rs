//! Who may use the admin API and the dashboard: the holder of the admin
//! token, shown either as `Authorization: Bearer <token>` or as a dashboard
//! session made by logging in with it. One constant-time comparison serves
//! both; without a configured token nobody is admitted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// The dashboard session's cookie.
pub(crate) const SESSION_COOKIE: &str = "piperider_admin";
/// How long a dashboard session lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Dashboard sessions, in memory: a restart logs everyone out.
#[derive(Debug, Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Instant>>);

impl Sessions {
    /// A new session's id (256 random bits).
    pub(crate) fn create(&self) -> String {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        if let Ok(mut map) = self.0.lock() {
            map.retain(|_, t| t.elapsed() < SESSION_TTL);
            map.insert(id.clone(), Instant::now());
        }
        id
    }

    fn valid(&self, id: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|map| map.get(id).is_some_and(|t| t.elapsed() < SESSION_TTL))
    }

    pub(crate) fn end(&self, id: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(id);
        }
    }
}

/// The dashboard session id a request carries, if any.
pub(crate) fn session_of(headers: &HeaderMap) -> Option<&str> {
    let values = headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok());
    piperider_consent::cookie_value(values, SESSION_COOKIE)
}

impl AppState {
    /// Whether `given` is the admin token: compared in constant time,
    /// surrounding blanks ignored; never true without a configured token.
    pub(crate) fn is_admin_token(&self, given: &str) -> bool {
        let expected = self.config.admin_token.as_deref().unwrap_or("");
        !expected.is_empty() && bool::from(given.trim().as_bytes().ct_eq(expected.as_bytes()))
    }
}

/// Proof that the request came from an admin: the bearer token, or a live
/// dashboard session.
#[derive(Debug)]
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let admitted = match bearer {
            Some(token) => app.is_admin_token(token),
            None => session_of(&parts.headers).is_some_and(|id| app.admin_sessions.valid(id)),
        };
        if admitted {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

impl OptionalFromRequestParts<AppState> for Admin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Admin as FromRequestParts<AppState>>::from_request_parts(parts, app)
                .await
                .ok(),
        )
    }
}
