//! The calling side of control requests: a mutually authenticated connection to one
//! member (`CtlClient`), and the CA client (`CaClient`), which finds the CA replicas in
//! gossip (alive before failed, each caller in its own order so that the load spreads) or
//! from the address remembered at the join, and tries each candidate in turn; or asks one
//! named replica (a token's, a name's owner) or the root holder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weft_gossip::{Gossip, Member, MemberStatus};

use super::messages::{CtlRequest, CtlResponse, RefusalKind, MAX_RESPONSE};
use super::stream::{call, RpcError};
use crate::store::Store;

/// Time to establish a control connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens control connections (ALPN `weft-ctl/1`) with this node's certificate.
#[derive(Debug, Clone)]
pub struct CtlClient {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
}

impl CtlClient {
    /// A client on `endpoint` presenting `config`'s certificate.
    pub fn new(endpoint: quinn::Endpoint, config: quinn::ClientConfig) -> Self {
        Self { endpoint, config }
    }

    /// Opens a control connection to node `name` at `addr`, authenticated both ways.
    pub async fn connect(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, RpcError> {
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), addr, name)
            .map_err(|e| RpcError::Connect(e.to_string()))?;
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| RpcError::Timeout)?
            .map_err(|e| RpcError::Connect(e.to_string()))
    }

    /// Sends one control request to member `name` at `addr`.
    pub async fn call(
        &self,
        name: &str,
        addr: SocketAddr,
        request: &CtlRequest,
    ) -> Result<CtlResponse, RpcError> {
        let conn = self.connect(name, addr).await?;
        let resp = call(&conn, request, MAX_RESPONSE).await;
        conn.close(0u32.into(), b"done");
        resp
    }
}

/// How far member `name`'s wall clock is from ours, in milliseconds (positive: theirs is
/// ahead), and the round trip it was measured over: the offset is exact to ± rtt/2.
pub async fn clock_offset(
    ctl: &CtlClient,
    name: &str,
    addr: SocketAddr,
) -> Result<(i64, u64), RpcError> {
    let conn = ctl.connect(name, addr).await?;
    let sent = crate::clock::unix_ms();
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        call::<_, CtlResponse>(&conn, &CtlRequest::Time, MAX_RESPONSE),
    )
    .await;
    conn.close(0u32.into(), b"done");
    let rtt = started.elapsed().as_millis() as u64;
    match resp.map_err(|_| RpcError::Timeout)?? {
        CtlResponse::Time { unix_ms } => {
            let midpoint = sent + rtt / 2;
            Ok((unix_ms as i64 - midpoint as i64, rtt))
        }
        CtlResponse::Error { message, .. } => Err(RpcError::Connect(format!(
            "{name} did not tell its time ({message}; an older agent?)"
        ))),
        _ => Err(RpcError::Connect(format!("{name}: unexpected answer"))),
    }
}

/// The CA node could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum CaCallError {
    /// Gossip names no CA replica yet and none was remembered.
    #[error("no CA replica is known (not in gossip yet; or the root holder is offline)")]
    NoneKnown,
    /// Every candidate failed to connect.
    #[error("the CA node is not reachable: {0}")]
    Unreachable(String),
}

/// Sends requests to the CA node.
#[derive(Clone)]
pub struct CaClient {
    ctl: CtlClient,
    gossip: Arc<Gossip>,
    store: Store,
}

impl CaClient {
    /// A CA client that finds the CA in `gossip` or `store`.
    pub fn new(ctl: CtlClient, gossip: Arc<Gossip>, store: Store) -> Self {
        Self { ctl, gossip, store }
    }

    /// Where the CA replicas may be: from gossip first (alive before failed; among them in
    /// an order of this caller's own, so that callers spread over the replicas), then the
    /// address remembered from the join or an earlier gossip view. A node that joined a
    /// moment ago can reach a replica before gossip has converged.
    async fn candidates(&self, root_only: bool) -> Vec<(String, SocketAddr)> {
        let all = self.gossip.members().await;
        let me = all
            .iter()
            .find(|m| m.is_self)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut members: Vec<Member> = all
            .into_iter()
            .filter(|m| m.ca && !m.is_self && m.status != MemberStatus::Left)
            .filter(|m| m.root || !root_only)
            .collect();
        members.sort_by_cached_key(|m| {
            use sha2::Digest as _;
            let spread: [u8; 32] =
                sha2::Sha256::digest(format!("{me}\0{}", m.name).as_bytes()).into();
            (m.status != MemberStatus::Alive, spread)
        });
        let mut out: Vec<(String, SocketAddr)> =
            members.into_iter().map(|m| (m.name, m.address)).collect();
        if let Ok(Some(p)) = self.store.ca_peer() {
            if !out.iter().any(|(n, a)| *n == p.name && *a == p.quic_addr) {
                out.push((p.name, p.quic_addr));
            }
        }
        out
    }

    /// The alive CA replicas' names, this node included when it is one, sorted.
    pub async fn alive_replicas(&self) -> Vec<String> {
        self.gossip
            .members()
            .await
            .into_iter()
            .filter(|m| m.ca && m.status == MemberStatus::Alive)
            .map(|m| m.name)
            .collect()
    }

    /// Whether an alive, unrevoked member goes by `name`.
    pub async fn alive_member_named(&self, name: &str) -> bool {
        self.gossip
            .members()
            .await
            .into_iter()
            .any(|m| m.name == name && m.status == MemberStatus::Alive && !m.revoked)
    }

    /// Sends `request` to member `name` (a token's replica, a name's owner): tried even
    /// when gossip shows it failed (a node that joined a moment ago has not seen it alive
    /// yet), and found from the address remembered at the join when gossip lacks it.
    pub async fn call_named(
        &self,
        name: &str,
        request: &CtlRequest,
    ) -> Result<CtlResponse, CaCallError> {
        let member = self
            .gossip
            .members()
            .await
            .into_iter()
            .find(|m| m.name == name && m.status != MemberStatus::Left && !m.is_self);
        let addr = match member {
            Some(m) => m.address,
            None => match self.store.ca_peer() {
                Ok(Some(p)) if p.name == name => p.quic_addr,
                _ => {
                    return Err(CaCallError::Unreachable(format!(
                        "CA replica {name} is not a member"
                    )))
                }
            },
        };
        self.ctl
            .call(name, addr, request)
            .await
            .map_err(|e| CaCallError::Unreachable(format!("CA replica {name} at {addr}: {e}")))
    }

    /// Sends `request` to the replicas that hold the root key, in turn.
    pub async fn call_root(&self, request: &CtlRequest) -> Result<CtlResponse, CaCallError> {
        self.call_among(self.candidates(true).await, request).await
    }

    /// Sends `request` to the CA candidates in turn: it moves on after a connection
    /// failure, a failed exchange or a refusal that is not final (the candidate is
    /// unavailable or busy), and returns the first final answer.
    pub async fn call(&self, request: &CtlRequest) -> Result<CtlResponse, CaCallError> {
        self.call_among(self.candidates(false).await, request).await
    }

    async fn call_among(
        &self,
        candidates: Vec<(String, SocketAddr)>,
        request: &CtlRequest,
    ) -> Result<CtlResponse, CaCallError> {
        if candidates.is_empty() {
            return Err(CaCallError::NoneKnown);
        }
        let mut errors = Vec::new();
        let mut last_refusal = None;
        for (name, addr) in candidates {
            let conn = match self.ctl.connect(&name, addr).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("CA node {name} at {addr}: {e}"));
                    continue;
                }
            };
            let resp = call(&conn, request, MAX_RESPONSE).await;
            conn.close(0u32.into(), b"done");
            match resp {
                Ok(CtlResponse::Error {
                    kind: kind @ (RefusalKind::Unavailable | RefusalKind::RateLimited),
                    message,
                }) => {
                    errors.push(format!("CA node {name}: {message}"));
                    last_refusal = Some(CtlResponse::Error { kind, message });
                }
                Ok(answer) => return Ok(answer),
                Err(source) => errors.push(format!("CA node {name} at {addr}: {source}")),
            }
        }
        match last_refusal {
            Some(refusal) if errors.len() == 1 => Ok(refusal),
            _ => Err(CaCallError::Unreachable(errors.join("; "))),
        }
    }
}

impl crate::cluster_config::sync::Pull for CtlClient {
    async fn pull(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Result<Vec<crate::cluster_config::Entry>, crate::cluster_config::sync::PullError> {
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| {
            crate::cluster_config::sync::PullError {
                peer: name.to_owned(),
                source,
            }
        };
        let mut all = Vec::new();
        let mut after = None;
        for _ in 0..super::messages::MAX_CONFIG_PAGES {
            match self
                .call(name, addr, &CtlRequest::ConfigPull { after })
                .await
                .map_err(|e| fail(Box::new(e)))?
            {
                CtlResponse::Config { entries, next } => {
                    all.extend(entries);
                    match next {
                        Some(n) => after = Some(n),
                        None => return Ok(all),
                    }
                }
                _ => return Err(fail("unexpected answer".into())),
            }
        }
        Ok(all)
    }
}
