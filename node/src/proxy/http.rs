//! L7: HTTP/1.1 and HTTP/2 (h2c) from local apps, each request routed and balanced on
//! its own and carried to the chosen instance over a reused QUIC stream (`streams`), as
//! HTTP/1.1 keep-alive or, for `http2`/`grpc` services, one multiplexed HTTP/2 stream. Used by upstream listeners of HTTP services and by the
//! HTTP forward proxy (`http://SERVICE/…`, `CONNECT SERVICE:port`).

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Protocol;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt as _;
use tracing::{debug, warn};
use weft_ca::ServiceName;

use super::header::{valid_traceparent, StreamHeader};
use super::inputs::ProxyInputs;
use crate::policy::normalize_path;
use crate::telemetry::spans::TraceParent;

/// Response body type of the proxy.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Largest request body buffered, so that a failed attempt can be retried (linkerd keeps
/// the same): a body that announces more, or whose length is not announced, streams to
/// the instance and is not retried once sent.
pub const RETRY_BUFFER: usize = 64 * 1024;

/// A request's body across its attempts.
pub enum RequestBody {
    /// Small (or empty): kept, so every attempt sends it.
    Buffered(Bytes),
    /// The first bytes read, then the rest, streamed to the first attempt that gets as
    /// far as sending it.
    Streaming(std::sync::Mutex<Option<Prefixed>>),
}

/// A body whose first bytes were already read: those, then the rest as it arrives.
pub struct Prefixed {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(prefix))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// Reads `body` until it ends (Buffered: small, validated, retryable) or more than
/// `RETRY_BUFFER` bytes came (Streaming: those bytes and the rest). Err: it is malformed.
async fn read_body(mut body: Incoming) -> Result<RequestBody, hyper::Error> {
    let mut prefix = bytes::BytesMut::new();
    while prefix.len() <= RETRY_BUFFER {
        match body.frame().await {
            None => return Ok(RequestBody::Buffered(prefix.freeze())),
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    prefix.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(RequestBody::Streaming(std::sync::Mutex::new(Some(
        Prefixed {
            prefix: Some(prefix.freeze()),
            rest: body,
        },
    ))))
}

impl RequestBody {
    /// The body for one attempt; None once a streamed body was sent.
    pub fn for_attempt(&self) -> Option<ProxyBody> {
        match self {
            Self::Buffered(b) => Some(Full::new(b.clone()).map_err(|never| match never {}).boxed()),
            Self::Streaming(slot) => slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .map(|b| b.boxed()),
        }
    }

    /// Whether a streamed body was already sent (no attempt can follow).
    pub fn spent(&self) -> bool {
        match self {
            Self::Buffered(_) => false,
            Self::Streaming(slot) => slot.lock().unwrap_or_else(|e| e.into_inner()).is_none(),
        }
    }
}

/// Where a connection's requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The forward proxy: the destination is the request's host; the source is the
    /// connecting process's service, if any.
    Proxy {
        /// Source service.
        source: Option<ServiceName>,
    },
    /// Every request to one service (an upstream listener, a virtual IP, an intercepted
    /// connection), from `source` (None: a process of no service), pinned to `version`
    /// when the name was `<version>.<service>.weft`.
    Service {
        /// Destination.
        destination: ServiceName,
        /// Source service.
        source: Option<ServiceName>,
        /// The version pinned, if any.
        version: Option<Arc<str>>,
    },
}

use super::pipeline::{text, Ctx, L7Request};

/// Time an app has to send a request's headers (also how long an idle keep-alive
/// connection is kept).
pub const APP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one app connection (HTTP/1.1 or h2c, with CONNECT upgrades) until it closes.
pub async fn serve_connection(inputs: Arc<ProxyInputs>, io: tokio::net::TcpStream, target: Target) {
    let inputs_for_guard = inputs.clone();
    let svc = hyper::service::service_fn(move |req| {
        let inputs = inputs.clone();
        let target = target.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(inputs, req, target).await) }
    });
    let metrics = inputs_for_guard.metrics.clone();
    let guarded = super::framing::FramingGuard::new(io, APP_HEADER_READ_TIMEOUT, move |reason| {
        warn!(reason, "request refused with 400: ambiguous framing");
        metrics.record("-", "unknown", "400", 0.0);
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(APP_HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(APP_HEADER_READ_TIMEOUT))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(guarded), svc)
        .await
    {
        debug!(error = %e, "app HTTP connection ended with an error");
    }
}

/// The hop-by-hop headers of RFC 9110 §7.6.1, plus those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(n);
    }
}

/// Requests whose framing is ambiguous are refused, never forwarded (request smuggling).
fn framing_error(headers: &HeaderMap) -> Option<&'static str> {
    let cls: Vec<&HeaderValue> = headers.get_all(CONTENT_LENGTH).iter().collect();
    if cls.len() > 1 {
        return Some("duplicate Content-Length");
    }
    if !cls.is_empty() && headers.contains_key(TRANSFER_ENCODING) {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if let Some(cl) = cls.first() {
        let ok = cl
            .to_str()
            .ok()
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return Some("invalid Content-Length");
        }
    }
    None
}

fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

fn destination_of(req: &Request<Incoming>) -> Option<String> {
    let host = req.uri().host().map(str::to_owned).or_else(|| {
        req.headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.split(':').next().unwrap_or("").to_owned())
    })?;
    Some(host.to_ascii_lowercase())
}

async fn handle(
    inputs: Arc<ProxyInputs>,
    req: Request<Incoming>,
    target: Target,
) -> Response<ProxyBody> {
    let mut pinned = None;
    let (destination, source) = match &target {
        Target::Service {
            destination,
            source,
            version,
        } => {
            pinned = version.clone();
            (destination.clone(), source.clone())
        }
        Target::Proxy { source } => {
            let Some(host) = destination_of(&req) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "weft: request names no service (use http://SERVICE/…)\n".into(),
                );
            };
            match ServiceName::new(host.clone()) {
                Ok(s) => (s, source.clone()),
                Err(_) => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!("weft: unknown service {host:?}\n"),
                    )
                }
            }
        }
    };
    if req.method() == Method::CONNECT {
        return connect(inputs, req, destination, source);
    }
    if matches!(target, Target::Proxy { .. })
        && inputs.catalog.get().protocol_of(&destination) == Some(crate::catalog::Protocol::Tcp)
    {
        return text(
            StatusCode::BAD_GATEWAY,
            format!("weft: {destination} is a TCP service: the HTTP proxy carries it only as a tunnel (CONNECT {destination}:PORT, e.g. curl -p -x http://PROXY …); or connect to {destination}.weft or an upstream listener\n"),
        );
    }
    forward(&inputs, req, destination, source, pinned).await
}

/// `CONNECT service:port`: a TCP tunnel to the service.
fn connect(
    inputs: Arc<ProxyInputs>,
    req: Request<Incoming>,
    destination: ServiceName,
    source: Option<ServiceName>,
) -> Response<ProxyBody> {
    let catalog = inputs.catalog.get();
    if !catalog.knows(&destination) {
        warn!(destination = %destination, "CONNECT to an unknown service");
        return text(
            StatusCode::BAD_GATEWAY,
            format!("weft: unknown service {destination}\n"),
        );
    }
    let http_service = catalog
        .instances
        .iter()
        .any(|i| i.service == destination && i.protocol.is_http());
    if http_service {
        let src = source.as_ref().map_or("-", |s| s.as_str());
        let d = inputs.authorize_stream(src, destination.as_str(), crate::catalog::Protocol::Http);
        if !d.allowed {
            return text(StatusCode::FORBIDDEN, format!("weft: {}\n", d.reason));
        }
    }
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                super::tcp::proxy_connection(
                    &inputs,
                    TokioIo::new(upgraded),
                    destination,
                    source,
                    None,
                )
                .await
            }
            Err(e) => debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    )
}

async fn forward(
    inputs: &Arc<ProxyInputs>,
    req: Request<Incoming>,
    destination: ServiceName,
    source: Option<ServiceName>,
    pinned: Option<Arc<str>>,
) -> Response<ProxyBody> {
    let started = tokio::time::Instant::now();
    let src = source
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into());
    // Metric labels name only services the catalog knows: a client asking for endless
    // made-up names must not grow /metrics.
    let known = inputs.catalog.get().protocol_of(&destination);
    let dst = if known.is_some() {
        destination.to_string()
    } else {
        "unknown".to_owned()
    };
    // Streams to peers are reused: an identity that expired since they opened carries
    // nothing more (revocation closes connections as soon as the list arrives).
    if inputs.identity.own_cert_expired() {
        inputs.metrics.record(&src, &dst, "503", 0.0);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "weft: this node's certificate has expired\n".into(),
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if let Some(why) = framing_error(req.headers()) {
        warn!(source = %src, destination = %dst, reason = why, "request refused: invalid framing");
        inputs.metrics.record(&src, &dst, "400", 0.0);
        return text(StatusCode::BAD_REQUEST, format!("weft: {why}\n"));
    }
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(_) => {
            warn!(source = %src, destination = %dst, "request refused: malformed request body");
            inputs.metrics.record(&src, &dst, "400", 0.0);
            return text(
                StatusCode::BAD_REQUEST,
                "weft: malformed request body\n".to_owned(),
            );
        }
    };
    let bytes_out = match &body {
        RequestBody::Buffered(b) => b.len() as u64,
        RequestBody::Streaming(_) => declared.unwrap_or(0),
    };
    let normalized = match normalize_path(&path) {
        Ok(p) => p,
        Err(why) => {
            inputs.metrics.record(&src, &dst, "400", 0.0);
            return text(
                StatusCode::BAD_REQUEST,
                format!("weft: path refused: {why}\n"),
            );
        }
    };
    let applied = inputs.config.get();
    let resilience = applied.resilience.get(&dst).cloned();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| dst.clone());
    // gRPC needs `te: trailers` to reach the server; HTTP/2 allows that one value.
    let te_trailers = parts
        .headers
        .get("te")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let protocol = known.unwrap_or(Protocol::Http);
    // A WebSocket (or other `Upgrade`) to an `http` service: the app's connection is
    // handed over once the instance answers 101.
    let upgrade_token =
        super::upgrade::token(parts.version, &parts.headers).filter(|_| protocol == Protocol::Http);
    let app_upgrade = upgrade_token
        .as_ref()
        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    strip_hop_by_hop(&mut parts.headers);
    if let Some(t) = &upgrade_token {
        super::upgrade::restore(&mut parts.headers, t);
    }
    if protocol.is_h2() && te_trailers {
        parts
            .headers
            .insert("te", HeaderValue::from_static("trailers"));
    }
    let incoming = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|t| valid_traceparent(t));
    // With spans exported, this hop is a span of its own: the next hop's parent is it,
    // and its parent the app's span. Without, the app's traceparent goes on as it came.
    let (traceparent, span_parent) = match (&inputs.spans, incoming) {
        (Some(_), Some(t)) => match TraceParent::parse(t) {
            Some(parent) => (parent.child().to_string(), Some(parent.span_id)),
            None => (new_traceparent(), None),
        },
        (None, Some(t)) => (t.to_owned(), None),
        (_, None) => (new_traceparent(), None),
    };
    if let Ok(v) = HeaderValue::from_str(&traceparent) {
        parts.headers.insert("traceparent", v);
    }
    if let Ok(v) = HeaderValue::from_str(&authority) {
        parts.headers.insert(HOST, v);
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    // The entry's timeout, else the agent's default, up to the response head.
    let timeout = resilience
        .as_ref()
        .and_then(|r| r.timeout)
        .or_else(|| inputs.request_timeout());
    let request = L7Request {
        ctx: Arc::new(Ctx {
            src,
            dst,
            header: StreamHeader {
                protocol,
                destination,
                source,
                traceparent: Some(traceparent.clone()),
            },
            method,
            path,
            normalized,
            path_and_query,
            applied,
            resilience,
            timeout,
            traceparent,
            span_parent,
            bytes_out,
            started,
            version: std::sync::OnceLock::new(),
            pinned,
        }),
        headers: Arc::new(parts.headers),
        body: Arc::new(body),
        version: None,
        mirror: false,
    };
    let Ok(mut resp) = super::pipeline::stack(inputs).oneshot(request).await;
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(app)) = (resp.status(), app_upgrade) {
        let hop = hyper::upgrade::on(&mut resp);
        super::upgrade::splice(app, hop, "outbound");
        return resp;
    }
    strip_hop_by_hop(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_checks() {
        let mut h = HeaderMap::new();
        h.append(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(framing_error(&h), None);
        h.append(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(framing_error(&h), Some("duplicate Content-Length"));
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(framing_error(&h).is_some());
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("+5"));
        assert_eq!(framing_error(&h), Some("invalid Content-Length"));
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn fresh_traceparents_are_valid() {
        for _ in 0..100 {
            assert!(valid_traceparent(&new_traceparent()));
        }
    }
}
