//! HTTP to instances on other nodes over reused QUIC streams.
//!
//! A stream to a peer carries one (destination, source) pair — its header says so and the
//! far side checks it once — and then as many HTTP/1.1 keep-alive exchanges as the app
//! sends (or one HTTP/2 connection multiplexing them all, for `http2`/`grpc` services).
//! Routing and balancing still decide every request on its own; only the stream is kept.
//! Before this, every request paid a stream, a header check, an HTTP handshake and two
//! spawned tasks on each side (BENCHMARKS.md has the figures).
//!
//! The keeping is hyper-util's legacy client pool: idle streams per key (expired after
//! `IDLE`), a request that meets a stream the peer just reset is sent again on another
//! (`retry_canceled_requests`, the same rule hyper applies to TCP), and HTTP/2 shares one
//! stream. The pool key is the request URI's authority, so `PeerRoute` is written into
//! it (hex, parsed back by the connector): nothing else has to be kept in step with it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use weft_ca::ServiceName;
use weft_gossip::Protocol;

use super::header::StreamHeader;
use super::http::ProxyBody;
use super::io::QuicIo;
use super::pool::{ConnPool, PoolError};

/// How long an unused stream is kept.
pub const IDLE: Duration = Duration::from_secs(30);
/// Idle streams kept per (peer, destination, source): enough for the concurrency of a
/// busy app; beyond it streams close after their exchange.
pub const MAX_IDLE_PER_ROUTE: usize = 32;

/// Which streams may carry a request: the peer process, the destination and the source
/// the stream header asserts, and how HTTP travels on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    /// Peer node name (its certificate's).
    pub node: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its gossip generation: a restarted peer gets fresh streams.
    pub generation: u64,
    /// The stream header (its traceparent is not used: every request carries its own).
    pub header: StreamHeader,
}

/// A URI authority that is not a `PeerRoute`.
#[derive(Debug, thiserror::Error)]
#[error("not a peer route: {0}")]
pub struct RouteError(&'static str);

impl PeerRoute {
    /// The URI authority naming this route (the pool key).
    pub fn authority(&self) -> String {
        let src = self.header.source.as_ref().map_or("", |s| s.as_str());
        let proto = match self.header.protocol {
            Protocol::Tcp => 0,
            Protocol::Http => 1,
            Protocol::Http2 => 2,
            Protocol::Grpc => 3,
        };
        format!(
            "{}.{}.{}.{}.{}.{proto}",
            hex::encode(&self.node),
            hex::encode(self.addr.to_string()),
            self.generation,
            hex::encode(self.header.destination.as_str()),
            hex::encode(src),
        )
    }

    /// Parses what `authority` wrote.
    pub fn from_uri(uri: &Uri) -> Result<Self, RouteError> {
        let host = uri.host().ok_or(RouteError("no host"))?;
        let mut parts = host.split('.');
        let mut next = || parts.next().ok_or(RouteError("too few parts"));
        let text = |h: &str| -> Result<String, RouteError> {
            let bytes = hex::decode(h).map_err(|_| RouteError("not hex"))?;
            String::from_utf8(bytes).map_err(|_| RouteError("not UTF-8"))
        };
        let node = text(next()?)?;
        let addr = text(next()?)?
            .parse()
            .map_err(|_| RouteError("bad address"))?;
        let generation = next()?.parse().map_err(|_| RouteError("bad generation"))?;
        let destination =
            ServiceName::new(text(next()?)?).map_err(|_| RouteError("bad destination"))?;
        let source = match text(next()?)?.as_str() {
            "" => None,
            s => Some(ServiceName::new(s).map_err(|_| RouteError("bad source"))?),
        };
        let protocol = match next()? {
            "1" => Protocol::Http,
            "2" => Protocol::Http2,
            "3" => Protocol::Grpc,
            _ => return Err(RouteError("not an HTTP protocol")),
        };
        Ok(Self {
            node,
            addr,
            generation,
            header: StreamHeader {
                protocol,
                destination,
                source,
                traceparent: None,
            },
        })
    }
}

/// Opens streams for the pool: the pooled QUIC connection to the peer, a new stream, and
/// its header (sent with the first request's bytes, in one packet).
#[derive(Clone)]
pub struct StreamConnector {
    pool: Arc<ConnPool>,
}

/// Why no stream could be opened.
#[derive(Debug, thiserror::Error)]
pub enum StreamOpenError {
    /// The authority is not a route (a bug: only `PeerRoute::authority` writes them).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// No QUIC connection to the peer.
    #[error(transparent)]
    Peer(#[from] PoolError),
    /// The connection would not open a stream.
    #[error(transparent)]
    Stream(#[from] quinn::ConnectionError),
}

impl tower::Service<Uri> for StreamConnector {
    type Response = PeerStream;
    type Error = StreamOpenError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, StreamOpenError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move {
            let route = PeerRoute::from_uri(&uri)?;
            let conn = pool
                .connect(&route.node, route.addr, route.generation)
                .await?;
            let (send, recv) = match conn.open_bi().await {
                Ok(s) => s,
                Err(e) => {
                    pool.drop_conn(&route.node);
                    return Err(e.into());
                }
            };
            Ok(PeerStream(TokioIo::new(QuicIo::with_prefix(
                send,
                recv,
                route.header.encode(),
            ))))
        })
    }
}

/// A stream in the pool.
pub struct PeerStream(TokioIo<QuicIo>);

impl Connection for PeerStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A pooled client over peer streams.
pub type PeerClient = hyper_util::client::legacy::Client<StreamConnector, ProxyBody>;

/// The two clients: HTTP/1.1 keep-alive streams, and HTTP/2 (one stream per route,
/// multiplexed) for `http2`/`grpc` services.
#[derive(Clone)]
pub struct PeerClients {
    /// HTTP/1.1.
    pub h1: PeerClient,
    /// HTTP/2.
    pub h2: PeerClient,
}

impl PeerClients {
    /// Clients opening streams on `pool`'s connections.
    pub fn new(pool: Arc<ConnPool>) -> Self {
        let build = |h2: bool| {
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(IDLE)
                .pool_max_idle_per_host(MAX_IDLE_PER_ROUTE)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .retry_canceled_requests(true)
                .set_host(false)
                .http2_only(h2)
                .http2_adaptive_window(true)
                .build(StreamConnector { pool: pool.clone() })
        };
        Self {
            h1: build(false),
            h2: build(true),
        }
    }

    /// The client for a hop speaking `protocol`.
    pub fn for_protocol(&self, protocol: Protocol) -> &PeerClient {
        if protocol.is_h2() {
            &self.h2
        } else {
            &self.h1
        }
    }
}

impl std::fmt::Debug for PeerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClients").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(src: Option<&str>, protocol: Protocol) -> PeerRoute {
        PeerRoute {
            node: "node-1.example".into(),
            addr: "[::1]:7443".parse().expect("address"),
            generation: 1_733_000_000,
            header: StreamHeader {
                protocol,
                destination: ServiceName::new("reviews").expect("name"),
                source: src.map(|s| ServiceName::new(s).expect("name")),
                traceparent: None,
            },
        }
    }

    #[test]
    fn routes_survive_the_uri() {
        for r in [
            route(Some("frontend"), Protocol::Http),
            route(None, Protocol::Grpc),
            route(Some("a-b"), Protocol::Http2),
        ] {
            let uri: Uri = format!("http://{}/a/b?c=d", r.authority())
                .parse()
                .expect("a valid URI");
            assert_eq!(PeerRoute::from_uri(&uri).expect("parses"), r);
        }
    }

    #[test]
    fn other_authorities_are_refused() {
        for u in [
            "http://example.com/",
            "http://a.b.c.d.e.f/",
            "http://127.0.0.1:80/",
        ] {
            let uri: Uri = u.parse().expect("a valid URI");
            assert!(PeerRoute::from_uri(&uri).is_err(), "{u}");
        }
        let tcp = route(None, Protocol::Tcp);
        let uri: Uri = format!("http://{}/", tcp.authority()).parse().expect("uri");
        assert!(
            PeerRoute::from_uri(&uri).is_err(),
            "TCP routes are not HTTP"
        );
    }
}
