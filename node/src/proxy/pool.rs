//! Pooled QUIC connections to peers, one per peer node process (many streams each). A
//! connection to a node that has since restarted (new gossip generation) is dropped at
//! once instead of timing out; connections to nodes that left, were revoked or have
//! just been marked failed are closed at the next catalog refresh (streams waiting on a
//! dead peer fail now and are retried elsewhere). A node that stays failed may be dialled
//! again for last-known routing; that connection is kept.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use weft_gossip::{Member, MemberStatus};

/// Time to establish a QUIC connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A peer could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// quinn refused to start the connection (bad address, endpoint closed).
    #[error(transparent)]
    Start(#[from] quinn::ConnectError),
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] quinn::ConnectionError),
    /// No handshake within `CONNECT_TIMEOUT`.
    #[error("QUIC connect to {0} timed out")]
    Timeout(String),
}

/// The pool.
pub struct ConnPool {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    conns: Mutex<HashMap<String, (u64, quinn::Connection)>>,
    /// Peers marked failed at the last prune.
    failed: Mutex<HashSet<String>>,
    /// One dial per peer at a time: requests that find no connection wait for the dial
    /// in flight instead of each opening one (a burst would otherwise exceed the peer's
    /// handshakes-per-address budget and be refused). One entry per peer dialled.
    dialing: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool").finish_non_exhaustive()
    }
}

impl ConnPool {
    /// A pool dialling from `endpoint` with the data-plane client config.
    pub fn new(endpoint: quinn::Endpoint, client: quinn::ClientConfig) -> Self {
        Self {
            endpoint,
            client,
            conns: Mutex::default(),
            failed: Mutex::default(),
            dialing: Mutex::default(),
        }
    }

    /// The pooled connection to `node` (generation `generation`), or a new one.
    pub async fn connect(
        &self,
        node: &str,
        addr: SocketAddr,
        generation: u64,
    ) -> Result<quinn::Connection, PoolError> {
        if let Some(c) = self.get(node, generation) {
            return Ok(c);
        }
        let gate = self
            .dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.to_owned())
            .or_default()
            .clone();
        let _dialing = gate.lock().await;
        if let Some(c) = self.get(node, generation) {
            return Ok(c);
        }
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, node)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| PoolError::Timeout(node.to_owned()))??;
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_owned(), (generation, conn.clone()));
        Ok(conn)
    }

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

    /// Forgets the connection to `node` (it failed to open a stream).
    pub fn drop_conn(&self, node: &str) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
    }

    /// Closes connections to nodes for which `keep` is false.
    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|node, _| keep(node));
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

    /// Closes every connection (this node's certificate expired).
    pub fn close_all(&self) {
        self.retain(|_| false);
    }

    /// Closes connections to members that left, were revoked, or were marked failed
    /// since the last call.
    pub fn prune(&self, members: &[Member]) {
        let failed: HashSet<String> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Failed)
            .map(|m| m.name.clone())
            .collect();
        let newly_failed: HashSet<String> = {
            let mut last = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            let newly = failed.difference(&last).cloned().collect();
            *last = failed;
            newly
        };
        let gone: HashSet<String> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Left || m.revoked)
            .map(|m| m.name.clone())
            .chain(newly_failed)
            .collect();
        self.retain(|n| !gone.contains(n));
    }
}
