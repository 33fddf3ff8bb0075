//! Injected faults: a `fault` entry delays and/or aborts a share of the destination's
//! requests (optionally only under a path prefix) before they go anywhere.

use hyper::StatusCode;

use super::{text, BoxFuture, L7Request, Next, Outcome, Stage};

/// The stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fault;

impl Stage for Fault {
    fn handle<S: Next>(&self, req: L7Request, next: &mut S) -> BoxFuture<Outcome> {
        let Some(f) = req.ctx.applied.faults.get(&req.ctx.dst) else {
            return next.call(req);
        };
        let (delay, abort) = f.decide(
            &req.ctx.normalized,
            rand::random_range(0..100),
            rand::random_range(0..100),
        );
        if delay.is_none() && abort.is_none() {
            return next.call(req);
        }
        // The pipeline's services are always ready: a clone may be called later.
        let mut next = next.clone();
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if let Some(code) = abort {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return Ok(Outcome::Local(text(
                    status,
                    "weft: fault injected\n".into(),
                )));
            }
            next.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Layer as _, Service as _, ServiceExt as _};

    use super::super::testing::{local_status, request, Answer};
    use super::*;
    use crate::cluster_config::Applied;
    use crate::resilience::fault::{Fault as FaultEntry, FaultAbort, FaultDelay};

    fn applied(delay_percent: u32, abort_percent: u32, prefix: Option<&str>) -> Applied {
        let mut a = Applied::default();
        a.faults.insert(
            "reviews".into(),
            FaultEntry {
                path_prefix: prefix.map(str::to_owned),
                delay: Some(FaultDelay {
                    duration: Duration::from_millis(300),
                    percent: delay_percent,
                }),
                abort: Some(FaultAbort {
                    status: 503,
                    percent: abort_percent,
                }),
            },
        );
        a
    }

    #[tokio::test(start_paused = true)]
    async fn delays_then_aborts_as_configured() {
        let inner = Answer::new(StatusCode::OK, Duration::ZERO);
        let mut svc = Fault.layer().layer(inner.clone());

        let start = tokio::time::Instant::now();
        let o = svc
            .ready()
            .await
            .expect("ready")
            .call(request(applied(100, 0, None)))
            .await
            .expect("ok");
        assert_eq!(local_status(&o), Some(200));
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(300),
            "delayed exactly"
        );

        let start = tokio::time::Instant::now();
        let o = svc
            .ready()
            .await
            .expect("ready")
            .call(request(applied(100, 100, None)))
            .await
            .expect("ok");
        assert_eq!(local_status(&o), Some(503), "aborted after the delay");
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(
            inner.calls(),
            1,
            "an aborted request never reaches the instance"
        );

        // Outside the path prefix nothing happens.
        let start = tokio::time::Instant::now();
        let o = svc
            .ready()
            .await
            .expect("ready")
            .call(request(applied(100, 100, Some("/other"))))
            .await
            .expect("ok");
        assert_eq!(local_status(&o), Some(200));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
