//! The serving side of the join protocol (ALPN `weft-join/1`, no client certificate:
//! the token is the credential): rate-limited per source address, decided here on the CA
//! node or forwarded to it over mTLS.

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
use crate::resilience::ratelimit::TokenBucket;

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

/// Decides a join here on the CA node, or forwards it to the CA node.
pub async fn decide(inputs: &ServerInputs, req: JoinRequest, remote: SocketAddr) -> JoinResponse {
    let Some(ca) = &inputs.ca else {
        info!(%remote, node = %req.name, "forwarding join request to the CA node");
        return match inputs.ca_client.call(&CtlRequest::Join(req)).await {
            Ok(CtlResponse::Join(answer)) => answer,
            Ok(CtlResponse::Error { kind, message }) => refused(kind, &message),
            Ok(_) => refused(
                RefusalKind::Unavailable,
                "unexpected answer from the CA node",
            ),
            Err(e) => refused(RefusalKind::Unavailable, &e.to_string()),
        };
    };
    let parsed = match req.into_parsed() {
        Ok(p) => p,
        Err(e) => return refused(RefusalKind::BadRequest, &e.to_string()),
    };
    match ca.join(&parsed, SystemTime::now()) {
        Ok(issued) => JoinResponse::Granted(Box::new(JoinGrant {
            cluster: inputs.identity.info.cluster.clone(),
            cert: b64(&issued.der),
            ca: b64(inputs.identity.trust.ca_der()),
            keyring: inputs.gossip.keyring().get(),
            members: member_addrs(inputs).await,
        })),
        Err(r) => refused(r.kind, &r.message),
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
