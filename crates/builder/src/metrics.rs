//! Prometheus metrics (`GET /metrics`, OpenMetrics text via `prometheus-client`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of events received.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// The event's action (`push`, `pull`, …), or `other` for unexpected values.
    pub action: String,
}

/// Label of events ignored.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`crate::filters::IgnoreReason::label`].
    pub reason: String,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Events received, by action.
    pub events_received: Family<ActionLabel, Counter>,
    /// Events not queued, by reason.
    pub events_ignored: Family<ReasonLabel, Counter>,
    /// Jobs queued (new or requeued), from events, the API or backfill.
    pub jobs_enqueued: Counter,
    /// Jobs waiting for a worker (gauge).
    pub jobs_queued: Gauge,
    /// Jobs waiting for a retry (gauge).
    pub jobs_retry_wait: Gauge,
    /// Jobs running (gauge).
    pub jobs_running: Gauge,
    /// Jobs done (indexes published).
    pub jobs_done: Counter,
    /// Jobs skipped (nothing to do).
    pub jobs_skipped: Counter,
    /// Jobs failed for good (dead letter).
    pub jobs_failed: Counter,
    /// Attempts that ended in a transient error and were scheduled again.
    pub retries: Counter,
    /// Seconds spent streaming and indexing layers per published job.
    pub build_seconds: Histogram,
    /// Layer bytes read from the registry.
    pub layer_bytes_read: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `soci_builder` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("soci_builder");
        let m = Metrics {
            events_received: Family::default(),
            events_ignored: Family::default(),
            jobs_enqueued: Counter::default(),
            jobs_queued: Gauge::default(),
            jobs_retry_wait: Gauge::default(),
            jobs_running: Gauge::default(),
            jobs_done: Counter::default(),
            jobs_skipped: Counter::default(),
            jobs_failed: Counter::default(),
            retries: Counter::default(),
            // 0.25 s … ~17 min: a small image takes well under a second, a large one minutes.
            build_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 13)),
            layer_bytes_read: Counter::default(),
            registry: Registry::default(),
        };
        // One row per metric (field: name, help), so adding a metric is one line.
        macro_rules! register {
            ($($field:ident: $name:literal, $help:literal;)*) => {
                $(registry.register($name, $help, m.$field.clone());)*
            };
        }
        register! {
            events_received: "events_received", "Registry notification events received, by action";
            events_ignored: "events_ignored", "Events not queued, by reason";
            jobs_enqueued: "jobs_enqueued", "Jobs queued (events, API, backfill)";
            jobs_queued: "jobs_queued", "Jobs waiting for a worker";
            jobs_retry_wait: "jobs_retry_wait", "Jobs waiting to be retried";
            jobs_running: "jobs_running", "Jobs running";
            jobs_done: "jobs_done", "Jobs that published indexes";
            jobs_skipped: "jobs_skipped", "Jobs with nothing to do (already indexed, own artifact, too small)";
            jobs_failed: "jobs_failed", "Jobs failed for good (dead letter)";
            retries: "job_retries", "Job attempts that failed transiently and were scheduled again";
            build_seconds: "index_build_seconds", "Seconds spent streaming and indexing the layers of one job";
            layer_bytes_read: "layer_bytes_read", "Layer bytes read from the registry";
        }
        Metrics { registry, ..m }
    }

    /// Counts an event received.
    pub fn event_received(&self, action: &str) {
        // Bounded label values: a hostile body cannot create series at will.
        let action = match action {
            "push" | "pull" | "mount" | "delete" => action,
            _ => "other",
        };
        self.events_received
            .get_or_create(&ActionLabel {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Counts an event ignored.
    pub fn event_ignored(&self, reason: &str) {
        self.events_ignored
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Sets the gauges of waiting and running jobs.
    pub fn set_gauges(&self, queued: usize, retry_wait: usize, running: usize) {
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.jobs_queued.set(g(queued));
        self.jobs_retry_wait.set(g(retry_wait));
        self.jobs_running.set(g(running));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::new();
        m.event_received("push");
        m.event_received("<script>");
        m.event_ignored("not_push");
        m.build_seconds.observe(1.5);
        m.layer_bytes_read.inc_by(42);
        m.set_gauges(3, 0, 1);
        let text = m.encode();
        for needle in [
            "soci_builder_events_received_total{action=\"push\"} 1",
            "soci_builder_events_received_total{action=\"other\"} 1",
            "soci_builder_events_ignored_total{reason=\"not_push\"} 1",
            "soci_builder_jobs_queued 3",
            "soci_builder_jobs_running 1",
            "soci_builder_jobs_done_total 0",
            "soci_builder_index_build_seconds_count 1",
            "soci_builder_layer_bytes_read_total 42",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
