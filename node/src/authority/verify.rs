//! Verifying what operators signed, on every node that applies it: the certificate
//! chains to the cluster root and is not revoked, the role covers the act, the signature
//! covers the exact payload, the payload is for this cluster and (for commands) fresh and
//! not seen before. Refusals are counted by reason (`weft_authority_refused_total`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use weft_ca::{OperatorInfo, Role, TrustRoot, VerifyError};

use super::signed::{Act, Payload, Signed, SIGNING_CONTEXT};
use crate::cluster_config::Entry;

/// How far a command's signing time may be from this node's clock.
pub const MAX_COMMAND_SKEW: Duration = Duration::from_secs(60);
/// How far in the future a config entry's version may be stamped.
pub const MAX_ENTRY_FUTURE: Duration = Duration::from_secs(10);
/// Most command nonces remembered (one per command in the last `2 × MAX_COMMAND_SKEW`).
pub const MAX_NONCES: usize = 10_000;

/// Why a signed act was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Nothing was signed.
    #[error("{what} needs an operator credential ({role}): set WEFT_TOKEN or --credential")]
    Missing {
        /// "writing route entries".
        what: String,
        /// "role operator or admin".
        role: &'static str,
    },
    /// The envelope or payload does not parse.
    #[error("{0}")]
    Malformed(String),
    /// The certificate is not a valid operator certificate of this cluster.
    #[error("operator certificate refused: {0}")]
    Certificate(VerifyError),
    /// The operator's credential is revoked.
    #[error("operator {0}'s credential is revoked")]
    Revoked(String),
    /// The role does not cover the act.
    #[error("operator {name} has role {has}; {what} needs {needs}")]
    Role {
        /// Operator.
        name: String,
        /// Its role.
        has: Role,
        /// What it tried.
        what: String,
        /// What that needs.
        needs: &'static str,
    },
    /// The signature does not cover the payload.
    #[error("the operator signature does not verify")]
    Signature,
    /// Signed for another cluster.
    #[error("signed for cluster {0:?}, not this one")]
    ForeignCluster(String),
    /// Signed too far from now.
    #[error("signed {0} s away from this node's clock (at most {max} s): check the clocks", max = MAX_COMMAND_SKEW.as_secs())]
    Skew(i64),
    /// Stamped in the future.
    #[error("entry version is {0} ms in the future (at most {max} ms): check the writer's clock", max = MAX_ENTRY_FUTURE.as_millis())]
    Future(u64),
    /// The nonce was used.
    #[error("this signed request was already used; sign a new one")]
    Replayed,
    /// The payload says something else than the request around it.
    #[error("the signature is for another request: {0}")]
    Mismatch(String),
    /// The nonce memory is full.
    #[error("too many signed requests in the last minutes; retry shortly")]
    Busy,
}

impl AuthError {
    /// The refusal for an unsigned `act`.
    pub fn missing(act: &Act) -> Self {
        Self::Missing {
            what: act.describe(),
            role: role_words(act.needs()),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing",
            Self::Malformed(_) => "malformed",
            Self::Certificate(_) => "certificate",
            Self::Revoked(_) => "revoked",
            Self::Role { .. } => "role",
            Self::Signature => "signature",
            Self::ForeignCluster(_) => "cluster",
            Self::Skew(_) | Self::Future(_) => "clock",
            Self::Replayed => "replayed",
            Self::Mismatch(_) => "mismatch",
            Self::Busy => "busy",
        }
    }
}

/// "role operator or admin" and the like.
pub fn role_words(role: Role) -> &'static str {
    match role {
        Role::Viewer => "any operator role",
        Role::Operator => "role operator or admin",
        Role::Admin => "role admin",
    }
}

/// Revocation as this node knows it (the gossiped, CA-signed list).
pub trait Revocations: Send + Sync {
    /// When the certificate with `serial` was revoked (Unix seconds), if it was.
    fn revoked_at(&self, serial: &str) -> Option<u64>;
}

/// Labels of `weft_authority_refused_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `config_entry` or `command`.
    pub what: String,
    /// Why (a bounded set).
    pub reason: String,
}

/// A verified act.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Who signed it.
    pub operator: OperatorInfo,
    /// What they signed.
    pub payload: Payload,
}

/// Command nonces seen recently, bounded.
#[derive(Debug, Default)]
struct Nonces {
    seen: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl Nonces {
    fn admit(&mut self, nonce: &str, now_ms: u64) -> Result<(), AuthError> {
        while let Some((expiry, n)) = self.order.front() {
            if *expiry > now_ms {
                break;
            }
            self.seen.remove(n);
            self.order.pop_front();
        }
        if self.seen.contains_key(nonce) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= MAX_NONCES {
            return Err(AuthError::Busy);
        }
        let expiry = now_ms + 2 * MAX_COMMAND_SKEW.as_millis() as u64 + 1;
        self.seen.insert(nonce.to_owned(), expiry);
        self.order.push_back((expiry, nonce.to_owned()));
        Ok(())
    }
}

/// The verifier one node holds.
pub struct Authority {
    trust: Arc<TrustRoot>,
    revocations: Arc<dyn Revocations>,
    nonces: Mutex<Nonces>,
    refused: Family<RefusedLabels, Counter>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// The signer's certificate and intermediates of an envelope, decoded.
fn decode_certs(signed: &Signed) -> Result<(Vec<u8>, Vec<Vec<u8>>), AuthError> {
    let cert = URL_SAFE_NO_PAD
        .decode(&signed.cert)
        .map_err(|_| AuthError::Malformed("signer certificate is not base64url".into()))?;
    if signed.chain.len() > weft_ca::replica::MAX_CHAIN {
        return Err(AuthError::Malformed("too many intermediates".into()));
    }
    let chain = signed
        .chain
        .iter()
        .map(|c| URL_SAFE_NO_PAD.decode(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AuthError::Malformed("intermediate is not base64url".into()))?;
    Ok((cert, chain))
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Authority {
    /// A verifier against `trust`, consulting `revocations`, counting refusals in
    /// `refused`.
    pub fn new(
        trust: Arc<TrustRoot>,
        revocations: Arc<dyn Revocations>,
        refused: Family<RefusedLabels, Counter>,
    ) -> Self {
        Self {
            trust,
            revocations,
            nonces: Mutex::default(),
            refused,
        }
    }

    fn count(&self, what: &str, e: &AuthError) {
        self.refused
            .get_or_create(&RefusedLabels {
                what: what.to_owned(),
                reason: e.reason().to_owned(),
            })
            .inc();
    }

    /// Checks the envelope's signature and certificate at `at`; returns the operator and
    /// the payload.
    fn open(&self, signed: &Signed, at: SystemTime) -> Result<Verified, AuthError> {
        let (cert, chain) = decode_certs(signed)?;
        let operator = self
            .trust
            .verify_operator_chain(&cert, &chain, at)
            .map_err(AuthError::Certificate)?;
        let payload = self.signed_payload(signed, &cert, SIGNING_CONTEXT)?;
        Ok(Verified { operator, payload })
    }

    /// Checks the signature over `context` + the payload with `cert`'s key, parses the
    /// payload and checks it is for this cluster.
    fn signed_payload(
        &self,
        signed: &Signed,
        cert: &[u8],
        context: &[u8],
    ) -> Result<Payload, AuthError> {
        let sig = URL_SAFE_NO_PAD
            .decode(&signed.sig)
            .map_err(|_| AuthError::Malformed("signature is not base64url".into()))?;
        let mut msg = context.to_vec();
        msg.extend_from_slice(signed.payload.as_bytes());
        weft_ca::verify_signature(cert, &msg, &sig).map_err(|_| AuthError::Signature)?;
        let payload: Payload = serde_json::from_str(&signed.payload).map_err(|e| {
            AuthError::Malformed(format!("signed payload: {e}").chars().take(200).collect())
        })?;
        if &payload.cluster != self.trust.cluster() {
            return Err(AuthError::ForeignCluster(payload.cluster.to_string()));
        }
        Ok(payload)
    }

    fn role(operator: &OperatorInfo, act: &Act) -> Result<(), AuthError> {
        if operator.role.allows(act.needs()) {
            Ok(())
        } else {
            Err(AuthError::Role {
                name: operator.name.to_string(),
                has: operator.role,
                what: act.describe(),
                needs: role_words(act.needs()),
            })
        }
    }

    /// Verifies a command that must be exactly `expected` (what the API request asked
    /// for). `consume` records its nonce: the node that executes it consumes, a node that
    /// only forwards it checks without consuming.
    pub fn command(
        &self,
        signed: Option<&Signed>,
        expected: &Act,
        now: SystemTime,
        consume: bool,
    ) -> Result<Verified, AuthError> {
        let r = match signed {
            None => Err(AuthError::missing(expected)),
            Some(signed) => self.any_command_inner(signed, now, false).and_then(|v| {
                if &v.payload.act != expected {
                    return Err(AuthError::Mismatch(format!(
                        "it signs {}, not this {}",
                        v.payload.act.label(),
                        expected.label()
                    )));
                }
                if consume {
                    self.consume(&v, now)?;
                }
                Ok(v)
            }),
        };
        if let Err(e) = &r {
            self.count("command", e);
        }
        r
    }

    /// Verifies a command received from another node, to execute here (consumes its
    /// nonce); the caller dispatches on the act.
    pub fn any_command(&self, signed: &Signed, now: SystemTime) -> Result<Verified, AuthError> {
        let r = self.any_command_inner(signed, now, true);
        if let Err(e) = &r {
            self.count("command", e);
        }
        r
    }

    fn consume(&self, v: &Verified, now: SystemTime) -> Result<(), AuthError> {
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(&v.payload.nonce, ms(now))
    }

    fn any_command_inner(
        &self,
        signed: &Signed,
        now: SystemTime,
        consume: bool,
    ) -> Result<Verified, AuthError> {
        let v = self.open(signed, now)?;
        let skew = (v.payload.issued_at_ms as i64 - ms(now) as i64) / 1000;
        if skew.unsigned_abs() > MAX_COMMAND_SKEW.as_secs() {
            return Err(AuthError::Skew(skew));
        }
        if matches!(v.payload.act, Act::ConfigWrite { .. }) {
            return Err(AuthError::Mismatch(
                "a config write travels as an entry, not as a command".into(),
            ));
        }
        if self.revocations.revoked_at(&v.operator.serial).is_some() {
            return Err(AuthError::Revoked(v.operator.name.to_string()));
        }
        Self::role(&v.operator, &v.payload.act)?;
        if consume {
            self.consume(&v, now)?;
        }
        Ok(v)
    }

    /// Verifies a config entry (from the API or a peer): signed by an operator whose
    /// certificate was valid and not yet revoked at the entry's version, over exactly
    /// this kind, name, version and value.
    pub fn entry(&self, e: &Entry, now: SystemTime) -> Result<Verified, AuthError> {
        let r = self.entry_inner(e, now);
        if let Err(err) = &r {
            self.count("config_entry", err);
        }
        r
    }

    /// Who signed an entry, for display (`config history`); None when it is unsigned or
    /// does not verify. Counts nothing.
    pub fn signer(&self, e: &Entry) -> Option<OperatorInfo> {
        self.entry_inner(e, SystemTime::now())
            .ok()
            .map(|v| v.operator)
    }

    fn entry_inner(&self, e: &Entry, now: SystemTime) -> Result<Verified, AuthError> {
        let unsigned = Act::ConfigWrite {
            kind: e.kind,
            name: e.name.clone(),
            version: e.version.clone(),
            value: e.value.clone(),
        };
        let signed = e
            .auth
            .as_ref()
            .ok_or_else(|| AuthError::missing(&unsigned))?;
        let now_ms = ms(now);
        if e.version.wall > now_ms + MAX_ENTRY_FUTURE.as_millis() as u64 {
            return Err(AuthError::Future(e.version.wall - now_ms));
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(e.version.wall);
        let v = self.open(signed, at)?;
        if v.payload.act != unsigned {
            return Err(AuthError::Mismatch(format!(
                "the entry {}/{} differs from what was signed",
                e.kind, e.name
            )));
        }
        if let Some(revoked) = self.revocations.revoked_at(&v.operator.serial) {
            if e.version.wall / 1000 >= revoked {
                return Err(AuthError::Revoked(v.operator.name.to_string()));
            }
        }
        Self::role(&v.operator, &v.payload.act)?;
        Ok(v)
    }
}

impl Authority {
    /// Verifies an entry a node wrote in its own name (`node_signed`): a kind nodes may
    /// write, signed under the node context with the key of a valid, unrevoked node
    /// certificate of this cluster at the entry's version, by the node the version names
    /// as the writer, over exactly this kind, name, version and value. Returns the node.
    pub fn node_entry(&self, e: &Entry, now: SystemTime) -> Result<String, AuthError> {
        let r = self.node_entry_inner(e, now);
        if let Err(err) = &r {
            self.count("config_entry", err);
        }
        r
    }

    fn node_entry_inner(&self, e: &Entry, now: SystemTime) -> Result<String, AuthError> {
        let unsigned = Act::ConfigWrite {
            kind: e.kind,
            name: e.name.clone(),
            version: e.version.clone(),
            value: e.value.clone(),
        };
        let signed = e.auth.as_ref().ok_or_else(|| {
            AuthError::Malformed(format!("{}/{} carries no node signature", e.kind, e.name))
        })?;
        if e.value.is_none() {
            return Err(AuthError::Mismatch(format!(
                "a node may not delete {} entries",
                e.kind
            )));
        }
        let now_ms = ms(now);
        if e.version.wall > now_ms + MAX_ENTRY_FUTURE.as_millis() as u64 {
            return Err(AuthError::Future(e.version.wall - now_ms));
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(e.version.wall);
        let (cert, chain) = decode_certs(signed)?;
        let leaf = self
            .trust
            .verify_node_chain(&cert, &chain, at)
            .map_err(AuthError::Certificate)?;
        let payload =
            self.signed_payload(signed, &cert, super::node_signed::NODE_SIGNING_CONTEXT)?;
        if payload.act != unsigned {
            return Err(AuthError::Mismatch(format!(
                "the entry {}/{} differs from what was signed",
                e.kind, e.name
            )));
        }
        let node = leaf.id.node_name().to_string();
        if node != e.version.node {
            return Err(AuthError::Mismatch(format!(
                "signed by node {node} but written as {}: a node writes only in its own name",
                e.version.node
            )));
        }
        if let Some(revoked) = self.revocations.revoked_at(&leaf.serial) {
            if e.version.wall / 1000 >= revoked {
                return Err(AuthError::Revoked(node));
            }
        }
        Ok(node)
    }
}

impl crate::cluster_config::EntryCheck for Authority {
    fn check(&self, e: &Entry, now_ms: u64) -> Result<String, String> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms);
        if super::node_signed::node_writable(e.kind) {
            return self
                .node_entry(e, now)
                .map(|node| format!("node {node}"))
                .map_err(|err| err.to_string());
        }
        self.entry(e, now)
            .map(|v| format!("{} ({})", v.operator.name, v.operator.role))
            .map_err(|err| err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_refuse_replays_and_forget_after_the_window() {
        let mut n = Nonces::default();
        n.admit("a", 1_000).expect("first use");
        assert_eq!(n.admit("a", 2_000), Err(AuthError::Replayed));
        let later = 1_000 + 2 * MAX_COMMAND_SKEW.as_millis() as u64 + 2;
        n.admit("a", later)
            .expect("forgotten once it could no longer verify");
        assert_eq!(n.seen.len(), 1);
    }

    #[test]
    fn nonces_are_bounded() {
        let mut n = Nonces::default();
        for i in 0..MAX_NONCES {
            n.admit(&i.to_string(), 0).expect("room");
        }
        assert_eq!(n.admit("x", 0), Err(AuthError::Busy));
    }
}
