//! Who may use the admin API and the dashboard: the holder of the admin
//! token, shown either as `Authorization: Bearer <token>` or as a dashboard
//! session made by logging in with it. One constant-time comparison serves
//! both; without a configured token nobody is admitted. Failed attempts
//! are counted per address, and past the limit refused before comparing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

use super::admission::{Client, rate_key};
use crate::error::ApiError;
use crate::state::AppState;

/// The dashboard session's cookie over plain http.
pub(crate) const SESSION_COOKIE: &str = "piperider_admin";
/// The same over https: the `__Host-` prefix makes browsers refuse it
/// unless it is `Secure`, for `/`, and set by this host itself.
pub(crate) const SECURE_SESSION_COOKIE: &str = "__Host-piperider_admin";

/// The `Set-Cookie` of a dashboard session (`id` empty and `max_age` 0 to
/// end it): `Secure` with the `__Host-` prefix when `secure`.
pub(crate) fn session_cookie(id: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let attributes = "HttpOnly; SameSite=Strict";
    let text = if secure {
        format!("{SECURE_SESSION_COOKIE}={id}; Path=/; Secure; {attributes}; Max-Age={max_age}")
    } else {
        format!("{SESSION_COOKIE}={id}; Path=/admin; {attributes}; Max-Age={max_age}")
    };
    HeaderValue::from_str(&text).ok()
}

/// Failed admin logins and bearer attempts from one address (an IPv6
/// /64): after this many in [`FAILURE_WINDOW`], every attempt from it is
/// refused with 429 before the token is compared.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(600);

/// Failed attempts per address, in memory only (never stored or logged).
#[derive(Debug, Default)]
pub(crate) struct Failures(Mutex<HashMap<IpAddr, (u32, Instant)>>);

impl Failures {
    /// `Err` (429 with the wait) while `ip` is over its failures.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&rate_key(ip)) {
            Some((n, since)) if *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW => {
                Err(ApiError::TooManyRequests {
                    retry_after_secs: (FAILURE_WINDOW - since.elapsed()).as_secs() + 1,
                })
            }
            _ => Ok(()),
        }
    }

    /// One more failed attempt from `ip`.
    pub(crate) fn note(&self, ip: IpAddr) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(rate_key(ip)).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets windows that have ended.
    pub(crate) fn shrink(&self) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
    }
}

/// The client of a request under the one proxy-trust rule: from the
/// admission layer where it ran, else worked out here.
pub(crate) async fn client_of(parts: &mut Parts, app: &AppState) -> Client {
    if let Some(client) = parts.extensions.get::<Client>() {
        return *client;
    }
    let peer = ConnectInfo::<SocketAddr>::from_request_parts(parts, app)
        .await
        .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0);
    Client::of(peer, &parts.headers, &app.config.trusted_proxies)
}
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

/// The dashboard session id a request carries, if any (either cookie).
pub(crate) fn session_of(headers: &HeaderMap) -> Option<&str> {
    let values = || {
        headers
            .get_all(header::COOKIE)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    };
    piperider_consent::cookie_value(values(), SECURE_SESSION_COOKIE)
        .or_else(|| piperider_consent::cookie_value(values(), SESSION_COOKIE))
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
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let admitted = match bearer {
            Some(token) => {
                let ip = client_of(parts, app).await.ip;
                app.admin_failures.check(ip)?;
                let admitted = app.is_admin_token(&token);
                if !admitted {
                    app.admin_failures.note(ip);
                }
                admitted
            }
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
