//! Control requests between members (ALPN `weft-ctl/1`, client certificate required):
//! config pulls, and, on the CA node, renewals and forwarded joins; a member's
//! certificate grants nothing more. Cluster-wide changes arrive as operator-signed acts
//! (`CtlRequest::Operator`), verified here before they are executed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::{debug, info, warn};
use weft_ca::LeafInfo;

use super::join_server;
use super::messages::{
    b64, decode, unb64, CtlRequest, CtlResponse, RefusalKind, CONFIG_PAGE_BYTES, MAX_REQUEST,
};
use super::server::ServerInputs;
use super::stream::{read_request, respond};
use crate::authority::execute::execute;
use crate::authority::Act;
use crate::store::NameClaim;

/// Serves control requests on one connection until it closes.
pub async fn serve(
    inputs: &Arc<ServerInputs>,
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
    inputs: &Arc<ServerInputs>,
    peer: &LeafInfo,
    req: CtlRequest,
    remote: SocketAddr,
) -> CtlResponse {
    match req {
        CtlRequest::ConfigPull { after } => {
            let (entries, next) = inputs.config.page(after.as_ref(), CONFIG_PAGE_BYTES);
            CtlResponse::Config { entries, next }
        }
        CtlRequest::Operator { signed } => {
            match inputs.authority.any_command(&signed, SystemTime::now()) {
                Ok(v) => {
                    info!(via = %peer.id, operator = %v.operator.name, act = v.payload.act.label(), "operator act forwarded by a member");
                    if v.payload.act == Act::RotateRoot {
                        if !inputs.ca.get().is_some_and(|c| c.holds_root()) {
                            return error(
                                RefusalKind::Unavailable,
                                format!("{} does not hold the root key", inputs.identity.info.name),
                            );
                        }
                        return inputs.replicas.order(v, signed).await;
                    }
                    if let Act::AddReplica { node } | Act::RemoveReplica { node } = &v.payload.act {
                        if *node != inputs.identity.info.name {
                            return error(
                                RefusalKind::BadRequest,
                                format!(
                                    "this act is for {node}, not {}",
                                    inputs.identity.info.name
                                ),
                            );
                        }
                        return inputs.replicas.order(v, signed).await;
                    }
                    execute(
                        &v,
                        inputs.ca.get().as_deref(),
                        &inputs.gossip,
                        &inputs.identity,
                    )
                    .await
                }
                Err(e) => {
                    warn!(%remote, peer = %peer.id, error = %e, "refused an operator act forwarded by a member");
                    error(RefusalKind::Forbidden, e.to_string())
                }
            }
        }
        CtlRequest::Renew { csr } => {
            let Some(ca) = inputs.ca.get() else {
                return not_ca(inputs);
            };
            let csr = match unb64(&csr, "csr") {
                Ok(c) => c,
                Err(e) => return error(RefusalKind::BadRequest, e.to_string()),
            };
            match ca.renew(peer, &csr, SystemTime::now()) {
                Ok(issued) => {
                    // The name's owner extends its claim; a renewal does not wait for it.
                    let (inputs2, ca2, name) =
                        (inputs.clone(), ca.clone(), peer.id.node_name().clone());
                    let until = issued.not_after_unix;
                    tokio::spawn(async move {
                        let claim = join_server::claim(&inputs2, &ca2, &name, "node", until, true);
                        match tokio::time::timeout(CLAIM_REFRESH_TIMEOUT, claim).await {
                            Ok(Ok(())) => {}
                            Ok(Err(r)) => {
                                debug!(node = %name, reason = %r.message, "name claim not extended")
                            }
                            Err(_) => debug!(node = %name, "name claim not extended in time"),
                        }
                    });
                    CtlResponse::Cert {
                        cert: b64(&issued.der),
                        chain: ca.chain().iter().map(|c| b64(c)).collect(),
                    }
                }
                Err(r) => error(r.kind, r.message),
            }
        }
        CtlRequest::Join(join) => {
            if inputs.ca.get().is_none() {
                return not_ca(inputs);
            }
            info!(%remote, via = %peer.id, node = %join.name, "join request forwarded by a member");
            CtlResponse::Join(join_server::decide(inputs, join, remote).await)
        }
        CtlRequest::ClaimName {
            name,
            claimant,
            until_unix,
            renewal,
        } => {
            let Some(ca) = inputs.ca.get() else {
                return not_ca(inputs);
            };
            if !is_replica(peer) {
                warn!(%remote, peer = %peer.id, issuer = ?peer.issuer, "name claim from a member that is not a CA replica refused");
                return error(
                    RefusalKind::Forbidden,
                    "only CA replicas claim names".into(),
                );
            }
            let claim = NameClaim {
                claimant,
                until_unix,
                renewal,
            };
            match join_server::serve_claim(inputs, &ca, &name, &claim).await {
                Ok(held) => CtlResponse::Answer {
                    value: serde_json::to_value(held).unwrap_or_default(),
                },
                Err(r) => error(r.kind, r.message),
            }
        }
        CtlRequest::ReleaseName { name, claimant } => {
            let Some(ca) = inputs.ca.get() else {
                return not_ca(inputs);
            };
            if !is_replica(peer) {
                return error(
                    RefusalKind::Forbidden,
                    "only CA replicas release names".into(),
                );
            }
            ca.release_name(&name, &claimant);
            CtlResponse::Answer {
                value: serde_json::Value::Null,
            }
        }
        CtlRequest::Time => CtlResponse::Time {
            unix_ms: crate::clock::unix_ms(),
        },
        CtlRequest::ReplicaCert { signed, csr } => {
            let Some(ca) = inputs.ca.get() else {
                return not_ca(inputs);
            };
            let node = peer.id.node_name().clone();
            match &signed {
                Some(signed) => match inputs.authority.any_command(signed, SystemTime::now()) {
                    Ok(v) if v.payload.act == (Act::AddReplica { node: node.clone() }) => {
                        crate::authority::execute::audit(&v, inputs.identity.info.name.as_str(), "applied", inputs.identity.store());
                    }
                    Ok(v) => {
                        return error(
                            RefusalKind::Forbidden,
                            format!("the signed act is {}, not adding {node} as a CA replica", v.payload.act.label()),
                        )
                    }
                    Err(e) => return error(RefusalKind::Forbidden, e.to_string()),
                },
                None if is_replica(peer) => {}
                None => {
                    return error(
                        RefusalKind::Forbidden,
                        format!("{node} is not a CA replica: an admin adds it with weft ca add-replica {node}"),
                    )
                }
            }
            let csr = match unb64(&csr, "csr") {
                Ok(c) => c,
                Err(e) => return error(RefusalKind::BadRequest, e.to_string()),
            };
            match ca.sign_replica(&node, &csr, SystemTime::now()) {
                Ok(issued) => CtlResponse::Cert {
                    cert: b64(&issued.der),
                    chain: Vec::new(),
                },
                Err(r) => error(r.kind, r.message),
            }
        }
    }
}

/// How long a renewal's name-claim refresh may take.
const CLAIM_REFRESH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether the peer is a CA replica: its certificate was issued by its own intermediate.
fn is_replica(peer: &LeafInfo) -> bool {
    peer.issuer
        .as_ref()
        .is_some_and(|i| &i.node == peer.id.node_name())
}

fn not_ca(inputs: &ServerInputs) -> CtlResponse {
    error(
        RefusalKind::Unavailable,
        format!("{} is not a CA replica", inputs.identity.info.name),
    )
}
