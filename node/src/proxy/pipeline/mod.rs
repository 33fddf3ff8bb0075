//! The L7 request pipeline: each policy a tower `Layer` in its own file, around one
//! service that sends an attempt to an instance (`endpoint`). Outermost first:
//!
//! ```text
//! metrics (+ access log) → rate limit → fault → breaker → route → timeout → retry → endpoint
//! ```
//!
//! `http::forward` parses the app's request once (framing, body prefix, path) into an
//! `L7Request` and calls the stack; every layer reads the config snapshot the request
//! carries (`Ctx::applied`), so a reload never changes a request half-way. The pure rules
//! stay in `resilience/` and `routing/`; the layers only apply them. Each layer is tested
//! on its own with tokio's paused clock.

pub mod breaker;
pub mod endpoint;
pub mod fault;
pub mod metrics;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod timeout;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::header::StreamHeader;
use super::http::{ProxyBody, RequestBody};
use super::inputs::ProxyInputs;
use crate::cluster_config::Applied;
use crate::resilience::Resilience;

/// What one request is, decided once when it arrived.
#[derive(Debug)]
pub struct Ctx {
    /// Source label (`-` for none).
    pub src: String,
    /// Destination label (`unknown` for a service the catalog does not know).
    pub dst: String,
    /// The stream header the request travels under (protocol, destination, source).
    pub header: StreamHeader,
    /// Method.
    pub method: Method,
    /// Path as sent (access log).
    pub path: String,
    /// Normalised path (policy, routes, faults).
    pub normalized: String,
    /// Path and query forwarded.
    pub path_and_query: String,
    /// The config snapshot this request is decided by.
    pub applied: Arc<Applied>,
    /// The destination's resilience entry, if any.
    pub resilience: Option<Resilience>,
    /// Time allowed for the response head (the entry's, else the agent's default).
    pub timeout: Option<Duration>,
    /// W3C traceparent sent on.
    pub traceparent: String,
    /// The span this hop continues (the app's), when spans are exported.
    pub span_parent: Option<[u8; 8]>,
    /// Request body bytes from the app (announced length for a streamed body).
    pub bytes_out: u64,
    /// When the request arrived (tokio's clock: paused in tests).
    pub started: tokio::time::Instant,
    /// The version a route chose, once `route` chose one (per-version figures).
    pub version: std::sync::OnceLock<Arc<str>>,
    /// A version the request is pinned to whatever the route says
    /// (`<version>.<service>.weft`).
    pub pinned: Option<Arc<str>>,
}

/// A request in the pipeline. Cheap to clone (a retry sends it again).
#[derive(Clone)]
pub struct L7Request {
    /// Decided on arrival.
    pub ctx: Arc<Ctx>,
    /// Headers to send (hop-by-hop removed, traceparent and host set).
    pub headers: Arc<HeaderMap>,
    /// The body across attempts.
    pub body: Arc<RequestBody>,
    /// The version a route chose (set by `route`).
    pub version: Option<Arc<str>>,
    /// A mirrored copy (`route`): one attempt, no retry, answer discarded.
    pub mirror: bool,
}

/// What the stack below `metrics` produced.
pub enum Outcome {
    /// An instance answered (any status).
    Answered {
        /// Its response.
        resp: Response<Incoming>,
        /// The node that served it.
        node: String,
    },
    /// The mesh answered instead: a refusal, an injected fault, a timeout, no instance.
    Local(Response<ProxyBody>),
}

/// The boxed future every layer returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// The service below a stage: what the rest of the pipeline is to it.
pub trait Next:
    tower::Service<L7Request, Response = Outcome, Error = Infallible, Future = BoxFuture<Outcome>>
    + Clone
    + Send
    + 'static
{
}

impl<T> Next for T where
    T: tower::Service<
            L7Request,
            Response = Outcome,
            Error = Infallible,
            Future = BoxFuture<Outcome>,
        > + Clone
        + Send
        + 'static
{
}

/// One policy between the app and the instance: answers the request itself (a refusal,
/// a fault) or passes it on to `next`, which is ready. `Stage::layer` makes it a tower
/// `Layer`, so a policy file holds only its rule.
pub trait Stage: Clone + Send + Sync + 'static {
    /// Handles `req`.
    fn handle<S: Next>(&self, req: L7Request, next: &mut S) -> BoxFuture<Outcome>;

    /// This stage as a tower layer.
    fn layer(self) -> StageLayer<Self> {
        StageLayer(self)
    }
}

/// A `Stage` as a tower `Layer`.
#[derive(Clone, Debug)]
pub struct StageLayer<T>(T);

impl<T: Clone, S> tower::Layer<S> for StageLayer<T> {
    type Service = Staged<T, S>;
    fn layer(&self, inner: S) -> Staged<T, S> {
        Staged {
            stage: self.0.clone(),
            inner,
        }
    }
}

/// A `Stage` in front of the rest of the pipeline.
#[derive(Clone, Debug)]
pub struct Staged<T, S> {
    stage: T,
    inner: S,
}

impl<T: Stage, S: Next> tower::Service<L7Request> for Staged<T, S> {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<Outcome>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: L7Request) -> Self::Future {
        self.stage.handle(req, &mut self.inner)
    }
}

/// The answer `r`, now.
pub fn answer(r: Response<ProxyBody>) -> BoxFuture<Outcome> {
    Box::pin(async move { Ok(Outcome::Local(r)) })
}

/// A plain-text answer from the mesh.
pub fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The whole stack for `inputs` (built per app connection: a few `Arc` clones).
pub fn stack(
    inputs: &Arc<ProxyInputs>,
) -> impl tower::Service<
    L7Request,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = BoxFuture<Response<ProxyBody>>,
> + Clone
       + Send
       + 'static {
    tower::ServiceBuilder::new()
        .layer(metrics::MetricsLayer::new(
            inputs.metrics.clone(),
            inputs.access_log.clone(),
            inputs.spans.clone(),
        ))
        .layer(ratelimit::RateLimit::new(inputs.resilience.clone(), inputs.metrics.clone()).layer())
        .layer(fault::Fault.layer())
        .layer(breaker::Breaker::new(inputs.resilience.clone()).layer())
        .layer(route::Route::new(inputs.mirror_slots.clone(), inputs.metrics.clone()).layer())
        .layer(timeout::Timeout.layer())
        .layer(retry::RetryLayer::new(
            inputs.resilience.clone(),
            inputs.metrics.clone(),
        ))
        .service(endpoint::Endpoint::new(inputs.clone()))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A request for layer tests, and an inner service that answers as told.

    use super::*;
    use crate::catalog::Protocol;
    use weft_ca::ServiceName;

    /// A GET to `reviews` from `frontend` under `applied`.
    pub fn request(applied: Applied) -> L7Request {
        let resilience = applied.resilience.get("reviews").cloned();
        L7Request {
            ctx: Arc::new(Ctx {
                src: "frontend".into(),
                dst: "reviews".into(),
                header: StreamHeader {
                    protocol: Protocol::Http,
                    destination: ServiceName::new("reviews").expect("name"),
                    source: Some(ServiceName::new("frontend").expect("name")),
                    traceparent: None,
                },
                method: Method::GET,
                path: "/a".into(),
                normalized: "/a".into(),
                path_and_query: "/a".into(),
                timeout: resilience.as_ref().and_then(|r| r.timeout),
                resilience,
                applied: Arc::new(applied),
                traceparent: String::new(),
                span_parent: None,
                bytes_out: 0,
                started: tokio::time::Instant::now(),
                version: std::sync::OnceLock::new(),
                pinned: None,
            }),
            headers: Arc::default(),
            body: Arc::new(RequestBody::Buffered(Bytes::new())),
            version: None,
            mirror: false,
        }
    }

    /// A `resilience` entry from its JSON form.
    pub fn resilience(v: serde_json::Value) -> Resilience {
        serde_json::from_value(v).expect("a resilience entry")
    }

    /// The status of a local answer, or None for an instance's.
    pub fn local_status(o: &Outcome) -> Option<u16> {
        match o {
            Outcome::Local(r) => Some(r.status().as_u16()),
            Outcome::Answered { .. } => None,
        }
    }

    /// An inner service answering `Local(status)` after `delay`, counting its calls.
    #[derive(Clone)]
    pub struct Answer {
        pub status: StatusCode,
        pub delay: Duration,
        pub calls: Arc<std::sync::atomic::AtomicU32>,
        pub seen_version: Arc<std::sync::Mutex<Option<Arc<str>>>>,
    }

    impl Answer {
        pub fn new(status: StatusCode, delay: Duration) -> Self {
            Self {
                status,
                delay,
                calls: Arc::default(),
                seen_version: Arc::default(),
            }
        }
        pub fn calls(&self) -> u32 {
            self.calls.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    impl tower::Service<L7Request> for Answer {
        type Response = Outcome;
        type Error = Infallible;
        type Future = BoxFuture<Outcome>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: L7Request) -> Self::Future {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *self.seen_version.lock().expect("lock") = req.version.clone();
            let (status, delay) = (self.status, self.delay);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(Outcome::Local(text(status, String::new())))
            })
        }
    }
}
