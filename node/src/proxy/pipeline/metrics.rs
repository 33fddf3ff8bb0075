//! Metrics and the access log, outermost: every request is counted once with its outcome
//! and duration — the status an instance answered, the refusal the mesh made, or for gRPC
//! the `grpc-status` (from the headers of a trailers-only answer, else from the trailers
//! when the stream ends) — and answered requests get an access-log entry.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt as _;
use hyper::{Response, StatusCode};

use super::{BoxFuture, L7Request, Outcome};
use crate::catalog::Protocol;
use crate::proxy::grpc;
use crate::proxy::http::ProxyBody;
use crate::telemetry::access_log::AccessEntry;
use crate::telemetry::spans::{Hop, SpanRecord, SpanSink, TraceParent};
use crate::telemetry::{AccessLog, Metrics};

/// The series label of requests no route pinned to a version.
const ANY_VERSION: &str = "any version";

/// Adds `Record`.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
    access_log: AccessLog,
    spans: Option<SpanSink>,
}

impl MetricsLayer {
    /// Counts into `metrics`, logs into `access_log`, and with `spans` makes a client
    /// span of each request.
    pub fn new(metrics: Arc<Metrics>, access_log: AccessLog, spans: Option<SpanSink>) -> Self {
        Self {
            metrics,
            access_log,
            spans,
        }
    }

    /// This hop's client span, if spans are exported and the trace is sampled.
    fn span(&self, ctx: &super::Ctx, status: u16, peer: Option<&str>, elapsed: f64) {
        let Some(sink) = &self.spans else { return };
        let Some(t) = TraceParent::parse(&ctx.traceparent).filter(TraceParent::sampled) else {
            return;
        };
        let end = std::time::SystemTime::now();
        sink.record(SpanRecord {
            trace_id: t.trace_id,
            span_id: t.span_id,
            parent: ctx.span_parent,
            hop: Hop::Outbound,
            start: end - std::time::Duration::from_secs_f64(elapsed),
            end,
            source: ctx.src.clone(),
            destination: ctx.dst.clone(),
            method: ctx.method.to_string(),
            path: ctx.path.clone(),
            status,
            peer: peer.map(str::to_owned),
            version: ctx.version.get().map(|v| v.to_string()),
        });
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Record<S>;
    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service.
#[derive(Clone)]
pub struct Record<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S> tower::Service<L7Request> for Record<S>
where
    S: tower::Service<
        L7Request,
        Response = Outcome,
        Error = Infallible,
        Future = BoxFuture<Outcome>,
    >,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<Response<ProxyBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: L7Request) -> Self::Future {
        let ctx = req.ctx.clone();
        let layer = self.layer.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Ok(outcome) = fut.await;
            let elapsed = ctx.started.elapsed().as_secs_f64();
            let (resp, node) = match outcome {
                Outcome::Local(r) => {
                    layer
                        .metrics
                        .record(&ctx.src, &ctx.dst, r.status().as_str(), elapsed);
                    if let Some(v) = ctx.version.get() {
                        layer
                            .metrics
                            .record_version(&ctx.dst, v, r.status().as_str(), elapsed);
                    }
                    layer.metrics.record_series(
                        &ctx.dst,
                        ctx.version.get().map_or(ANY_VERSION, |v| v),
                        r.status().as_str(),
                        elapsed,
                    );
                    layer.span(&ctx, r.status().as_u16(), None, elapsed);
                    return Ok(r);
                }
                Outcome::Answered { resp, node } => (resp, node),
            };
            let status = resp.status();
            // gRPC's outcome is grpc-status: in the headers of a trailers-only answer, else
            // recorded from the trailers when they arrive.
            let is_grpc = ctx.header.protocol == Protocol::Grpc;
            let streamed =
                is_grpc && status == StatusCode::OK && grpc::status(resp.headers()).is_none();
            if !streamed {
                let code = if is_grpc {
                    grpc::label(grpc::status(resp.headers()))
                } else {
                    status.as_str()
                };
                layer.metrics.record(&ctx.src, &ctx.dst, code, elapsed);
                if let Some(v) = ctx.version.get() {
                    layer.metrics.record_version(&ctx.dst, v, code, elapsed);
                }
                layer.metrics.record_series(
                    &ctx.dst,
                    ctx.version.get().map_or(ANY_VERSION, |v| v),
                    code,
                    elapsed,
                );
            }
            layer.span(&ctx, status.as_u16(), Some(&node), elapsed);
            layer.access_log.write(AccessEntry {
                time: std::time::SystemTime::now(),
                direction: "outbound",
                protocol: "http",
                source: ctx.src.clone(),
                destination: ctx.dst.clone(),
                upstream_node: node,
                method: Some(ctx.method.to_string()),
                path: Some(ctx.path.clone()),
                status: status.as_u16().to_string(),
                duration_ms: elapsed * 1000.0,
                bytes_out: ctx.bytes_out,
                bytes_in: 0,
                trace_id: ctx.traceparent.split('-').nth(1).map(str::to_owned),
            });
            if streamed {
                let record = grpc::Record {
                    metrics: layer.metrics.clone(),
                    source: ctx.src.clone(),
                    destination: ctx.dst.clone(),
                    started: ctx.started.into_std(),
                    version: ctx.version.get().cloned(),
                };
                return Ok(resp.map(|b| grpc::Outcome::new(b, record).boxed()));
            }
            Ok(resp.map(|b| b.boxed()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Layer as _, Service as _, ServiceExt as _};

    use super::super::testing::{request, Answer};
    use super::*;
    use crate::cluster_config::Applied;

    #[tokio::test(start_paused = true)]
    async fn local_answers_are_counted_with_their_duration() {
        let metrics = Arc::new(Metrics::new(Arc::default()));
        let log = AccessLog::start(
            crate::telemetry::access_log::AccessLogTarget::Off,
            metrics.clone(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("a log");
        let inner = Answer::new(StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(250));
        let mut svc = MetricsLayer::new(metrics.clone(), log, None).layer(inner);
        let r = svc
            .ready()
            .await
            .expect("ready")
            .call(request(Applied::default()))
            .await
            .expect("ok");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = metrics.render();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("weft_requests_total")
                    && l.contains("destination=\"reviews\"")
                    && l.contains("code=\"503\"")
            })
            .unwrap_or_else(|| panic!("no request counted: {text}"));
        assert!(line.ends_with(" 1"), "{line}");
        let sum = text
            .lines()
            .find(|l| l.starts_with("weft_request_duration_seconds_sum") && l.contains("reviews"))
            .unwrap_or_else(|| panic!("no duration: {text}"));
        assert!(sum.ends_with(" 0.25"), "the paused clock's 250 ms: {sum}");
    }
}
