//! This node as a CA replica: becoming one (`weft ca add-replica`: a key made here, the
//! intermediate signed by the root holder), stopping (`remove-replica`), and renewing the
//! intermediate well before it expires. Orders that arrive through a member's control
//! connection are carried out by `replica_loop`, which owns them until the agent stops.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tracing::{info, warn};
use weft_ca::{unix, CertificateAuthority, NodeKey, SpiffeId};

use super::state::Agent;
use crate::authority::execute::audit;
use crate::authority::{Act, Signed, Verified};
use crate::ca_role::slot::ReplicaOrder;
use crate::ca_role::{CaRole, Refusal, RefusalKind, REPLICA_TTL};
use crate::rpc::messages::{b64, unb64, CtlRequest, CtlResponse};

/// Carries out replica orders received from members until shutdown.
pub async fn replica_loop(agent: Arc<Agent>, mut orders: mpsc::Receiver<ReplicaOrder>) {
    loop {
        let order = tokio::select! {
            _ = agent.shutdown.cancelled() => return,
            o = orders.recv() => match o {
                Some(o) => o,
                None => return,
            },
        };
        let answer = apply(&agent, &order.verified, &order.signed).await;
        let _ = order.reply.send(answer);
    }
}

/// Carries out a verified `AddReplica`/`RemoveReplica` for this node, with its audit record.
pub async fn apply(agent: &Agent, v: &Verified, signed: &Signed) -> CtlResponse {
    let result = match &v.payload.act {
        Act::AddReplica { .. } => become_replica(agent, signed).await,
        Act::RemoveReplica { .. } => stop_replica(agent).await,
        Act::RotateRoot => super::rotation::start(agent).await,
        _ => Err(Refusal::new(
            RefusalKind::BadRequest,
            "not a replica change",
        )),
    };
    let answer = match result {
        Ok(value) => CtlResponse::Answer { value },
        Err(r) => CtlResponse::Error {
            kind: r.kind,
            message: r.message,
        },
    };
    let outcome = match &answer {
        CtlResponse::Error { message, .. } => message.clone(),
        _ => "applied".into(),
    };
    audit(v, agent.identity.info.name.as_str(), &outcome, &agent.store);
    answer
}

fn unavailable(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(RefusalKind::Unavailable, e.to_string())
}

/// Asks the root holder (this node, if it holds the root) to sign this node an
/// intermediate for `key`: with the operator's act when it becomes a replica.
async fn intermediate_from_root(
    agent: &Agent,
    key: &NodeKey,
    signed: Option<&Signed>,
) -> Result<Vec<u8>, Refusal> {
    let info = &agent.identity.info;
    let csr = key
        .replica_csr_der(&info.cluster, &info.name)
        .map_err(unavailable)?;
    if let Some(ca) = agent.ca.get().filter(|ca| ca.holds_root()) {
        return Ok(ca.sign_replica(&info.name, &csr, SystemTime::now())?.der);
    }
    let request = CtlRequest::ReplicaCert {
        signed: signed.cloned(),
        csr: b64(&csr),
    };
    let der = match agent
        .ca_client
        .call_root(&request)
        .await
        .map_err(|e| unavailable(format!("the root holder cannot be asked: {e}")))?
    {
        CtlResponse::Cert { cert, .. } => unb64(&cert, "cert").map_err(unavailable)?,
        CtlResponse::Error { kind, message } => return Err(Refusal::new(kind, message)),
        _ => return Err(unavailable("unexpected answer from the root holder")),
    };
    let issuer = weft_ca::parse_replica(&der, &info.cluster).map_err(unavailable)?;
    if issuer.node != info.name {
        return Err(unavailable(format!(
            "the root holder signed an intermediate for {}",
            issuer.node
        )));
    }
    Ok(der)
}

/// Makes this node a CA replica and re-issues its own certificate through its new
/// intermediate, so that its gossip record proves the role.
async fn become_replica(agent: &Agent, signed: &Signed) -> Result<serde_json::Value, Refusal> {
    let info = agent.identity.info.clone();
    if let Some(ca) = agent.ca.get() {
        return Ok(serde_json::json!({
            "node": info.name, "already": true,
            "intermediate": ca.intermediate(),
        }));
    }
    let files = &agent.identity.files;
    let key = match files.replica_key().map_err(unavailable)? {
        Some(k) => k,
        None => NodeKey::generate().map_err(unavailable)?,
    };
    let der = intermediate_from_root(agent, &key, Some(signed)).await?;
    files.save_replica(&key, &der).map_err(unavailable)?;
    let issuer =
        CertificateAuthority::load(info.cluster.clone(), &der, key).map_err(unavailable)?;
    let role = Arc::new(CaRole::new(
        info.name.clone(),
        issuer,
        None,
        (*agent.identity.trust).clone(),
        agent.store.clone(),
        agent.settings().leaf_ttl,
    )?);
    let csr = agent
        .identity
        .key
        .csr_der(&SpiffeId::node(info.cluster.clone(), info.name.clone()))
        .map_err(unavailable)?;
    let own = role.issue_own(&info.name, &csr, SystemTime::now())?;
    agent
        .identity
        .install_cert(own.der, role.chain())
        .map_err(unavailable)?;
    let intermediate = role.intermediate();
    agent.ca.set(Some(role));
    agent.publish_record().await;
    agent.sync_revocations().await;
    info!(replica = %info.name, "this node is now a CA replica");
    Ok(serde_json::json!({ "node": info.name, "already": false, "intermediate": intermediate }))
}

/// Stops this node being a replica: key and intermediate removed, role dropped, record
/// re-published without the claim. The root holder stays one (take the root offline
/// with a backup instead).
async fn stop_replica(agent: &Agent) -> Result<serde_json::Value, Refusal> {
    let name = agent.identity.info.name.clone();
    let Some(ca) = agent.ca.get() else {
        return Ok(serde_json::json!({ "node": name, "was_replica": false }));
    };
    if ca.holds_root() {
        return Err(Refusal::new(
            RefusalKind::BadRequest,
            format!("{name} holds the root key and stays a replica; to take the root offline, back it up (weft ca backup) and remove ca.key from its data dir"),
        ));
    }
    agent.identity.files.remove_replica().map_err(unavailable)?;
    agent.ca.set(None);
    agent.publish_record().await;
    info!(replica = %name, "this node is no longer a CA replica");
    Ok(serde_json::json!({ "node": name, "was_replica": true }))
}

/// Renews this replica's intermediate (same key) once a third of its lifetime is left,
/// or at once when it chains to a root that is no longer the current one (a rotation),
/// and then this node's own certificate through it, so that its record shows the move.
pub async fn renew_intermediate_if_due(agent: &Agent, ca: &CaRole) -> Result<bool, Refusal> {
    let Some(current) = ca.intermediate() else {
        return Ok(false);
    };
    let now = SystemTime::now();
    let trust = &agent.identity.trust;
    let (der, _) = agent.identity.cert();
    let on_current_root = trust
        .verify_node_chain(&der, &ca.chain(), now)
        .ok()
        .and_then(|l| l.root)
        == Some(hex::encode(trust.ca_sha256()));
    let expiring = current.not_after_unix <= unix(now) + REPLICA_TTL.as_secs() / 3;
    if on_current_root && !expiring {
        return Ok(false);
    }
    let files = &agent.identity.files;
    let Some(key) = files.replica_key().map_err(unavailable)? else {
        return Err(unavailable("replica.key is missing"));
    };
    let inter = intermediate_from_root(agent, &key, None).await?;
    let reloaded = files
        .replica_key()
        .map_err(unavailable)?
        .ok_or_else(|| unavailable("replica.key is missing"))?;
    files.save_replica(&key, &inter).map_err(unavailable)?;
    let info = &agent.identity.info;
    ca.replace_issuer(
        CertificateAuthority::load(info.cluster.clone(), &inter, reloaded).map_err(unavailable)?,
    );
    let csr = agent
        .identity
        .key
        .csr_der(&SpiffeId::node(info.cluster.clone(), info.name.clone()))
        .map_err(unavailable)?;
    let own = ca.issue_own(&info.name, &csr, now)?;
    agent
        .identity
        .install_cert(own.der, ca.chain())
        .map_err(unavailable)?;
    agent.publish_record().await;
    warn!(replica = %info.name, root_changed = !on_current_root, "CA replica intermediate renewed");
    Ok(true)
}
