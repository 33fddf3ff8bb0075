//! Whether this node is a CA replica right now: `weft ca add-replica` makes a running node
//! one and `remove-replica` stops it, so everything that serves CA requests reads the role
//! through this shared slot instead of holding it from start-up.

use std::sync::{Arc, RwLock};

use super::CaRole;

/// The CA role of this node, if it is a replica.
#[derive(Debug, Clone, Default)]
pub struct CaSlot(Arc<RwLock<Option<Arc<CaRole>>>>);

impl CaSlot {
    /// A slot holding `role`.
    pub fn new(role: Option<Arc<CaRole>>) -> Self {
        Self(Arc::new(RwLock::new(role)))
    }

    /// The role now (cheap: one `Arc` clone).
    pub fn get(&self) -> Option<Arc<CaRole>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this node is a replica now.
    pub fn is_some(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Makes this node a replica (or stops it being one).
    pub fn set(&self, role: Option<Arc<CaRole>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = role;
    }
}

/// An operator's `AddReplica`/`RemoveReplica` for this node, received by a member's
/// control connection and carried out by the agent (which owns the identity files, the
/// slot and the gossip record); `reply` gets the answer.
#[derive(Debug)]
pub struct ReplicaOrder {
    /// The verified act.
    pub verified: crate::authority::Verified,
    /// Its signed form (the root holder verifies it again before it signs).
    pub signed: crate::authority::Signed,
    /// Where the answer goes.
    pub reply: tokio::sync::oneshot::Sender<crate::rpc::messages::CtlResponse>,
}

/// How long an order may take (a key, a call to the root holder, a certificate).
const ORDER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends replica orders to the agent (a queue of 4: an operator act, not a data path).
#[derive(Debug, Clone)]
pub struct ReplicaOrders(tokio::sync::mpsc::Sender<ReplicaOrder>);

impl ReplicaOrders {
    /// The sender and the agent's receiving end.
    pub fn channel() -> (Self, tokio::sync::mpsc::Receiver<ReplicaOrder>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (Self(tx), rx)
    }

    /// Hands an order to the agent and waits for its answer.
    pub async fn order(
        &self,
        verified: crate::authority::Verified,
        signed: crate::authority::Signed,
    ) -> crate::rpc::messages::CtlResponse {
        use crate::rpc::messages::CtlResponse;
        let busy = |m: &str| CtlResponse::Error {
            kind: super::RefusalKind::Unavailable,
            message: m.to_owned(),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self
            .0
            .try_send(ReplicaOrder {
                verified,
                signed,
                reply,
            })
            .is_err()
        {
            return busy("this node is busy with other replica changes; retry");
        }
        match tokio::time::timeout(ORDER_TIMEOUT, answer).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => busy("the agent is stopping"),
            Err(_) => busy("the replica change did not finish in time; see this node's log"),
        }
    }
}
