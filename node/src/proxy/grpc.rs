//! gRPC's outcome is `grpc-status`, not the HTTP status (always 200): in the response
//! headers of a trailers-only answer, else in the trailers after the messages. This file
//! names the outcome for metrics (`grpc-<code>`, a bounded label set), says which
//! outcomes are failures of the server, and records the outcome of a streamed answer when
//! its trailers arrive (`Outcome`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::HeaderMap;

use crate::telemetry::Metrics;

/// The metric label of a `grpc-status` value.
pub fn label(status: Option<&str>) -> &'static str {
    match status.map(str::trim) {
        Some("0") => "grpc-ok",
        Some("1") => "grpc-cancelled",
        Some("2") => "grpc-unknown",
        Some("3") => "grpc-invalid_argument",
        Some("4") => "grpc-deadline_exceeded",
        Some("5") => "grpc-not_found",
        Some("6") => "grpc-already_exists",
        Some("7") => "grpc-permission_denied",
        Some("8") => "grpc-resource_exhausted",
        Some("9") => "grpc-failed_precondition",
        Some("10") => "grpc-aborted",
        Some("11") => "grpc-out_of_range",
        Some("12") => "grpc-unimplemented",
        Some("13") => "grpc-internal",
        Some("14") => "grpc-unavailable",
        Some("15") => "grpc-data_loss",
        Some("16") => "grpc-unauthenticated",
        Some(_) => "grpc-other",
        None => "grpc-missing",
    }
}

/// Whether an outcome label is a failure of the server (as a 5xx is for HTTP): the
/// request's own faults (not found, invalid argument, …) are not.
pub fn is_server_failure(label: &str) -> bool {
    matches!(
        label,
        "grpc-unknown"
            | "grpc-deadline_exceeded"
            | "grpc-unimplemented"
            | "grpc-internal"
            | "grpc-unavailable"
            | "grpc-data_loss"
            | "grpc-missing"
    )
}

/// The `grpc-status` in `headers`, if any (a trailers-only answer carries it there).
pub fn status(headers: &HeaderMap) -> Option<&str> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok())
}

/// Whether an answer says the server did not take the call and a retry may succeed:
/// a trailers-only `UNAVAILABLE`.
pub fn unavailable(headers: &HeaderMap) -> bool {
    status(headers).map(str::trim) == Some("14")
}

/// Where an outcome is recorded.
pub struct Record {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Source service label.
    pub source: String,
    /// Destination service label.
    pub destination: String,
    /// When the request started.
    pub started: Instant,
    /// The version a route chose, if one did.
    pub version: Option<Arc<str>>,
}

impl Record {
    /// Records `label` now.
    pub fn record(&self, label: &str) {
        self.metrics.record(
            &self.source,
            &self.destination,
            label,
            self.started.elapsed().as_secs_f64(),
        );
        if let Some(v) = &self.version {
            self.metrics.record_version(
                &self.destination,
                v,
                label,
                self.started.elapsed().as_secs_f64(),
            );
        }
    }
}

/// A streamed gRPC answer: passes every frame on and records the outcome once, from the
/// trailers (or `grpc-missing` at an end without them, `grpc-cancelled` if the client
/// went away first).
pub struct Outcome {
    inner: Incoming,
    record: Option<Record>,
}

impl Outcome {
    /// Wraps `inner`, recording into `record`.
    pub fn new(inner: Incoming, record: Record) -> Self {
        Self {
            inner,
            record: Some(record),
        }
    }

    fn finish(&mut self, label: &str) {
        if let Some(r) = self.record.take() {
            r.record(label);
        }
    }
}

impl Body for Outcome {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let label = label(status(trailers));
                    self.finish(label);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("grpc-unknown"),
            Poll::Ready(None) => self.finish("grpc-missing"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.finish("grpc-cancelled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_server_failures_are_told_apart() {
        assert_eq!(label(Some("0")), "grpc-ok");
        assert_eq!(label(Some("14")), "grpc-unavailable");
        assert_eq!(label(Some("99")), "grpc-other");
        assert_eq!(label(Some("<script>")), "grpc-other");
        assert_eq!(label(None), "grpc-missing");
        assert!(is_server_failure("grpc-unavailable"));
        assert!(!is_server_failure("grpc-not_found"));
        assert!(!is_server_failure("grpc-ok"));
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "14".parse().expect("value"));
        assert!(unavailable(&h));
    }
}
