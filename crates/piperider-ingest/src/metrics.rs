//! Prometheus metrics, one registry per service. Labels carry outcomes,
//! reasons and routes, never an address or an id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EventLabels {
    pub(crate) outcome: String,
    pub(crate) reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    pub(crate) status: String,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) events: Family<EventLabels, Counter>,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) request_seconds: Family<RequestLabels, Histogram>,
    pub(crate) commit_events: Histogram,
    pub(crate) commit_requests: Histogram,
    pub(crate) commit_seconds: Histogram,
    /// 1 from a failed group commit until a commit (or a readiness probe) succeeds.
    pub(crate) storage_failing: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
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
        let commit_events = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "commit_events",
            "Events per group commit",
            commit_events.clone(),
        );
        let commit_requests = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "commit_requests",
            "Requests per group commit",
            commit_requests.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "commit_duration_seconds",
            "Time of one group commit",
            commit_seconds.clone(),
        );
        let storage_failing = Gauge::default();
        registry.register(
            "storage_failing",
            "1 while storage is failing: the last group commit failed and no later commit or readiness probe succeeded",
            storage_failing.clone(),
        );
        Metrics {
            registry,
            events,
            requests,
            request_seconds,
            commit_events,
            commit_requests,
            commit_seconds,
            storage_failing,
        }
    }
}

impl Metrics {
    pub(crate) fn count_event(&self, outcome: &str, reason: &str) {
        self.events
            .get_or_create(&EventLabels {
                outcome: outcome.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
