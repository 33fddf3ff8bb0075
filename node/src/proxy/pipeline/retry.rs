//! Retries within a budget. An attempt that got no answer is tried on another instance
//! when the method allows it (idempotent, or the entry's `retry_non_idempotent`) or when
//! nothing of it left this node; a 5xx when the entry says `retry_on_5xx`; a gRPC
//! trailers-only UNAVAILABLE for gRPC services. Every retry takes from the destination's
//! retry budget (a share of its requests over 10 s); a streamed body that was already
//! sent is never sent again. The last 5xx is answered when the retries run out.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::StatusCode;
use tracing::{debug, warn};

use super::endpoint::{AttemptError, Tried, Try};
use super::{text, BoxFuture, L7Request, Outcome};
use crate::catalog::Protocol;
use crate::resilience::{ResilienceState, RetryPolicy};
use crate::telemetry::Metrics;

/// Adds `Retry` (its inner service sends one attempt: `endpoint::Endpoint`).
#[derive(Clone)]
pub struct RetryLayer {
    state: Arc<ResilienceState>,
    metrics: Arc<Metrics>,
}

impl RetryLayer {
    /// Budgets and ejections live in `state`; retries count in `weft_retries_total`.
    pub fn new(state: Arc<ResilienceState>, metrics: Arc<Metrics>) -> Self {
        Self { state, metrics }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service.
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

impl<S> tower::Service<L7Request> for Retry<S>
where
    S: tower::Service<Try, Response = Tried, Error = Infallible, Future = BoxFuture<Tried>>
        + Clone
        + Send
        + 'static,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<Outcome>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each attempt readies the inner service itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: L7Request) -> Self::Future {
        let inner = self.inner.clone();
        let layer = self.layer.clone();
        Box::pin(async move { Ok(retry(layer, inner, req).await) })
    }
}

async fn retry<S>(layer: RetryLayer, mut inner: S, req: L7Request) -> Outcome
where
    S: tower::Service<Try, Response = Tried, Error = Infallible, Future = BoxFuture<Tried>>,
{
    use tower::ServiceExt as _;
    let ctx = req.ctx.clone();
    let grpc = ctx.header.protocol == Protocol::Grpc;
    let policy = if grpc {
        RetryPolicy::for_grpc(ctx.resilience.as_ref())
    } else {
        RetryPolicy::for_request(&ctx.method, ctx.resilience.as_ref())
    };
    // A mirrored copy is tried once and does not count toward the budget's base.
    let max_attempts = if req.mirror { 1 } else { policy.max_attempts };
    if !req.mirror {
        layer.state.budget_request(&ctx.dst);
    }
    let mut excluded = layer.state.ejected();
    let mut retrying_unavailable = false;
    let mut last_error: Option<AttemptError> = None;
    let mut last_5xx: Option<Outcome> = None;
    for attempt in 0..max_attempts {
        if attempt > 0 {
            let unsent = last_error.as_ref().is_some_and(|e| e.unsent);
            let allowed =
                policy.may_retry || unsent || (policy.retry_unavailable && retrying_unavailable);
            if !allowed
                || req.body.spent()
                || !layer.state.try_retry(&ctx.dst, policy.budget_percent)
            {
                break;
            }
            Metrics::inc(&layer.metrics.retries, &ctx.dst);
        }
        let t = Try {
            req: req.clone(),
            excluded: excluded.clone(),
        };
        let Ok(svc) = inner.ready().await;
        let Ok(tried) = svc.call(t).await;
        match tried {
            Tried::Final(r) => return Outcome::Local(r),
            Tried::Spent => break,
            Tried::Answered {
                resp,
                node,
                key,
                is_5xx,
                unavailable,
            } => {
                excluded.push(key);
                let answered = Outcome::Answered { resp, node };
                if unavailable && policy.retry_unavailable {
                    debug!(attempt, "gRPC UNAVAILABLE; may retry");
                    retrying_unavailable = true;
                    last_5xx = Some(answered);
                    continue;
                }
                if is_5xx && policy.retry_5xx {
                    debug!(attempt, "5xx; may retry");
                    last_5xx = Some(answered);
                    continue;
                }
                return answered;
            }
            Tried::Failed { error, key } => {
                excluded.push(key);
                last_error = Some(error);
                retrying_unavailable = false;
            }
        }
    }
    if let Some(answered) = last_5xx {
        return answered;
    }
    let reason = last_error.map(|e| e.reason).unwrap_or_default();
    warn!(source = %ctx.src, destination = %ctx.dst, error = %reason, "request failed on every attempt");
    Outcome::Local(text(
        StatusCode::BAD_GATEWAY,
        format!("weft: {} failed: {reason}\n", ctx.dst),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use hyper::Method;
    use tower::{Layer as _, Service as _, ServiceExt as _};

    use super::super::testing::{local_status, request};
    use super::*;
    use crate::cluster_config::Applied;

    /// Attempts answer from a script (`None`: fail as sent, `Some(true)`: fail unsent,
    /// then `Final(200)` once the script is used up), recording what each excluded.
    #[derive(Clone)]
    struct Script {
        failures: Arc<Mutex<Vec<bool>>>,
        calls: Arc<AtomicU32>,
        excluded: Arc<Mutex<Vec<Vec<String>>>>,
    }

    impl Script {
        fn new(failures: &[bool]) -> Self {
            Self {
                failures: Arc::new(Mutex::new(failures.iter().rev().copied().collect())),
                calls: Arc::default(),
                excluded: Arc::default(),
            }
        }
    }

    impl tower::Service<Try> for Script {
        type Response = Tried;
        type Error = Infallible;
        type Future = BoxFuture<Tried>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, t: Try) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            self.excluded.lock().expect("lock").push(t.excluded);
            let next = self.failures.lock().expect("lock").pop();
            Box::pin(async move {
                Ok(match next {
                    Some(unsent) => Tried::Failed {
                        error: AttemptError {
                            reason: "reset".into(),
                            unsent,
                        },
                        key: format!("node-{n}"),
                    },
                    None => Tried::Final(text(StatusCode::OK, String::new())),
                })
            })
        }
    }

    fn with_method(method: Method) -> L7Request {
        let mut r = request(Applied::default());
        let ctx = Arc::get_mut(&mut r.ctx).expect("unshared");
        ctx.method = method;
        r
    }

    async fn run(script: &Script, req: L7Request) -> Option<u16> {
        let metrics = Arc::new(Metrics::new(Arc::default()));
        let mut svc = RetryLayer::new(Arc::default(), metrics).layer(script.clone());
        let o = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("ok");
        local_status(&o)
    }

    #[tokio::test(start_paused = true)]
    async fn failed_gets_go_elsewhere_and_posts_do_not() {
        let s = Script::new(&[false, false]);
        assert_eq!(run(&s, with_method(Method::GET)).await, Some(200));
        assert_eq!(
            s.calls.load(Ordering::Relaxed),
            3,
            "two failures, then an answer"
        );
        assert_eq!(
            s.excluded.lock().expect("lock").last().cloned(),
            Some(vec!["node-0".to_owned(), "node-1".to_owned()]),
            "each retry avoids the endpoints already tried"
        );

        let s = Script::new(&[false]);
        assert_eq!(run(&s, with_method(Method::POST)).await, Some(502));
        assert_eq!(
            s.calls.load(Ordering::Relaxed),
            1,
            "a POST that was sent is not sent again"
        );

        let s = Script::new(&[true]);
        assert_eq!(run(&s, with_method(Method::POST)).await, Some(200));
        assert_eq!(
            s.calls.load(Ordering::Relaxed),
            2,
            "a POST that never left may go elsewhere"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_attempt_limit() {
        let s = Script::new(&[false, false, false, false, false]);
        assert_eq!(run(&s, with_method(Method::GET)).await, Some(502));
        assert_eq!(
            s.calls.load(Ordering::Relaxed) as usize,
            crate::resilience::DEFAULT_ATTEMPTS
        );
    }
}
