//! Prometheus metrics, one registry per service. Labels carry outcomes,
//! reasons and routes, never an address or an id.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EventLabels {
    pub(crate) outcome: &'static str,
    pub(crate) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: &'static str,
    pub(crate) status: u16,
}

/// Route templates seen so far; a template is leaked once, so labels cost
/// no allocation per request. The router's templates are a fixed few.
static ROUTES: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());

/// The `'static` copy of a route template.
pub(crate) fn route_label(template: &str) -> &'static str {
    if let Some(r) = ROUTES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|r| **r == template)
    {
        return r;
    }
    let mut routes = ROUTES.write().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = routes.iter().find(|r| **r == template) {
        return r;
    }
    let r: &'static str = Box::leak(template.to_owned().into_boxed_str());
    routes.push(r);
    r
}

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) events: Family<EventLabels, Counter>,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) request_seconds: Family<RequestLabels, Histogram>,
}

impl Metrics {
    /// The service's registry, with the storage writers' figures in it.
    pub(crate) fn new(commits: &crate::storage::CommitMetrics) -> Self {
        let mut registry = Registry::with_prefix("piperider_ingest");
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events received, by outcome and reason",
            events.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests, by route and status",
            requests.clone(),
        );
        let request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "HTTP request latency",
            request_seconds.clone(),
        );
        commits.register(&mut registry);
        Metrics {
            registry,
            events,
            requests,
            request_seconds,
        }
    }
}

impl Metrics {
    pub(crate) fn count_event(&self, outcome: &'static str, reason: &'static str) {
        self.events
            .get_or_create(&EventLabels { outcome, reason })
            .inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts and times every request by route template and status, and logs
/// it. Never the address, the query string or a path parameter. A plain
/// tower layer: it costs no allocation per request beyond its future.
#[derive(Debug, Clone)]
pub(crate) struct ObserveLayer(pub(crate) crate::state::AppState);

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            app: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    app: crate::state::AppState,
}

impl<S> tower::Service<Request> for Observe<S>
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

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| route_label(p.as_str()));
        let method = request.method().clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        let app = self.app.clone();
        Box::pin(async move {
            let metrics = &app.metrics;
            let response = response.await?;
            let took = started.elapsed();
            let labels = RequestLabels {
                route,
                status: response.status().as_u16(),
            };
            metrics.requests.get_or_create(&labels).inc();
            metrics
                .request_seconds
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
            tracing::debug!(%method, %route, status = response.status().as_u16(), micros = took.as_micros() as u64, "request");
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_interned_once_per_template() {
        let a = route_label("/v1/admin/users/{user_id}");
        let b = route_label(&String::from("/v1/admin/users/{user_id}"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "/v1/admin/users/{user_id}");
    }
}
