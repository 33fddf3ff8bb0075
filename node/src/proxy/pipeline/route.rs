//! Routes: a `route` entry for the destination picks the version this request goes to
//! (header/path/method matches first, then weighted splits, sticky by header or cookie).
//! No entry, or no matching rule: any version. A route's `mirror` sends a copy of a share
//! of requests to another version, fire-and-forget: the copy runs in its own task with
//! one attempt, its answer is read and discarded, and it never delays the request; a
//! copy is skipped when the body is streamed (over 64 KiB), the request upgrades, or
//! `MAX_MIRRORS_IN_FLIGHT` copies are already running.

use std::sync::Arc;

use http_body_util::BodyExt as _;
use hyper::header::{HeaderValue, UPGRADE};

use super::{BoxFuture, L7Request, Next, Outcome, Stage};
use crate::proxy::http::RequestBody;
use crate::routing::RequestView;
use crate::telemetry::Metrics;

/// Most bytes of a mirrored answer read (the rest is dropped with the stream).
const MIRROR_DRAIN: usize = 1 << 20;

/// The stage.
#[derive(Clone, Debug)]
pub struct Route {
    mirror_slots: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
}

impl Route {
    /// Copies take a permit from `mirror_slots` and count in `metrics`.
    pub fn new(mirror_slots: Arc<tokio::sync::Semaphore>, metrics: Arc<Metrics>) -> Self {
        Self {
            mirror_slots,
            metrics,
        }
    }

    /// Starts a copy of `req` to `version` through `next` in its own task (or counts it
    /// skipped).
    fn mirror<S: Next>(&self, req: &L7Request, version: &str, next: &S) {
        let dst = req.ctx.dst.clone();
        let skip = |why: &str| self.metrics.count_mirror(&dst, version, why);
        let RequestBody::Buffered(body) = &*req.body else {
            return skip("skipped");
        };
        if req.headers.contains_key(UPGRADE) {
            return skip("skipped");
        }
        let Ok(permit) = self.mirror_slots.clone().try_acquire_owned() else {
            return skip("skipped");
        };
        let mut headers = (*req.headers).clone();
        headers.insert("x-weft-mirror", HeaderValue::from_static("1"));
        let copy = L7Request {
            ctx: req.ctx.clone(),
            headers: Arc::new(headers),
            body: Arc::new(RequestBody::Buffered(body.clone())),
            version: Some(Arc::from(version)),
            mirror: true,
        };
        let next = next.clone();
        let metrics = self.metrics.clone();
        let version = version.to_owned();
        tokio::spawn(async move {
            use tower::ServiceExt as _;
            let outcome = match next.oneshot(copy).await {
                Ok(Outcome::Answered { resp, .. }) => {
                    let ok = resp.status().as_u16() < 500;
                    // Read (and discard) the answer so the stream ends cleanly.
                    let _ = http_body_util::Limited::new(resp.into_body(), MIRROR_DRAIN)
                        .collect()
                        .await;
                    if ok {
                        "ok"
                    } else {
                        "error"
                    }
                }
                Ok(Outcome::Local(_)) => "error",
                Err(never) => match never {},
            };
            metrics.count_mirror(&dst, &version, outcome);
            drop(permit);
        });
    }
}

impl Stage for Route {
    fn handle<S: Next>(&self, mut req: L7Request, next: &mut S) -> BoxFuture<Outcome> {
        if let Some(v) = &req.ctx.pinned {
            req.version = Some(v.clone());
            let _ = req.ctx.version.set(v.clone());
            return next.call(req);
        }
        if let Some(route) = req.ctx.applied.routes.get(&req.ctx.dst) {
            if let Some(m) = &route.mirror {
                if rand::random_range(0..100) < m.percent {
                    self.mirror(&req, &m.version, next);
                }
            }
            let headers = req.headers.clone();
            let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let view = RequestView {
                path: &req.ctx.normalized,
                method: req.ctx.method.as_str(),
                header: &lookup,
            };
            req.version = route
                .pick_version(&view, |total| {
                    route
                        .sticky_draw(&view, total)
                        .unwrap_or_else(|| rand::random_range(0..total))
                })
                .map(Arc::from);
            if let Some(v) = &req.version {
                let _ = req.ctx.version.set(v.clone());
            }
        }
        next.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::StatusCode;
    use tower::{Layer as _, Service as _, ServiceExt as _};

    use super::super::testing::{request, Answer};
    use super::*;
    use crate::cluster_config::Applied;

    #[tokio::test(start_paused = true)]
    async fn the_chosen_version_travels_with_the_request() {
        let mut a = Applied::default();
        a.routes.insert(
            "reviews".into(),
            serde_json::from_value(serde_json::json!({
                "rules": [
                    { "match": { "headers": [{ "name": "x-user", "exact": "beta" }] }, "to": [{ "version": "v2", "weight": 100 }] },
                    { "to": [{ "version": "v1", "weight": 100 }] }
                ]
            }))
            .expect("a route"),
        );
        let inner = Answer::new(StatusCode::OK, Duration::ZERO);
        let mut svc = Route::new(Arc::new(tokio::sync::Semaphore::new(4)), Arc::default())
            .layer()
            .layer(inner.clone());
        let plain = request(a);
        svc.ready()
            .await
            .expect("ready")
            .call(plain.clone())
            .await
            .expect("ok");
        assert_eq!(
            inner.seen_version.lock().expect("lock").as_deref(),
            Some("v1")
        );
        let mut beta = plain;
        let mut h = hyper::HeaderMap::new();
        h.insert("x-user", hyper::header::HeaderValue::from_static("beta"));
        beta.headers = Arc::new(h);
        svc.ready()
            .await
            .expect("ready")
            .call(beta)
            .await
            .expect("ok");
        assert_eq!(
            inner.seen_version.lock().expect("lock").as_deref(),
            Some("v2")
        );
        // No route: any version.
        svc.ready()
            .await
            .expect("ready")
            .call(request(Applied::default()))
            .await
            .expect("ok");
        assert_eq!(inner.seen_version.lock().expect("lock").as_deref(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mirror_sends_a_copy_in_its_own_task_and_answers_the_original() {
        let mut a = Applied::default();
        a.routes.insert(
            "reviews".into(),
            serde_json::from_value(serde_json::json!({
                "rules": [{ "to": [{ "version": "v1", "weight": 100 }] }],
                "mirror": { "version": "v2", "percent": 100 }
            }))
            .expect("a route"),
        );
        let inner = Answer::new(StatusCode::OK, Duration::from_millis(5));
        let metrics = Arc::new(Metrics::new(Arc::default()));
        let mut svc = Route::new(Arc::new(tokio::sync::Semaphore::new(4)), metrics.clone())
            .layer()
            .layer(inner.clone());
        let started = tokio::time::Instant::now();
        svc.ready()
            .await
            .expect("ready")
            .call(request(a))
            .await
            .expect("ok");
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(5),
            "the copy adds nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(inner.calls(), 2, "the original and its copy");
        let text = metrics.render();
        assert!(
            text.contains(
                "weft_mirrored_total{destination=\"reviews\",version=\"v2\",outcome=\"error\"} 1"
            ),
            "the copy is counted (a local answer counts as an error): {text}"
        );
    }
}
