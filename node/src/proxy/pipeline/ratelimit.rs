//! Rate limit: a `ratelimit` entry's token bucket for the destination (per source if it
//! says so) admits the request or answers 429 with `Retry-After`.

use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::StatusCode;

use super::{answer, text, BoxFuture, L7Request, Next, Outcome, Stage};
use crate::resilience::ResilienceState;
use crate::telemetry::Metrics;

/// The stage.
#[derive(Clone)]
pub struct RateLimit {
    state: Arc<ResilienceState>,
    metrics: Arc<Metrics>,
}

impl RateLimit {
    /// Buckets live in `state`; refusals count in `weft_ratelimited_total`.
    pub fn new(state: Arc<ResilienceState>, metrics: Arc<Metrics>) -> Self {
        Self { state, metrics }
    }
}

impl Stage for RateLimit {
    fn handle<S: Next>(&self, req: L7Request, next: &mut S) -> BoxFuture<Outcome> {
        let ctx = &req.ctx;
        if let Some(rl) = ctx.applied.ratelimits.get(&ctx.dst) {
            if !self.state.allow_rate(&ctx.dst, &ctx.src, rl) {
                Metrics::inc(&self.metrics.ratelimited, &ctx.dst);
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("weft: rate limit for {} exceeded\n", ctx.dst),
                );
                r.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return answer(r);
            }
        }
        next.call(req)
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
        let mut svc = RateLimit::new(Arc::default(), metrics)
            .layer()
            .layer(inner.clone());
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
