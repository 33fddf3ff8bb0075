//! The QUIC server: accepts connections on the node's one endpoint and dispatches by
//! ALPN to the join protocol (`join_server`, no client certificate), control requests
//! (`control`, client certificate required) or the data plane (`proxy::inbound`), each
//! bounded in size, time and concurrency.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use weft_ca::LeafInfo;
use weft_gossip::Gossip;

use super::client::CaClient;
use super::control;
use super::join_server::{self, JoinLimiter};
use crate::cluster_config::ConfigReplica;
use crate::identity::NodeIdentity;
use crate::proxy::ProxyInputs;
use crate::tls::{ALPN_CTL, ALPN_DATA, ALPN_JOIN};

/// Handshakes in progress at once, from all addresses.
const MAX_HANDSHAKES: usize = 64;
/// Handshakes in progress at once from one IP address.
const MAX_HANDSHAKES_PER_IP: u32 = 8;
/// New handshakes from unvalidated addresses accepted per second (and in a burst) before
/// the server asks every new client to prove it owns its address first (a QUIC Retry):
/// spoofed Initial packets then cost one stateless answer each and never connection
/// state. Measured: 2 000 unanswered Initials in 10 s grew the agent by ~200 MiB when each
/// got a handshake; with this budget it grows by a few MiB.
const UNVALIDATED_PER_SEC: f64 = 8.0;
const UNVALIDATED_BURST: f64 = 16.0;
/// Time a handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Join connections at once (no client certificate: the tightest budget).
const MAX_JOIN_CONNECTIONS: usize = 32;
/// Control connections at once (members: renewals, pulls, forwarded acts).
const MAX_CTL_CONNECTIONS: usize = 512;
/// Data-plane connections at once (one per peer node, long-lived).
const MAX_DATA_CONNECTIONS: usize = 4096;

/// Handshakes in progress per IP address.
#[derive(Debug, Default)]
struct PerIp(Mutex<std::collections::HashMap<std::net::IpAddr, u32>>);

impl PerIp {
    fn enter(&self, ip: std::net::IpAddr) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= MAX_HANDSHAKES_PER_IP {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, ip: std::net::IpAddr) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// The separate budgets of connections by kind.
struct Budgets {
    join: Arc<Semaphore>,
    ctl: Arc<Semaphore>,
    data: Arc<Semaphore>,
}

/// What the server's handlers need.
pub struct ServerInputs {
    /// The endpoint to accept on.
    pub endpoint: quinn::Endpoint,
    /// This node's identity.
    pub identity: Arc<NodeIdentity>,
    /// The CA role, while this node is a CA replica.
    pub ca: crate::ca_role::slot::CaSlot,
    /// Replica changes for this node, carried out by the agent.
    pub replicas: crate::ca_role::slot::ReplicaOrders,
    /// Forwards joins, tokens and revocations to the CA node.
    pub ca_client: CaClient,
    /// Gossip (keyring, members, revocation list).
    pub gossip: Arc<Gossip>,
    /// The cluster config, for peers' pulls.
    pub config: Arc<ConfigReplica>,
    /// Verifies operator-signed acts.
    pub authority: Arc<crate::authority::Authority>,
    /// The data plane, for `weft/1` connections.
    pub data: Arc<ProxyInputs>,
    /// Cancelled when the agent stops.
    pub shutdown: CancellationToken,
}

/// Runs until the node shuts down.
pub async fn serve(inputs: Arc<ServerInputs>, tasks: TaskTracker) {
    let limiter = Arc::new(Mutex::new(JoinLimiter::new(Instant::now())));
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_ip = Arc::new(PerIp::default());
    let mut unvalidated = crate::resilience::TokenBucket::new(
        UNVALIDATED_PER_SEC,
        UNVALIDATED_BURST,
        tokio::time::Instant::now().into_std(),
    );
    let budgets = Arc::new(Budgets {
        join: Arc::new(Semaphore::new(MAX_JOIN_CONNECTIONS)),
        ctl: Arc::new(Semaphore::new(MAX_CTL_CONNECTIONS)),
        data: Arc::new(Semaphore::new(MAX_DATA_CONNECTIONS)),
    });
    loop {
        let incoming = tokio::select! {
            _ = inputs.shutdown.cancelled() => break,
            i = inputs.endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        if !incoming.remote_address_validated()
            && !unvalidated.try_take(tokio::time::Instant::now().into_std())
        {
            if incoming.may_retry() {
                let _ = incoming.retry();
            } else {
                incoming.refuse();
            }
            continue;
        }
        let ip = incoming.remote_address().ip();
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        if !per_ip.enter(ip) {
            debug!(%ip, "too many QUIC handshakes from one address; refused");
            incoming.refuse();
            continue;
        }
        let inputs = inputs.clone();
        let limiter = limiter.clone();
        let per_ip = per_ip.clone();
        let budgets = budgets.clone();
        tasks.spawn(async move {
            let remote = incoming.remote_address();
            // The connection's driver is spawned by `accept`: on the data-plane thread,
            // with the endpoint, so a peer's packets cross no thread on their way to its
            // streams (control and join handlers still run here).
            let connecting = {
                let _data_thread = inputs.data.runtime.enter();
                incoming.accept()
            };
            let handshake = match connecting {
                Ok(c) => tokio::time::timeout(HANDSHAKE_TIMEOUT, c).await,
                Err(e) => Ok(Err(e)),
            };
            per_ip.leave(ip);
            drop(permit);
            let conn = match handshake {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    info!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "QUIC handshake timed out");
                    return;
                }
            };
            dispatch(&inputs, conn, remote, &limiter, &budgets).await;
        });
    }
}

async fn dispatch(
    inputs: &Arc<ServerInputs>,
    conn: quinn::Connection,
    remote: SocketAddr,
    limiter: &Mutex<JoinLimiter>,
    budgets: &Budgets,
) {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let budget = match alpn.as_deref() {
        Some(ALPN_JOIN) => &budgets.join,
        Some(ALPN_CTL) => &budgets.ctl,
        Some(ALPN_DATA) => &budgets.data,
        _ => {
            conn.close(1u32.into(), b"unknown protocol");
            return;
        }
    };
    let Ok(_slot) = budget.clone().try_acquire_owned() else {
        debug!(%remote, "connection budget for its protocol exhausted; closed");
        conn.close(3u32.into(), b"busy");
        return;
    };
    match alpn.as_deref() {
        Some(ALPN_JOIN) => join_server::serve(inputs, conn, remote, limiter).await,
        Some(ALPN_CTL) => match peer_leaf(&conn) {
            Some(peer) => control::serve(inputs, conn, peer, remote).await,
            None => {
                warn!(%remote, "control connection without a client certificate refused");
                conn.close(2u32.into(), b"client certificate required");
            }
        },
        Some(ALPN_DATA) => match peer_leaf(&conn) {
            Some(peer) => {
                // Served on the data-plane thread; this task keeps the budget slot.
                let data = inputs.data.clone();
                let runtime = data.runtime.clone();
                let _ = runtime
                    .spawn(crate::proxy::inbound::serve(data, conn, peer))
                    .await;
            }
            None => {
                warn!(%remote, "data connection without a client certificate refused");
                conn.close(2u32.into(), b"client certificate required");
            }
        },
        _ => conn.close(1u32.into(), b"unknown protocol"),
    }
}

/// The peer's certificate fields, with the replica that issued it (the handshake verified
/// the whole chain already; this only reads it).
fn peer_leaf(conn: &quinn::Connection) -> Option<LeafInfo> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let mut leaf = LeafInfo::parse(certs.first()?).ok()?;
    leaf.issuer = certs[1..]
        .iter()
        .find_map(|c| weft_ca::parse_replica(c, leaf.id.cluster()).ok());
    Some(leaf)
}
