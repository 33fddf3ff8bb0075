//! What an operator signs: one `Act` (a config write, a join token, a revocation, a
//! gossip-key change, an operator change) inside a `Payload` that binds it to the cluster,
//! a time and a nonce, carried as a `Signed` envelope: the payload's exact JSON text, the
//! operator's certificate and an ECDSA signature over that text. Verifiers check the bytes
//! that were signed and then parse them, so nothing depends on how JSON is re-encoded.
//! The envelope itself is `envelope` (config entries store it).

use serde::{Deserialize, Serialize};
use weft_ca::{ClusterName, NodeName, OperatorName, Role};

use crate::cluster_config::hlc::Hlc;
use crate::cluster_config::Kind;
use crate::identity::keyring::KeyringOp;

pub use super::envelope::{Signed, SIGNING_CONTEXT};

/// The signed part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// The cluster it is meant for.
    pub cluster: ClusterName,
    /// When the operator signed it (Unix ms).
    pub issued_at_ms: u64,
    /// 16 random bytes, hex: a command is executed once.
    pub nonce: String,
    /// The node whose API received it (for the audit trail).
    pub via: String,
    /// What the operator asks for.
    pub act: Act,
}

/// Every change to the cluster that needs an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "act", rename_all = "snake_case", deny_unknown_fields)]
pub enum Act {
    /// Write (or, with no value, delete) one config entry at this version.
    ConfigWrite {
        /// Kind.
        kind: Kind,
        /// Entry name.
        name: String,
        /// The version the entry gets.
        version: Hlc,
        /// The value; None deletes.
        value: Option<serde_json::Value>,
    },
    /// Create a join token.
    CreateToken {
        /// Lifetime in seconds.
        ttl_secs: u64,
    },
    /// Revoke every certificate of a node.
    Revoke {
        /// The node.
        node: NodeName,
    },
    /// One step of a gossip key rotation, on every node.
    Keyring {
        /// The step.
        change: KeyringOp,
    },
    /// Issue an operator credential for the CSR (base64url DER).
    OperatorCreate {
        /// The operator.
        name: OperatorName,
        /// Its role.
        role: Role,
        /// Lifetime in seconds.
        ttl_secs: u64,
        /// CSR naming only the operator, base64url DER.
        csr: String,
    },
    /// Revoke an operator's credentials.
    OperatorRevoke {
        /// The operator.
        name: OperatorName,
    },
    /// List operators.
    OperatorList,
    /// Export the CA (root key and records), encrypted, from the node that holds it.
    CaBackup,
    /// Make a member a CA replica: it makes a key and the root signs its intermediate.
    AddReplica {
        /// The member.
        node: NodeName,
    },
    /// Stop a member being a CA replica (its key and intermediate are removed there).
    RemoveReplica {
        /// The member.
        node: NodeName,
    },
    /// Make a new root and retire the current one once nothing chains to it.
    RotateRoot,
}

impl Act {
    /// The least role that may do this.
    pub fn needs(&self) -> Role {
        match self {
            // Forgetting a member changes what every node lists: an admin's call.
            Self::ConfigWrite {
                kind: Kind::Forget, ..
            } => Role::Admin,
            Self::ConfigWrite { .. } => Role::Operator,
            Self::OperatorList => Role::Viewer,
            Self::CreateToken { .. }
            | Self::Revoke { .. }
            | Self::Keyring { .. }
            | Self::OperatorCreate { .. }
            | Self::OperatorRevoke { .. }
            | Self::CaBackup
            | Self::AddReplica { .. }
            | Self::RemoveReplica { .. }
            | Self::RotateRoot => Role::Admin,
        }
    }

    /// What it is, in the words of a refusal ("writing routes").
    pub fn describe(&self) -> String {
        match self {
            Self::ConfigWrite { kind, .. } => format!("writing {kind} entries"),
            Self::CreateToken { .. } => "creating join tokens".into(),
            Self::Revoke { .. } => "revoking nodes".into(),
            Self::Keyring { .. } => "changing gossip keys".into(),
            Self::OperatorCreate { .. } => "creating operators".into(),
            Self::OperatorRevoke { .. } => "revoking operators".into(),
            Self::OperatorList => "listing operators".into(),
            Self::CaBackup => "backing up the CA".into(),
            Self::AddReplica { .. } => "adding CA replicas".into(),
            Self::RemoveReplica { .. } => "removing CA replicas".into(),
            Self::RotateRoot => "rotating the root".into(),
        }
    }

    /// A short label for counters and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ConfigWrite { .. } => "config_write",
            Self::CreateToken { .. } => "create_token",
            Self::Revoke { .. } => "revoke",
            Self::Keyring { .. } => "keyring",
            Self::OperatorCreate { .. } => "operator_create",
            Self::OperatorRevoke { .. } => "operator_revoke",
            Self::OperatorList => "operator_list",
            Self::CaBackup => "ca_backup",
            Self::AddReplica { .. } => "add_replica",
            Self::RemoveReplica { .. } => "remove_replica",
            Self::RotateRoot => "rotate_root",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_needed() {
        assert_eq!(Act::OperatorList.needs(), Role::Viewer);
        assert_eq!(Act::CreateToken { ttl_secs: 1 }.needs(), Role::Admin);
        let w = Act::ConfigWrite {
            kind: Kind::Route,
            name: "r".into(),
            version: Hlc {
                wall: 1,
                logical: 0,
                node: "n".into(),
            },
            value: None,
        };
        assert_eq!(w.needs(), Role::Operator);
        assert_eq!(w.describe(), "writing route entries");
    }
}
