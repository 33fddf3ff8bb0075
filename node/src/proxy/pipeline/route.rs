//! Routes: a `route` entry for the destination picks the version this request goes to
//! (header/path/method matches first, then weighted splits, sticky by header or cookie).
//! No entry, or no matching rule: any version.

use std::sync::Arc;

use super::{BoxFuture, L7Request, Next, Outcome, Stage};
use crate::routing::RequestView;

/// The stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Route;

impl Stage for Route {
    fn handle<S: Next>(&self, mut req: L7Request, next: &mut S) -> BoxFuture<Outcome> {
        if let Some(route) = req.ctx.applied.routes.get(&req.ctx.dst) {
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
        let mut svc = Route.layer().layer(inner.clone());
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
}
