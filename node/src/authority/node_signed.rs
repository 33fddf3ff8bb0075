//! What a node may write into the cluster config in its own name: only where a rollout it
//! drives stands (`rollout_progress` entries). Such an entry is signed with the node's own
//! key under a context of its own (so it can never pass for an operator's signature),
//! names the node as its writer, and is accepted by every node only within the plan an
//! operator signed (`ConfigReplica` checks the plan; `Authority::node_entry` checks the
//! signature, the certificate and that the signer is the writer).

use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use weft_ca::ClusterName;

use super::signed::{Act, Payload, Signed};
use crate::cluster_config::{Entry, Kind};

/// Domain separation for node-signed entries.
pub const NODE_SIGNING_CONTEXT: &[u8] = b"weft-node-entry-v1\0";

/// The kinds a node may write in its own name.
pub fn node_writable(kind: Kind) -> bool {
    kind == Kind::RolloutProgress
}

/// Signs `entry` (its kind, name, version and value) as node `node` with `sign`, the
/// node's certificate `cert_der` and the intermediates `chain`; returns the entry with
/// its `auth` set.
pub fn sign_entry(
    mut entry: Entry,
    cluster: ClusterName,
    node: &str,
    cert_der: &[u8],
    chain: &[Vec<u8>],
    sign: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Option<Entry> {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let payload = Payload {
        cluster,
        issued_at_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        nonce: hex::encode(nonce),
        via: node.to_owned(),
        act: Act::ConfigWrite {
            kind: entry.kind,
            name: entry.name.clone(),
            version: entry.version.clone(),
            value: entry.value.clone(),
        },
    };
    let payload = serde_json::to_string(&payload).ok()?;
    let mut msg = NODE_SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(payload.as_bytes());
    let sig = sign(&msg)?;
    entry.auth = Some(Signed {
        payload,
        cert: URL_SAFE_NO_PAD.encode(cert_der),
        sig: URL_SAFE_NO_PAD.encode(sig),
        chain: chain.iter().map(|c| URL_SAFE_NO_PAD.encode(c)).collect(),
    });
    Some(entry)
}
