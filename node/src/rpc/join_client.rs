//! The joining side of the join protocol: connect to a seed, pin the CA by the token's
//! hash, send name + CSR + token, receive certificate, root, gossip keys and members.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use tracing::{info, warn};
use weft_ca::{ClusterName, JoinToken, NodeKey, NodeName, TrustRoot};
use weft_gossip::Keyring;

use super::messages::{
    b64, unb64, JoinRequest, JoinResponse, MemberAddr, RefusalKind, MAX_RESPONSE,
};
use super::stream::call;
use crate::config::seed::resolve_seed;
use crate::tls;

/// Why joining failed. Each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum JoinFailure {
    /// The cluster refused (bad token, name taken, ...).
    #[error("join refused by the cluster ({kind:?}): {message}")]
    Refused {
        /// Category.
        kind: RefusalKind,
        /// Reason from the CA.
        message: String,
    },
    /// The seed's CA is not the one the token pins.
    #[error("the seed's CA does not match the token (wrong cluster, or a tampered token): {0}")]
    WrongCa(String),
    /// No seed could be reached.
    #[error("cannot reach any seed: {0}")]
    Unreachable(String),
    /// The answer was unusable.
    #[error("invalid join answer: {0}")]
    BadAnswer(String),
}

/// What a successful join yields.
#[derive(Debug)]
pub struct Joined {
    /// Cluster name.
    pub cluster: ClusterName,
    /// Certificate DER.
    pub cert_der: Vec<u8>,
    /// The intermediates it chains through, DER.
    pub chain: Vec<Vec<u8>>,
    /// The roots the cluster trusts, DER (the pinned, current one first).
    pub roots: Vec<Vec<u8>>,
    /// Root DER.
    pub ca_der: Vec<u8>,
    /// Gossip keys.
    pub keyring: Keyring,
    /// Members to gossip with.
    pub members: Vec<MemberAddr>,
}

/// Joins through the first seed that answers.
pub async fn join(
    seeds: &[String],
    bind: IpAddr,
    name: &NodeName,
    token: &JoinToken,
    key: &NodeKey,
) -> Result<Joined, JoinFailure> {
    let local = if bind.is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(bind, 0)
    };
    let endpoint = quinn::Endpoint::client(local)
        .map_err(|e| JoinFailure::Unreachable(format!("cannot bind {local}: {e}")))?;
    let config = tls::join_client_config(token.ca_hash())
        .map_err(|e| JoinFailure::Unreachable(e.to_string()))?;
    let csr = key
        .join_csr_der(name)
        .map_err(|e| JoinFailure::BadAnswer(e.to_string()))?;
    let request = JoinRequest {
        name: name.clone(),
        csr: b64(&csr),
        token: token.to_string(),
    };
    let mut errors = Vec::new();
    for seed in seeds {
        let addrs = match resolve_seed(seed).await {
            Ok(a) => a,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        for addr in addrs {
            info!(seed = %addr, token_id = %token.id(), "joining");
            match try_seed(&endpoint, &config, addr, &request).await {
                Ok(resp) => {
                    endpoint.close(0u32.into(), b"joined");
                    return finish(resp, name, token);
                }
                Err(e @ JoinFailure::WrongCa(_)) => return Err(e),
                Err(e) => {
                    warn!(seed = %addr, error = %e, "seed did not answer the join");
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
    }
    Err(JoinFailure::Unreachable(errors.join("; ")))
}

async fn try_seed(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    addr: SocketAddr,
    request: &JoinRequest,
) -> Result<JoinResponse, JoinFailure> {
    let connecting = endpoint
        .connect_with(config.clone(), addr, "weft-join")
        .map_err(|e| JoinFailure::Unreachable(e.to_string()))?;
    let conn = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Err(_) => return Err(JoinFailure::Unreachable("timed out".into())),
        Ok(Err(e)) => {
            let msg = e.to_string();
            if msg.contains("does not match the token") {
                return Err(JoinFailure::WrongCa(msg));
            }
            return Err(JoinFailure::Unreachable(msg));
        }
        Ok(Ok(c)) => c,
    };
    let resp = call(&conn, request, MAX_RESPONSE)
        .await
        .map_err(|e| JoinFailure::Unreachable(e.to_string()))?;
    conn.close(0u32.into(), b"done");
    Ok(resp)
}

fn finish(resp: JoinResponse, name: &NodeName, token: &JoinToken) -> Result<Joined, JoinFailure> {
    let grant = match resp {
        JoinResponse::Refused { kind, message } => {
            return Err(JoinFailure::Refused { kind, message })
        }
        JoinResponse::Granted(g) => g,
    };
    let bad = |m: String| JoinFailure::BadAnswer(m);
    let ca_der = unb64(&grant.ca, "ca").map_err(|e| bad(e.to_string()))?;
    if <[u8; 32]>::from(Sha256::digest(&ca_der)) != token.ca_hash() {
        return Err(JoinFailure::WrongCa(
            "the CA in the answer is not the pinned one".into(),
        ));
    }
    let cert_der = unb64(&grant.cert, "cert").map_err(|e| bad(e.to_string()))?;
    // During a root rotation the cluster trusts the old root too: the pinned root first.
    let mut roots = vec![ca_der.clone()];
    for r in grant.roots.iter().take(weft_gossip::trust::MAX_ROOTS) {
        let r = unb64(r, "roots").map_err(|e| bad(e.to_string()))?;
        if !roots.contains(&r) {
            roots.push(r);
        }
    }
    let trust = TrustRoot::with_roots(grant.cluster.clone(), roots.clone(), Vec::new())
        .map_err(|e| bad(e.to_string()))?;
    let chain = grant
        .chain
        .iter()
        .map(|c| unb64(c, "chain"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let leaf = trust
        .verify_node_chain(&cert_der, &chain, SystemTime::now())
        .map_err(|e| bad(e.to_string()))?;
    if leaf.id.node_name() != name {
        return Err(bad(format!("certificate is for {}", leaf.id)));
    }
    Ok(Joined {
        cluster: grant.cluster,
        cert_der,
        chain,
        ca_der,
        roots,
        keyring: grant.keyring,
        members: grant.members,
    })
}
