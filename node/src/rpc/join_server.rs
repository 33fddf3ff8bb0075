//! The serving side of the join protocol (ALPN `weft-join/1`, no client certificate:
//! the token is the credential): rate-limited per source address, decided by the replica
//! that made the token (forwarded to it over mTLS), after the name's owning replica
//! recorded the claim (`CA.md`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use tracing::{debug, info, warn};
use weft_gossip::MemberStatus;

use super::messages::{
    b64, decode, CtlRequest, CtlResponse, JoinGrant, JoinRequest, JoinResponse, MemberAddr,
    RefusalKind, MAX_REQUEST,
};
use super::server::ServerInputs;
use super::stream::{read_request, respond, EXCHANGE_TIMEOUT};
use crate::ca_role::{names, CaRole, Refusal};
use crate::resilience::ratelimit::TokenBucket;
use crate::store::NameClaim;
use weft_ca::NodeName;

/// A global bucket plus one per source IP (at most `MAX_SOURCES` tracked).
#[derive(Debug)]
pub struct JoinLimiter {
    global: TokenBucket,
    per_ip: HashMap<IpAddr, TokenBucket>,
}

const MAX_SOURCES: usize = 4096;

impl JoinLimiter {
    /// 20 joins/s cluster-wide through this node (burst 50), 2/s per address (burst 10).
    pub fn new(now: Instant) -> Self {
        Self {
            global: TokenBucket::new(20.0, 50.0, now),
            per_ip: HashMap::new(),
        }
    }

    /// Whether a request from `ip` may proceed.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.per_ip.len() >= MAX_SOURCES && !self.per_ip.contains_key(&ip) {
            self.per_ip.clear();
        }
        let bucket = self
            .per_ip
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(2.0, 10.0, now));
        bucket.try_take(now) && self.global.try_take(now)
    }
}

/// Serves one join connection: one request, one answer.
pub async fn serve(
    inputs: &ServerInputs,
    conn: quinn::Connection,
    remote: SocketAddr,
    limiter: &Mutex<JoinLimiter>,
) {
    let Ok((mut send, mut recv)) = tokio::time::timeout(EXCHANGE_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| ())
        .and_then(|r| r.map_err(|_| ()))
    else {
        return;
    };
    let allowed = limiter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .allow(remote.ip(), Instant::now());
    let response = if !allowed {
        warn!(%remote, "join request refused: rate limited");
        refused(
            RefusalKind::RateLimited,
            "too many join requests; retry later",
        )
    } else {
        match read_request(&mut recv, MAX_REQUEST).await {
            Ok(bytes) => match decode::<JoinRequest>(&bytes, MAX_REQUEST) {
                Ok(req) => decide(inputs, req, remote).await,
                Err(e) => {
                    warn!(%remote, error = %e, "malformed join request");
                    refused(RefusalKind::BadRequest, &e.to_string())
                }
            },
            Err(e) => {
                debug!(%remote, error = %e, "join request not read");
                return;
            }
        }
    };
    let _ = respond(&mut send, &response).await;
    conn.close(0u32.into(), b"done");
}

fn refused(kind: RefusalKind, message: &str) -> JoinResponse {
    JoinResponse::Refused {
        kind,
        message: message.to_owned(),
    }
}

/// Decides a join here when this replica made the token (the root holder, for tokens from
/// before replicas), or forwards it to the replica that did: only it consumes the token.
pub async fn decide(inputs: &ServerInputs, req: JoinRequest, remote: SocketAddr) -> JoinResponse {
    let parsed = match req.clone().into_parsed() {
        Ok(p) => p,
        Err(e) => return refused(RefusalKind::BadRequest, &e.to_string()),
    };
    let ca = inputs.ca.get();
    let target = parsed.token.replica().map(|r| r.to_string());
    let here = match (&ca, &target) {
        (Some(ca), Some(t)) => ca.name().as_str() == t,
        (Some(ca), None) => ca.holds_root(),
        (None, _) => false,
    };
    let Some(ca) = ca.filter(|_| here) else {
        let answer = match &target {
            Some(t) => {
                info!(%remote, node = %req.name, replica = %t, "forwarding join request to the replica that made the token");
                inputs
                    .ca_client
                    .call_named(t, &CtlRequest::Join(req))
                    .await
                    .map_err(|e| {
                        format!("{e}; the token can only be used while replica {t} is up: make a new token (weft token create) on an alive replica")
                    })
            }
            None => {
                info!(%remote, node = %req.name, "forwarding join request to the root holder");
                inputs
                    .ca_client
                    .call_root(&CtlRequest::Join(req))
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        return match answer {
            Ok(CtlResponse::Join(answer)) => answer,
            Ok(CtlResponse::Error { kind, message }) => refused(kind, &message),
            Ok(_) => refused(
                RefusalKind::Unavailable,
                "unexpected answer from the CA replica",
            ),
            Err(e) => refused(RefusalKind::Unavailable, &e),
        };
    };
    let now = SystemTime::now();
    let record = match ca.check_join(&parsed, now) {
        Ok(r) => r,
        Err(r) => return refused(r.kind, &r.message),
    };
    let claimant = names::join_claimant(parsed.token.id().as_str());
    if let Err(r) = claim(
        inputs,
        &ca,
        &parsed.name,
        &claimant,
        ca.claim_until(now),
        false,
    )
    .await
    {
        warn!(node = %parsed.name, token_id = %parsed.token.id(), reason = %r.message, "join refused");
        return refused(r.kind, &r.message);
    }
    match ca.admit(&parsed, &record, now) {
        Ok(issued) => JoinResponse::Granted(Box::new(JoinGrant {
            cluster: inputs.identity.info.cluster.clone(),
            cert: b64(&issued.der),
            chain: ca.chain().iter().map(|c| b64(c)).collect(),
            ca: b64(&inputs.identity.trust.ca_der()),
            roots: inputs
                .identity
                .trust
                .roots()
                .iter()
                .map(|r| b64(r))
                .collect(),
            keyring: inputs.gossip.keyring().get(),
            members: member_addrs(inputs).await,
        })),
        Err(r) => {
            release(inputs, &ca, &parsed.name, &claimant).await;
            refused(r.kind, &r.message)
        }
    }
}

/// The replica that decides claims on `name` in this node's view (this replica when no
/// other is alive).
async fn owner_of(inputs: &ServerInputs, ca: &CaRole, name: &NodeName) -> String {
    let mut replicas = inputs.ca_client.alive_replicas().await;
    if !replicas.iter().any(|r| r == ca.name().as_str()) {
        replicas.push(ca.name().to_string());
    }
    names::owner(name.as_str(), replicas.iter().map(String::as_str))
        .unwrap_or(ca.name().as_str())
        .to_owned()
}

/// Claims `name` for `claimant` at the replica that owns it (here when this one does):
/// of two joins with one name at two replicas, the owner admits exactly one.
pub async fn claim(
    inputs: &ServerInputs,
    ca: &CaRole,
    name: &NodeName,
    claimant: &str,
    until_unix: u64,
    renewal: bool,
) -> Result<(), Refusal> {
    let owner = owner_of(inputs, ca, name).await;
    let claim = NameClaim {
        claimant: claimant.to_owned(),
        until_unix,
        renewal,
    };
    if owner == ca.name().as_str() {
        let alive = !renewal && inputs.ca_client.alive_member_named(name.as_str()).await;
        return ca
            .claim_name(name, &claim, alive, SystemTime::now())
            .map(|_| ());
    }
    let request = CtlRequest::ClaimName {
        name: name.clone(),
        claimant: claim.claimant,
        until_unix,
        renewal,
    };
    match inputs.ca_client.call_named(&owner, &request).await {
        Ok(CtlResponse::Answer { .. }) => Ok(()),
        Ok(CtlResponse::Error { kind, message }) => Err(Refusal::new(kind, message)),
        Ok(_) => Err(Refusal::new(
            RefusalKind::Unavailable,
            "unexpected answer to a name claim",
        )),
        Err(e) => Err(Refusal::new(
            RefusalKind::Unavailable,
            format!("the CA replica that decides the name {name} cannot be asked ({e}); retry in a few seconds"),
        )),
    }
}

/// Serves a claim sent by another replica: decided only by the name's owner in this
/// replica's own view (a caller with another view is told to retry).
pub async fn serve_claim(
    inputs: &ServerInputs,
    ca: &CaRole,
    name: &NodeName,
    claim: &NameClaim,
) -> Result<NameClaim, Refusal> {
    let owner = owner_of(inputs, ca, name).await;
    if owner != ca.name().as_str() {
        return Err(Refusal::new(
            RefusalKind::Unavailable,
            format!(
                "{} does not decide the name {name} (its owner is {owner}); retry once the replicas agree",
                ca.name()
            ),
        ));
    }
    let alive = !claim.renewal && inputs.ca_client.alive_member_named(name.as_str()).await;
    ca.claim_name(name, claim, alive, SystemTime::now())
}

async fn release(inputs: &ServerInputs, ca: &CaRole, name: &NodeName, claimant: &str) {
    let owner = owner_of(inputs, ca, name).await;
    if owner == ca.name().as_str() {
        ca.release_name(name, claimant);
        return;
    }
    let request = CtlRequest::ReleaseName {
        name: name.clone(),
        claimant: claimant.to_owned(),
    };
    if let Err(e) = inputs.ca_client.call_named(&owner, &request).await {
        warn!(node = %name, %owner, error = %e, "cannot release a name claim; it lapses with the certificate lifetime");
    }
}

/// Alive members' addresses, for a joining node.
async fn member_addrs(inputs: &ServerInputs) -> Vec<MemberAddr> {
    inputs
        .gossip
        .members()
        .await
        .into_iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .map(|m| MemberAddr {
            name: m.name,
            gossip_addr: m.gossip_addr,
            quic_addr: m.address,
            ca: m.ca,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limit() {
        let t0 = Instant::now();
        let mut l = JoinLimiter::new(t0);
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        for _ in 0..10 {
            assert!(l.allow(a, t0));
        }
        assert!(!l.allow(a, t0));
        assert!(l.allow(b, t0));
    }
}
