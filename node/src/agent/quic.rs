//! The QUIC server: accepts connections, dispatches by ALPN to the join protocol (no
//! client certificate) or control requests (client certificate required), each bounded
//! in size, time and concurrency.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use weft_ca::LeafInfo;

use super::node::Node;
use crate::net::ratelimit::JoinLimiter;
use crate::rpc::{
    self, b64, decode, unb64, CtlRequest, CtlResponse, JoinGrant, JoinRequest, JoinResponse,
    RefusalKind, MAX_REQUEST,
};
use crate::tls::{ALPN_CTL, ALPN_DATA, ALPN_JOIN};

/// Connections handled at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 256;

/// Runs until the node shuts down.
pub async fn serve(node: Arc<Node>, tasks: TaskTracker) {
    let limiter = Arc::new(Mutex::new(JoinLimiter::new(Instant::now())));
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let incoming = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            i = node.endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let node = node.clone();
        let limiter = limiter.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(rpc::stream::EXCHANGE_TIMEOUT, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    info!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "QUIC handshake timed out");
                    return;
                }
            };
            let alpn = conn
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol);
            match alpn.as_deref() {
                Some(ALPN_JOIN) => serve_join(&node, conn, remote, &limiter).await,
                Some(ALPN_CTL) => serve_ctl(&node, conn, remote).await,
                Some(ALPN_DATA) => match peer_leaf(&conn) {
                    Some(peer) => crate::proxy::inbound::serve(node, conn, peer).await,
                    None => {
                        warn!(%remote, "data connection without a client certificate refused");
                        conn.close(2u32.into(), b"client certificate required");
                    }
                },
                _ => conn.close(1u32.into(), b"unknown protocol"),
            }
        });
    }
}

fn peer_leaf(conn: &quinn::Connection) -> Option<LeafInfo> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    LeafInfo::parse(certs.first()?).ok()
}

async fn serve_join(
    node: &Arc<Node>,
    conn: quinn::Connection,
    remote: SocketAddr,
    limiter: &Mutex<JoinLimiter>,
) {
    let Ok((mut send, mut recv)) =
        tokio::time::timeout(rpc::stream::EXCHANGE_TIMEOUT, conn.accept_bi())
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
        match rpc::read_request(&mut recv, MAX_REQUEST).await {
            Ok(bytes) => match decode::<JoinRequest>(&bytes, MAX_REQUEST) {
                Ok(req) => handle_join(node, req, remote).await,
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
    let _ = rpc::respond(&mut send, &response).await;
    conn.close(0u32.into(), b"done");
}

fn refused(kind: RefusalKind, message: &str) -> JoinResponse {
    JoinResponse::Refused {
        kind,
        message: message.to_owned(),
    }
}

/// Decides a join here on the CA node, or forwards it to the CA node.
async fn handle_join(node: &Arc<Node>, req: JoinRequest, remote: SocketAddr) -> JoinResponse {
    let Some(authority) = &node.authority else {
        info!(%remote, node = %req.name, "forwarding join request to the CA node");
        return match node.call_ca(&CtlRequest::Join(req)).await {
            Ok(CtlResponse::Join(answer)) => answer,
            Ok(CtlResponse::Error { kind, message }) => refused(kind, &message),
            Ok(_) => refused(
                RefusalKind::Unavailable,
                "unexpected answer from the CA node",
            ),
            Err((kind, message)) => refused(kind, &message),
        };
    };
    let parsed = match req.into_parsed() {
        Ok(p) => p,
        Err(e) => return refused(RefusalKind::BadRequest, &e.to_string()),
    };
    match authority.join(&parsed, SystemTime::now()) {
        Ok(issued) => JoinResponse::Granted(Box::new(JoinGrant {
            cluster: node.info.cluster.clone(),
            cert: b64(&issued.der),
            ca: b64(node.trust.ca_der()),
            keyring: node.gossip.keyring().get(),
            members: node.member_addrs().await,
        })),
        Err(r) => refused(r.kind, &r.message),
    }
}

async fn serve_ctl(node: &Arc<Node>, conn: quinn::Connection, remote: SocketAddr) {
    let Some(peer) = peer_leaf(&conn) else {
        warn!(%remote, "control connection without a client certificate refused");
        conn.close(2u32.into(), b"client certificate required");
        return;
    };
    loop {
        let (mut send, mut recv) = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let bytes = match rpc::read_request(&mut recv, MAX_REQUEST).await {
            Ok(b) => b,
            Err(e) => {
                debug!(%remote, error = %e, "control request not read");
                continue;
            }
        };
        let response = match decode::<CtlRequest>(&bytes, MAX_REQUEST) {
            Ok(req) => handle_ctl(node, &peer, req, remote).await,
            Err(e) => {
                warn!(%remote, peer = %peer.id, error = %e, "malformed control request");
                ctl_error(RefusalKind::BadRequest, e.to_string())
            }
        };
        let _ = rpc::respond(&mut send, &response).await;
    }
}

fn ctl_error(kind: RefusalKind, message: String) -> CtlResponse {
    CtlResponse::Error { kind, message }
}

async fn handle_ctl(
    node: &Arc<Node>,
    peer: &LeafInfo,
    req: CtlRequest,
    remote: SocketAddr,
) -> CtlResponse {
    if let CtlRequest::ConfigPull = req {
        return CtlResponse::Config {
            entries: node.config.dump(),
        };
    }
    if let CtlRequest::Keyring { change: op } = &req {
        info!(by = %peer.id, "gossip keyring change from a member");
        return match node.apply_keyring_op(op) {
            Ok(ring) => CtlResponse::Keyring {
                primary: ring.primary,
                keys: ring.ids(),
            },
            Err(e) => ctl_error(RefusalKind::BadRequest, e),
        };
    }
    let Some(authority) = &node.authority else {
        return ctl_error(
            RefusalKind::Unavailable,
            format!("{} does not hold the CA", node.info.name),
        );
    };
    let now = SystemTime::now();
    match req {
        CtlRequest::Renew { csr } => {
            let csr = match unb64(&csr, "csr") {
                Ok(c) => c,
                Err(e) => return ctl_error(RefusalKind::BadRequest, e.to_string()),
            };
            match authority.renew(peer, &csr, now) {
                Ok(issued) => CtlResponse::Cert {
                    cert: b64(&issued.der),
                },
                Err(r) => ctl_error(r.kind, r.message),
            }
        }
        CtlRequest::Join(join) => {
            info!(%remote, via = %peer.id, node = %join.name, "join request forwarded by a member");
            CtlResponse::Join(handle_join(node, join, remote).await)
        }
        CtlRequest::CreateToken { ttl_secs } => {
            match authority.create_token(std::time::Duration::from_secs(ttl_secs), now) {
                Ok((token, expires)) => {
                    info!(by = %peer.id, token_id = %token.id(), "join token created for a member");
                    CtlResponse::Token {
                        token: token.to_string(),
                        id: token.id().to_string(),
                        expires_at_unix: expires,
                    }
                }
                Err(r) => ctl_error(r.kind, r.message),
            }
        }
        CtlRequest::ConfigPull => CtlResponse::Config {
            entries: node.config.dump(),
        },
        CtlRequest::Keyring { .. } => ctl_error(RefusalKind::BadRequest, "handled above".into()),
        CtlRequest::Revoke { node: target } => match authority.revoke(&target, now) {
            Ok(serials) => {
                info!(by = %peer.id, node = %target, "revocation requested by a member");
                node.sync_revocations().await;
                CtlResponse::Revoked { serials }
            }
            Err(r) => ctl_error(r.kind, r.message),
        },
    }
}
