//! Reaching an instance of a service: pick one (`routing::LoadBalancer`), open a stream
//! on the pooled QUIC connection to its node (`pool`) and write the stream header; or,
//! for an instance on this node, connect to it directly. A connect failure is retried on
//! another instance, up to `resilience::DEFAULT_ATTEMPTS`.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;
use weft_ca::ServiceName;

use super::header::StreamHeader;
use super::inputs::ProxyInputs;
use super::io::QuicIo;
use super::pool::PoolError;
use crate::catalog::Instance;
use crate::resilience::DEFAULT_ATTEMPTS;
use crate::routing::endpoint_key;

/// Anything a connection can be spliced with.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why one instance could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local instance refused the connection.
    #[error("local instance {addr}: {source}")]
    Local {
        /// Where it listens.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The peer node could not be reached.
    #[error(transparent)]
    Peer(#[from] PoolError),
    /// The peer connection would not open a stream.
    #[error(transparent)]
    Stream(#[from] quinn::ConnectionError),
    /// The stream header could not be written.
    #[error(transparent)]
    Header(#[from] quinn::WriteError),
}

/// Why no instance could be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No node runs this service.
    #[error("unknown service {0}")]
    UnknownService(ServiceName),
    /// Instances exist but none is healthy (of the version asked for, which `detail`
    /// names with the versions that are healthy).
    #[error("no healthy instance of {0}{1}")]
    NoHealthyInstance(ServiceName, String),
    /// Every attempt failed.
    #[error("cannot reach {service}: {reason}")]
    Connect {
        /// The service.
        service: ServiceName,
        /// Last failure.
        reason: OpenError,
    },
}

async fn open_instance(
    inputs: &ProxyInputs,
    inst: &Instance,
    header: &StreamHeader,
) -> Result<Box<dyn Io>, OpenError> {
    if inst.is_local {
        let tcp = TcpStream::connect(inst.local_addr)
            .await
            .map_err(|source| OpenError::Local {
                addr: inst.local_addr,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        return Ok(Box::new(tcp));
    }
    let conn = inputs
        .pool
        .connect(&inst.node, inst.node_addr, inst.node_generation)
        .await?;
    let (mut send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            inputs.pool.drop_conn(&inst.node);
            return Err(e.into());
        }
    };
    if header.protocol.is_http() {
        // The request head follows at once: send both in one packet.
        return Ok(Box::new(QuicIo::with_prefix(send, recv, header.encode())));
    }
    // Server-first TCP protocols need the far side to connect before the client speaks.
    send.write_all(&header.encode()).await?;
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

/// Opens a stream to some routable instance of `header.destination`, restricted to
/// instances of `version` when a route or a virtual IP pins one, and never
/// choosing the endpoints in `excluded` (e.g. ejected outliers, or instances a retry
/// already tried), unless nothing else is left.
pub async fn dial_with(
    inputs: &ProxyInputs,
    header: &StreamHeader,
    version: Option<&str>,
    excluded: Vec<String>,
) -> Result<Dialed, DialError> {
    let mut open = |inst: Instance| async move {
        let io = open_instance(inputs, &inst, header).await?;
        Ok((io, inst))
    };
    let ((io, instance), started) =
        pick_reachable(inputs, &header.destination, version, excluded, &mut open).await?;
    Ok(Dialed {
        io,
        instance,
        started,
    })
}

/// An instance chosen for one HTTP request, with its node's QUIC connection up (the
/// request then travels on a pooled stream, `streams`, or the local keep-alive pool).
pub struct Chosen {
    /// The instance.
    pub instance: Instance,
    /// When it was ready (latency samples start here).
    pub started: Instant,
}

/// Like `dial_with`, without opening a stream: picks an instance whose node is reachable.
pub async fn choose(
    inputs: &ProxyInputs,
    service: &ServiceName,
    version: Option<&str>,
    excluded: Vec<String>,
) -> Result<Chosen, DialError> {
    let mut reach = |inst: Instance| async move {
        if !inst.is_local {
            inputs
                .pool
                .connect(&inst.node, inst.node_addr, inst.node_generation)
                .await?;
        }
        Ok::<_, OpenError>(inst)
    };
    let (instance, started) =
        pick_reachable(inputs, service, version, excluded, &mut reach).await?;
    Ok(Chosen { instance, started })
}

/// Picks routable instances of `service` (of `version`, outside `excluded` unless
/// nothing else is left) until `reach` succeeds with one, up to `DEFAULT_ATTEMPTS`.
async fn pick_reachable<T, F, Fut>(
    inputs: &ProxyInputs,
    service: &ServiceName,
    version: Option<&str>,
    excluded: Vec<String>,
    reach: &mut F,
) -> Result<(T, Instant), DialError>
where
    F: FnMut(Instance) -> Fut,
    Fut: std::future::Future<Output = Result<T, OpenError>>,
{
    let catalog = inputs.catalog.get();
    if !catalog.knows(service) {
        return Err(DialError::UnknownService(service.clone()));
    }
    let mut routable = catalog.routable(service);
    if let Some(v) = version {
        routable.retain(|i| i.version == v);
        if routable.is_empty() {
            // Only on failure: which versions are healthy, for the 503's text.
            let mut healthy: Vec<String> = catalog
                .routable(service)
                .iter()
                .map(|i| i.version.to_string())
                .collect();
            healthy.sort_unstable();
            healthy.dedup();
            let detail = if healthy.is_empty() {
                format!(" version {v}")
            } else {
                format!(
                    " version {v} (healthy versions: {}; check the route's split)",
                    healthy.join(", ")
                )
            };
            return Err(DialError::NoHealthyInstance(service.clone(), detail));
        }
    }
    if routable.is_empty() {
        return Err(DialError::NoHealthyInstance(service.clone(), String::new()));
    }
    let zone = inputs.zone();
    let mut excluded = excluded;
    if !excluded.is_empty() && routable.iter().all(|i| excluded.contains(&endpoint_key(i))) {
        excluded.clear();
    }
    let mut last: Option<OpenError> = None;
    for _ in 0..DEFAULT_ATTEMPTS {
        let Some(inst) = inputs.balancer.pick(&routable, &zone, &excluded) else {
            break;
        };
        let key = endpoint_key(inst);
        let node = inst.node.clone();
        match reach(inst.clone()).await {
            // Latency samples start once the instance is reachable: a first QUIC
            // handshake to a node must not make the balancer shun it for ten seconds.
            Ok(t) => return Ok((t, Instant::now())),
            Err(e) => {
                debug!(service = %service, node = %node, error = %e, "instance unreachable; trying another");
                excluded.push(key);
                last = Some(e);
            }
        }
    }
    match last {
        Some(reason) => Err(DialError::Connect {
            service: service.clone(),
            reason,
        }),
        // Every instance was excluded by the balancer: as if none were healthy.
        None => Err(DialError::NoHealthyInstance(service.clone(), String::new())),
    }
}
