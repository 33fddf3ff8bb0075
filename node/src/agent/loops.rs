//! The agent's background loops that need several components at once. Each runs until
//! `agent.shutdown` is cancelled; `agent::run` owns them in its task tracker. (Config
//! anti-entropy is `cluster_config::sync`, health probes `health`, listeners `proxy`.)

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use weft_ca::SpiffeId;
use weft_gossip::MemberStatus;

use super::state::Agent;
use crate::identity::renewal::{attempt_timeout, renew_after, retry_backoff};
use crate::identity::CertInstallError;
use crate::rpc::{b64, unb64, CaCallError, CtlRequest, CtlResponse, DecodeError};
use crate::store::Peer;

/// Why one renewal attempt failed (the certificate in use stays).
#[derive(Debug, thiserror::Error)]
enum RenewError {
    /// No CSR could be made.
    #[error("cannot make a CSR: {0}")]
    Csr(#[from] weft_ca::CaError),
    /// This node's own CA refused.
    #[error("{0}")]
    Refused(#[from] crate::ca_role::Refusal),
    /// The CA node refused.
    #[error("the CA node refused: {0}")]
    CaRefused(String),
    /// The CA node could not be asked.
    #[error(transparent)]
    Call(#[from] CaCallError),
    /// The answer was not a certificate.
    #[error("unexpected answer from the CA node")]
    Unexpected,
    /// The certificate field did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The new certificate could not be installed.
    #[error(transparent)]
    Install(#[from] CertInstallError),
    /// No answer within the attempt timeout.
    #[error("the CA node did not answer in time")]
    Timeout,
}

/// Renews the node certificate at about half its lifetime, over mTLS with the current
/// certificate (never the token). On failure keeps the certificate and retries with
/// backoff, warning with the time left. The backoff runs from the start of the failed
/// attempt, so an attempt that timed out has already paid its wait.
pub async fn renew_loop(agent: Arc<Agent>) {
    let metrics = agent.data.metrics.clone();
    let mut attempt: u32 = 0;
    let mut last_took = Duration::ZERO;
    loop {
        let leaf = agent.identity.leaf();
        let lifetime = leaf.lifetime();
        if attempt == 0 {
            let at = SystemTime::UNIX_EPOCH
                + Duration::from_secs(leaf.issued_at_unix())
                + renew_after(lifetime, rand::random_range(-1.0..=1.0));
            // Wakes at least every second so a stepped test clock is noticed.
            while let Ok(wait) = at.duration_since(crate::clock::now()) {
                if wait.is_zero() || agent.identity.leaf().serial != leaf.serial {
                    break;
                }
                tokio::select! {
                    _ = agent.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
                }
            }
        } else {
            let remaining = leaf.remaining(crate::clock::now());
            let wait = retry_backoff(attempt - 1, lifetime, remaining)
                .mul_f64(rand::random_range(0.8..=1.2))
                .saturating_sub(last_took);
            tokio::select! {
                _ = agent.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(attempt_timeout(lifetime), renew_once(&agent))
            .await
            .unwrap_or(Err(RenewError::Timeout));
        last_took = started.elapsed();
        match result {
            Ok(()) => {
                attempt = 0;
                metrics.cert_renewal_failures.set(0);
                metrics.cert_renewals.inc();
                let leaf = agent.identity.leaf();
                info!(serial = %leaf.serial, expires_at_unix = leaf.not_after_unix, "certificate renewed");
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                metrics.cert_renewal_failures.inc();
                let left = leaf.remaining(crate::clock::now());
                warn!(error = %e, remaining_secs = left.as_secs(), attempt, "certificate renewal failed; will retry");
            }
        }
    }
}

async fn renew_once(agent: &Agent) -> Result<(), RenewError> {
    let info = &agent.identity.info;
    let id = SpiffeId::node(info.cluster.clone(), info.name.clone());
    let csr = agent.identity.key.csr_der(&id)?;
    let (der, chain) = if let Some(ca) = agent.ca.get() {
        let issued = ca.issue_own(&info.name, &csr, SystemTime::now())?;
        (issued.der, ca.chain())
    } else {
        match agent
            .ca_client
            .call(&CtlRequest::Renew { csr: b64(&csr) })
            .await?
        {
            CtlResponse::Cert { cert, chain } => (
                unb64(&cert, "cert")?,
                chain
                    .iter()
                    .map(|c| unb64(c, "chain"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            CtlResponse::Error { message, .. } => return Err(RenewError::CaRefused(message)),
            _ => return Err(RenewError::Unexpected),
        }
    };
    agent.identity.install_cert(der, chain)?;
    agent.publish_record().await;
    Ok(())
}

/// Rebuilds the catalog from verified gossip as soon as gossip learns something (a
/// delta changed a member's keys, or a member failed or left: instances leave the
/// load-balancing set in the round their node is marked failed), at most every
/// `CATALOG_SPACING`, and every second regardless (certificate expiry, revocations).
pub async fn catalog_loop(agent: Arc<Agent>) {
    /// Coalesces bursts of changes (one delta often changes many keys).
    const CATALOG_SPACING: Duration = Duration::from_millis(20);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = agent.gossip.changes().await;
    loop {
        tokio::select! {
            _ = agent.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            alive = async {
                match changes.as_mut() {
                    Some(c) => c.changed().await,
                    None => std::future::pending().await,
                }
            } => if !alive { changes = None },
        }
        agent.refresh_catalog().await;
        tokio::time::sleep(CATALOG_SPACING).await;
    }
}

/// Re-publishes the signed service set whenever local services or their health change.
pub async fn publish_services_loop(agent: Arc<Agent>) {
    let mut changes = agent.data.services.subscribe();
    loop {
        tokio::select! {
            _ = agent.shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        agent.publish_services().await;
        agent.refresh_catalog().await;
    }
}

/// Every second: refresh the verified member view, adopt newer revocation lists and fail
/// closed at own expiry; every five: remember peers for restarts.
pub async fn housekeeping_loop(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = agent.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let members = agent.members().await;
        agent.sync_revocations().await;
        agent.data.enforce_own_expiry();
        n += 1;
        if n % 60 == 30 {
            if let Some(ca) = agent.ca.get() {
                match ca.prune_revocations(std::time::SystemTime::now()) {
                    Ok(0) => {}
                    Ok(_) => agent.sync_revocations().await,
                    Err(e) => warn!(error = %e, "cannot prune the revocation list"),
                }
            }
        }
        if n % 3600 == 600 {
            // The admin credential is issued again before it expires even on an agent
            // that runs for longer than it lasts.
            agent.refresh_admin_credential(false);
        }
        if n % 5 == 2 {
            if let Some(ca) = agent.ca.get() {
                if let Err(e) = super::replica::renew_intermediate_if_due(&agent, &ca).await {
                    warn!(error = %e, "cannot renew this replica's intermediate; will retry");
                }
            }
            super::rotation::step(&agent).await;
        }
        if let Some(bundle) = agent.gossip.trust_bundle() {
            agent.identity.adopt_bundle(&bundle);
        }
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
                if let Err(e) = agent.store.set_ca_peer(&peer) {
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
                if let Err(e) = agent.store.set_peers(&peers) {
                    warn!(error = %e, "cannot persist known peers");
                }
            }
        }
    }
}

/// Every 5 s: publishes this node's per-edge summary of the last minute (the 32 busiest
/// edges) so any node's dashboard can draw the whole mesh.
pub async fn edges_loop(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = agent.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut summaries = agent
            .data
            .metrics
            .edges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summaries(60, crate::clock::unix_secs());
        summaries.sort_by(|a, b| b.rps.total_cmp(&a.rps));
        summaries.truncate(32);
        agent
            .gossip
            .publish_edges(serde_json::to_string(&summaries).unwrap_or_default())
            .await;
    }
}

/// The nftables table for the local services and the catalog now.
fn lockdown_rules(agent: &Agent) -> String {
    let guarded: Vec<crate::interception::Guarded> = agent
        .data
        .services
        .all()
        .into_iter()
        .map(|s| crate::interception::Guarded {
            port: s.port,
            user: s.user,
        })
        .collect();
    let instances: Vec<std::net::SocketAddrV4> = agent
        .data
        .catalog
        .get()
        .instances
        .iter()
        .filter_map(|i| match i.node_addr.ip() {
            std::net::IpAddr::V4(ip) => Some(std::net::SocketAddrV4::new(ip, i.port)),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    crate::interception::ruleset(
        &guarded,
        &instances,
        crate::interception::own_uid(),
        crate::proxy::listeners::INTERCEPT_ADDR.1,
    )
}

/// Sets the nftables table for the local services and the catalog now.
pub fn apply_lockdown(agent: &Agent) -> Result<String, crate::interception::InterceptError> {
    let rules = lockdown_rules(agent);
    crate::interception::apply(&rules)?;
    Ok(rules)
}

/// Keeps the table in line with the local services and the catalog (checked every
/// second, replaced only when it changes); removes it at shutdown.
pub async fn lockdown_loop(agent: Arc<Agent>, mut applied: String) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A ruleset nft refused is not tried again (nor logged again) until it changes.
    let mut refused = String::new();
    loop {
        tokio::select! {
            _ = agent.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let rules = lockdown_rules(&agent);
        if rules == applied || rules == refused {
            continue;
        }
        match crate::interception::apply(&rules) {
            Ok(()) => {
                info!("nftables table inet weft updated");
                applied = rules;
            }
            Err(e) => {
                warn!(error = %e, "cannot update the nftables table; the previous one stays");
                refused = rules;
            }
        }
    }
    match crate::interception::remove() {
        Ok(()) => info!("nftables table inet weft removed"),
        Err(e) => warn!(error = %e, "cannot remove the nftables table inet weft"),
    }
}
