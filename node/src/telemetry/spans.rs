//! Spans out: one span per hop, exported by OTLP over HTTP/protobuf to `otlp_endpoint`
//! (an OpenTelemetry Collector, Jaeger, Tempo…). The outbound agent makes a client span for
//! each request an app sends through it and the inbound agent a server span for each it
//! hands to an instance; each passes its own span id on in `traceparent`, so an app's
//! spans, both agents' and the instance's nest in one trace.
//!
//! The data path only formats nothing and never waits: a finished request becomes a small
//! `SpanRecord` put on a bounded queue with `try_send`; a full queue drops it and counts it
//! (`weft_spans_dropped_total{reason="queue_full"}`). One owner task batches (512 spans or
//! one second) and hands batches to the `opentelemetry-otlp` exporter, which encodes the
//! protobuf and posts it; a failed post drops its batch and counts it
//! (`reason="export_failed"`): spans are telemetry, never retried at the cost of memory.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Spans waiting for export, at most.
pub const QUEUE: usize = 4096;
/// Spans per export request, at most.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Client (outbound agent) or server (inbound agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// The agent an app sent the request through.
    Outbound,
    /// The agent that handed it to an instance.
    Inbound,
}

/// A finished hop, as the data path hands it over.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This hop's span.
    pub span_id: [u8; 8],
    /// The span it continues (the app's, or the outbound agent's), if any.
    pub parent: Option<[u8; 8]>,
    /// Which side.
    pub hop: Hop,
    /// When the request arrived.
    pub start: SystemTime,
    /// When its answer's head was sent back.
    pub end: SystemTime,
    /// Source service (`-`: anonymous).
    pub source: String,
    /// Destination service.
    pub destination: String,
    /// HTTP method.
    pub method: String,
    /// Path as sent.
    pub path: String,
    /// The status answered, or the mesh's refusal (`403`, `503`…).
    pub status: u16,
    /// The node that served it (outbound), if one did.
    pub peer: Option<String>,
    /// The version a route chose.
    pub version: Option<String>,
}

/// A W3C `traceparent` split into its parts (`00-<trace>-<parent>-<flags>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// The sender's span id.
    pub span_id: [u8; 8],
    /// Flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a traceparent header value; None when malformed or all-zero ids.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The same trace continued by a new span of ours (sent on to the next hop).
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Whether the trace is sampled (only sampled spans are exported).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            self.flags
        )
    }
}

/// A fresh non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// Why spans cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum SpanError {
    /// The endpoint is not an http(s) URL, or the exporter refused it.
    #[error("otlp_endpoint {endpoint:?}: {reason} (e.g. http://127.0.0.1:4318)")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// `weft_spans_*` counters.
#[derive(Debug, Clone, Default)]
pub struct SpanCounters {
    /// Spans handed to the collector.
    pub exported: Counter,
    /// Spans lost, by reason (`queue_full`, `export_failed`).
    pub dropped: Family<Vec<(String, String)>, Counter>,
}

impl SpanCounters {
    fn drop(&self, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc_by(n);
    }
}

/// The data path's handle: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<SpanRecord>,
    counters: SpanCounters,
}

impl SpanSink {
    /// Queues a finished hop; a full queue drops it (counted).
    pub fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.counters.drop("queue_full", 1);
        }
    }
}

/// Checks an `otlp_endpoint` value (at the config edge).
pub fn check_endpoint(endpoint: &str) -> Result<(), SpanError> {
    let bad = |reason: &str| SpanError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let url: reqwest::Url = endpoint.parse().map_err(|_| bad("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("needs http:// or https:// and a host"));
    }
    Ok(())
}

/// Starts the exporter task for `endpoint` (the collector's base URL; `/v1/traces` is
/// appended as OTLP/HTTP says); it stops, after one last export, on `shutdown`.
pub fn start(
    endpoint: &str,
    node: &str,
    cluster: &str,
    counters: SpanCounters,
    shutdown: CancellationToken,
) -> Result<(SpanSink, tokio::task::JoinHandle<()>), SpanError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    check_endpoint(endpoint)?;
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| SpanError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| SpanError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "weft"),
                KeyValue::new("service.instance.id", node.to_owned()),
                KeyValue::new("weft.cluster", cluster.to_owned()),
            ])
            .build(),
    );
    let (tx, rx) = mpsc::channel(QUEUE);
    let sink = SpanSink {
        tx,
        counters: counters.clone(),
    };
    info!(endpoint = %url, "exporting spans by OTLP/HTTP");
    let task = tokio::spawn(run(exporter, rx, counters, shutdown));
    Ok((sink, task))
}

async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanRecord>,
    counters: SpanCounters,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<SpanRecord> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut warned_at: Option<tokio::time::Instant> = None;
    loop {
        // Flush when a batch is full, each second, and once more when stopping.
        let (flush, stop) = tokio::select! {
            _ = shutdown.cancelled() => (true, true),
            got = rx.recv() => match got {
                Some(s) => {
                    batch.push(s);
                    (batch.len() >= BATCH, false)
                }
                None => (true, true),
            },
            _ = tick.tick() => (true, false),
        };
        if stop {
            // The last spans, as far as the queue holds them right now.
            while let Ok(s) = rx.try_recv() {
                batch.push(s);
            }
        }
        if !flush {
            continue;
        }
        while !batch.is_empty() {
            let n = batch.len().min(BATCH);
            let part: Vec<SpanData> = batch.drain(..n).map(to_span_data).collect();
            match exporter.export(part).await {
                Ok(()) => {
                    counters.exported.inc_by(n as u64);
                }
                Err(e) => {
                    counters.drop("export_failed", n as u64);
                    if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        warn!(error = %e, spans = n, "span export failed; spans dropped (weft_spans_dropped_total)");
                        warned_at = Some(tokio::time::Instant::now());
                    }
                }
            }
        }
        if stop {
            return;
        }
    }
}

fn to_span_data(s: SpanRecord) -> SpanData {
    let mut attributes = vec![
        KeyValue::new("weft.source", s.source),
        KeyValue::new("weft.destination", s.destination.clone()),
        KeyValue::new("http.request.method", s.method.clone()),
        KeyValue::new("url.path", s.path),
        KeyValue::new("http.response.status_code", i64::from(s.status)),
    ];
    if let Some(p) = s.peer {
        attributes.push(KeyValue::new("weft.peer_node", p));
    }
    if let Some(v) = s.version {
        attributes.push(KeyValue::new("weft.version", v));
    }
    let (kind, side) = match s.hop {
        Hop::Outbound => (SpanKind::Client, "outbound"),
        Hop::Inbound => (SpanKind::Server, "inbound"),
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(s.trace_id),
            SpanId::from_bytes(s.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: s.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: s.parent.is_some(),
        span_kind: kind,
        name: Cow::Owned(format!("{side} {} {}", s.method, s.destination)),
        start_time: s.start,
        end_time: s.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if s.status >= 500 {
            Status::error(format!("HTTP {}", s.status))
        } else {
            Status::Unset
        },
        instrumentation_scope: InstrumentationScope::builder("weft").build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_refused() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(text).expect("valid");
        assert_eq!(t.to_string(), text);
        assert!(t.sampled());
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let counters = SpanCounters::default();
        let (tx, _rx) = mpsc::channel(1);
        let sink = SpanSink {
            tx,
            counters: counters.clone(),
        };
        let span = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            hop: Hop::Outbound,
            start: SystemTime::now(),
            end: SystemTime::now(),
            source: "-".into(),
            destination: "reviews".into(),
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            peer: None,
            version: None,
        };
        sink.record(span.clone());
        sink.record(span.clone());
        sink.record(span);
        let dropped = counters
            .dropped
            .get_or_create(&vec![("reason".to_owned(), "queue_full".to_owned())])
            .get();
        assert_eq!(dropped, 2);
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(check_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("https://otel.example:4318/").is_ok());
        for bad in ["127.0.0.1:4318", "udp://x:1", "nonsense"] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
