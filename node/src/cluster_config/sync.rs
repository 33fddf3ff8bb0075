//! Anti-entropy: publishes this node's config digest in gossip on every change, and
//! every second pulls from one alive peer whose digest differs (merges are idempotent, so
//! pulling from anyone converges). How a pull reaches the peer is a seam (`Pull`): mTLS
//! QUIC in the agent (`rpc::CtlClient`), in memory in tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weft_gossip::{Gossip, MemberStatus};

use super::replica::ConfigReplica;
use super::state::Entry;

/// A pull from a peer failed.
#[derive(Debug, thiserror::Error)]
#[error("cluster config pull from {peer} failed: {source}")]
pub struct PullError {
    /// The peer.
    pub peer: String,
    /// Why.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Fetches every entry a peer holds.
pub trait Pull: Send + Sync {
    /// Every entry (tombstones too) of peer `name` at `addr`.
    fn pull(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Vec<Entry>, PullError>> + Send;
}

/// Runs until `shutdown`.
pub async fn run(
    replica: Arc<ConfigReplica>,
    gossip: Arc<Gossip>,
    peers: impl Pull,
    shutdown: CancellationToken,
) {
    let mut changes = replica.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    gossip.publish_config_digest(replica.digest()).await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed() => {
                if r.is_err() { return }
                gossip.publish_config_digest(replica.digest()).await;
                continue;
            }
            _ = tick.tick() => {}
        }
        let ours = replica.digest();
        let candidates: Vec<_> = gossip
            .members()
            .await
            .into_iter()
            .filter(|m| !m.is_self && m.status == MemberStatus::Alive && !m.revoked)
            .filter(|m| !m.config_digest.is_empty() && m.config_digest != ours)
            .collect();
        if candidates.is_empty() {
            replica.mark_synced();
            continue;
        }
        let peer = &candidates[rand::random_range(0..candidates.len())];
        match peers.pull(&peer.name, peer.address).await {
            Ok(entries) => {
                let n = replica.merge_remote(entries, &peer.name);
                if n > 0 {
                    info!(peer = %peer.name, changed = n, "cluster config pulled");
                }
            }
            Err(e) => warn!(error = %e, "cluster config pull failed"),
        }
    }
}
