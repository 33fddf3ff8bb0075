//! L4: a TCP connection from a local app spliced with a stream to an instance, both ways,
//! half-close carried (EOF on one side finishes that direction only). Buffers are
//! bounded (`copy_bidirectional` uses 8 KiB per direction).

use std::time::Instant;

use crate::catalog::Protocol;
use tracing::{info, warn};
use weft_ca::ServiceName;

use super::dial::{dial_with, Io};
use super::header::StreamHeader;
use super::inputs::ProxyInputs;
use crate::telemetry::access_log::AccessEntry;
use crate::telemetry::metrics::EdgeLabels;

/// Proxies one app connection to `destination` as `source` (to an instance of `version`
/// when one is pinned).
pub async fn proxy_connection(
    inputs: &ProxyInputs,
    mut app: impl Io,
    destination: ServiceName,
    source: Option<ServiceName>,
    version: Option<&str>,
) {
    let src = source
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into());
    let dst = destination.to_string();
    let started = Instant::now();
    let header = StreamHeader {
        protocol: Protocol::Tcp,
        destination,
        source,
        traceparent: None,
    };
    let mut dialed = match dial_with(inputs, &header, version, Vec::new()).await {
        Ok(d) => d,
        Err(e) => {
            warn!(source = %src, destination = %dst, error = %e, "TCP connection closed: no instance reachable");
            let code = if matches!(e, super::dial::DialError::UnknownService(_)) {
                "unknown"
            } else {
                "error"
            };
            let label = if code == "unknown" {
                "unknown"
            } else {
                dst.as_str()
            };
            inputs
                .metrics
                .record(&src, label, code, started.elapsed().as_secs_f64());
            return;
        }
    };
    if dialed.instance.is_local
        && !inputs
            .authorize_stream(&src, &dst, dialed.instance.protocol)
            .allowed
    {
        inputs
            .metrics
            .record(&src, &dst, "denied", started.elapsed().as_secs_f64());
        return;
    }
    inputs
        .metrics
        .tcp_connections
        .get_or_create(&EdgeLabels {
            source: src.clone(),
            destination: dst.clone(),
        })
        .inc();
    let key = crate::routing::endpoint_key(&dialed.instance);
    inputs.balancer.start(&key);
    inputs.balancer.finish(&key, dialed.started.elapsed());
    let result = tokio::io::copy_bidirectional(&mut app, &mut dialed.io).await;
    let (out, inb) = result.as_ref().map(|r| *r).unwrap_or((0, 0));
    let code = match &result {
        Ok(_) => "ok",
        Err(e) => {
            info!(source = %src, destination = %dst, error = %e, "TCP stream ended with an error");
            "error"
        }
    };
    inputs.metrics.add_bytes(inb, out);
    inputs
        .metrics
        .record(&src, &dst, code, started.elapsed().as_secs_f64());
    inputs.access_log.write(AccessEntry {
        time: std::time::SystemTime::now(),
        direction: "outbound",
        protocol: "tcp",
        source: src,
        destination: dst,
        upstream_node: dialed.instance.node.clone(),
        method: None,
        path: None,
        status: code.into(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        bytes_out: out,
        bytes_in: inb,
        trace_id: None,
    });
}
