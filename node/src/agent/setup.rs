//! Establishing the node's identity at start: load it, create a cluster
//! (`--bootstrap`), or join one (`--join` + `--token`), and refresh an expired certificate.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use weft_ca::{unix, CertificateAuthority, ClusterName, JoinToken, LeafInfo, NodeKey, SpiffeId};
use weft_gossip::{GossipKey, Keyring};

use super::AgentError;
use crate::ca_role::CaRole;
use crate::config::Settings;
use crate::identity::{CertChain, ClusterInfo, Identity, IdentityFiles};
use crate::rpc::join_client::{self as join, JoinFailure};
use crate::store::{Peer, Store};

/// This start cannot establish an identity; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A data directory with no identity, and neither --bootstrap nor a token.
    #[error("{dir} holds no identity: start the first node with --bootstrap, or join with --join SEED and a token from `weft token create` (--token-file FILE, or /etc/weft/credentials/join-token under systemd)")]
    NoIdentity {
        /// The data directory.
        dir: String,
    },
    /// The data directory belongs to another node.
    #[error("{dir} belongs to node {has:?}, not {wanted:?}: use its name or another --data-dir")]
    WrongNode {
        /// The data directory.
        dir: String,
        /// The node it belongs to.
        has: String,
        /// The name asked for.
        wanted: String,
    },
    /// The data directory belongs to another cluster.
    #[error("this node belongs to cluster {has:?}, not {wanted:?}")]
    WrongCluster {
        /// The cluster it belongs to.
        has: String,
        /// The cluster asked for.
        wanted: String,
    },
    /// A token without a seed to use it with.
    #[error("--token needs at least one --join SEED")]
    TokenWithoutSeed,
    /// The admin credential could not be issued or written.
    #[error("cannot provide {path}: {reason}")]
    AdminCredential {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The certificate expired while the agent was down.
    #[error("this node's certificate expired at unix {0} while the agent was down; re-join with a new token: weft token create (on a member), then start with --join SEED --token TOKEN")]
    Expired(u64),
}

use super::rotation::ROOT_VALIDITY;

/// Loads, creates or joins: returns the identity to run with.
pub async fn establish(
    settings: &Settings,
    files: &IdentityFiles,
    store: &Store,
) -> Result<Identity, AgentError> {
    if !files.exists() {
        if settings.bootstrap {
            bootstrap(settings, files, store)?;
        } else if let Some(token) = &settings.token {
            join_with_token(settings, files, store, token).await?;
        } else {
            return Err(SetupError::NoIdentity {
                dir: settings.data_dir.display().to_string(),
            }
            .into());
        }
    } else if settings.bootstrap && !settings.dev {
        info!("this node already belongs to a cluster; --bootstrap ignored");
    }
    let identity = files.load()?;
    if identity.info.name != settings.name {
        return Err(SetupError::WrongNode {
            dir: settings.data_dir.display().to_string(),
            has: identity.info.name.to_string(),
            wanted: settings.name.to_string(),
        }
        .into());
    }
    if let Some(c) = &settings.cluster {
        if *c != identity.info.cluster {
            return Err(SetupError::WrongCluster {
                has: identity.info.cluster.to_string(),
                wanted: c.to_string(),
            }
            .into());
        }
    }
    let identity = ensure_own_replica(settings, files, store, identity)?;
    refresh_if_expired(settings, files, store, identity).await
}

/// The CA role this identity carries: its replica, with the root where it holds it.
/// Takes both authorities out of `identity`.
pub fn ca_role(
    identity: &mut Identity,
    store: &Store,
    settings: &Settings,
    trust: &weft_ca::TrustRoot,
) -> Result<Option<CaRole>, AgentError> {
    let Some(replica) = identity.replica.take() else {
        return Ok(None);
    };
    let role = CaRole::new(
        identity.info.name.clone(),
        replica,
        None,
        trust.clone(),
        store.clone(),
        settings.leaf_ttl,
    )?;
    if let Some(root) = identity.ca.take() {
        role.set_roots(root, identity.old_ca.take().map(std::sync::Arc::new));
    }
    Ok(Some(role))
}

/// Makes the root holder a replica of its own (`--bootstrap`, and the first start after an
/// upgrade from a single CA: no node re-joins), renews an intermediate that is close to
/// expiry there, and re-issues the node certificate through it so that the node's gossip
/// record proves the role.
fn ensure_own_replica(
    settings: &Settings,
    files: &IdentityFiles,
    store: &Store,
    identity: Identity,
) -> Result<Identity, AgentError> {
    let Some(root) = &identity.ca else {
        return Ok(identity);
    };
    let now = SystemTime::now();
    let due = identity.replica.as_ref().is_none_or(|r| {
        weft_ca::parse_replica(r.cert_der(), &identity.info.cluster)
            .map(|i| i.not_after_unix < unix(now) + crate::ca_role::REPLICA_TTL.as_secs() / 3)
            .unwrap_or(true)
    });
    let issued_by_own = LeafInfo::parse(&identity.cert_der).is_ok()
        && identity
            .chain
            .first()
            .and_then(|c| weft_ca::parse_replica(c, &identity.info.cluster).ok())
            .is_some_and(|i| i.node == identity.info.name);
    if !due && issued_by_own {
        return Ok(identity);
    }
    let name = identity.info.name.clone();
    if due {
        let key = match files.replica_key()? {
            Some(k) => k,
            None => NodeKey::generate()?,
        };
        let csr = key.replica_csr_der(&identity.info.cluster, &name)?;
        let inter = root
            .sign_replica_csr(&csr, &name, crate::ca_role::REPLICA_TTL, now)
            .map_err(|e| {
                crate::ca_role::Refusal::new(crate::ca_role::RefusalKind::BadCsr, e.to_string())
            })?;
        files.save_replica(&key, &inter.der)?;
        info!(replica = %name, not_after_unix = inter.not_after_unix, "this root holder is a CA replica with its own intermediate");
    }
    let mut identity = files.load()?;
    let trust = identity.trust_root()?;
    if let Some(role) = ca_role(&mut identity, store, settings, &trust)? {
        let csr = identity
            .key
            .csr_der(&SpiffeId::node(identity.info.cluster.clone(), name.clone()))?;
        let issued = role.issue_own(&name, &csr, now)?;
        files.save_cert(&issued.der, &role.chain())?;
    }
    files.load().map_err(Into::into)
}

fn bootstrap(settings: &Settings, files: &IdentityFiles, store: &Store) -> Result<(), AgentError> {
    let cluster = settings.cluster.clone().unwrap_or_else(|| {
        ClusterName::new("weft").unwrap_or_else(|_| unreachable!("constant is valid"))
    });
    let now = SystemTime::now();
    let (root, root_key) = CertificateAuthority::create(cluster.clone(), now, ROOT_VALIDITY)?;
    let replica_key = NodeKey::generate()?;
    let inter = root
        .sign_replica_csr(
            &replica_key.replica_csr_der(&cluster, &settings.name)?,
            &settings.name,
            crate::ca_role::REPLICA_TTL,
            now,
        )
        .map_err(|e| {
            crate::ca_role::Refusal::new(crate::ca_role::RefusalKind::BadCsr, e.to_string())
        })?;
    let ca_der = root.cert_der().to_vec();
    let replica = CertificateAuthority::load(
        cluster.clone(),
        &inter.der,
        NodeKey::from_pem(&replica_key.to_pem())?,
    )?;
    let authority = CaRole::new(
        settings.name.clone(),
        replica,
        Some(root),
        weft_ca::TrustRoot::new(cluster.clone(), ca_der.clone())?,
        store.clone(),
        settings.leaf_ttl,
    )?;
    let key = NodeKey::generate()?;
    let csr = key.csr_der(&SpiffeId::node(cluster.clone(), settings.name.clone()))?;
    let issued = authority.issue_own(&settings.name, &csr, now)?;
    let keyring = Keyring::single(GossipKey::generate());
    let info = ClusterInfo {
        cluster: cluster.clone(),
        name: settings.name.clone(),
    };
    files.save_replica(&replica_key, &inter.der)?;
    files.save_new(
        &info,
        &key,
        CertChain {
            leaf: &issued.der,
            chain: &authority.chain(),
        },
        &ca_der,
        Some(&root_key),
        &keyring,
    )?;
    info!(cluster = %cluster, node = %settings.name, "bootstrapped a new cluster; this node holds its root and is its first CA replica");
    Ok(())
}

async fn join_with_token(
    settings: &Settings,
    files: &IdentityFiles,
    store: &Store,
    token: &str,
) -> Result<(), AgentError> {
    if settings.join.is_empty() {
        return Err(SetupError::TokenWithoutSeed.into());
    }
    let token: JoinToken = token
        .parse()
        .map_err(|e| AgentError::Join(JoinFailure::BadAnswer(format!("{e}"))))?;
    let key = NodeKey::generate()?;
    let joined = join::join(&settings.join, settings.bind, &settings.name, &token, &key).await?;
    let info = ClusterInfo {
        cluster: joined.cluster.clone(),
        name: settings.name.clone(),
    };
    files.save_new(
        &info,
        &key,
        CertChain {
            leaf: &joined.cert_der,
            chain: &joined.chain,
        },
        &joined.ca_der,
        None,
        &joined.keyring,
    )?;
    files.save_trust(&weft_gossip::TrustBundle::new(0, &joined.roots, &[]))?;
    let peers: Vec<Peer> = joined
        .members
        .iter()
        .filter(|m| m.name != settings.name.as_str())
        .map(|m| Peer {
            name: m.name.clone(),
            gossip_addr: m.gossip_addr,
            quic_addr: m.quic_addr,
        })
        .collect();
    store.set_peers(&peers)?;
    if let Some(ca) = joined.members.iter().find(|m| m.ca) {
        store.set_ca_peer(&Peer {
            name: ca.name.clone(),
            gossip_addr: ca.gossip_addr,
            quic_addr: ca.quic_addr,
        })?;
    }
    info!(cluster = %joined.cluster, node = %settings.name, peers = peers.len(), "joined the cluster");
    Ok(())
}

/// A certificate that expired while the agent was down: the CA node re-issues its own;
/// another node re-joins with a new token, or stops with a message saying so.
async fn refresh_if_expired(
    settings: &Settings,
    files: &IdentityFiles,
    store: &Store,
    mut identity: Identity,
) -> Result<Identity, AgentError> {
    let leaf = LeafInfo::parse(&identity.cert_der)?;
    let now = SystemTime::now();
    if leaf.not_after_unix > unix(now) {
        return Ok(identity);
    }
    let trust = identity.trust_root()?;
    if let Some(authority) = ca_role(&mut identity, store, settings, &trust)? {
        let csr = identity.key.csr_der(&SpiffeId::node(
            identity.info.cluster.clone(),
            identity.info.name.clone(),
        ))?;
        let issued = authority.issue_own(&identity.info.name, &csr, now)?;
        files.save_cert(&issued.der, &authority.chain())?;
        warn!("the node certificate had expired; this CA replica issued itself a new one");
        return files.load().map_err(Into::into);
    }
    let Some(token) = &settings.token else {
        return Err(SetupError::Expired(leaf.not_after_unix).into());
    };
    warn!("the node certificate expired while the agent was down; re-joining with the given token");
    let token: JoinToken = token
        .parse()
        .map_err(|e| AgentError::Join(JoinFailure::BadAnswer(format!("{e}"))))?;
    let key = NodeKey::generate()?;
    let mut seeds = settings.join.clone();
    seeds.extend(store.peers()?.iter().map(|p| p.quic_addr.to_string()));
    let joined = join::join(&seeds, settings.bind, &settings.name, &token, &key).await?;
    files.save_new(
        &identity.info,
        &key,
        CertChain {
            leaf: &joined.cert_der,
            chain: &joined.chain,
        },
        &joined.ca_der,
        None,
        &joined.keyring,
    )?;
    files.save_trust(&weft_gossip::TrustBundle::new(0, &joined.roots, &[]))?;
    files.load().map_err(Into::into)
}

/// Lifetime of the admin credential the CA node issues itself.
const ADMIN_CREDENTIAL_TTL: Duration = Duration::from_secs(365 * 86400);
/// The CA node re-issues its admin credential when less than this is left.
const ADMIN_CREDENTIAL_RENEW: Duration = Duration::from_secs(30 * 86400);

/// `<data-dir>/admin-credential`: loaded where it exists; on the root holder written at
/// bootstrap, on the first start after an upgrade (in place of the admin token, which
/// then stands for it), before it expires, and under the new root when one is made
/// (`reissue`).
pub fn admin_credential(
    data_dir: &std::path::Path,
    trust: &weft_ca::TrustRoot,
    ca: Option<&crate::ca_role::CaRole>,
    reissue: bool,
) -> Result<Option<std::sync::Arc<crate::authority::Credential>>, SetupError> {
    use crate::authority::Credential;
    let path = data_dir.join("admin-credential");
    let fail = |reason: String| SetupError::AdminCredential {
        path: path.display().to_string(),
        reason,
    };
    let now = std::time::SystemTime::now();
    let current = match crate::store::files::read_limited(&path, 64 * 1024) {
        Ok(bytes) => String::from_utf8(bytes)
            .ok()
            .and_then(|s| Credential::parse(&s).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(e.to_string())),
    };
    let fresh = current.as_ref().is_some_and(|c| {
        trust
            .verify_operator_chain(c.cert_der(), c.chain(), now + ADMIN_CREDENTIAL_RENEW)
            .is_ok()
    });
    // The root holder issues it; a replica that already has one (a former root holder
    // whose root key went offline) keeps it fresh.
    let Some(ca) = ca.filter(|ca| ca.holds_root() || current.is_some()) else {
        return Ok(current.map(std::sync::Arc::new));
    };
    if fresh && !reissue {
        return Ok(current.map(std::sync::Arc::new));
    }
    let cred = ca
        .issue_admin_credential(ADMIN_CREDENTIAL_TTL, now)
        .map_err(|r| fail(r.message))?;
    crate::store::files::write_atomic(&path, cred.encode().as_bytes(), 0o600)
        .map_err(|e| fail(e.to_string()))?;
    tracing::info!(path = %path.display(), "admin credential written (operator admin, role admin)");
    Ok(Some(std::sync::Arc::new(cred)))
}
