//! Prometheus metrics: what operators watch. Built once per process and passed to whoever counts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::retry::Next;
use crate::store::AttemptRecord;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// The service's counters and histograms.
pub struct Metrics {
    registry: Registry,
    events: Family<TypeLabel, Counter>,
    attempts: Family<OutcomeLabel, Counter>,
    finished: Family<StatusLabel, Counter>,
    attempt_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events = Family::<TypeLabel, Counter>::default();
        let attempts = Family::<OutcomeLabel, Counter>::default();
        let finished = Family::<StatusLabel, Counter>::default();
        let attempt_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("tidings_events", "Events created, by type", events.clone());
        registry.register(
            "tidings_attempts",
            "Delivery attempts, by outcome (success or error kind)",
            attempts.clone(),
        );
        registry.register("tidings_deliveries_finished", "Deliveries finished, by final status", finished.clone());
        registry.register("tidings_attempt_duration_seconds", "Time one attempt took", attempt_seconds.clone());
        Self { registry, events, attempts, finished, attempt_seconds }
    }

    /// Counts a new event.
    pub fn event_created(&self, event_type: &str) {
        self.events.get_or_create(&TypeLabel { r#type: event_type.to_owned() }).inc();
    }

    /// Counts a recorded attempt and, when it finished its delivery, the final status.
    pub fn attempt_recorded(&self, attempt: &AttemptRecord, next: Next) {
        let outcome = attempt.error.clone().unwrap_or_else(|| "success".to_owned());
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
        self.attempt_seconds.observe(attempt.duration_ms as f64 / 1000.0);
        let status = match next {
            Next::Succeeded => "succeeded",
            Next::Undeliverable => "undeliverable",
            Next::RetryAt(_) => return,
        };
        self.finished.get_or_create(&StatusLabel { status: status.to_owned() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
