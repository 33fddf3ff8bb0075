//! The CA role of the node that holds the cluster's CA key (`CaRole`; the pure CA logic
//! is the `weft-ca` crate): join tokens, joins, renewals and revocations, and what the
//! CA may refuse (`RefusalKind`). Other members forward these requests here over mTLS
//! QUIC (`rpc::control`).

pub mod backup;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use weft_ca::{
    unix, CertificateAuthority, IssuedCert, JoinToken, LeafInfo, NodeKey, NodeName, OperatorName,
    Role, TokenRefusal,
};
use weft_gossip::{encode_signed, Gossip, RevocationList, Revoked};

use serde::{Deserialize, Serialize};

use crate::identity::NodeIdentity;
use crate::store::{Consume, NameEntry, Store, StoreError};

/// Why a join (or renewal) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// Unknown, used, expired or wrong token.
    BadToken,
    /// Another node holds a valid certificate for this name.
    NameTaken,
    /// The CSR asks for something the CA does not grant.
    BadCsr,
    /// The certificate is revoked.
    Revoked,
    /// Too many requests.
    RateLimited,
    /// The CA cannot be reached or failed.
    Unavailable,
    /// The request is malformed.
    BadRequest,
    /// Not signed by an operator allowed to do it.
    Forbidden,
}

/// A join request whose fields all parsed (from `rpc::JoinRequest`).
#[derive(Debug)]
pub struct ParsedJoin {
    /// Name asked for.
    pub name: NodeName,
    /// CSR DER.
    pub csr: Vec<u8>,
    /// The token.
    pub token: JoinToken,
}

/// A refused request: its kind and a one-line reason for the requester.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Category.
    pub kind: RefusalKind,
    /// Reason.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        warn!(error = %e, "CA store failure");
        Refusal::new(
            RefusalKind::Unavailable,
            "the CA's store failed; see its log",
        )
    }
}

/// What the CA remembers of an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// Name.
    pub name: OperatorName,
    /// Role.
    pub role: Role,
    /// Serial of its newest certificate.
    pub serial: String,
    /// Expiry of that certificate, Unix seconds.
    pub not_after_unix: u64,
    /// When it was issued, Unix seconds.
    pub issued_at_unix: u64,
    /// Revoked (every certificate it had).
    pub revoked: bool,
}

/// Shortest and longest operator credential lifetimes.
pub const OPERATOR_TTL: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(3600)..=Duration::from_secs(400 * 86400);

/// The store's index key of an operator's serials (never a valid node name).
fn operator_key(name: &OperatorName) -> String {
    format!("operator:{name}")
}

/// How long after its certificate expired a revocation entry is kept (clock skew).
pub const PRUNE_GRACE: Duration = Duration::from_secs(weft_gossip::record::REVOCATION_GRACE_SECS);

/// Longest join-token lifetime accepted.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 86400);

/// The CA role.
pub struct CaRole {
    ca: CertificateAuthority,
    store: Store,
    leaf_ttl: Duration,
    crl: Mutex<RevocationList>,
    /// The signed form of the current list, made once per version (ECDSA signatures
    /// differ every time, and a changing value would be re-gossiped every round).
    signed: Mutex<Option<(u64, String)>>,
}

impl std::fmt::Debug for CaRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRole")
            .field("leaf_ttl", &self.leaf_ttl)
            .finish_non_exhaustive()
    }
}

impl CaRole {
    /// The CA role over `ca`, keeping its records in `store`.
    pub fn new(
        ca: CertificateAuthority,
        store: Store,
        leaf_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let crl = store.crl()?;
        Ok(Self {
            ca,
            store,
            leaf_ttl,
            crl: Mutex::new(crl),
            signed: Mutex::new(None),
        })
    }

    /// The root certificate, DER.
    pub fn ca_cert_der(&self) -> &[u8] {
        self.ca.cert_der()
    }

    /// Leaf lifetime this CA issues.
    pub fn leaf_ttl(&self) -> Duration {
        self.leaf_ttl
    }

    /// Creates and stores a join token valid for `ttl`.
    pub fn create_token(
        &self,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(JoinToken, u64), Refusal> {
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Refusal::new(
                RefusalKind::BadRequest,
                "token ttl must be between 1s and 7 days",
            ));
        }
        let token = JoinToken::generate(self.ca.cert_sha256());
        let expires = unix(now) + ttl.as_secs();
        self.store.put_token(&token.record(expires))?;
        let _ = self.store.prune_tokens(unix(now));
        info!(token_id = %token.id(), expires_at_unix = expires, "join token created");
        Ok((token, expires))
    }

    /// Signs a CSR for `name`, retrying on the (astronomically unlikely) serial collision.
    fn sign(&self, csr: &[u8], name: &NodeName, now: SystemTime) -> Result<IssuedCert, Refusal> {
        for _ in 0..4 {
            let issued = self
                .ca
                .sign_node_csr(csr, name, self.leaf_ttl, now)
                .map_err(|e| Refusal::new(RefusalKind::BadCsr, e.to_string()))?;
            if self
                .store
                .serials_of(name.as_str())?
                .contains(&issued.serial)
            {
                continue;
            }
            return Ok(issued);
        }
        Err(Refusal::new(
            RefusalKind::Unavailable,
            "could not pick a fresh serial",
        ))
    }

    fn record(&self, name: &NodeName, issued: &IssuedCert) -> Result<(), Refusal> {
        let entry = NameEntry {
            serial: issued.serial.clone(),
            not_after_unix: issued.not_after_unix,
        };
        if !self.store.record_issued(name.as_str(), &entry)? {
            return Err(Refusal::new(
                RefusalKind::Unavailable,
                "serial collision; retry",
            ));
        }
        Ok(())
    }

    /// Admits a joining node: checks the token and the name, signs the CSR, consumes the
    /// token (exactly one concurrent join with a token succeeds).
    pub fn join(&self, req: &ParsedJoin, now: SystemTime) -> Result<IssuedCert, Refusal> {
        let id = req.token.id().clone();
        let refuse = |kind, message: String| {
            warn!(token_id = %id, node = %req.name, reason = %message, "join refused");
            Refusal::new(kind, message)
        };
        if req.token.ca_hash() != self.ca.cert_sha256() {
            return Err(refuse(
                RefusalKind::BadToken,
                format!("join token {id} was made for another cluster's CA"),
            ));
        }
        let Some(record) = self.store.token(&id)? else {
            return Err(refuse(
                RefusalKind::BadToken,
                TokenRefusal::Unknown(id.clone()).to_string(),
            ));
        };
        if let Err(e) = record.check(&req.token.secret_hash(), unix(now)) {
            return Err(refuse(RefusalKind::BadToken, e.to_string()));
        }
        if let Some(entry) = self.store.name(req.name.as_str())? {
            let revoked = self
                .crl
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_revoked(&entry.serial);
            if entry.not_after_unix > unix(now) && !revoked {
                return Err(refuse(
                    RefusalKind::NameTaken,
                    format!(
                        "node name {} is taken by a node with a valid certificate",
                        req.name
                    ),
                ));
            }
        }
        let issued = self
            .sign(&req.csr, &req.name, now)
            .map_err(|r| refuse(r.kind, r.message))?;
        match self.store.consume_token(&record)? {
            Consume::Consumed => {}
            Consume::Raced => {
                return Err(refuse(
                    RefusalKind::BadToken,
                    TokenRefusal::Used(id.clone()).to_string(),
                ))
            }
            Consume::Missing => {
                return Err(refuse(
                    RefusalKind::BadToken,
                    TokenRefusal::Unknown(id.clone()).to_string(),
                ))
            }
        }
        self.record(&req.name, &issued)?;
        info!(token_id = %id, node = %req.name, serial = %issued.serial, "node joined; certificate issued");
        Ok(issued)
    }

    /// Renews the certificate of an authenticated node (`peer` is its current,
    /// verified certificate).
    pub fn renew(
        &self,
        peer: &LeafInfo,
        csr: &[u8],
        now: SystemTime,
    ) -> Result<IssuedCert, Refusal> {
        let name = peer.id.node_name();
        if self
            .crl
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_revoked(&peer.serial)
        {
            warn!(node = %name, serial = %peer.serial, "renewal refused: certificate revoked");
            return Err(Refusal::new(
                RefusalKind::Revoked,
                format!("certificate of {name} is revoked"),
            ));
        }
        let issued = self.sign(csr, name, now)?;
        self.record(name, &issued)?;
        info!(node = %name, serial = %issued.serial, "certificate renewed");
        Ok(issued)
    }

    /// Issues this node's own certificate (bootstrap, and renewal on the CA node).
    pub fn issue_own(
        &self,
        name: &NodeName,
        csr: &[u8],
        now: SystemTime,
    ) -> Result<IssuedCert, Refusal> {
        let issued = self.sign(csr, name, now)?;
        self.record(name, &issued)?;
        Ok(issued)
    }

    /// Revokes every unexpired certificate issued to `node`; returns the serials newly
    /// revoked (expired ones need no entry: nothing accepts them anyway).
    pub fn revoke(&self, node: &NodeName, now: SystemTime) -> Result<Vec<String>, Refusal> {
        if self.store.serials_of(node.as_str())?.is_empty() {
            return Err(Refusal::new(
                RefusalKind::BadRequest,
                format!("no certificate was issued to {node}"),
            ));
        }
        let serials = self.store.unexpired_serials_of(node.as_str(), unix(now))?;
        self.revoke_serials(node, serials, now)
    }

    /// Drops entries whose certificate expired more than `PRUNE_GRACE` ago; returns how
    /// many were dropped (the list's version moves on when any were).
    pub fn prune_revocations(&self, now: SystemTime) -> Result<usize, Refusal> {
        let mut crl = self.crl.lock().unwrap_or_else(|e| e.into_inner());
        let cutoff = unix(now).saturating_sub(PRUNE_GRACE.as_secs());
        let mut next = crl.clone();
        next.revoked
            .retain(|r| r.not_after_unix == 0 || r.not_after_unix > cutoff);
        let dropped = crl.revoked.len() - next.revoked.len();
        if dropped > 0 {
            next.version += 1;
            self.store.set_crl(&next)?;
            *crl = next;
            info!(
                dropped,
                left = crl.revoked.len(),
                "expired certificates pruned from the revocation list"
            );
        }
        Ok(dropped)
    }

    /// Adds `serials` (of `label`, a node or an operator, with their expiry) to the
    /// revocation list. A list that would no longer fit in one gossip value is refused
    /// with the reason, never published in part.
    fn revoke_serials(
        &self,
        label: &NodeName,
        serials: Vec<(String, u64)>,
        now: SystemTime,
    ) -> Result<Vec<String>, Refusal> {
        let mut crl = self.crl.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = crl.clone();
        let mut added = Vec::new();
        for (serial, not_after_unix) in serials {
            if !next.is_revoked(&serial) {
                next.revoked.push(Revoked {
                    node: label.clone(),
                    serial: serial.clone(),
                    revoked_at_unix: unix(now),
                    not_after_unix,
                });
                added.push(serial);
            }
        }
        let size = encode_signed(&next, |m| self.ca.sign(m).unwrap_or_default()).len();
        if size > weft_gossip::record::MAX_SIGNED_VALUE {
            warn!(name = %label, entries = next.revoked.len(), size, "revocation refused: the list would not fit in gossip");
            return Err(Refusal::new(
                RefusalKind::Unavailable,
                format!(
                    "the revocation list would be {size} bytes with {} entries, over gossip's {} byte limit; nothing was revoked. Entries leave the list when their certificates expire (leaf_ttl); retry then",
                    next.revoked.len(),
                    weft_gossip::record::MAX_SIGNED_VALUE
                ),
            ));
        }
        if !added.is_empty() {
            next.version += 1;
            self.store.set_crl(&next)?;
            *crl = next;
            warn!(name = %label, serials = ?added, "certificates revoked");
        }
        Ok(added)
    }

    /// Issues an operator credential's certificate for `csr` (which may name only the
    /// operator). An existing, unrevoked operator of that name is refused: revoke first.
    pub fn create_operator(
        &self,
        name: &OperatorName,
        role: Role,
        ttl: Duration,
        csr: &[u8],
        now: SystemTime,
    ) -> Result<IssuedCert, Refusal> {
        if !OPERATOR_TTL.contains(&ttl) {
            return Err(Refusal::new(
                RefusalKind::BadRequest,
                "operator credential ttl must be between 1h and 400d",
            ));
        }
        if let Some(r) = self.store.operator::<OperatorRecord>(name.as_str())? {
            if !r.revoked && r.not_after_unix > unix(now) {
                return Err(Refusal::new(
                    RefusalKind::NameTaken,
                    format!("operator {name} exists; `weft operator revoke {name}` first"),
                ));
            }
        }
        self.issue_operator(name, role, ttl, csr, now)
    }

    fn issue_operator(
        &self,
        name: &OperatorName,
        role: Role,
        ttl: Duration,
        csr: &[u8],
        now: SystemTime,
    ) -> Result<IssuedCert, Refusal> {
        let issued = self
            .ca
            .sign_operator_csr(csr, name, role, ttl, now)
            .map_err(|e| Refusal::new(RefusalKind::BadCsr, e.to_string()))?;
        let entry = NameEntry {
            serial: issued.serial.clone(),
            not_after_unix: issued.not_after_unix,
        };
        if !self.store.record_issued(&operator_key(name), &entry)? {
            return Err(Refusal::new(
                RefusalKind::Unavailable,
                "serial collision; retry",
            ));
        }
        self.store.put_operator(
            name.as_str(),
            &OperatorRecord {
                name: name.clone(),
                role,
                serial: issued.serial.clone(),
                not_after_unix: issued.not_after_unix,
                issued_at_unix: unix(now),
                revoked: false,
            },
        )?;
        info!(operator = %name, %role, serial = %issued.serial, "operator credential issued");
        Ok(issued)
    }

    /// Issues this node's own admin credential (bootstrap, upgrade, and before the old
    /// one expires): a fresh key, role admin, operator name `admin`.
    pub fn issue_admin_credential(
        &self,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<crate::authority::Credential, Refusal> {
        let name = OperatorName::new("admin")
            .map_err(|e| Refusal::new(RefusalKind::BadRequest, e.to_string()))?;
        let key = NodeKey::generate()
            .map_err(|e| Refusal::new(RefusalKind::Unavailable, e.to_string()))?;
        let csr = key
            .named_csr_der(name.as_str())
            .map_err(|e| Refusal::new(RefusalKind::Unavailable, e.to_string()))?;
        let issued = self.issue_operator(&name, Role::Admin, ttl, &csr, now)?;
        Ok(crate::authority::Credential::new(key, issued.der))
    }

    /// Revokes every credential of operator `name`.
    pub fn revoke_operator(
        &self,
        name: &OperatorName,
        now: SystemTime,
    ) -> Result<Vec<String>, Refusal> {
        let Some(mut record) = self.store.operator::<OperatorRecord>(name.as_str())? else {
            return Err(Refusal::new(
                RefusalKind::BadRequest,
                format!("no operator {name}"),
            ));
        };
        let serials = self
            .store
            .unexpired_serials_of(&operator_key(name), unix(now))?;
        let label = NodeName::new(name.as_str())
            .map_err(|e| Refusal::new(RefusalKind::BadRequest, e.to_string()))?;
        let added = self.revoke_serials(&label, serials, now)?;
        record.revoked = true;
        self.store.put_operator(name.as_str(), &record)?;
        Ok(added)
    }

    /// Every operator the CA issued a credential to.
    pub fn operators(&self) -> Result<Vec<OperatorRecord>, Refusal> {
        Ok(self.store.operators()?)
    }

    /// The proof, for this node's gossip record, that node `name` in run `generation`
    /// holds the root key (base64url of the root's signature over `ca_claim`).
    pub fn ca_proof(&self, name: &NodeName, generation: u64) -> Option<String> {
        let msg =
            weft_gossip::record::ca_claim(self.ca.cluster().as_str(), name.as_str(), generation);
        self.ca
            .sign(&msg)
            .ok()
            .map(|sig| crate::rpc::messages::b64(&sig))
    }

    /// The revocation list, signed by the CA, for gossip (None while empty).
    pub fn signed_crl(&self) -> Option<String> {
        let crl = self.crl.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if crl.version == 0 {
            return None;
        }
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        match &*signed {
            Some((v, s)) if *v == crl.version => Some(s.clone()),
            _ => {
                let s = encode_signed(&crl, |m| self.ca.sign(m).unwrap_or_default());
                *signed = Some((crl.version, s.clone()));
                Some(s)
            }
        }
    }

    /// The current revocation list.
    pub fn crl(&self) -> RevocationList {
        self.crl.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes this CA's own revocation list the one in force here and publishes it in
    /// gossip, unless gossip already carries a newer one (which `identity` adopts).
    ///
    /// A list in gossip at least as new as this CA's that holds entries this CA lacks is
    /// CA-signed, so it is this CA's own from before a lost store: its entries are merged
    /// in (union) at a version above both, so that nothing revoked before the loss comes
    /// back and revocations made from now on are not ignored as old.
    pub async fn publish_revocations(&self, identity: &NodeIdentity, gossip: &Gossip) {
        let seen = gossip.revocations();
        let mut own = self.crl();
        let lacking = seen.revoked.iter().any(|r| !own.is_revoked(&r.serial));
        if seen.version >= own.version && lacking {
            let mut crl = self.crl.lock().unwrap_or_else(|e| e.into_inner());
            let mut merged = crl.clone();
            for r in &seen.revoked {
                if !merged.is_revoked(&r.serial) {
                    merged.revoked.push(r.clone());
                }
            }
            merged.version = seen.version.max(crl.version) + 1;
            if let Err(e) = self.store.set_crl(&merged) {
                warn!(error = %e, "cannot store the merged revocation list");
                return;
            }
            warn!(
                version = merged.version,
                store_had = crl.version,
                "merged revocations from gossip that this CA's store had lost"
            );
            *crl = merged.clone();
            own = merged;
        }
        if let Some(signed) = self.signed_crl() {
            gossip.publish_crl(signed).await;
        }
        identity.adopt_revocations(own);
    }
}

#[cfg(test)]
mod tests;
