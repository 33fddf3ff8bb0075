//! Anti-entropy: publishes this node's config digest in gossip on every change, with the
//! writes it accepted recently riding along (`riding`); applies the writes other members
//! publish as soon as a delta brings them; and every second pulls from one alive peer
//! whose digest still differs (merges are idempotent, so pulling from anyone converges).
//! How a pull reaches the peer is a seam (`Pull`): mTLS QUIC in the agent
//! (`rpc::CtlClient`), in memory in tests.

use std::collections::{HashMap, HashSet};
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

/// Applies the entries members publish in gossip (each verified as if pulled). `seen`
/// remembers the value last read from each member, so a value is read once.
async fn apply_riding(replica: &ConfigReplica, gossip: &Gossip, seen: &mut HashMap<String, u64>) {
    let members = gossip.members().await;
    seen.retain(|name, _| members.iter().any(|m| m.name == *name));
    for m in members {
        if m.is_self || m.revoked || m.config_entries.is_empty() {
            continue;
        }
        let hash = {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            m.config_entries.hash(&mut h);
            h.finish()
        };
        if seen.insert(m.name.clone(), hash) == Some(hash) {
            continue;
        }
        match super::riding::decode(&m.config_entries) {
            Ok(entries) => {
                let n = replica.merge_remote(entries, &m.name);
                if n > 0 {
                    info!(peer = %m.name, changed = n, "cluster config applied from gossip");
                }
            }
            Err(e) => {
                warn!(peer = %m.name, error = %e, "ignoring a member's riding config entries")
            }
        }
    }
}

/// Runs until `shutdown`. Pulls run in their own task, one at a time, so a slow pull
/// (a lossy link: QUIC handshakes and retransmissions) never holds up the entries that
/// ride the gossip.
pub async fn run(
    replica: Arc<ConfigReplica>,
    gossip: Arc<Gossip>,
    peers: impl Pull + 'static,
    shutdown: CancellationToken,
) {
    let peers = Arc::new(peers);
    // At most one pull at a time; dropping the set (on shutdown) aborts it.
    let mut pulls = tokio::task::JoinSet::new();
    let mut changes = replica.subscribe();
    let mut riding = gossip.config_entry_changes();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    gossip.publish_config_digest(replica.digest()).await;
    let mut published = String::new();
    let mut seen = HashMap::new();
    // Peers whose digest differed from ours at the last tick.
    let mut mismatched: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed() => {
                if r.is_err() { return }
                let value = replica.riding_value();
                if value != published {
                    gossip.publish_config_entries(value.clone()).await;
                    published = value;
                }
                gossip.publish_config_digest(replica.digest()).await;
                continue;
            }
            r = riding.changed() => {
                if r.is_err() { return }
                apply_riding(&replica, &gossip, &mut seen).await;
                continue;
            }
            _ = tick.tick() => {}
        }
        let ours = replica.digest();
        let differing: Vec<_> = gossip
            .members()
            .await
            .into_iter()
            .filter(|m| !m.is_self && m.status == MemberStatus::Alive && !m.revoked)
            .filter(|m| !m.config_digest.is_empty() && m.config_digest != ours)
            .collect();
        if differing.is_empty() {
            replica.mark_synced();
            mismatched.clear();
            continue;
        }
        // A digest that differs for the first time is most likely a write whose entries
        // ride the same delta: pull only from peers whose digest still differed a tick ago.
        let candidates: Vec<_> = differing
            .iter()
            .filter(|m| mismatched.contains(&m.name))
            .collect();
        mismatched = differing.iter().map(|m| m.name.clone()).collect();
        if candidates.is_empty() {
            continue;
        }
        while pulls.try_join_next().is_some() {}
        if !pulls.is_empty() {
            continue;
        }
        let peer = candidates[rand::random_range(0..candidates.len())];
        let (name, address) = (peer.name.clone(), peer.address);
        let (replica, peers) = (replica.clone(), peers.clone());
        pulls.spawn(async move {
            match peers.pull(&name, address).await {
                Ok(entries) => {
                    let n = replica.merge_remote(entries, &name);
                    if n > 0 {
                        info!(peer = %name, changed = n, "cluster config pulled");
                    }
                }
                Err(e) => warn!(error = %e, "cluster config pull failed"),
            }
        });
    }
}
