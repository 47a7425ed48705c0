//! Counters of one lazily loaded layer, cheap to update from any thread and ready to be
//! exported (the daemon's Prometheus endpoint, `soci mount --stats`).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the span fetch latency histogram buckets, Prometheus style.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Live counters of one layer.
#[derive(Debug, Default)]
pub struct LayerMetrics {
    bytes_fetched: AtomicU64,
    spans_fetched: AtomicU64,
    fetch_requests: AtomicU64,
    fetch_errors: AtomicU64,
    verification_failures: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    fuse_ops: AtomicU64,
    bytes_served: AtomicU64,
    passthrough_opens: AtomicU64,
    backing_files: AtomicU64,
    windows_fetched: AtomicU64,
    window_bytes_fetched: AtomicU64,
    windows_made: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
}

/// A point-in-time copy of [`LayerMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Compressed bytes received from the registry (or local blob).
    pub bytes_fetched: u64,
    /// Spans fetched and verified.
    pub spans_fetched: u64,
    /// Range requests made (one request may carry several adjacent spans).
    pub fetch_requests: u64,
    /// Range requests that failed.
    pub fetch_errors: u64,
    /// Spans whose bytes did not match their digest.
    pub verification_failures: u64,
    /// Span reads served from the local cache.
    pub cache_hits: u64,
    /// Span reads that had to wait for a fetch.
    pub cache_misses: u64,
    /// FUSE operations answered.
    pub fuse_ops: u64,
    /// Uncompressed bytes handed to readers.
    pub bytes_served: u64,
    /// Opens handed to the kernel's FUSE passthrough: their reads never reach this process.
    #[serde(default)]
    pub passthrough_opens: u64,
    /// Files whose data was copied out of the span cache into a passthrough backing file.
    #[serde(default)]
    pub backing_files: u64,
    /// Checkpoint windows fetched from the full zTOC (layers served from a lean zTOC).
    #[serde(default)]
    pub windows_fetched: u64,
    /// Bytes of the full zTOC received for them (not in `bytes_fetched`, which counts the
    /// layer blob's).
    #[serde(default)]
    pub window_bytes_fetched: u64,
    /// Checkpoint windows made from the bytes of the spans before them (no fetch).
    #[serde(default)]
    pub windows_made: u64,
    /// Sum of fetch latencies in seconds.
    pub fetch_latency_seconds_sum: f64,
    /// Cumulative fetch latency histogram: counts of requests at or under each bound of
    /// [`LATENCY_BUCKETS`].
    pub fetch_latency_buckets: Vec<u64>,
}

impl LayerMetrics {
    /// Records a checkpoint window a span needed: fetched (`bytes` of the zTOC received for
    /// it), or made from local bytes.
    pub fn record_window(&self, fetched: bool, bytes: u64) {
        if fetched {
            self.windows_fetched.fetch_add(1, Relaxed);
            self.window_bytes_fetched.fetch_add(bytes, Relaxed);
        } else {
            self.windows_made.fetch_add(1, Relaxed);
        }
    }

    /// Records one range request that brought `bytes` bytes of `spans` spans in `latency`.
    pub fn record_fetch(&self, bytes: u64, spans: u64, latency: Duration) {
        self.fetch_requests.fetch_add(1, Relaxed);
        self.bytes_fetched.fetch_add(bytes, Relaxed);
        self.spans_fetched.fetch_add(spans, Relaxed);
        self.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
    }

    /// Records spans verified and cached from a whole blob already on local disk.
    pub fn record_local_spans(&self, spans: u64) {
        self.spans_fetched.fetch_add(spans, Relaxed);
    }

    /// Records a failed range request.
    pub fn record_fetch_error(&self) {
        self.fetch_errors.fetch_add(1, Relaxed);
    }

    /// Records a span that failed verification.
    pub fn record_verification_failure(&self) {
        self.verification_failures.fetch_add(1, Relaxed);
    }

    /// Records span reads answered from cache (`hit`) or after a fetch.
    pub fn record_span_read(&self, hit: bool) {
        if hit {
            self.cache_hits.fetch_add(1, Relaxed);
        } else {
            self.cache_misses.fetch_add(1, Relaxed);
        }
    }

    /// Records a FUSE operation.
    pub fn record_fuse_op(&self) {
        self.fuse_ops.fetch_add(1, Relaxed);
    }

    /// Records uncompressed bytes handed to a reader.
    pub fn record_served(&self, bytes: u64) {
        self.bytes_served.fetch_add(bytes, Relaxed);
    }

    /// Records an open answered with a passthrough backing file.
    pub fn record_passthrough_open(&self) {
        self.passthrough_opens.fetch_add(1, Relaxed);
    }

    /// Records a backing file made for passthrough.
    pub fn record_backing_file(&self) {
        self.backing_files.fetch_add(1, Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .latency_buckets
            .iter()
            .map(|b| {
                cumulative += b.load(Relaxed);
                cumulative
            })
            .collect();
        MetricsSnapshot {
            bytes_fetched: self.bytes_fetched.load(Relaxed),
            spans_fetched: self.spans_fetched.load(Relaxed),
            fetch_requests: self.fetch_requests.load(Relaxed),
            fetch_errors: self.fetch_errors.load(Relaxed),
            verification_failures: self.verification_failures.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            fuse_ops: self.fuse_ops.load(Relaxed),
            bytes_served: self.bytes_served.load(Relaxed),
            passthrough_opens: self.passthrough_opens.load(Relaxed),
            backing_files: self.backing_files.load(Relaxed),
            windows_fetched: self.windows_fetched.load(Relaxed),
            window_bytes_fetched: self.window_bytes_fetched.load(Relaxed),
            windows_made: self.windows_made.load(Relaxed),
            fetch_latency_seconds_sum: self.latency_sum_us.load(Relaxed) as f64 / 1e6,
            fetch_latency_buckets: buckets,
        }
    }
}

/// Reads one counter out of a snapshot.
type Counter = fn(&MetricsSnapshot) -> u64;

/// Renders per-layer snapshots in the Prometheus text exposition format (version 0.0.4),
/// one series per layer labelled `layer="<digest>"`, for a daemon's `/metrics` endpoint.
pub fn prometheus_text(layers: &[(String, MetricsSnapshot)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let counters: [(&str, &str, Counter); 14] = [
        (
            "soci_fetched_bytes_total",
            "Compressed bytes fetched",
            |m| m.bytes_fetched,
        ),
        (
            "soci_fetched_spans_total",
            "Spans fetched and verified",
            |m| m.spans_fetched,
        ),
        ("soci_fetch_requests_total", "Range requests made", |m| {
            m.fetch_requests
        }),
        (
            "soci_fetch_errors_total",
            "Range requests that failed",
            |m| m.fetch_errors,
        ),
        (
            "soci_verification_failures_total",
            "Spans that failed digest verification",
            |m| m.verification_failures,
        ),
        (
            "soci_span_cache_hits_total",
            "Span reads served from the local cache",
            |m| m.cache_hits,
        ),
        (
            "soci_span_cache_misses_total",
            "Span reads that waited for a fetch",
            |m| m.cache_misses,
        ),
        (
            "soci_fuse_operations_total",
            "FUSE operations answered",
            |m| m.fuse_ops,
        ),
        (
            "soci_served_bytes_total",
            "Uncompressed bytes handed to readers",
            |m| m.bytes_served,
        ),
        (
            "soci_passthrough_opens_total",
            "Opens handed to FUSE passthrough (their reads bypass the daemon)",
            |m| m.passthrough_opens,
        ),
        (
            "soci_passthrough_backing_files_total",
            "Files copied out of the span cache into passthrough backing files",
            |m| m.backing_files,
        ),
        (
            "soci_windows_fetched_total",
            "Checkpoint windows fetched from the full zTOC (layers served from a lean zTOC)",
            |m| m.windows_fetched,
        ),
        (
            "soci_window_fetched_bytes_total",
            "Bytes of full zTOCs received for checkpoint windows",
            |m| m.window_bytes_fetched,
        ),
        (
            "soci_windows_made_total",
            "Checkpoint windows made from the spans before them, without a fetch",
            |m| m.windows_made,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for (layer, m) in layers {
            let _ = writeln!(out, "{name}{{layer=\"{layer}\"}} {}", get(m));
        }
    }
    let name = "soci_span_fetch_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency of span range requests.\n# TYPE {name} histogram"
    );
    for (layer, m) in layers {
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&m.fetch_latency_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{layer=\"{layer}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{layer=\"{layer}\",le=\"+Inf\"}} {}",
            m.fetch_requests
        );
        let _ = writeln!(
            out,
            "{name}_sum{{layer=\"{layer}\"}} {}",
            m.fetch_latency_seconds_sum
        );
        let _ = writeln!(
            out,
            "{name}_count{{layer=\"{layer}\"}} {}",
            m.fetch_requests
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_one_series_per_layer() {
        let m = LayerMetrics::default();
        m.record_fetch(100, 2, Duration::from_millis(3));
        let text = prometheus_text(&[("sha256:aa".into(), m.snapshot())]);
        assert!(
            text.contains("soci_fetched_bytes_total{layer=\"sha256:aa\"} 100\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE soci_span_fetch_duration_seconds histogram"));
        assert!(text.contains(
            "soci_span_fetch_duration_seconds_bucket{layer=\"sha256:aa\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "soci_span_fetch_duration_seconds_bucket{layer=\"sha256:aa\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains("soci_span_fetch_duration_seconds_count{layer=\"sha256:aa\"} 1"));
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = LayerMetrics::default();
        m.record_fetch(10, 1, Duration::from_micros(500));
        m.record_fetch(20, 2, Duration::from_millis(30));
        m.record_fetch(30, 1, Duration::from_secs(60));
        let s = m.snapshot();
        assert_eq!(s.bytes_fetched, 60);
        assert_eq!(s.spans_fetched, 4);
        assert_eq!(s.fetch_requests, 3);
        assert_eq!(s.fetch_latency_buckets[0], 1);
        // 30 ms lands in the 0.05 s bucket (index 5); the 60 s request is over every bound.
        assert_eq!(s.fetch_latency_buckets[4], 1);
        assert_eq!(s.fetch_latency_buckets[5], 2);
        assert_eq!(*s.fetch_latency_buckets.last().unwrap(), 2);
    }
}
