//! What a node publishes by gossip, signed with its node key, and the CA-signed
//! revocation list. Holding the gossip key only proves membership: a peer accepts a node's
//! record only if it is signed by the key of a valid certificate for that very node.

use std::net::SocketAddr;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use weft_ca::{LeafInfo, NodeName, ServiceName, TrustRoot, VerifyError};

/// chitchat key under which a node publishes its signed record.
pub const NODE_KEY: &str = "weft.node";
/// chitchat key under which a node publishes its signed service set.
pub const SERVICES_KEY: &str = "weft.svc";
/// Most services one node may publish (keeps the signed value well under its limit).
pub const MAX_SERVICES_PER_NODE: usize = 64;
/// chitchat key under which the CA node publishes the signed revocation list.
pub const CRL_KEY: &str = "weft.crl";
/// Largest signed value accepted from gossip.
pub const MAX_SIGNED_VALUE: usize = 16 * 1024;
/// Most gossip values one replica's revocation list is split into (each signed on its
/// own): about 700 entries in all.
pub const MAX_CRL_SHARDS: usize = 8;

/// The chitchat key of revocation shard `i` (shard 0 is `CRL_KEY` itself).
pub fn crl_key(i: usize) -> String {
    if i == 0 {
        CRL_KEY.to_owned()
    } else {
        format!("{CRL_KEY}.{i}")
    }
}

/// Whether `key` is one of the revocation shard keys.
pub fn is_crl_key(key: &str) -> bool {
    key == CRL_KEY
        || key
            .strip_prefix(CRL_KEY)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| (1..MAX_CRL_SHARDS).contains(&n))
}

/// A node's self-description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// Node name; must match the chitchat node id and the certificate.
    pub name: NodeName,
    /// Where its QUIC endpoint listens.
    pub quic_addr: SocketAddr,
    /// Zone label.
    pub zone: String,
    /// Agent version.
    pub version: String,
    /// The node certificate, base64url DER.
    pub cert: String,
    /// Whether this node holds the CA key (takes joins, renewals, revocations).
    pub ca: bool,
    /// Set when the node announces a graceful leave.
    pub leaving: bool,
    /// Unix milliseconds when signed; later records replace earlier ones.
    pub signed_at_ms: u64,
    /// The chitchat generation this record is published under (the agent's start time):
    /// a genuine record replayed under another generation does not verify. 0 only in
    /// records of agents older than the binding, accepted until the node publishes a
    /// bound one.
    #[serde(default)]
    pub generation: u64,
    /// The gossip address this record is published from (bound like `generation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_addr: Option<SocketAddr>,
    /// On the node that holds the root key: the root's signature over
    /// `ca_claim(cluster, name, generation)`, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_proof: Option<String>,
    /// The intermediates `cert` chains through to the root (base64url DER; at most one):
    /// a CA replica's node certificate is issued by its own intermediate, which proves the
    /// `ca` claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

/// What the root key signs to say that node `name`, in this run, holds it.
pub fn ca_claim(cluster: &str, name: &str, generation: u64) -> Vec<u8> {
    format!("weft-ca-holder-v1\0{cluster}\0{name}\0{generation}").into_bytes()
}

/// Whether `record`'s CA claim is proven: its certificate (`leaf`, verified) was issued
/// by an intermediate naming this very node (a replica), or it carries the root's proof.
pub fn ca_claim_holds(record: &NodeRecord, leaf: &LeafInfo, root: &TrustRoot) -> bool {
    leaf.issuer.as_ref().is_some_and(|i| i.node == record.name) || root_claim_holds(record, root)
}

/// Whether `record` carries the root's proof that its node holds the root key.
pub fn root_claim_holds(record: &NodeRecord, root: &TrustRoot) -> bool {
    let Some(proof) = record.ca_proof.as_deref() else {
        return false;
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(proof) else {
        return false;
    };
    let msg = ca_claim(
        root.cluster().as_str(),
        record.name.as_str(),
        record.generation,
    );
    root.verify_ca_signature(&msg, &sig).is_ok()
}

impl NodeRecord {
    /// The certificate DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, RecordError> {
        URL_SAFE_NO_PAD
            .decode(&self.cert)
            .map_err(|_| RecordError::Malformed("certificate is not base64url"))
    }

    /// The intermediates of `chain`, DER.
    pub fn chain_der(&self) -> Result<Vec<Vec<u8>>, RecordError> {
        if self.chain.len() > weft_ca::replica::MAX_CHAIN {
            return Err(RecordError::Malformed("too many intermediates"));
        }
        self.chain
            .iter()
            .map(|c| {
                URL_SAFE_NO_PAD
                    .decode(c)
                    .map_err(|_| RecordError::Malformed("intermediate is not base64url"))
            })
            .collect()
    }

    /// Encodes a certificate for the `cert` field.
    pub fn encode_cert(der: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(der)
    }
}

/// How a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque bytes: spliced both ways.
    Tcp,
    /// HTTP/1.1 to the instance (apps may speak HTTP/1.1 or h2c to the mesh): routed
    /// request by request.
    Http,
    /// HTTP/2 without TLS to the instance (h2c, prior knowledge), and between nodes:
    /// trailers carried end to end.
    Http2,
    /// gRPC: HTTP/2 end to end, like `Http2`.
    Grpc,
}

impl Protocol {
    /// Whether requests are routed one by one (every HTTP flavour).
    pub fn is_http(self) -> bool {
        !matches!(self, Self::Tcp)
    }

    /// Whether the instance and the hop between nodes speak HTTP/2.
    pub fn is_h2(self) -> bool {
        matches!(self, Self::Http2 | Self::Grpc)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
        })
    }
}

/// One service instance a node runs, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    /// Service name.
    pub name: ServiceName,
    /// Local port of the instance on its node.
    pub port: u16,
    /// tcp or http.
    pub protocol: Protocol,
    /// Version label (subset).
    pub version: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether its health check passes (true when it has none).
    pub healthy: bool,
}

/// The services of one node, signed by that node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSet {
    /// The instances.
    pub services: Vec<ServiceRecord>,
    /// Unix milliseconds when signed.
    pub signed_at_ms: u64,
}

/// How long after its certificate expired a revocation entry is still kept (clock skew
/// between the CA and the nodes).
pub const REVOCATION_GRACE_SECS: u64 = 3600;

/// One revoked certificate. Short field names on the wire (a replica's list carries
/// hundreds of these in 16 KiB gossip values); the long names are still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// Node the certificate was issued to.
    #[serde(rename = "n", alias = "node")]
    pub node: NodeName,
    /// Hex serial.
    #[serde(rename = "s", alias = "serial")]
    pub serial: String,
    /// When it was revoked, Unix seconds.
    #[serde(rename = "r", alias = "revoked_at_unix")]
    pub revoked_at_unix: u64,
    /// When the certificate expires, Unix seconds: the entry is pruned after that (0 in
    /// entries made before expiry was recorded: kept).
    #[serde(default, rename = "x", alias = "not_after_unix")]
    pub not_after_unix: u64,
    /// An operator's credential (then `node` is the operator's name), not a node's.
    #[serde(
        default,
        rename = "o",
        alias = "operator",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub operator: bool,
    /// The CA replica that listed it.
    #[serde(
        default,
        rename = "g",
        alias = "signer",
        skip_serializing_if = "Option::is_none"
    )]
    pub signer: Option<NodeName>,
    /// Why (e.g. "node revoked by operator alice"), at most `MAX_REASON` characters.
    #[serde(
        default,
        rename = "w",
        alias = "reason",
        skip_serializing_if = "String::is_empty"
    )]
    pub reason: String,
}

/// Longest revocation reason kept.
pub const MAX_REASON: usize = 80;

/// The cluster's revocation list, signed by the CA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// Increases with every change; nodes keep the highest they verified.
    pub version: u64,
    /// Revoked certificates.
    pub revoked: Vec<Revoked>,
}

impl RevocationList {
    /// Whether the certificate with this serial is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.iter().any(|r| r.serial == serial)
    }

    /// `newer` (a list with a higher version) merged with the entries of this one that it
    /// lacks and whose certificate has not been expired for `grace_secs` at `now_unix`:
    /// revocations form a grow-only set (nothing is ever un-revoked), so a list published
    /// without an entry — by a CA that lost its store — cannot bring a revoked node back.
    /// Entries leave only once their certificate has expired.
    pub fn merged_with(
        &self,
        newer: RevocationList,
        now_unix: u64,
        grace_secs: u64,
    ) -> RevocationList {
        let mut out = newer;
        let cutoff = now_unix.saturating_sub(grace_secs);
        for r in &self.revoked {
            let live = r.not_after_unix == 0 || r.not_after_unix > cutoff;
            if live && !out.is_revoked(&r.serial) {
                out.revoked.push(r.clone());
            }
        }
        out
    }

    /// Adds the entries of `other` this list lacks and drops its own, both only while
    /// their certificate has not been expired for `grace_secs` at `now_unix`: the union of
    /// the lists every replica publishes. Returns whether anything changed.
    pub fn union_from(&mut self, other: &RevocationList, now_unix: u64, grace_secs: u64) -> bool {
        let cutoff = now_unix.saturating_sub(grace_secs);
        let live = |r: &Revoked| r.not_after_unix == 0 || r.not_after_unix > cutoff;
        let before = self.revoked.len();
        self.revoked.retain(|r| live(r));
        let mut changed = self.revoked.len() != before;
        for r in &other.revoked {
            if live(r) && !self.is_revoked(&r.serial) {
                self.revoked.push(r.clone());
                changed = true;
            }
        }
        changed
    }

    /// When the certificate with this serial was revoked (Unix seconds), if it was.
    pub fn revoked_at(&self, serial: &str) -> Option<u64> {
        self.revoked
            .iter()
            .find(|r| r.serial == serial)
            .map(|r| r.revoked_at_unix)
    }
}

/// Splits `list` into signed values of at most `MAX_SIGNED_VALUE` bytes, each a list of
/// the same version holding some of the entries; None when more than `MAX_CRL_SHARDS`
/// would be needed. An empty list is one empty shard.
pub fn shard_signed(list: &RevocationList, sign: impl Fn(&[u8]) -> Vec<u8>) -> Option<Vec<String>> {
    // Base64 grows the JSON by 4/3; the signature and the wrapper take the rest.
    const BUDGET: usize = MAX_SIGNED_VALUE * 3 / 4 - 512;
    let mut shards: Vec<Vec<Revoked>> = vec![Vec::new()];
    let mut size = 0;
    for r in &list.revoked {
        let len = serde_json::to_vec(r).map(|v| v.len() + 1).unwrap_or(BUDGET);
        if size + len > BUDGET && shards.last().is_some_and(|s| !s.is_empty()) {
            shards.push(Vec::new());
            size = 0;
        }
        size += len;
        shards.last_mut()?.push(r.clone());
    }
    if shards.len() > MAX_CRL_SHARDS {
        return None;
    }
    let out: Vec<String> = shards
        .into_iter()
        .map(|revoked| {
            encode_signed(
                &RevocationList {
                    version: list.version,
                    revoked,
                },
                &sign,
            )
        })
        .collect();
    out.iter()
        .all(|v| v.len() <= MAX_SIGNED_VALUE)
        .then_some(out)
}

/// Why a gossiped value was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Wrong shape, size or encoding.
    #[error("malformed signed value: {0}")]
    Malformed(&'static str),
    /// The record names another node than the one publishing it.
    #[error("record for {record:?} published as {publisher:?}")]
    WrongNode {
        /// Name in the record.
        record: String,
        /// Gossip node id.
        publisher: String,
    },
    /// Certificate or signature problem.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A genuine record replayed under another generation or address than it was
    /// signed for (or an unbound one after the node published a bound record).
    #[error("record signed for generation {signed} at {signed_addr}, published as generation {published} at {published_addr}")]
    Replayed {
        /// The generation in the signed record.
        signed: u64,
        /// The address in the signed record.
        signed_addr: String,
        /// The chitchat generation it was published under.
        published: u64,
        /// The chitchat address it was published from.
        published_addr: String,
    },
}

/// Signs `payload`'s JSON with `sign` and returns the gossip value `json64.sig64`.
pub fn encode_signed<T: Serialize>(payload: &T, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let json = serde_json::to_vec(payload).unwrap_or_default();
    let sig = sign(&json);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

fn split_signed(value: &str) -> Result<(Vec<u8>, Vec<u8>), RecordError> {
    if value.len() > MAX_SIGNED_VALUE {
        return Err(RecordError::Malformed("value too large"));
    }
    let (body, sig) = value
        .split_once('.')
        .ok_or(RecordError::Malformed("missing signature"))?;
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| RecordError::Malformed("body is not base64url"))?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| RecordError::Malformed("signature is not base64url"))?;
    Ok((body, sig))
}

/// Verifies a node record published by gossip node id `publisher` at `now`.
pub fn verify_node_record(
    value: &str,
    publisher: &str,
    root: &TrustRoot,
    now: SystemTime,
) -> Result<(NodeRecord, LeafInfo), RecordError> {
    let (body, sig) = split_signed(value)?;
    let record: NodeRecord = serde_json::from_slice(&body)
        .map_err(|_| RecordError::Malformed("record is not valid JSON"))?;
    if record.name.as_str() != publisher {
        return Err(RecordError::WrongNode {
            record: record.name.to_string(),
            publisher: publisher.chars().take(80).collect(),
        });
    }
    let der = record.cert_der()?;
    let leaf = root.verify_node_chain(&der, &record.chain_der()?, now)?;
    if leaf.id.node_name() != &record.name {
        return Err(RecordError::WrongNode {
            record: record.name.to_string(),
            publisher: leaf.id.node_name().to_string(),
        });
    }
    weft_ca::verify_signature(&der, &body, &sig)?;
    Ok((record, leaf))
}

/// Verifies a revocation list signed with the key of `signer` (DER): the root, or the
/// intermediate of the replica that published it (verified by the caller).
pub fn verify_crl(value: &str, signer: &[u8]) -> Result<RevocationList, RecordError> {
    let (body, sig) = split_signed(value)?;
    weft_ca::verify_signature(signer, &body, &sig)?;
    serde_json::from_slice(&body)
        .map_err(|_| RecordError::Malformed("revocation list is not valid JSON"))
}

/// Verifies a service set published by a node whose verified certificate is `cert_der`.
pub fn verify_service_set(value: &str, cert_der: &[u8]) -> Result<ServiceSet, RecordError> {
    let (body, sig) = split_signed(value)?;
    weft_ca::verify_signature(cert_der, &body, &sig)?;
    let set: ServiceSet = serde_json::from_slice(&body)
        .map_err(|_| RecordError::Malformed("service set is not valid JSON"))?;
    if set.services.len() > MAX_SERVICES_PER_NODE {
        return Err(RecordError::Malformed("too many services"));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: &str, not_after_unix: u64) -> Revoked {
        Revoked {
            node: NodeName::new("n1").expect("valid"),
            serial: serial.into(),
            revoked_at_unix: 1,
            not_after_unix,
            operator: false,
            signer: None,
            reason: String::new(),
        }
    }

    #[test]
    fn a_long_list_is_split_into_shards_that_each_fit_and_verify() {
        let key = weft_ca::NodeKey::generate().expect("key");
        let list = RevocationList {
            version: 7,
            revoked: (0..500)
                .map(|i| Revoked {
                    node: NodeName::new(format!("node-{i:03}")).expect("valid"),
                    serial: format!("{i:032x}"),
                    revoked_at_unix: 1_700_000_000,
                    not_after_unix: 1_700_086_400,
                    operator: false,
                    signer: Some(NodeName::new("ca-1").expect("valid")),
                    reason: "node revoked by operator admin".into(),
                })
                .collect(),
        };
        let shards = shard_signed(&list, |m| key.sign(m).expect("sign")).expect("fits");
        assert!(
            shards.len() > 1 && shards.len() <= MAX_CRL_SHARDS,
            "{}",
            shards.len()
        );
        let mut back = RevocationList::default();
        for s in &shards {
            assert!(s.len() <= MAX_SIGNED_VALUE);
            let (body, sig) = split_signed(s).expect("splits");
            let part: RevocationList = serde_json::from_slice(&body).expect("json");
            assert_eq!(part.version, 7);
            assert!(!sig.is_empty());
            back.union_from(&part, 0, 0);
        }
        assert_eq!(back.revoked.len(), 500);
        let too_many = RevocationList {
            version: 8,
            revoked: (0..5000).map(|i| entry(&format!("{i:032x}"), 0)).collect(),
        };
        assert!(shard_signed(&too_many, |m| key.sign(m).expect("sign")).is_none());
        assert!(is_crl_key("weft.crl") && is_crl_key("weft.crl.7"));
        assert!(!is_crl_key("weft.crl.8") && !is_crl_key("weft.crl.x") && !is_crl_key("weft.crlx"));
    }

    #[test]
    fn entries_written_before_the_short_names_still_read() {
        let old = r#"{"node":"vm-2","serial":"ab","revoked_at_unix":5,"not_after_unix":9}"#;
        let e: Revoked = serde_json::from_str(old).expect("reads");
        assert_eq!(
            (e.node.as_str(), e.serial.as_str(), e.not_after_unix),
            ("vm-2", "ab", 9)
        );
        let back: Revoked =
            serde_json::from_slice(&serde_json::to_vec(&e).expect("json")).expect("round trip");
        assert_eq!(back, e);
    }

    #[test]
    fn revocations_merge_as_a_grow_only_set_and_expire() {
        let held = RevocationList {
            version: 3,
            revoked: vec![entry("a", 1_000), entry("b", 10), entry("legacy", 0)],
        };
        // A newer list that lacks "a" (its CA lost its store) keeps "a"; "b" expired long
        // ago and leaves; an entry without expiry stays.
        let newer = RevocationList {
            version: 4,
            revoked: vec![entry("c", 1_000)],
        };
        let merged = held.merged_with(newer, 500, 60);
        assert_eq!(merged.version, 4);
        for s in ["a", "c", "legacy"] {
            assert!(merged.is_revoked(s), "{s} kept");
        }
        assert!(!merged.is_revoked("b"), "expired entries leave");
    }
}
