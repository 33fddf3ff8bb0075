//! One attempt: choose an instance (`dial::choose`: balancer, zone, exclusions, a
//! reachable node), check policy for a same-node instance, and send the request — over a
//! reused stream to another node (`streams`), or through the keep-alive pool to a local
//! instance — within the per-try timeout. The balancer and the outlier detector learn
//! from every answer and failure here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{Request, Response, StatusCode, Version};
use tracing::{debug, warn};

use super::{text, BoxFuture, L7Request};
use crate::catalog::Protocol;
use crate::proxy::dial::{choose, DialError};
use crate::proxy::header::StreamHeader;
use crate::proxy::http::ProxyBody;
use crate::proxy::inputs::ProxyInputs;
use crate::proxy::streams::PeerRoute;
use crate::telemetry::Metrics;

/// An attempt: the request, and the endpoints not to choose (already tried, ejected).
pub struct Try {
    /// The request.
    pub req: L7Request,
    /// Endpoint keys to avoid unless nothing else is left.
    pub excluded: Vec<String>,
}

/// What an attempt came to.
pub enum Tried {
    /// The instance answered (any status).
    Answered {
        /// The answer.
        resp: Response<Incoming>,
        /// The node that served it.
        node: String,
        /// The endpoint tried.
        key: String,
        /// A 5xx, or a gRPC UNAVAILABLE.
        is_5xx: bool,
        /// A trailers-only gRPC UNAVAILABLE.
        unavailable: bool,
    },
    /// No answer.
    Failed {
        /// Why.
        error: AttemptError,
        /// The endpoint tried.
        key: String,
    },
    /// Answer this and stop (no instance, denied by policy, bad target).
    Final(Response<ProxyBody>),
    /// The streamed body already went to an earlier attempt: nothing more can be sent.
    Spent,
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct AttemptError {
    /// What failed (with its causes).
    pub reason: String,
    /// Nothing of the request left this node (no stream could be opened): safe to try
    /// another instance whatever the method.
    pub unsent: bool,
}

impl AttemptError {
    fn send(e: &hyper_util::client::legacy::Error) -> Self {
        Self {
            reason: error_chain(e),
            unsent: e.is_connect(),
        }
    }
}

/// An error and its causes, `a: b: c` (hyper's own say only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The innermost service.
#[derive(Clone)]
pub struct Endpoint {
    inputs: Arc<ProxyInputs>,
}

impl Endpoint {
    /// Sends through `inputs`' balancer, pools and clients.
    pub fn new(inputs: Arc<ProxyInputs>) -> Self {
        Self { inputs }
    }
}

impl tower::Service<Try> for Endpoint {
    type Response = Tried;
    type Error = Infallible;
    type Future = BoxFuture<Tried>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, t: Try) -> Self::Future {
        let inputs = self.inputs.clone();
        Box::pin(async move { Ok(attempt(&inputs, t).await) })
    }
}

async fn attempt(inputs: &ProxyInputs, t: Try) -> Tried {
    let ctx = &t.req.ctx;
    let chosen = match choose(
        inputs,
        &ctx.header.destination,
        t.req.version.as_deref(),
        t.excluded,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let status = match &e {
                DialError::UnknownService(_) | DialError::Connect { .. } => StatusCode::BAD_GATEWAY,
                DialError::NoHealthyInstance(..) => StatusCode::SERVICE_UNAVAILABLE,
            };
            warn!(source = %ctx.src, destination = %ctx.dst, error = %e, "request failed: no instance reachable");
            return Tried::Final(text(status, format!("weft: {e}\n")));
        }
    };
    let instance = &chosen.instance;
    // Same-node instances are reached without an inbound hop: check policy here.
    if instance.is_local {
        let d = inputs.authorize(
            &ctx.src,
            &ctx.dst,
            Some((&ctx.normalized, ctx.method.as_str())),
        );
        if !d.allowed {
            return Tried::Final(text(
                StatusCode::FORBIDDEN,
                format!("weft: denied by policy rule {}: {}\n", d.rule, d.reason),
            ));
        }
    }
    let key = crate::routing::endpoint_key(instance);
    let Some(body) = t.req.body.for_attempt() else {
        return Tried::Spent;
    };
    inputs.balancer.start(&key);
    let h2 = ctx.header.protocol.is_h2();
    let mut out = Request::new(body);
    *out.method_mut() = ctx.method.clone();
    *out.headers_mut() = (*t.req.headers).clone();
    *out.version_mut() = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    // A local instance through the keep-alive pool to it; another node's over a reused
    // stream whose pool key (the URI's authority) names the route.
    let authority = if instance.is_local {
        if h2 {
            // HTTP/2 names the authority in the request; a different `host` is refused
            // by servers (nginx answers 400).
            out.headers_mut().remove(HOST);
        }
        instance.local_addr.to_string()
    } else {
        PeerRoute {
            node: instance.node.clone(),
            addr: instance.node_addr,
            generation: instance.node_generation,
            header: StreamHeader {
                traceparent: None,
                ..ctx.header.clone()
            },
        }
        .authority()
    };
    *out.uri_mut() = match format!("http://{authority}{}", ctx.path_and_query).parse() {
        Ok(u) => u,
        Err(_) => {
            inputs.balancer.fail(&key);
            return Tried::Final(text(
                StatusCode::BAD_REQUEST,
                "weft: invalid request target\n".into(),
            ));
        }
    };
    let exchange = match (instance.is_local, h2) {
        (true, false) => inputs.backend.request(out),
        (true, true) => inputs.backend_h2.request(out),
        (false, _) => inputs.peers.for_protocol(ctx.header.protocol).request(out),
    };
    let result = match ctx.resilience.as_ref().and_then(|r| r.per_try_timeout) {
        Some(limit) => match tokio::time::timeout(limit, exchange).await {
            Ok(r) => r.map_err(|e| AttemptError::send(&e)),
            Err(_) => Err(AttemptError {
                reason: "per-try timeout".into(),
                unsent: false,
            }),
        },
        None => exchange.await.map_err(|e| AttemptError::send(&e)),
    };
    match result {
        Ok(resp) => {
            inputs.balancer.finish(&key, chosen.started.elapsed());
            let unavailable = ctx.header.protocol == Protocol::Grpc
                && crate::proxy::grpc::unavailable(resp.headers());
            let is_5xx = resp.status().is_server_error() || unavailable;
            if let Some(o) = ctx.resilience.as_ref().and_then(|r| r.outlier.as_ref()) {
                let total = inputs.catalog.get().routable(&ctx.header.destination).len();
                if inputs.resilience.record_response(&key, is_5xx, o, total) {
                    warn!(endpoint = %key, "instance ejected as an outlier");
                    Metrics::inc(&inputs.metrics.ejections, &ctx.dst);
                }
            }
            Tried::Answered {
                resp,
                node: instance.node.clone(),
                key,
                is_5xx,
                unavailable,
            }
        }
        Err(error) => {
            inputs.balancer.fail(&key);
            debug!(endpoint = %key, error = %error, "upstream request failed");
            Tried::Failed { error, key }
        }
    }
}
