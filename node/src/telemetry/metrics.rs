//! Data-plane metrics (prometheus-client). Label sets are bounded: service names come
//! from the catalog (unknown destinations are counted as "unknown"), codes are HTTP
//! status codes or a fixed set of words; nothing is taken from paths or headers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Most source → destination pairs with their own label sets.
pub const MAX_EDGE_LABELS: usize = 1024;

/// Source → destination pairs that have their own label sets.
#[derive(Debug, Default)]
struct LabelledPairs {
    pairs: std::collections::HashMap<String, std::collections::HashSet<String>>,
    count: usize,
}

/// Labels of one request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Source service, or "-" for the node itself.
    pub source: String,
    /// Destination service.
    pub destination: String,
    /// HTTP status code, or for TCP: "ok", "refused", "error".
    pub code: String,
}

/// Labels of a source → destination edge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EdgeLabels {
    /// Source service, or "-".
    pub source: String,
    /// Destination service.
    pub destination: String,
}

/// Labels of a policy denial.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// "enforce" or "dry_run".
    pub mode: String,
}

/// Labels naming a destination service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestLabels {
    /// Destination service.
    pub destination: String,
}

/// Labels of a byte count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// "in" (toward the local app) or "out" (from it).
    pub direction: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The data-plane metric families.
pub struct Metrics {
    registry: Registry,
    /// `weft_requests_total{source,destination,code}`
    pub requests: Family<RequestLabels, Counter>,
    /// `weft_request_duration_seconds{source,destination}`
    pub duration: Family<EdgeLabels, Histogram, fn() -> Histogram>,
    /// `weft_tcp_connections_total{source,destination}`
    pub tcp_connections: Family<EdgeLabels, Counter>,
    /// `weft_bytes_total{direction}`
    pub bytes: Family<DirectionLabels, Counter>,
    /// `weft_access_log_dropped_total`
    pub access_log_dropped: Counter,
    /// `weft_policy_denied_total{mode}`
    pub policy_denied: Family<ModeLabels, Counter>,
    /// `weft_retries_total{destination}`
    pub retries: Family<DestLabels, Counter>,
    /// `weft_ejections_total{destination}`
    pub ejections: Family<DestLabels, Counter>,
    /// `weft_ratelimited_total{destination}`
    pub ratelimited: Family<DestLabels, Counter>,
    /// Per-edge ring buffers for the dashboard.
    pub edges: std::sync::Mutex<super::edges::EdgeStats>,
    /// Source → destination pairs that have label sets, bounded by `MAX_EDGE_LABELS`.
    labelled: std::sync::Mutex<LabelledPairs>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<EdgeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let tcp_connections = Family::<EdgeLabels, Counter>::default();
        let bytes = Family::<DirectionLabels, Counter>::default();
        let access_log_dropped = Counter::default();
        let policy_denied = Family::<ModeLabels, Counter>::default();
        let retries = Family::<DestLabels, Counter>::default();
        let ejections = Family::<DestLabels, Counter>::default();
        let ratelimited = Family::<DestLabels, Counter>::default();
        registry.register("retries", "Retried request attempts", retries.clone());
        registry.register(
            "ejections",
            "Instances ejected as outliers",
            ejections.clone(),
        );
        registry.register(
            "ratelimited",
            "Requests refused with 429 by a rate limit",
            ratelimited.clone(),
        );
        registry.register(
            "policy_denied",
            "Requests and streams denied by policy (dry_run: would have been)",
            policy_denied.clone(),
        );
        registry.register(
            "requests",
            "Requests and TCP streams by source, destination and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to response headers (HTTP) or stream lifetime (TCP)",
            duration.clone(),
        );
        registry.register(
            "tcp_connections",
            "TCP connections proxied",
            tcp_connections.clone(),
        );
        registry.register("bytes", "Bytes proxied, by direction", bytes.clone());
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            tcp_connections,
            bytes,
            access_log_dropped,
            policy_denied,
            retries,
            ejections,
            ratelimited,
            edges: std::sync::Mutex::default(),
            labelled: std::sync::Mutex::default(),
        }
    }
}

impl Metrics {
    /// Prometheus text of these families (without the final `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            return String::new();
        }
        out
    }

    /// The labels to use for a pair: itself while fewer than `MAX_EDGE_LABELS` pairs have
    /// label sets, `other` after that (no caller can grow /metrics without bound).
    fn bounded<'a>(&self, source: &'a str, destination: &'a str) -> (&'a str, &'a str) {
        let mut seen = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        // The hot path (a pair already labelled) allocates nothing.
        if seen
            .pairs
            .get(source)
            .is_some_and(|d| d.contains(destination))
        {
            return (source, destination);
        }
        if seen.count >= MAX_EDGE_LABELS {
            return ("other", "other");
        }
        seen.count += 1;
        seen.pairs
            .entry(source.to_owned())
            .or_default()
            .insert(destination.to_owned());
        (source, destination)
    }

    /// Counts one request or stream (Prometheus families and the dashboard's rings).
    pub fn record(&self, source: &str, destination: &str, code: &str, seconds: f64) {
        let (source, destination) = self.bounded(source, destination);
        let error =
            code.starts_with('5') || matches!(code, "error" | "refused" | "denied" | "unknown");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // Requests for services nobody runs are counted above but are not graph edges.
        if destination != "unknown" {
            self.edges.lock().unwrap_or_else(|e| e.into_inner()).record(
                source,
                destination,
                error,
                seconds * 1000.0,
                now,
            );
        }
        self.requests
            .get_or_create(&RequestLabels {
                source: source.to_owned(),
                destination: destination.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&EdgeLabels {
                source: source.to_owned(),
                destination: destination.to_owned(),
            })
            .observe(seconds);
    }

    /// Increments a per-destination counter.
    pub fn inc(family: &Family<DestLabels, Counter>, destination: &str) {
        family
            .get_or_create(&DestLabels {
                destination: destination.to_owned(),
            })
            .inc();
    }

    /// Adds proxied bytes.
    pub fn add_bytes(&self, inbound: u64, outbound: u64) {
        self.bytes
            .get_or_create(&DirectionLabels {
                direction: "in".into(),
            })
            .inc_by(inbound);
        self.bytes
            .get_or_create(&DirectionLabels {
                direction: "out".into(),
            })
            .inc_by(outbound);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_are_bounded() {
        let m = Metrics::default();
        for i in 0..MAX_EDGE_LABELS + 500 {
            m.record("client", &format!("svc-{i}"), "200", 0.001);
        }
        let text = m.render();
        let request_lines = text
            .lines()
            .filter(|l| l.starts_with("weft_requests_total{"))
            .count();
        assert_eq!(
            request_lines,
            MAX_EDGE_LABELS + 1,
            "one per pair, then `other`"
        );
        assert!(text.contains("source=\"other\""));
    }
}
