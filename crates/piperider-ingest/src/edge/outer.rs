//! The layer around every route: the body limit for axum's own
//! extractors, admission on the client routes ([`super::admission`]), the
//! request's deadline, and its count and time in the metrics, with its log
//! line. One layer, not four: each layer the router or a route adds wraps
//! the route in a boxed service that is cloned, and whose future is boxed,
//! on every request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, ready};

use crate::error::ApiError;
use crate::metrics::route_label;
use crate::state::AppState;

/// Bodies axum's own extractors read at most (the crate's extractors cap
/// what they read themselves: [`super::body`]).
const BODY_LIMIT: usize = super::body::MAX_BODY_BYTES;

#[derive(Debug, Clone)]
pub(crate) struct OuterLayer {
    pub(crate) app: AppState,
    /// A request not answered within this is answered 408 ([`ApiError::Timeout`]).
    pub(crate) timeout: Duration,
    /// The client routes (template, method; HEAD beside each GET): each
    /// request to one is admitted first.
    pub(crate) clients: Arc<[(&'static str, Method)]>,
}

impl<S> tower::Layer<S> for OuterLayer {
    type Service = Outer<S>;
    fn layer(&self, inner: S) -> Outer<S> {
        Outer {
            inner: tower::Layer::layer(&DefaultBodyLimit::max(BODY_LIMIT), inner),
            app: self.app.clone(),
            timeout: self.timeout,
            clients: self.clients.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Outer<S> {
    inner: <DefaultBodyLimit as tower::Layer<S>>::Service,
    app: AppState,
    timeout: Duration,
    clients: Arc<[(&'static str, Method)]>,
}

impl<S> tower::Service<Request> for Outer<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Never the address, the query string or a path parameter: the
    /// route's template, the method and the status.
    fn call(&mut self, mut request: Request) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| route_label(p.as_str()));
        let method = request.method().clone();
        let started = Instant::now();
        let client = self
            .clients
            .iter()
            .any(|(path, m)| *path == route && *m == method);
        let admitted = if client {
            super::admission::admit(&self.app, &request).map(|c| {
                request.extensions_mut().insert(c);
            })
        } else {
            Ok(())
        };
        let response = match admitted {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refused) => Either::Left(ready(Ok(refused.into_response()))),
        };
        let (app, timeout) = (self.app.clone(), self.timeout);
        Box::pin(async move {
            let response = match tokio::time::timeout(timeout, response).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                // The handler's future is dropped: nothing more is done.
                Err(_) => ApiError::Timeout.into_response(),
            };
            let took = started.elapsed();
            let status = response.status().as_u16();
            app.metrics.observe_request(route, status, took);
            tracing::debug!(%method, %route, status, micros = took.as_micros() as u64, "request");
            Ok(response)
        })
    }
}
