//! The request timeout: the destination's `resilience` timeout, else the agent's
//! `request_timeout` (30 s by default; decided on arrival, in `Ctx::timeout`), bounds the
//! time to the response head, retries included; then 504. An answered response (a
//! WebSocket, a gRPC stream) is not cut.

use hyper::StatusCode;

use super::{text, BoxFuture, L7Request, Next, Outcome, Stage};

/// The stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timeout;

impl Stage for Timeout {
    fn handle<S: Next>(&self, req: L7Request, next: &mut S) -> BoxFuture<Outcome> {
        let Some(limit) = req.ctx.timeout else {
            return next.call(req);
        };
        let dst = req.ctx.dst.clone();
        let fut = next.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(out) => out,
                Err(_) => Ok(Outcome::Local(text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("weft: {dst} timed out after {limit:?}\n"),
                ))),
            }
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

    fn with_timeout(t: Duration) -> Applied {
        let mut a = Applied::default();
        a.resilience.insert(
            "reviews".into(),
            resilience(serde_json::json!({ "timeout": format!("{}ms", t.as_millis()) })),
        );
        a
    }

    #[tokio::test(start_paused = true)]
    async fn slow_answers_become_504_at_the_limit() {
        let slow = Answer::new(StatusCode::OK, Duration::from_secs(3));
        let mut svc = Timeout.layer().layer(slow);
        let start = tokio::time::Instant::now();
        let o = svc
            .ready()
            .await
            .expect("ready")
            .call(request(with_timeout(Duration::from_secs(2))))
            .await
            .expect("ok");
        assert_eq!(local_status(&o), Some(504));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let o = svc
            .ready()
            .await
            .expect("ready")
            .call(request(with_timeout(Duration::from_secs(4))))
            .await
            .expect("ok");
        assert_eq!(local_status(&o), Some(200));
        // No timeout at all (request_timeout = 0s and no entry): waits as long as it takes.
        let o = svc
            .ready()
            .await
            .expect("ready")
            .call(request(Applied::default()))
            .await
            .expect("ok");
        assert_eq!(local_status(&o), Some(200));
    }
}
