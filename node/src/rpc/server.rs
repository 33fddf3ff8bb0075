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
use super::stream::EXCHANGE_TIMEOUT;
use crate::ca_role::CaRole;
use crate::cluster_config::ConfigReplica;
use crate::identity::NodeIdentity;
use crate::proxy::ProxyInputs;
use crate::tls::{ALPN_CTL, ALPN_DATA, ALPN_JOIN};

/// Connections handled at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 256;

/// What the server's handlers need.
pub struct ServerInputs {
    /// The endpoint to accept on.
    pub endpoint: quinn::Endpoint,
    /// This node's identity.
    pub identity: Arc<NodeIdentity>,
    /// The CA role, on the CA node.
    pub ca: Option<Arc<CaRole>>,
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
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let incoming = tokio::select! {
            _ = inputs.shutdown.cancelled() => break,
            i = inputs.endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let inputs = inputs.clone();
        let limiter = limiter.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(EXCHANGE_TIMEOUT, incoming).await {
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
            dispatch(&inputs, conn, remote, &limiter).await;
        });
    }
}

async fn dispatch(
    inputs: &Arc<ServerInputs>,
    conn: quinn::Connection,
    remote: SocketAddr,
    limiter: &Mutex<JoinLimiter>,
) {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
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
            Some(peer) => crate::proxy::inbound::serve(inputs.data.clone(), conn, peer).await,
            None => {
                warn!(%remote, "data connection without a client certificate refused");
                conn.close(2u32.into(), b"client certificate required");
            }
        },
        _ => conn.close(1u32.into(), b"unknown protocol"),
    }
}

fn peer_leaf(conn: &quinn::Connection) -> Option<LeafInfo> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    LeafInfo::parse(certs.first()?).ok()
}
