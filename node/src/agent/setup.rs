//! Establishing the node's identity at start: load it, create a cluster
//! (`--bootstrap`), or join one (`--join` + `--token`), and refresh an expired certificate.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use weft_ca::{unix, CertificateAuthority, ClusterName, JoinToken, LeafInfo, NodeKey, SpiffeId};
use weft_gossip::{GossipKey, Keyring};

use super::AgentError;
use crate::ca_role::CaRole;
use crate::config::Settings;
use crate::identity::{ClusterInfo, Identity, IdentityFiles};
use crate::rpc::join_client::{self as join, JoinFailure};
use crate::store::{Peer, Store};

/// This start cannot establish an identity; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A data directory with no identity, and neither --bootstrap nor a token.
    #[error("{dir} holds no identity: start the first node with --bootstrap, or join with --join SEED --token TOKEN")]
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

/// Validity of a new root CA.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86400);

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
    refresh_if_expired(settings, files, store, identity).await
}

fn bootstrap(settings: &Settings, files: &IdentityFiles, store: &Store) -> Result<(), AgentError> {
    let cluster = settings.cluster.clone().unwrap_or_else(|| {
        ClusterName::new("weft").unwrap_or_else(|_| unreachable!("constant is valid"))
    });
    let now = SystemTime::now();
    let (ca, ca_key) = CertificateAuthority::create(cluster.clone(), now, ROOT_VALIDITY)?;
    let authority = CaRole::new(ca, store.clone(), settings.leaf_ttl)?;
    let key = NodeKey::generate()?;
    let csr = key.csr_der(&SpiffeId::node(cluster.clone(), settings.name.clone()))?;
    let issued = authority.issue_own(&settings.name, &csr, now)?;
    let ca_der = authority.ca_cert_der().to_vec();
    let keyring = Keyring::single(GossipKey::generate());
    let info = ClusterInfo {
        cluster: cluster.clone(),
        name: settings.name.clone(),
    };
    files.save_new(&info, &key, &issued.der, &ca_der, Some(&ca_key), &keyring)?;
    info!(cluster = %cluster, node = %settings.name, "bootstrapped a new cluster; this node holds its CA");
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
        &joined.cert_der,
        &joined.ca_der,
        None,
        &joined.keyring,
    )?;
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
    if let Some(ca) = identity.ca.take() {
        let authority = CaRole::new(ca, store.clone(), settings.leaf_ttl)?;
        let csr = identity.key.csr_der(&SpiffeId::node(
            identity.info.cluster.clone(),
            identity.info.name.clone(),
        ))?;
        let issued = authority.issue_own(&identity.info.name, &csr, now)?;
        files.save_cert(&issued.der)?;
        warn!("the node certificate had expired; the CA node issued itself a new one");
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
        &joined.cert_der,
        &joined.ca_der,
        None,
        &joined.keyring,
    )?;
    files.load().map_err(Into::into)
}

/// Lifetime of the admin credential the CA node issues itself.
const ADMIN_CREDENTIAL_TTL: Duration = Duration::from_secs(365 * 86400);
/// The CA node re-issues its admin credential when less than this is left.
const ADMIN_CREDENTIAL_RENEW: Duration = Duration::from_secs(30 * 86400);

/// `<data-dir>/admin-credential`: loaded where it exists; on the CA node written at
/// bootstrap, on the first start after an upgrade (in place of the admin token, which
/// then stands for it), and again before it expires.
pub fn admin_credential(
    data_dir: &std::path::Path,
    trust: &weft_ca::TrustRoot,
    ca: Option<&crate::ca_role::CaRole>,
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
            .verify_operator(c.cert_der(), now + ADMIN_CREDENTIAL_RENEW)
            .is_ok()
    });
    let Some(ca) = ca else {
        return Ok(current.map(std::sync::Arc::new));
    };
    if fresh {
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
