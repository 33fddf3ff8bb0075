//! Control requests between members (ALPN `weft-ctl/1`, client certificate required):
//! config pulls, gossip keyring changes, and, on the CA node, renewals, forwarded joins,
//! join tokens and revocations.

use std::net::SocketAddr;
use std::time::SystemTime;

use tracing::{debug, info, warn};
use weft_ca::LeafInfo;

use super::messages::{b64, decode, unb64, CtlRequest, CtlResponse, RefusalKind, MAX_REQUEST};
use super::server::ServerInputs;
use super::stream::{read_request, respond};
use crate::identity::keyring;

/// Serves control requests on one connection until it closes.
pub async fn serve(
    inputs: &ServerInputs,
    conn: quinn::Connection,
    peer: LeafInfo,
    remote: SocketAddr,
) {
    loop {
        let (mut send, mut recv) = tokio::select! {
            _ = inputs.shutdown.cancelled() => break,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let bytes = match read_request(&mut recv, MAX_REQUEST).await {
            Ok(b) => b,
            Err(e) => {
                debug!(%remote, error = %e, "control request not read");
                continue;
            }
        };
        let response = match decode::<CtlRequest>(&bytes, MAX_REQUEST) {
            Ok(req) => handle(inputs, &peer, req, remote).await,
            Err(e) => {
                warn!(%remote, peer = %peer.id, error = %e, "malformed control request");
                error(RefusalKind::BadRequest, e.to_string())
            }
        };
        let _ = respond(&mut send, &response).await;
    }
}

fn error(kind: RefusalKind, message: String) -> CtlResponse {
    CtlResponse::Error { kind, message }
}

async fn handle(
    inputs: &ServerInputs,
    peer: &LeafInfo,
    req: CtlRequest,
    remote: SocketAddr,
) -> CtlResponse {
    if let CtlRequest::ConfigPull = req {
        return CtlResponse::Config {
            entries: inputs.config.dump(),
        };
    }
    if let CtlRequest::Keyring { change: op } = &req {
        info!(by = %peer.id, "gossip keyring change from a member");
        return match keyring::apply(op, inputs.gossip.keyring(), &inputs.identity.files) {
            Ok(ring) => CtlResponse::Keyring {
                primary: ring.primary,
                keys: ring.ids(),
            },
            Err(e) => error(RefusalKind::BadRequest, e.to_string()),
        };
    }
    let Some(ca) = &inputs.ca else {
        return error(
            RefusalKind::Unavailable,
            format!("{} does not hold the CA", inputs.identity.info.name),
        );
    };
    let now = SystemTime::now();
    match req {
        CtlRequest::Renew { csr } => {
            let csr = match unb64(&csr, "csr") {
                Ok(c) => c,
                Err(e) => return error(RefusalKind::BadRequest, e.to_string()),
            };
            match ca.renew(peer, &csr, now) {
                Ok(issued) => CtlResponse::Cert {
                    cert: b64(&issued.der),
                },
                Err(r) => error(r.kind, r.message),
            }
        }
        CtlRequest::Join(join) => {
            info!(%remote, via = %peer.id, node = %join.name, "join request forwarded by a member");
            CtlResponse::Join(super::join_server::decide(inputs, join, remote).await)
        }
        CtlRequest::CreateToken { ttl_secs } => {
            match ca.create_token(std::time::Duration::from_secs(ttl_secs), now) {
                Ok((token, expires)) => {
                    info!(by = %peer.id, token_id = %token.id(), "join token created for a member");
                    CtlResponse::Token {
                        token: token.to_string(),
                        id: token.id().to_string(),
                        expires_at_unix: expires,
                    }
                }
                Err(r) => error(r.kind, r.message),
            }
        }
        CtlRequest::ConfigPull | CtlRequest::Keyring { .. } => {
            error(RefusalKind::BadRequest, "handled above".into())
        }
        CtlRequest::Revoke { node: target } => match ca.revoke(&target, now) {
            Ok(serials) => {
                info!(by = %peer.id, node = %target, "revocation requested by a member");
                ca.publish_revocations(&inputs.identity, &inputs.gossip)
                    .await;
                CtlResponse::Revoked { serials }
            }
            Err(r) => error(r.kind, r.message),
        },
    }
}
