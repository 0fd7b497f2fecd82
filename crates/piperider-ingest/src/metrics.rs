//! Prometheus metrics, one registry per service. Labels carry outcomes,
//! reasons and routes, never an address or an id.

use std::time::Duration;

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

    /// One answered request: counted and timed by route template and status.
    pub(crate) fn observe_request(&self, route: &'static str, status: u16, took: Duration) {
        let labels = RequestLabels { route, status };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
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
