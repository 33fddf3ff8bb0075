//! The agent's background loops. Each runs until `node.shutdown` is cancelled.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use weft_ca::{unix, SpiffeId};
use weft_gossip::MemberStatus;

use super::node::Node;
use super::renewal::{attempt_timeout, renew_after, retry_backoff};
use crate::rpc::{b64, unb64, CtlRequest, CtlResponse};
use crate::store::Peer;

/// Renews the node certificate at about half its lifetime, over mTLS with the current
/// certificate (never the token). On failure keeps the certificate and retries with
/// backoff, warning with the time left.
pub async fn renew_loop(node: Arc<Node>) {
    let mut attempt: u32 = 0;
    loop {
        let (_, leaf) = node.cert();
        let lifetime = leaf.lifetime();
        if attempt == 0 {
            let at = leaf.issued_at_unix()
                + renew_after(lifetime, rand::random_range(-1.0..=1.0)).as_secs();
            // Wakes at least every second so a stepped test clock is noticed.
            loop {
                let now = unix(crate::clock::now());
                if now >= at || node.cert().1.serial != leaf.serial {
                    break;
                }
                let wait = Duration::from_secs(at - now).min(Duration::from_secs(1));
                tokio::select! {
                    _ = node.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        } else {
            let wait = retry_backoff(attempt - 1, lifetime).mul_f64(rand::random_range(0.8..=1.2));
            tokio::select! {
                _ = node.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let attempt_result = tokio::time::timeout(attempt_timeout(lifetime), renew_once(&node))
            .await
            .unwrap_or_else(|_| Err("the CA node did not answer in time".into()));
        match attempt_result {
            Ok(()) => {
                attempt = 0;
                node.renew_failures.store(0, Ordering::Relaxed);
                node.renewals.fetch_add(1, Ordering::Relaxed);
                let (_, leaf) = node.cert();
                info!(serial = %leaf.serial, expires_at_unix = leaf.not_after_unix, "certificate renewed");
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                node.renew_failures.fetch_add(1, Ordering::Relaxed);
                let left = leaf.remaining(crate::clock::now());
                warn!(error = %e, remaining_secs = left.as_secs(), attempt, "certificate renewal failed; will retry");
            }
        }
    }
}

async fn renew_once(node: &Arc<Node>) -> Result<(), String> {
    let id = SpiffeId::node(node.info.cluster.clone(), node.info.name.clone());
    let csr = node.key.csr_der(&id).map_err(|e| e.to_string())?;
    let der = if let Some(a) = &node.authority {
        a.issue_own(&node.info.name, &csr, SystemTime::now())
            .map_err(|r| r.message)?
            .der
    } else {
        match node.call_ca(&CtlRequest::Renew { csr: b64(&csr) }).await {
            Ok(CtlResponse::Cert { cert }) => unb64(&cert, "cert").map_err(|e| e.to_string())?,
            Ok(CtlResponse::Error { message, .. }) => return Err(message),
            Ok(_) => return Err("unexpected answer from the CA node".into()),
            Err((_, message)) => return Err(message),
        }
    };
    node.install_cert(der).await.map(|_| ())
}

/// Every gossip round: rebuild the catalog from verified gossip (instances leave the
/// load-balancing set within one round of their node failing or their check failing).
pub async fn catalog_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(node.settings().gossip_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        node.refresh_catalog().await;
    }
}

/// Re-publishes the signed service set whenever local services or their health change.
pub async fn publish_services_loop(node: Arc<Node>) {
    let mut changes = node.services.subscribe();
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        node.publish_services().await;
        node.refresh_catalog().await;
    }
}

/// Every second: refresh the verified member view and adopt newer revocation lists;
/// every five: remember peers for restarts.
pub async fn housekeeping_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Refreshes the verified view (and with it the gossiped revocation list).
        let members = node.members().await;
        node.sync_revocations().await;
        node.enforce_own_expiry();
        n += 1;
        if n % 5 == 1 {
            if let Some(ca) = members
                .iter()
                .find(|m| m.ca && !m.is_self && m.status == MemberStatus::Alive)
            {
                let peer = Peer {
                    name: ca.name.clone(),
                    gossip_addr: ca.gossip_addr,
                    quic_addr: ca.address,
                };
                if let Err(e) = node.store.set_ca_peer(&peer) {
                    warn!(error = %e, "cannot persist the CA node's address");
                }
            }
            let peers: Vec<Peer> = members
                .into_iter()
                .filter(|m| !m.is_self && m.status != MemberStatus::Left)
                .map(|m| Peer {
                    name: m.name,
                    gossip_addr: m.gossip_addr,
                    quic_addr: m.address,
                })
                .collect();
            if !peers.is_empty() {
                if let Err(e) = node.store.set_peers(&peers) {
                    warn!(error = %e, "cannot persist known peers");
                }
            }
        }
    }
}

/// Keeps the cluster config in step: publishes this node's digest on every change, and
/// every second pulls from one alive peer whose digest differs (anti-entropy; merges are
/// idempotent, so pulling from anyone converges).
pub async fn config_loop(node: Arc<Node>) {
    let mut changes = node.config.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    node.gossip
        .publish_config_digest(node.config.digest())
        .await;
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            r = changes.changed() => {
                if r.is_err() { return }
                node.gossip.publish_config_digest(node.config.digest()).await;
                continue;
            }
            _ = tick.tick() => {}
        }
        let ours = node.config.digest();
        let candidates: Vec<_> = node
            .members()
            .await
            .into_iter()
            .filter(|m| !m.is_self && m.status == MemberStatus::Alive && !m.revoked)
            .filter(|m| !m.config_digest.is_empty() && m.config_digest != ours)
            .collect();
        if candidates.is_empty() {
            let now_ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            node.config_synced_at_ms.store(now_ms, Ordering::Relaxed);
            continue;
        }
        let peer = &candidates[rand::random_range(0..candidates.len())];
        let result = async {
            let conn = node
                .connect(&peer.name, peer.address)
                .await
                .map_err(|e| e.to_string())?;
            let resp =
                crate::rpc::call(&conn, &CtlRequest::ConfigPull, crate::rpc::MAX_RESPONSE).await;
            conn.close(0u32.into(), b"done");
            match resp.map_err(|e| e.to_string())? {
                CtlResponse::Config { entries } => Ok(entries),
                _ => Err("unexpected answer".to_owned()),
            }
        }
        .await;
        match result {
            Ok(entries) => {
                let n = node.config.merge_remote(entries, &peer.name);
                if n > 0 {
                    info!(peer = %peer.name, changed = n, "cluster config pulled");
                }
            }
            Err(e) => warn!(peer = %peer.name, error = %e, "cluster config pull failed"),
        }
    }
}

/// Every 5 s: publishes this node's per-edge summary of the last minute (the 32 busiest
/// edges) so any node's dashboard can draw the whole mesh.
pub async fn edges_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut summaries = node
            .metrics
            .edges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summaries(60, unix(SystemTime::now()));
        summaries.sort_by(|a, b| b.rps.total_cmp(&a.rps));
        summaries.truncate(32);
        node.gossip
            .publish_edges(serde_json::to_string(&summaries).unwrap_or_default())
            .await;
    }
}
