//! Executing a verified operator act on this node: gossip-key changes on every member,
//! tokens, revocations and operator credentials on the CA node. The same code runs for an
//! act received by this node's API and for one forwarded by another member, and every
//! execution leaves one audit line (target `weft::audit`) naming the operator, the role,
//! the node that received it and the change.

use std::time::{Duration, SystemTime};

use tracing::info;
use weft_gossip::Gossip;

use super::signed::Act;
use super::verify::Verified;
use crate::ca_role::{CaRole, RefusalKind};
use crate::identity::{keyring, NodeIdentity};
use crate::rpc::messages::{b64, unb64, CtlResponse};

fn error(kind: RefusalKind, message: impl Into<String>) -> CtlResponse {
    CtlResponse::Error {
        kind,
        message: message.into(),
    }
}

/// Writes the audit record of a verified act (`outcome`: "applied" or the refusal): one
/// JSON line in the journal and one record in `store` (`weft audit`).
pub fn audit(v: &Verified, node: &str, outcome: &str, store: &crate::store::Store) {
    let change = match &v.payload.act {
        Act::ConfigWrite {
            kind, name, value, ..
        } => format!(
            "{} {kind}/{name}",
            if value.is_some() { "set" } else { "delete" }
        ),
        Act::CreateToken { ttl_secs } => format!("create join token (ttl {ttl_secs}s)"),
        Act::Revoke { node } => format!("revoke node {node}"),
        Act::Keyring { change } => format!("gossip key {}", change.name()),
        Act::OperatorCreate { name, role, .. } => format!("create operator {name} ({role})"),
        Act::OperatorRevoke { name } => format!("revoke operator {name}"),
        Act::OperatorList => "list operators".into(),
        Act::CaBackup => "back up the CA".into(),
        Act::AddReplica { node } => format!("make {node} a CA replica"),
        Act::RemoveReplica { node } => format!("stop {node} being a CA replica"),
        Act::RotateRoot => "rotate the root".into(),
    };
    let line = serde_json::json!({
        "operator": v.operator.name.as_str(),
        "role": v.operator.role.as_str(),
        "via": v.payload.via,
        "node": node,
        "change": change,
        "outcome": outcome,
        "signed_at_ms": v.payload.issued_at_ms,
        "at_ms": crate::clock::unix_ms(),
    });
    info!(target: "weft::audit", audit = %line, "operator act");
    if let Err(e) = store.push_audit(&line) {
        tracing::warn!(error = %e, "cannot record an audit record");
    }
}

/// The certificate gossip shows `node` holding (serial, expiry), if any.
async fn live_certificate(gossip: &Gossip, node: &weft_ca::NodeName) -> Vec<(String, u64)> {
    gossip
        .members()
        .await
        .into_iter()
        .filter(|m| m.name == node.as_str() && !m.cert_serial.is_empty())
        .map(|m| (m.cert_serial, m.cert_expiry_unix))
        .collect()
}

/// Executes a verified act here.
pub async fn execute(
    v: &Verified,
    ca: Option<&CaRole>,
    gossip: &Gossip,
    identity: &NodeIdentity,
) -> CtlResponse {
    let node = identity.info.name.to_string();
    let answer = execute_inner(v, ca, gossip, identity).await;
    let outcome = match &answer {
        CtlResponse::Error { message, .. } => message.clone(),
        _ => "applied".into(),
    };
    audit(v, &node, &outcome, identity.store());
    answer
}

async fn execute_inner(
    v: &Verified,
    ca: Option<&CaRole>,
    gossip: &Gossip,
    identity: &NodeIdentity,
) -> CtlResponse {
    if let Act::Keyring { change } = &v.payload.act {
        return match keyring::apply(change, gossip.keyring(), &identity.files) {
            Ok(ring) => CtlResponse::Keyring {
                primary: ring.primary,
                keys: ring.ids(),
            },
            Err(e) => error(RefusalKind::BadRequest, e.to_string()),
        };
    }
    let Some(ca) = ca else {
        return error(
            RefusalKind::Unavailable,
            format!("{} does not hold the CA", identity.info.name),
        );
    };
    let now = SystemTime::now();
    match &v.payload.act {
        Act::CreateToken { ttl_secs } => {
            match ca.create_token(Duration::from_secs(*ttl_secs), now) {
                Ok((token, expires)) => CtlResponse::Token {
                    token: token.to_string(),
                    id: token.id().to_string(),
                    expires_at_unix: expires,
                },
                Err(r) => error(r.kind, r.message),
            }
        }
        Act::Revoke { node } => match ca.revoke(
            node,
            live_certificate(gossip, node).await,
            &format!("node revoked by operator {}", v.operator.name),
            now,
        ) {
            Ok(serials) => {
                ca.publish_revocations(identity, gossip).await;
                CtlResponse::Revoked { serials }
            }
            Err(r) => error(r.kind, r.message),
        },
        Act::OperatorCreate {
            name,
            role,
            ttl_secs,
            csr,
        } => {
            let csr = match unb64(csr, "csr") {
                Ok(c) => c,
                Err(e) => return error(RefusalKind::BadRequest, e.to_string()),
            };
            match ca.create_operator(name, *role, Duration::from_secs(*ttl_secs), &csr, now) {
                Ok((issued, chain)) => CtlResponse::Answer {
                    value: serde_json::json!({
                        "name": name,
                        "role": role,
                        "cert": b64(&issued.der),
                        "chain": chain.iter().map(|c| b64(c)).collect::<Vec<_>>(),
                        "serial": issued.serial,
                        "not_after_unix": issued.not_after_unix,
                    }),
                },
                Err(r) => error(r.kind, r.message),
            }
        }
        Act::OperatorRevoke { name } => match ca.revoke_operator(
            name,
            &format!("credential revoked by operator {}", v.operator.name),
            now,
        ) {
            Ok(serials) => {
                ca.publish_revocations(identity, gossip).await;
                CtlResponse::Answer {
                    value: serde_json::json!({ "name": name, "serials": serials }),
                }
            }
            Err(r) => error(r.kind, r.message),
        },
        Act::OperatorList => match ca.operators() {
            Ok(list) => CtlResponse::Answer {
                value: serde_json::to_value(list).unwrap_or_default(),
            },
            Err(r) => error(r.kind, r.message),
        },
        Act::Keyring { .. }
        | Act::ConfigWrite { .. }
        | Act::CaBackup
        | Act::AddReplica { .. }
        | Act::RemoveReplica { .. }
        | Act::RotateRoot => error(
            RefusalKind::BadRequest,
            "this act is not executed as a command",
        ),
    }
}
