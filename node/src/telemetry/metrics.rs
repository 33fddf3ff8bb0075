//! Every metric of `/metrics`, through one prometheus-client registry, exposed in the
//! Prometheus text format (0.0.4, which `promtool check metrics` reads): the data plane's
//! families, the node's own state (members, certificate, config replica; set when
//! scraped or by the loop that owns them) and gossip's counters (a collector reading
//! `GossipStats`). Label sets are bounded: service names come from the catalog (unknown
//! destinations are counted as "unknown"), codes are HTTP status codes or a fixed set of
//! words; nothing is taken from paths or headers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Most source → destination pairs with their own label sets.
pub const MAX_EDGE_LABELS: usize = 1024;

/// Source → destination pairs that have their own label sets, with their metric handles
/// (made once per pair and outcome: a request then allocates no label strings).
#[derive(Debug, Default)]
struct LabelledPairs {
    pairs: std::collections::HashMap<String, std::collections::HashMap<String, PairHandles>>,
    count: usize,
}

/// One pair's duration histogram and its counter per outcome code.
#[derive(Debug)]
struct PairHandles {
    duration: Histogram,
    codes: Vec<(String, Counter)>,
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

/// Labels of a member count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// "alive", "failed" or "left".
    pub status: String,
}

/// Labels of a per-version count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    destination: String,
    version: String,
}

/// Labels of a rollout's weight.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// The service rolled out.
    pub service: String,
    /// "old" version or "new" version label.
    pub version: String,
}

/// Labels of a mirrored copy.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// Destination service.
    pub destination: String,
    /// The version copies go to.
    pub version: String,
    /// "ok", "error" (5xx or no answer) or "skipped" (streamed body, upgrade, too many
    /// in flight).
    pub outcome: String,
}

/// Labels naming a service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The service.
    pub service: String,
}

/// Per-version totals, read at each scrape (nothing per request beyond the totals).
#[derive(Debug)]
struct VersionCollector(Arc<std::sync::Mutex<super::versions::VersionTotals>>);

impl Collector for VersionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pairs = self.0.lock().unwrap_or_else(|e| e.into_inner()).snapshot();
        let c = ConstCounter::new(0u64);
        {
            let mut family = encoder.encode_descriptor(
                "version_requests",
                "Routed requests by destination and version (the figures rollouts are judged on)",
                None,
                c.metric_type(),
            )?;
            for ((destination, version), t) in &pairs {
                let labels = VersionLabels {
                    destination: destination.clone(),
                    version: version.clone(),
                };
                ConstCounter::new(t.n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "version_errors",
            "Failed routed requests by destination and version",
            None,
            c.metric_type(),
        )?;
        for ((destination, version), t) in pairs {
            let labels = VersionLabels {
                destination,
                version,
            };
            ConstCounter::new(t.e).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Encodes one counter without labels, read at scrape time.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Gossip's own counters, read at each scrape.
#[derive(Debug)]
struct GossipCollector(Arc<weft_gossip::GossipStats>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    part: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: String,
}

impl Collector for GossipCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let dropped = stats.dropped_by_reason();
        let c = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "gossip_dropped",
            "Gossip datagrams dropped, by reason",
            None,
            c.metric_type(),
        )?;
        for (reason, n) in dropped {
            let labels = ReasonLabels {
                reason: reason.to_string(),
            };
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        counter(
            &mut encoder,
            "gossip_rejected_records",
            "Gossiped records whose signature or certificate did not verify",
            stats.rejected_records.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "gossip_false_ca_claims",
            "Gossiped records that claimed the CA role without the root's proof",
            stats.false_ca_claims.load(Ordering::Relaxed),
        )?;
        let mut bytes = encoder.encode_descriptor(
            "gossip_bytes",
            "Gossip bytes on the wire, by direction",
            None,
            c.metric_type(),
        )?;
        for (direction, n) in [
            ("in", stats.bytes_in.load(Ordering::Relaxed)),
            ("out", stats.bytes_out.load(Ordering::Relaxed)),
        ] {
            let labels = DirectionLabels {
                direction: direction.into(),
            };
            ConstCounter::new(n).encode(bytes.encode_family(&labels)?)?;
        }
        let wire = stats.wire.totals();
        let mut family = encoder.encode_descriptor(
            "gossip_sent_messages",
            "Gossip messages sent, by chitchat message kind",
            None,
            c.metric_type(),
        )?;
        for (kind, n) in weft_gossip::wire::MessageKind::ALL
            .iter()
            .zip(wire.messages)
        {
            let labels = KindLabels {
                kind: kind.label().into(),
            };
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "gossip_sent_payload_bytes",
            "Bytes of the gossip messages sent before sealing, by part (header, digest, delta)",
            None,
            c.metric_type(),
        )?;
        for (part, n) in [
            ("header", wire.header),
            ("digest", wire.digest),
            ("delta", wire.delta),
        ] {
            let labels = PartLabels { part: part.into() };
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "gossip_sent_delta_content_bytes",
            "What the gossip deltas sent carried before compression, by key (framing: node and version ops)",
            None,
            c.metric_type(),
        )?;
        let keys = weft_gossip::wire::KeyClass::ALL
            .iter()
            .map(|k| k.label())
            .zip(wire.delta_keys)
            .chain([("framing", wire.delta_framing)]);
        for (key, n) in keys {
            let labels = KeyLabels { key: key.into() };
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        counter(&mut encoder, "gossip_syns_skipped", "Round-opening gossip SYNs not sent because the cluster is large (fewer peers per round)", stats.syns_skipped.load(Ordering::Relaxed))?;
        counter(
            &mut encoder,
            "gossip_news_rounds",
            "Gossip rounds opened with all three live peers because a new member appeared",
            stats.news_rounds.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "gossip_sent_digest_entries",
            "Member entries listed in the gossip digests sent",
            wire.digest_members,
        )?;
        Ok(())
    }
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
    /// `weft_spans_exported_total`, `weft_spans_dropped_total{reason}`
    pub spans: super::spans::SpanCounters,
    /// `weft_policy_denied_total{mode}`
    pub policy_denied: Family<ModeLabels, Counter>,
    /// `weft_retries_total{destination}`
    pub retries: Family<DestLabels, Counter>,
    /// `weft_ejections_total{destination}`
    pub ejections: Family<DestLabels, Counter>,
    /// `weft_ratelimited_total{destination}`
    pub ratelimited: Family<DestLabels, Counter>,
    /// `weft_members{status}`, set when scraped.
    pub members: Family<StatusLabels, Gauge>,
    /// `weft_cert_expiry_seconds`, set when scraped.
    pub cert_expiry_seconds: Gauge,
    /// `weft_cert_renewals_total`, counted by the renewal loop.
    pub cert_renewals: Counter,
    /// `weft_cert_renewal_failures` (in a row), set by the renewal loop.
    pub cert_renewal_failures: Gauge,
    /// `weft_authority_refused_total{what,reason}`: operator acts and config entries
    /// this node refused to apply.
    pub authority_refused: Family<crate::authority::RefusedLabels, Counter>,
    /// `weft_config_entries`, set when scraped.
    pub config_entries: Gauge,
    /// `weft_ca_holders_alive`: alive nodes that hold the CA (proven), set when scraped.
    pub ca_holders_alive: Gauge,
    /// `weft_revocation_list_entries`, set when scraped.
    pub revocation_list_entries: Gauge,
    /// `weft_ca_replicas_alive`: alive CA replicas (proven), set when scraped.
    pub ca_replicas_alive: Gauge,
    /// `weft_ca_intermediate_expiry_seconds`: the soonest expiry of an alive replica's
    /// intermediate, from now; set when scraped (absent while no replica is known).
    pub ca_intermediate_expiry_seconds: Gauge,
    /// `weft_ca_trusted_roots`: roots this node trusts (2 during a rotation).
    pub ca_trusted_roots: Gauge,
    /// `weft_config_digest_age_seconds`, set when scraped.
    pub config_digest_age_seconds: Gauge<f64, AtomicU64>,
    /// Per-edge ring buffers for the dashboard.
    pub edges: std::sync::Mutex<super::edges::EdgeStats>,
    /// Per-version 15-minute series of the requests this node routed, keyed by
    /// destination then version (the service pages).
    pub version_series: std::sync::Mutex<super::edges::EdgeStats>,
    /// Per-version totals (gossiped; rollouts are judged on them).
    pub versions: Arc<std::sync::Mutex<super::versions::VersionTotals>>,
    /// `weft_rollout_weight{service,version}`: percent of traffic on each version of a
    /// rollout, as this node routes it.
    pub rollout_weight: Family<RolloutLabels, Gauge>,
    /// `weft_mirrored_total{destination,version,outcome}`
    pub mirrored: Family<MirrorLabels, Counter>,
    /// `weft_rollout_state{service}`: 0 progressing, 1 paused, 2 promoted, 3 rolled back,
    /// 4 aborted.
    pub rollout_state: Family<ServiceLabels, Gauge>,
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
        Self::new(Arc::default())
    }
}

/// Whether an outcome code is a failure (5xx, a mesh refusal or error, a gRPC server
/// failure); 4xx are the client's.
pub fn is_failure(code: &str) -> bool {
    code.starts_with('5')
        || matches!(code, "error" | "refused" | "denied" | "unknown")
        || crate::proxy::grpc::is_server_failure(code)
}

impl Metrics {
    /// Every family, with gossip's counters read from `gossip`.
    pub fn new(gossip: Arc<weft_gossip::GossipStats>) -> Self {
        let mut registry = Registry::with_prefix("weft");
        let members = Family::<StatusLabels, Gauge>::default();
        let cert_expiry_seconds = Gauge::default();
        let cert_renewals = Counter::default();
        let cert_renewal_failures = Gauge::default();
        let config_entries = Gauge::default();
        let ca_holders_alive = Gauge::default();
        let revocation_list_entries = Gauge::default();
        let ca_replicas_alive = Gauge::default();
        let ca_intermediate_expiry_seconds = Gauge::default();
        let ca_trusted_roots = Gauge::default();
        registry.register(
            "ca_replicas_alive",
            "Alive CA replicas (fewer than 2: losing one stops renewals and joins)",
            ca_replicas_alive.clone(),
        );
        registry.register(
            "ca_intermediate_expiry_seconds",
            "Seconds until the soonest-expiring intermediate of an alive CA replica expires",
            ca_intermediate_expiry_seconds.clone(),
        );
        registry.register(
            "ca_trusted_roots",
            "Root certificates this node trusts (2 while a root rotation runs)",
            ca_trusted_roots.clone(),
        );
        registry.register(
            "ca_holders_alive",
            "Alive CA replicas (0: renewals and joins fail; the same as weft_ca_replicas_alive, kept for dashboards built on it)",
            ca_holders_alive.clone(),
        );
        registry.register(
            "revocation_list_entries",
            "Entries in the revocation list in force on this node",
            revocation_list_entries.clone(),
        );
        let authority_refused = Family::<crate::authority::RefusedLabels, Counter>::default();
        registry.register(
            "authority_refused",
            "Operator acts and config entries refused: unsigned, forged, revoked, wrong role, replayed or stamped in the future",
            authority_refused.clone(),
        );
        let config_digest_age_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "members",
            "Cluster members by status, as this node sees them",
            members.clone(),
        );
        registry.register(
            "cert_expiry_seconds",
            "Seconds until this node's certificate expires",
            cert_expiry_seconds.clone(),
        );
        registry.register(
            "cert_renewals",
            "Certificate renewals since start",
            cert_renewals.clone(),
        );
        registry.register(
            "cert_renewal_failures",
            "Consecutive failed renewal attempts",
            cert_renewal_failures.clone(),
        );
        registry.register(
            "config_entries",
            "Live cluster-config entries held by this node",
            config_entries.clone(),
        );
        registry.register(
            "config_digest_age_seconds",
            "Seconds since this node's config digest last matched every alive peer's",
            config_digest_age_seconds.clone(),
        );
        registry.register_collector(Box::new(GossipCollector(gossip)));
        let versions = Arc::new(std::sync::Mutex::new(
            super::versions::VersionTotals::default(),
        ));
        registry.register_collector(Box::new(VersionCollector(versions.clone())));
        let mirrored = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "mirrored",
            "Mirrored copies of requests by destination, version and outcome (answers discarded)",
            mirrored.clone(),
        );
        let rollout_weight = Family::<RolloutLabels, Gauge>::default();
        let rollout_state = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "rollout_weight",
            "Percent of a rollout's traffic on each of its versions, as this node routes it",
            rollout_weight.clone(),
        );
        registry.register(
            "rollout_state",
            "A rollout's state: 0 progressing, 1 paused, 2 promoted, 3 rolled back, 4 aborted",
            rollout_state.clone(),
        );
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
        let spans = super::spans::SpanCounters::default();
        registry.register(
            "spans_exported",
            "Spans handed to the OTLP collector",
            spans.exported.clone(),
        );
        registry.register(
            "spans_dropped",
            "Spans lost: the export queue was full, or the collector failed",
            spans.dropped.clone(),
        );
        Self {
            spans,
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
            members,
            cert_expiry_seconds,
            cert_renewals,
            cert_renewal_failures,
            config_entries,
            ca_holders_alive,
            revocation_list_entries,
            ca_replicas_alive,
            ca_intermediate_expiry_seconds,
            ca_trusted_roots,
            authority_refused,
            config_digest_age_seconds,
            edges: std::sync::Mutex::default(),
            version_series: std::sync::Mutex::default(),
            versions,
            rollout_weight,
            rollout_state,
            mirrored,
            labelled: std::sync::Mutex::default(),
        }
    }

    /// `/metrics`: every family in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        out
    }

    /// Counts one request or stream (Prometheus families and the dashboard's rings). A
    /// pair gets its own label set while fewer than `MAX_EDGE_LABELS` pairs have one,
    /// `other` after that (no caller can grow /metrics without bound).
    pub fn record(&self, source: &str, destination: &str, code: &str, seconds: f64) {
        let (counter, duration, source, destination) = {
            let mut l = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
            let known = l
                .pairs
                .get(source)
                .is_some_and(|d| d.contains_key(destination));
            let (s, d) = if known {
                (source, destination)
            } else if l.count >= MAX_EDGE_LABELS {
                ("other", "other")
            } else {
                l.count += 1;
                (source, destination)
            };
            if !l.pairs.get(s).is_some_and(|m| m.contains_key(d)) {
                let duration = self
                    .duration
                    .get_or_create(&EdgeLabels {
                        source: s.to_owned(),
                        destination: d.to_owned(),
                    })
                    .clone();
                l.pairs.entry(s.to_owned()).or_default().insert(
                    d.to_owned(),
                    PairHandles {
                        duration,
                        codes: Vec::new(),
                    },
                );
            }
            let Some(h) = l.pairs.get_mut(s).and_then(|m| m.get_mut(d)) else {
                return;
            };
            let counter = match h.codes.iter().find(|(c, _)| c == code) {
                Some((_, c)) => c.clone(),
                None => {
                    let c = self
                        .requests
                        .get_or_create(&RequestLabels {
                            source: s.to_owned(),
                            destination: d.to_owned(),
                            code: code.to_owned(),
                        })
                        .clone();
                    h.codes.push((code.to_owned(), c.clone()));
                    c
                }
            };
            (counter, h.duration.clone(), s, d)
        };
        let error = is_failure(code);
        let now = crate::clock::unix_secs();
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
        counter.inc();
        duration.observe(seconds);
    }

    /// Counts one request routed to `version` of `destination` (rollout figures).
    pub fn record_version(&self, destination: &str, version: &str, code: &str, seconds: f64) {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(destination, version, is_failure(code), seconds * 1000.0);
    }

    /// Adds one request to `destination`'s 15-minute series of `version` (the version a
    /// route chose, or `any version` when no route chose one).
    pub fn record_series(&self, destination: &str, version: &str, code: &str, seconds: f64) {
        if destination == "unknown" {
            return;
        }
        self.version_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(
                destination,
                version,
                is_failure(code),
                seconds * 1000.0,
                crate::clock::unix_secs(),
            );
    }

    /// Counts one mirrored copy's outcome.
    pub fn count_mirror(&self, destination: &str, version: &str, outcome: &str) {
        self.mirrored
            .get_or_create(&MirrorLabels {
                destination: destination.to_owned(),
                version: version.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
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

#[cfg(test)]
mod promtool {
    use super::*;
    use std::io::Write as _;

    /// `/metrics` passes `promtool check metrics` (Debian package `prometheus`, installed
    /// by tests/install-deps.sh).
    #[test]
    fn exposition_passes_promtool() {
        let m = Metrics::default();
        m.record("client", "reviews", "200", 0.002);
        m.record("-", "reviews", "error", 0.5);
        m.add_bytes(10, 20);
        Metrics::inc(&m.retries, "reviews");
        m.members
            .get_or_create(&StatusLabels {
                status: "alive".into(),
            })
            .set(3);
        m.cert_renewals.inc();
        m.config_digest_age_seconds.set(0.5);
        let text = m.render();
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (run tests/install-deps.sh)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool ran");
        assert!(
            out.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The shipped alert rules pass `promtool check rules`, and every metric they and the
    /// Grafana board query is one this exposition has (a renamed metric breaks the test,
    /// not an operator's alerting).
    #[test]
    fn shipped_alerts_and_board_query_real_metrics() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/monitoring");
        let rules = format!("{dir}/weft-alerts.yml");
        let out = std::process::Command::new("promtool")
            .args(["check", "rules", &rules])
            .output()
            .expect("promtool (run tests/install-deps.sh)");
        assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let m = Metrics::default();
        m.record("client", "reviews", "200", 0.002);
        m.record_version("reviews", "v1", "200", 0.002);
        Metrics::inc(&m.retries, "reviews");
        m.tcp_connections
            .get_or_create(&EdgeLabels {
                source: "client".into(),
                destination: "db".into(),
            })
            .inc();
        m.add_bytes(1, 1);
        m.members
            .get_or_create(&StatusLabels {
                status: "failed".into(),
            })
            .set(1);
        let text = m.render();
        let exposed: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let board = std::fs::read_to_string(format!("{dir}/weft-grafana.json")).expect("board");
        let board: serde_json::Value = serde_json::from_str(&board).expect("the board is JSON");
        assert!(board["panels"].as_array().is_some_and(|p| p.len() >= 10));
        let alerts = std::fs::read_to_string(&rules).expect("rules");
        let names = regex::Regex::new(r"weft_[a-z_]+").expect("regex");
        let mut checked = 0;
        for text in [alerts, board.to_string()] {
            for name in names.find_iter(&text).map(|m| m.as_str()) {
                // (The board's own uid and tags are not metrics.)
                if name == "weft_mesh" {
                    continue;
                }
                assert!(exposed.contains(name), "{name} is not in /metrics");
                checked += 1;
            }
        }
        assert!(checked > 15, "only {checked} metric references found");
    }
}
