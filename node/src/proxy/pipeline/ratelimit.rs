//! Rate limit: a `ratelimit` entry's token bucket for the destination (per source if it
//! says so) admits the request or answers 429 with `Retry-After`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::header::HeaderValue;
use hyper::StatusCode;

use super::{text, BoxFuture, L7Request, Outcome};
use crate::resilience::ResilienceState;
use crate::telemetry::Metrics;

/// Adds `RateLimit`.
#[derive(Clone)]
pub struct RateLimitLayer {
    state: Arc<ResilienceState>,
    metrics: Arc<Metrics>,
}

impl RateLimitLayer {
    /// Buckets live in `state`; refusals count in `weft_ratelimited_total`.
    pub fn new(state: Arc<ResilienceState>, metrics: Arc<Metrics>) -> Self {
        Self { state, metrics }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S> tower::Service<L7Request> for RateLimit<S>
where
    S: tower::Service<
        L7Request,
        Response = Outcome,
        Error = Infallible,
        Future = BoxFuture<Outcome>,
    >,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<Outcome>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: L7Request) -> Self::Future {
        let ctx = &req.ctx;
        if let Some(rl) = ctx.applied.ratelimits.get(&ctx.dst) {
            if !self.layer.state.allow_rate(&ctx.dst, &ctx.src, rl) {
                Metrics::inc(&self.layer.metrics.ratelimited, &ctx.dst);
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("weft: rate limit for {} exceeded\n", ctx.dst),
                );
                r.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Box::pin(async move { Ok(Outcome::Local(r)) });
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Layer as _, Service as _, ServiceExt as _};

    use super::super::testing::{local_status, request, Answer};
    use super::*;
    use crate::cluster_config::Applied;
    use crate::resilience::RateLimit as Limit;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_admits_its_rate_and_refills() {
        let mut applied = Applied::default();
        applied.ratelimits.insert(
            "reviews".into(),
            Limit {
                rps: 2.0,
                burst: Some(5),
                per_source: false,
            },
        );
        let req = request(applied);
        let inner = Answer::new(StatusCode::OK, Duration::ZERO);
        let metrics = Arc::new(Metrics::new(Arc::default()));
        let mut svc = RateLimitLayer::new(Arc::default(), metrics).layer(inner.clone());
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let o = svc
                .ready()
                .await
                .expect("ready")
                .call(req.clone())
                .await
                .expect("infallible");
            statuses.push(local_status(&o).expect("local"));
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            10 - 5,
            "{statuses:?}"
        );
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5);
        assert_eq!(
            inner.calls(),
            5,
            "refused requests never reach the inner service"
        );
        // A second later the bucket holds two more tokens (2 per second).
        tokio::time::advance(Duration::from_secs(1)).await;
        let o = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("infallible");
        assert_eq!(local_status(&o), Some(200));
    }
}
