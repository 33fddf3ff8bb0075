//! Reaching an instance of a service: pick one (same zone, then peak-EWMA p2c), open a
//! stream on the pooled QUIC connection to its node (one connection per peer, many
//! streams) and write the stream header; or, for an instance on this node, connect to it
//! directly. A connect failure is retried on another instance.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;
use weft_ca::ServiceName;

use weft_gossip::Protocol;

use super::header::StreamHeader;
use super::io::QuicIo;
use crate::agent::node::Node;
use crate::catalog::Instance;
use crate::routing::endpoint_key;

/// Anything a connection can be spliced with.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why no instance could be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// No node runs this service.
    #[error("unknown service {0}")]
    UnknownService(ServiceName),
    /// Instances exist but none is healthy.
    #[error("no healthy instance of {0}")]
    NoHealthyInstance(ServiceName),
    /// Every attempt failed.
    #[error("cannot reach {service}: {reason}")]
    Connect {
        /// The service.
        service: ServiceName,
        /// Last failure.
        reason: String,
    },
}

/// Attempts per connection or request before giving up.
const ATTEMPTS: usize = 3;
/// Time to establish a QUIC connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Pooled QUIC connections, one per peer node process: a connection to a node that has
/// since restarted (new gossip generation) is dropped at once instead of timing out.
#[derive(Debug, Default)]
pub struct ConnPool {
    conns: Mutex<HashMap<String, (u64, quinn::Connection)>>,
}

impl ConnPool {
    fn get(&self, node: &str, generation: u64) -> Option<quinn::Connection> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        match conns.get(node) {
            Some((g, c)) if *g == generation && c.close_reason().is_none() => Some(c.clone()),
            Some((_, c)) => {
                c.close(0u32.into(), b"peer restarted");
                conns.remove(node);
                None
            }
            None => None,
        }
    }

    fn put(&self, node: &str, generation: u64, conn: quinn::Connection) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_owned(), (generation, conn));
    }

    fn drop_conn(&self, node: &str) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
    }

    /// Closes connections to nodes for which `keep` is false (left, failed, revoked).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|node, (_, conn)| {
                let k = keep(node);
                if !k {
                    conn.close(0u32.into(), b"peer gone");
                }
                k
            });
    }
}

async fn connect_node(
    node: &Node,
    name: &str,
    addr: SocketAddr,
    generation: u64,
) -> Result<quinn::Connection, String> {
    if let Some(c) = node.pool.get(name, generation) {
        return Ok(c);
    }
    let connecting = node
        .endpoint
        .connect_with(node.data_client.clone(), addr, name)
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("QUIC connect to {name} timed out"))?
        .map_err(|e| e.to_string())?;
    node.pool.put(name, generation, conn.clone());
    Ok(conn)
}

async fn open_instance(
    node: &Node,
    inst: &Instance,
    header: &StreamHeader,
) -> Result<Box<dyn Io>, String> {
    if inst.is_local {
        let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], inst.port)))
            .await
            .map_err(|e| format!("local instance 127.0.0.1:{}: {e}", inst.port))?;
        let _ = tcp.set_nodelay(true);
        return Ok(Box::new(tcp));
    }
    let conn = connect_node(node, &inst.node, inst.node_addr, inst.node_generation).await?;
    let (mut send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            node.pool.drop_conn(&inst.node);
            return Err(e.to_string());
        }
    };
    if header.protocol == Protocol::Http {
        // The request head follows at once: send both in one packet.
        return Ok(Box::new(QuicIo::with_prefix(send, recv, header.encode())));
    }
    // Server-first TCP protocols need the far side to connect before the client speaks.
    send.write_all(&header.encode())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::new(QuicIo::new(send, recv)))
}

/// A stream to an instance, and how to account for it.
pub struct Dialed {
    /// The byte stream.
    pub io: Box<dyn Io>,
    /// The instance reached.
    pub instance: Instance,
    /// When the stream was ready (latency samples start here).
    pub started: Instant,
}

/// Opens a stream to some routable instance of `header.destination`.
pub async fn dial(node: &Node, header: &StreamHeader) -> Result<Dialed, DialError> {
    dial_version(node, header, None).await
}

/// Like `dial`, restricted to instances of `version` when a route chose one.
pub async fn dial_version(
    node: &Node,
    header: &StreamHeader,
    version: Option<&str>,
) -> Result<Dialed, DialError> {
    dial_with(node, header, version, Vec::new()).await
}

/// Like `dial_version`, never choosing the endpoints in `excluded` (e.g. ejected
/// outliers, or instances a retry already tried), unless nothing else is left.
pub async fn dial_with(
    node: &Node,
    header: &StreamHeader,
    version: Option<&str>,
    excluded: Vec<String>,
) -> Result<Dialed, DialError> {
    let catalog = node.catalog.get();
    let service = &header.destination;
    if !catalog.knows(service) {
        return Err(DialError::UnknownService(service.clone()));
    }
    let mut routable = catalog.routable(service);
    if let Some(v) = version {
        routable.retain(|i| i.version == v);
    }
    if routable.is_empty() {
        return Err(DialError::NoHealthyInstance(service.clone()));
    }
    let zone = node.settings().zone;
    let mut excluded = excluded;
    if routable.iter().all(|i| excluded.contains(&endpoint_key(i))) {
        excluded.clear();
    }
    let mut reason = String::new();
    for _ in 0..ATTEMPTS {
        let Some(inst) = node.router.pick(&routable, &zone, &excluded) else {
            break;
        };
        match open_instance(node, inst, header).await {
            Ok(io) => {
                // Latency samples start once the stream is open: a first QUIC handshake
                // to a node must not make the balancer shun it for the next ten seconds.
                let started = Instant::now();
                return Ok(Dialed {
                    io,
                    instance: inst.clone(),
                    started,
                });
            }
            Err(e) => {
                debug!(service = %service, node = %inst.node, error = %e, "instance unreachable; trying another");
                excluded.push(endpoint_key(inst));
                reason = e;
            }
        }
    }
    Err(DialError::Connect {
        service: service.clone(),
        reason,
    })
}
