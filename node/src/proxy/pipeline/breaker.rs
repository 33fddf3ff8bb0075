//! Circuit breaker: a `resilience` entry's `max_concurrent` caps the destination's
//! requests in flight from this node; one more is answered 503 at once. The slot is held
//! until the response head (retries included).

use std::sync::Arc;

use hyper::StatusCode;

use super::{answer, text, BoxFuture, L7Request, Next, Outcome, Stage};
use crate::resilience::ResilienceState;

/// The stage.
#[derive(Clone)]
pub struct Breaker {
    state: Arc<ResilienceState>,
}

impl Breaker {
    /// Counters live in `state`.
    pub fn new(state: Arc<ResilienceState>) -> Self {
        Self { state }
    }
}

impl Stage for Breaker {
    fn handle<S: Next>(&self, req: L7Request, next: &mut S) -> BoxFuture<Outcome> {
        let max = req.ctx.resilience.as_ref().and_then(|r| r.max_concurrent);
        let Some(slot) = self.state.enter(&req.ctx.dst, max) else {
            return answer(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "weft: circuit open for {} (too many requests in flight)\n",
                    req.ctx.dst
                ),
            ));
        };
        let fut = next.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(slot);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Layer as _, Service as _, ServiceExt as _};

    use super::super::testing::{local_status, request, resilience, Answer};
    use super::*;
    use crate::cluster_config::Applied;

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_cap_are_refused_until_one_finishes() {
        let mut a = Applied::default();
        a.resilience.insert(
            "reviews".into(),
            resilience(serde_json::json!({ "max_concurrent": 2 })),
        );
        let req = request(a);
        let inner = Answer::new(StatusCode::OK, Duration::from_secs(1));
        let mut svc = Breaker::new(Arc::default()).layer().layer(inner.clone());
        let first = svc.ready().await.expect("ready").call(req.clone());
        let second = svc.ready().await.expect("ready").call(req.clone());
        let third = svc
            .ready()
            .await
            .expect("ready")
            .call(req.clone())
            .await
            .expect("ok");
        assert_eq!(
            local_status(&third),
            Some(503),
            "the third in flight is refused"
        );
        let (a, b) = tokio::join!(first, second);
        assert_eq!(local_status(&a.expect("ok")), Some(200));
        assert_eq!(local_status(&b.expect("ok")), Some(200));
        let again = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("ok");
        assert_eq!(
            local_status(&again),
            Some(200),
            "slots are released with the answer"
        );
        assert_eq!(inner.calls(), 3);
    }
}
