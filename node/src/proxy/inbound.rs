//! Streams arriving from other nodes (ALPN `weft/1`, client certificate required): read
//! the header, check that the destination runs here and is healthy and that the asserted
//! source service runs on the authenticated peer inputs, then splice to the local instance.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{Protocol, SharedCatalog};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpStream;
use tracing::{debug, warn};
use weft_ca::{LeafInfo, ServiceName};

use super::header::{
    StreamHeader, ERR_BACKEND, ERR_HEADER, ERR_REFUSED, ERR_UNKNOWN_SERVICE, PREFIX_LEN,
};
use super::inputs::ProxyInputs;
use super::io::QuicIo;
use crate::policy::normalize_path;
use crate::telemetry::access_log::AccessEntry;
use crate::telemetry::spans::{Hop, SpanRecord, SpanSink, TraceParent};

/// The pooled HTTP client to local instances.
pub type BackendClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    BoxBody<Bytes, hyper::Error>,
>;

/// Builds a backend pool: HTTP/1.1 (or h2c with prior knowledge, `h2`), keep-alive,
/// idle connections closed after 30 s.
pub fn backend_client(h2: bool) -> BackendClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .http2_only(h2)
        .build(connector)
}

/// Serves the HTTP exchange(s) on an inbound stream (HTTP/1.1, or HTTP/2 when the sender
/// speaks it for an `http2`/`grpc` service) through the keep-alive pool to the instance
/// (`protocol` decides HTTP/1.1 or h2c), normalising paths and applying policy per
/// request.
async fn serve_http(
    inputs: &ProxyInputs,
    stream: QuicIo,
    hop: Protocol,
    protocol: Protocol,
    addr: SocketAddr,
    source: String,
    destination: String,
) {
    let h2 = protocol.is_h2();
    let client = if h2 {
        inputs.backend_h2.clone()
    } else {
        inputs.backend.clone()
    };
    let spans = inputs.spans.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let client = client.clone();
        let gate = authorize_request(inputs, &source, &destination, &req);
        // The server span of this hop (spans exported, trace sampled): the instance sees
        // it as its parent.
        let span = spans.as_ref().and_then(|sink| {
            let parent = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(TraceParent::parse)
                .filter(TraceParent::sampled)?;
            let me = parent.child();
            if let Ok(v) = hyper::header::HeaderValue::from_str(&me.to_string()) {
                req.headers_mut().insert("traceparent", v);
            }
            Some(ServerSpan {
                sink: sink.clone(),
                parent: parent.span_id,
                me,
                start: std::time::SystemTime::now(),
                method: req.method().to_string(),
                path: req.uri().path().to_owned(),
                source: source.clone(),
                destination: destination.clone(),
            })
        });
        async move {
            let resp = answer(client, gate, req, h2, addr).await;
            if let Some(span) = span {
                span.finish(resp.status().as_u16());
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let served = if hop.is_h2() {
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(io, svc)
            .await
    } else {
        hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .with_upgrades()
            .await
    };
    if let Err(e) = served {
        debug!(error = %e, "inbound HTTP stream ended with an error");
    }
}

/// An inbound hop's span, finished when the instance's answer head is back.
struct ServerSpan {
    sink: SpanSink,
    parent: [u8; 8],
    me: TraceParent,
    start: std::time::SystemTime,
    method: String,
    path: String,
    source: String,
    destination: String,
}

impl ServerSpan {
    fn finish(self, status: u16) {
        self.sink.record(SpanRecord {
            trace_id: self.me.trace_id,
            span_id: self.me.span_id,
            parent: Some(self.parent),
            hop: Hop::Inbound,
            start: self.start,
            end: std::time::SystemTime::now(),
            source: self.source,
            destination: self.destination,
            method: self.method,
            path: self.path,
            status,
            peer: None,
            version: None,
        });
    }
}

/// One request to the local instance (after policy), through the keep-alive pool.
async fn answer(
    client: BackendClient,
    gate: Result<String, Box<Response<BoxBody<Bytes, hyper::Error>>>>,
    mut req: Request<Incoming>,
    h2: bool,
    addr: SocketAddr,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    {
        let pq = match gate {
            Ok(pq) => pq,
            Err(resp) => return *resp,
        };
        // Hop-by-hop: the stream's `Connection` is not the backend's business (its
        // connections are pooled); an upgrade keeps `Connection: upgrade`.
        let upgrade = (!h2)
            .then(|| super::upgrade::token(req.version(), req.headers()))
            .flatten();
        let stream_upgrade = upgrade
            .as_ref()
            .and_then(|_| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>());
        req.headers_mut().remove(hyper::header::CONNECTION);
        if let Some(t) = &upgrade {
            super::upgrade::restore(req.headers_mut(), t);
        }
        *req.version_mut() = if h2 {
            // HTTP/2 carries the authority in the request line; a `host` that differs
            // from it is refused by servers (nginx answers 400).
            req.headers_mut().remove(hyper::header::HOST);
            hyper::Version::HTTP_2
        } else {
            hyper::Version::HTTP_11
        };
        match format!("http://{addr}{pq}").parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return status(StatusCode::BAD_REQUEST),
        }
        // An h2c request without a body and with a safe method is sent once more when
        // the first try failed before an answer (an HTTP/2 GOAWAY, as nginx sends after
        // 1 000 requests; hyper's pool already retries HTTP/1.1 requests it finds on a
        // closed connection, so that path pays for no copy).
        let again = (h2
            && hyper::body::Body::is_end_stream(req.body())
            && matches!(
                *req.method(),
                hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
            ))
        .then(|| {
            let mut r = Request::new(empty_body());
            *r.method_mut() = req.method().clone();
            *r.uri_mut() = req.uri().clone();
            *r.version_mut() = req.version();
            *r.headers_mut() = req.headers().clone();
            r
        });
        let first = client.request(req.map(|b| b.boxed())).await;
        let result = match (first, again) {
            (Err(e), Some(again)) => {
                debug!(%addr, error = %e, "local instance failed before answering; sent again");
                client.request(again).await
            }
            (first, _) => first,
        };
        match result {
            Ok(mut resp) => {
                if let (StatusCode::SWITCHING_PROTOCOLS, Some(stream)) =
                    (resp.status(), stream_upgrade)
                {
                    let backend = hyper::upgrade::on(&mut resp);
                    super::upgrade::splice(stream, backend, "inbound");
                }
                resp.map(|b| b.boxed())
            }
            Err(e) => {
                warn!(%addr, error = %e, "local instance failed the request");
                status(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

/// Normalises the path and applies policy; Ok(path and query to forward) or the
/// response to send instead (503 once this node's certificate expired, 400 for a path
/// that cannot be normalised, 403 on deny).
fn authorize_request(
    inputs: &ProxyInputs,
    source: &str,
    destination: &str,
    req: &Request<Incoming>,
) -> Result<String, Box<Response<BoxBody<Bytes, hyper::Error>>>> {
    // Streams are reused across requests: an identity that expired since the stream
    // opened carries nothing more (the connection itself closes at the next check).
    if inputs.identity.own_cert_expired() {
        return Err(Box::new(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "weft: this node's certificate has expired\n".into(),
        )));
    }
    let path = match normalize_path(req.uri().path()) {
        Ok(p) => p,
        Err(why) => {
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                format!("weft: path refused: {why}\n"),
            )))
        }
    };
    let d = inputs.authorize(source, destination, Some((&path, req.method().as_str())));
    if !d.allowed {
        return Err(Box::new(text(
            StatusCode::FORBIDDEN,
            format!("weft: denied by policy rule {}: {}\n", d.rule, d.reason),
        )));
    }
    Ok(match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    })
}

fn text(code: StatusCode, body: String) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r
}

fn empty_body() -> BoxBody<Bytes, hyper::Error> {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

fn status(code: StatusCode) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut r = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r
}

/// Gossip rounds to wait for an unknown source service to appear before refusing.
const SOURCE_GRACE_ROUNDS: u32 = 4;

/// Time a peer has to send the stream header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one peer connection until it closes or the node stops.
pub async fn serve(inputs: Arc<ProxyInputs>, conn: quinn::Connection, peer: LeafInfo) {
    let peer_node = peer.id.node_name().to_string();
    loop {
        // Registered before the check, so a list installed in between still wakes us.
        let changed = inputs.identity.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // A certificate revoked after the handshake closes this connection as soon as the
        // revocation list arrives, open streams included.
        if inputs.identity.is_revoked(&peer.serial) {
            warn!(peer = %peer_node, serial = %peer.serial, "closing the connection of a revoked node");
            conn.close(ERR_REFUSED.into(), b"certificate revoked");
            break;
        }
        if inputs.identity.own_cert_expired() {
            warn!(peer = %peer_node, "closing a peer connection: this node's certificate expired");
            conn.close(ERR_REFUSED.into(), b"certificate expired");
            break;
        }
        let (send, recv) = tokio::select! {
            _ = inputs.shutdown.cancelled() => break,
            _ = &mut changed => continue,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        if inputs.identity.is_revoked(&peer.serial) {
            continue;
        }
        let inputs = inputs.clone();
        let peer_node = peer_node.clone();
        let remote = conn.remote_address();
        tokio::spawn(async move { handle_stream(&inputs, send, recv, &peer_node, remote).await });
    }
}

/// Whether `peer_node` runs `source`, waiting up to `SOURCE_GRACE_ROUNDS` catalog
/// refreshes (one per `gossip_interval`) for a registration that is a gossip round or two
/// ahead of ours. Takes the catalog, not all of `ProxyInputs`, so it can be tested alone.
async fn source_runs_on_peer(
    catalog: &SharedCatalog,
    gossip_interval: Duration,
    peer_node: &str,
    source: &ServiceName,
) -> bool {
    let mut refreshed = catalog.subscribe();
    let deadline = tokio::time::Instant::now() + gossip_interval * (SOURCE_GRACE_ROUNDS + 1);
    loop {
        if catalog.get().node_runs(peer_node, source) {
            return true;
        }
        match tokio::time::timeout_at(deadline, refreshed.changed()).await {
            Ok(Ok(())) => continue,
            _ => return false,
        }
    }
}

/// A stream header that could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadHeaderError {
    /// The stream ended or failed first.
    #[error(transparent)]
    Read(#[from] quinn::ReadExactError),
    /// The bytes are not a header.
    #[error(transparent)]
    Header(#[from] super::header::HeaderError),
}

async fn read_header(recv: &mut quinn::RecvStream) -> Result<StreamHeader, ReadHeaderError> {
    let mut prefix = [0u8; PREFIX_LEN];
    recv.read_exact(&mut prefix).await?;
    let len = StreamHeader::decode_prefix(&prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(StreamHeader::decode_body(&body)?)
}

fn refuse(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, code: u32) {
    let _ = send.reset(code.into());
    let _ = recv.stop(code.into());
}

async fn handle_stream(
    inputs: &ProxyInputs,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer_node: &str,
    remote: SocketAddr,
) {
    let header = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            warn!(peer = %peer_node, %remote, error = %e, "malformed stream header; stream closed");
            refuse(&mut send, &mut recv, ERR_HEADER);
            return;
        }
        Err(_) => {
            debug!(peer = %peer_node, "no stream header in time");
            refuse(&mut send, &mut recv, ERR_HEADER);
            return;
        }
    };
    let source = header
        .source
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into());
    let destination = header.destination.to_string();
    // The peer may only speak for services it runs. A registration on the peer may be a
    // gossip round or two ahead of our catalog: give it a moment before refusing.
    if let Some(src) = &header.source {
        let known =
            source_runs_on_peer(&inputs.catalog, inputs.gossip_interval, peer_node, src).await;
        if !known {
            warn!(peer = %peer_node, source = %src, destination = %destination,
                "stream refused: the source service is not registered on the peer node");
            inputs.metrics.record(&source, &destination, "refused", 0.0);
            refuse(&mut send, &mut recv, ERR_REFUSED);
            return;
        }
    }
    let Some(spec) = inputs.services.get(&header.destination) else {
        warn!(peer = %peer_node, destination = %destination, "stream for a service that does not run here");
        refuse(&mut send, &mut recv, ERR_UNKNOWN_SERVICE);
        return;
    };
    if !inputs.services.is_healthy(&spec) {
        debug!(destination = %destination, "stream for an unhealthy local instance");
        refuse(&mut send, &mut recv, ERR_BACKEND);
        return;
    }
    let started = Instant::now();
    // What the destination registered decides how the stream is handled, never what
    // the sender claims: an HTTP service is served request by request when the sender
    // speaks HTTP, and a raw stream to it must pass `authorize_stream`.
    if spec.protocol.is_http() && header.protocol.is_http() {
        serve_http(
            inputs,
            QuicIo::new(send, recv),
            header.protocol,
            spec.protocol,
            spec.local_addr,
            source,
            destination,
        )
        .await;
        return;
    }
    if !inputs
        .authorize_stream(&source, &destination, spec.protocol)
        .allowed
    {
        inputs.metrics.record(&source, &destination, "denied", 0.0);
        refuse(&mut send, &mut recv, ERR_REFUSED);
        return;
    }
    let backend = match TcpStream::connect(spec.local_addr).await {
        Ok(b) => b,
        Err(e) => {
            warn!(destination = %destination, addr = %spec.local_addr, error = %e, "local instance unreachable");
            inputs.metrics.record(
                &source,
                &destination,
                "error",
                started.elapsed().as_secs_f64(),
            );
            refuse(&mut send, &mut recv, ERR_BACKEND);
            return;
        }
    };
    let _ = backend.set_nodelay(true);
    let mut backend = backend;
    let mut stream = QuicIo::new(send, recv);
    let result = tokio::io::copy_bidirectional(&mut stream, &mut backend).await;
    let (to_backend, from_backend) = result.as_ref().map(|r| *r).unwrap_or((0, 0));
    if header.protocol == Protocol::Tcp {
        let code = if result.is_ok() { "ok" } else { "error" };
        inputs
            .metrics
            .record(&source, &destination, code, started.elapsed().as_secs_f64());
        inputs.access_log.write(AccessEntry {
            time: std::time::SystemTime::now(),
            direction: "inbound",
            protocol: "tcp",
            source,
            destination,
            upstream_node: inputs.node_name().to_owned(),
            method: None,
            path: None,
            status: code.into(),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            bytes_out: from_backend,
            bytes_in: to_backend,
            trace_id: None,
        });
    }
}

#[cfg(test)]
mod tests {
    //! The grace for an asserted source service that our catalog does not show yet, on
    //! tokio's paused clock: the refreshes come at exact (virtual) times.

    use tokio::time::Instant;
    use weft_gossip::{MemberStatus, Protocol};

    use super::*;
    use crate::catalog::{Catalog, Instance};

    const ROUND: Duration = Duration::from_millis(250);

    fn catalog_with(node: &str, service: &str) -> Catalog {
        Catalog {
            instances: vec![Instance {
                service: ServiceName::new(service).expect("valid service name"),
                node: node.into(),
                node_addr: "127.0.0.1:7443".parse().expect("valid address"),
                node_generation: 1,
                zone: String::new(),
                port: 80,
                protocol: Protocol::Http,
                version: "v1".into(),
                tags: Vec::new(),
                healthy: true,
                node_status: MemberStatus::Alive,
                revoked: false,
                is_local: false,
                local_addr: SocketAddr::from(([127, 0, 0, 1], 80)),
            }],
        }
    }

    /// Refreshes `catalog` once a round, with `last` at `rounds` and `other` before it.
    fn refresh_every_round(catalog: &SharedCatalog, rounds: u32, other: Catalog, last: Catalog) {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            for _ in 1..rounds {
                tokio::time::sleep(ROUND).await;
                catalog.set(other.clone());
            }
            tokio::time::sleep(ROUND).await;
            catalog.set(last);
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_arrives_within_the_grace_is_accepted() {
        let web = ServiceName::new("web").expect("valid service name");
        let catalog = SharedCatalog::default();
        catalog.set(catalog_with("n1", "web"));
        let start = Instant::now();
        assert!(source_runs_on_peer(&catalog, ROUND, "n1", &web).await);
        assert_eq!(start.elapsed(), Duration::ZERO, "known sources do not wait");

        let catalog = SharedCatalog::default();
        refresh_every_round(
            &catalog,
            SOURCE_GRACE_ROUNDS,
            catalog_with("n2", "web"),
            catalog_with("n1", "web"),
        );
        let start = Instant::now();
        assert!(source_runs_on_peer(&catalog, ROUND, "n1", &web).await);
        assert_eq!(
            start.elapsed(),
            ROUND * SOURCE_GRACE_ROUNDS,
            "accepted at the refresh that brought it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_still_missing_after_the_grace_is_refused() {
        let web = ServiceName::new("web").expect("valid service name");
        let grace = ROUND * (SOURCE_GRACE_ROUNDS + 1);
        let catalog = SharedCatalog::default();
        // It arrives one round too late; the refreshes before it show other nodes only.
        refresh_every_round(
            &catalog,
            SOURCE_GRACE_ROUNDS + 2,
            catalog_with("n2", "web"),
            catalog_with("n1", "web"),
        );
        let start = Instant::now();
        assert!(!source_runs_on_peer(&catalog, ROUND, "n1", &web).await);
        assert_eq!(
            start.elapsed(),
            grace,
            "refused exactly when the grace ends"
        );

        let quiet = SharedCatalog::default();
        let start = Instant::now();
        assert!(
            !source_runs_on_peer(&quiet, ROUND, "n1", &web).await,
            "no refresh at all"
        );
        assert_eq!(start.elapsed(), grace);
    }
}
