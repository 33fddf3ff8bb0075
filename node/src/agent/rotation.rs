//! Root rotation, run by the root holder (`weft ca rotate`). A new root is made and the
//! trust bundle (signed by both roots) makes every node trust both; the replicas renew
//! their intermediates under the new root within seconds, and every leaf moves at its
//! next renewal. Once every alive member's certificate chains to the new root, the old
//! one is kept for one more certificate lifetime (so that no certificate still valid
//! chains to it, including those of nodes that are down), then retired: dropped from the
//! bundle, its key deleted. A retired root is still accepted for signatures made before
//! it retired (config entries written under it), never for anything new.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weft_ca::{unix, CertificateAuthority, NodeKey};
use weft_gossip::{MemberStatus, TrustBundle};

use super::state::Agent;
use crate::ca_role::{CaRole, Refusal, RefusalKind};

/// Validity of a new root (as at `--bootstrap`).
pub const ROOT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86400);

/// Retired roots kept for old signatures.
const MAX_RETIRED: usize = 2;

/// A rotation's progress, in the root holder's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// When it started, Unix seconds.
    pub started_at_unix: u64,
    /// SHA-256 (hex) of the new root.
    pub new_root_sha256: String,
    /// SHA-256 (hex) of the root being replaced.
    pub old_root_sha256: String,
    /// Since when every alive member's certificate chains to the new root.
    pub all_moved_at_unix: Option<u64>,
    /// When the old root was retired.
    pub finished_at_unix: Option<u64>,
}

fn unavailable(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(RefusalKind::Unavailable, e.to_string())
}

/// Signs `bundle` with every root key held and publishes it in gossip.
async fn publish(agent: &Agent, ca: &CaRole, bundle: &TrustBundle) {
    let keys = ca.root_keys();
    let signed =
        bundle.encode_signed(|m| keys.iter().map(|k| k.sign(m).unwrap_or_default()).collect());
    agent.gossip.publish_roots(signed).await;
}

/// Starts a rotation (an admin act, on the root holder).
pub async fn start(agent: &Agent) -> Result<serde_json::Value, Refusal> {
    let ca = agent.ca.get().filter(|c| c.holds_root()).ok_or_else(|| {
        unavailable(format!(
            "{} does not hold the root key",
            agent.identity.info.name
        ))
    })?;
    if let Some(r) = agent.store.rotation::<Rotation>()? {
        if r.finished_at_unix.is_none() {
            return Err(Refusal::new(
                RefusalKind::BadRequest,
                format!(
                    "a root rotation is running since unix {} (weft ca status shows how far); wait for it to finish",
                    r.started_at_unix
                ),
            ));
        }
    }
    let files = &agent.identity.files;
    let cluster = agent.identity.info.cluster.clone();
    let now = SystemTime::now();
    let old = ca
        .current_root()
        .ok_or_else(|| unavailable("no root key"))?;
    let old_key = files
        .ca_key_pem()
        .map_err(unavailable)?
        .ok_or_else(|| unavailable("ca.key is missing"))
        .and_then(|pem| NodeKey::from_pem(&pem).map_err(unavailable))?;
    let (new_root, new_key) =
        CertificateAuthority::create(cluster.clone(), now, ROOT_VALIDITY).map_err(unavailable)?;
    files
        .save_rotated_root((&old_key, old.cert_der()), (&new_key, new_root.cert_der()))
        .map_err(unavailable)?;
    let new_der = new_root.cert_der().to_vec();
    let old_der = old.cert_der().to_vec();
    let bundle = TrustBundle::new(
        agent.identity.trust_version() + 1,
        &[new_der.clone(), old_der.clone()],
        &agent.identity.trust.retired(),
    );
    let old_ca =
        Arc::new(CertificateAuthority::load(cluster, &old_der, old_key).map_err(unavailable)?);
    ca.set_roots(new_root, Some(old_ca));
    agent.identity.adopt_bundle(&bundle);
    let state = Rotation {
        started_at_unix: unix(now),
        new_root_sha256: hex::encode(sha(&new_der)),
        old_root_sha256: hex::encode(sha(&old_der)),
        all_moved_at_unix: None,
        finished_at_unix: None,
    };
    agent.store.set_rotation(&state)?;
    publish(agent, &ca, &bundle).await;
    warn!(new_root = %state.new_root_sha256, old_root = %state.old_root_sha256, "root rotation started: both roots trusted; replicas and leaves move to the new root");
    // This replica first: its intermediate and its own certificate under the new root.
    super::replica::renew_intermediate_if_due(agent, &ca).await?;
    agent.refresh_admin_credential(true);
    Ok(serde_json::to_value(&state).unwrap_or_default())
}

fn sha(der: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(der).into()
}

/// Every few seconds on the root holder: publishes the trust bundle where gossip lacks
/// it, and moves a running rotation on (retiring the old root when its time has come).
pub async fn step(agent: &Agent) {
    let Some(ca) = agent.ca.get().filter(|c| c.holds_root()) else {
        return;
    };
    let version = agent.identity.trust_version();
    let seen = agent.gossip.trust_bundle().map_or(0, |b| b.version);
    if version > 0 && seen < version {
        let bundle = TrustBundle::new(
            version,
            &agent.identity.trust.roots(),
            &agent.identity.trust.retired(),
        );
        publish(agent, &ca, &bundle).await;
    }
    let Ok(Some(mut r)) = agent.store.rotation::<Rotation>() else {
        return;
    };
    if r.finished_at_unix.is_some() {
        return;
    }
    let members = agent.members().await;
    let moved = members
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .all(|m| m.cert_root == r.new_root_sha256);
    let now = unix(SystemTime::now());
    match (moved, r.all_moved_at_unix) {
        (false, Some(_)) => r.all_moved_at_unix = None,
        (true, None) => {
            info!("every alive member's certificate chains to the new root; the old root retires after one certificate lifetime");
            r.all_moved_at_unix = Some(now);
        }
        (true, Some(t)) if now >= t + agent.settings().leaf_ttl.as_secs() => {
            if let Err(e) = finish(agent, &ca, &mut r, now).await {
                warn!(error = %e, "cannot retire the old root; will retry");
            }
        }
        _ => return,
    }
    if let Err(e) = agent.store.set_rotation(&r) {
        warn!(error = %e, "cannot record the rotation's progress");
    }
}

/// Retires the old root: a bundle without it (signed by both, so that every node adopts
/// it), its key deleted.
async fn finish(agent: &Agent, ca: &CaRole, r: &mut Rotation, now: u64) -> Result<(), Refusal> {
    let old = ca
        .old_root()
        .ok_or_else(|| unavailable("the old root key is not loaded"))?;
    let current = agent.identity.trust.ca_der();
    let mut retired = agent.identity.trust.retired();
    retired.push((old.cert_der().to_vec(), now));
    if retired.len() > MAX_RETIRED {
        retired.drain(..retired.len() - MAX_RETIRED);
    }
    let bundle = TrustBundle::new(agent.identity.trust_version() + 1, &[current], &retired);
    publish(agent, ca, &bundle).await;
    agent.identity.adopt_bundle(&bundle);
    ca.drop_old_root();
    agent
        .identity
        .files
        .remove_old_root()
        .map_err(unavailable)?;
    r.finished_at_unix = Some(now);
    warn!(old_root = %r.old_root_sha256, "root rotation finished: the old root is retired and its key deleted");
    Ok(())
}
