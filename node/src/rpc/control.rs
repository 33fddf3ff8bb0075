//! Control requests between members (ALPN `weft-ctl/1`, client certificate required):
//! config pulls, and, on the CA node, renewals and forwarded joins; a member's
//! certificate grants nothing more. Cluster-wide changes arrive as operator-signed acts
//! (`CtlRequest::Operator`), verified here before they are executed.

use std::net::SocketAddr;
use std::time::SystemTime;

use tracing::{debug, info, warn};
use weft_ca::LeafInfo;

use super::messages::{
    b64, decode, unb64, CtlRequest, CtlResponse, RefusalKind, CONFIG_PAGE_BYTES, MAX_REQUEST,
};
use super::server::ServerInputs;
use super::stream::{read_request, respond};
use crate::authority::execute::execute;

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
    match req {
        CtlRequest::ConfigPull { after } => {
            let (entries, next) = inputs.config.page(after.as_ref(), CONFIG_PAGE_BYTES);
            CtlResponse::Config { entries, next }
        }
        CtlRequest::Operator { signed } => {
            match inputs.authority.any_command(&signed, SystemTime::now()) {
                Ok(v) => {
                    info!(via = %peer.id, operator = %v.operator.name, act = v.payload.act.label(), "operator act forwarded by a member");
                    execute(&v, inputs.ca.as_deref(), &inputs.gossip, &inputs.identity).await
                }
                Err(e) => {
                    warn!(%remote, peer = %peer.id, error = %e, "refused an operator act forwarded by a member");
                    error(RefusalKind::Forbidden, e.to_string())
                }
            }
        }
        CtlRequest::Renew { csr } => {
            let Some(ca) = &inputs.ca else {
                return not_ca(inputs);
            };
            let csr = match unb64(&csr, "csr") {
                Ok(c) => c,
                Err(e) => return error(RefusalKind::BadRequest, e.to_string()),
            };
            match ca.renew(peer, &csr, SystemTime::now()) {
                Ok(issued) => CtlResponse::Cert {
                    cert: b64(&issued.der),
                },
                Err(r) => error(r.kind, r.message),
            }
        }
        CtlRequest::Join(join) => {
            if inputs.ca.is_none() {
                return not_ca(inputs);
            }
            info!(%remote, via = %peer.id, node = %join.name, "join request forwarded by a member");
            CtlResponse::Join(super::join_server::decide(inputs, join, remote).await)
        }
    }
}

fn not_ca(inputs: &ServerInputs) -> CtlResponse {
    error(
        RefusalKind::Unavailable,
        format!("{} does not hold the CA", inputs.identity.info.name),
    )
}
