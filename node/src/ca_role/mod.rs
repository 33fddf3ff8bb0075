//! The CA role of a replica (`CaRole`; the pure CA logic is the `weft-ca` crate): join
//! tokens, joins, renewals and revocations signed with the replica's own intermediate,
//! plus, on the node that holds the root key, replicas' intermediates, operator
//! credentials and the root's proof; and what a replica may refuse (`RefusalKind`).
//! Other members forward these requests here over mTLS QUIC (`rpc::control`). How
//! replicas share one cluster (token ownership, name claims, revocations) is `CA.md`.

pub mod backup;
pub mod names;
pub mod slot;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use weft_ca::{
    unix, CertificateAuthority, IssuedCert, IssuerInfo, JoinToken, LeafInfo, NodeKey, NodeName,
    OperatorName, Role, TokenRecord, TokenRefusal, TrustRoot,
};
use weft_gossip::{Gossip, RevocationList, Revoked};

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
fn operator_key(name: &impl std::fmt::Display) -> String {
    format!("operator:{name}")
}

/// How long after its certificate expired a revocation entry is kept (clock skew).
pub const PRUNE_GRACE: Duration = Duration::from_secs(weft_gossip::record::REVOCATION_GRACE_SECS);

/// Longest join-token lifetime accepted.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 86400);

/// Lifetime of a replica's intermediate; it is renewed once a third of it is left.
pub const REPLICA_TTL: Duration = Duration::from_secs(90 * 86400);

/// The CA role of one replica.
pub struct CaRole {
    /// This replica's node name.
    name: NodeName,
    /// Its intermediate and key (replaced in place when the root renews it).
    issuer: RwLock<Arc<CertificateAuthority>>,
    /// The root, on the node that holds its key.
    root: RwLock<Option<Arc<CertificateAuthority>>>,
    /// During a root rotation, on the root holder: the root being replaced (it signs the
    /// trust bundle too, so that nodes trusting only it adopt the new one).
    old_root: RwLock<Option<Arc<CertificateAuthority>>>,
    /// The roots this node trusts (shared; the current one is what tokens pin).
    trust: TrustRoot,
    store: Store,
    leaf_ttl: Duration,
    crl: Mutex<RevocationList>,
    /// Certificates issued by this replica since it started, and when it last issued one.
    issued: std::sync::atomic::AtomicU64,
    last_issue_unix: std::sync::atomic::AtomicU64,
    /// The signed form of the current list, made once per version (ECDSA signatures
    /// differ every time, and a changing value would be re-gossiped every round).
    signed: Mutex<Option<(u64, Vec<String>)>>,
}

impl std::fmt::Debug for CaRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRole")
            .field("leaf_ttl", &self.leaf_ttl)
            .finish_non_exhaustive()
    }
}

impl CaRole {
    /// The CA role of replica `name` issuing with `issuer` (its intermediate), with the
    /// root where this node holds it, keeping its records in `store`.
    pub fn new(
        name: NodeName,
        issuer: CertificateAuthority,
        root: Option<CertificateAuthority>,
        trust: TrustRoot,
        store: Store,
        leaf_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let crl = store.crl()?;
        Ok(Self {
            name,
            issuer: RwLock::new(Arc::new(issuer)),
            root: RwLock::new(root.map(Arc::new)),
            old_root: RwLock::new(None),
            trust,
            store,
            leaf_ttl,
            crl: Mutex::new(crl),
            issued: Default::default(),
            last_issue_unix: Default::default(),
            signed: Mutex::new(None),
        })
    }

    /// Certificates issued by this replica since the agent started.
    pub fn issued_count(&self) -> u64 {
        self.issued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When this replica last issued a certificate (Unix seconds; 0: not since start).
    pub fn last_issue_unix(&self) -> u64 {
        self.last_issue_unix
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn issuer(&self) -> Arc<CertificateAuthority> {
        self.issuer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// This replica's node name.
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// The current root certificate, DER.
    pub fn ca_cert_der(&self) -> Vec<u8> {
        self.trust.ca_der()
    }

    fn root_sha256(&self) -> [u8; 32] {
        self.trust.ca_sha256()
    }

    /// Whether this node holds the root key.
    pub fn holds_root(&self) -> bool {
        self.root
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Installs the root keys after a rotation step: `root` signs from now on, `old`
    /// (while the rotation runs) also signs the trust bundle.
    pub fn set_roots(&self, root: CertificateAuthority, old: Option<Arc<CertificateAuthority>>) {
        *self.root.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(root));
        *self.old_root.write().unwrap_or_else(|e| e.into_inner()) = old;
    }

    /// Forgets the old root's key (a rotation finished).
    pub fn drop_old_root(&self) {
        *self.old_root.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The root keys this holder has, current first (to sign a trust bundle).
    pub fn root_keys(&self) -> Vec<Arc<CertificateAuthority>> {
        let current = self.root.read().unwrap_or_else(|e| e.into_inner()).clone();
        let old = self
            .old_root
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        current.into_iter().chain(old).collect()
    }

    /// The current root with its key, on the root holder.
    pub fn current_root(&self) -> Option<Arc<CertificateAuthority>> {
        self.root.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The old root during a rotation.
    pub fn old_root(&self) -> Option<Arc<CertificateAuthority>> {
        self.old_root
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The chain a leaf issued here carries: this replica's intermediate.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.issuer().cert_der().to_vec()]
    }

    /// This replica's intermediate: serial and expiry.
    pub fn intermediate(&self) -> Option<IssuerInfo> {
        let issuer = self.issuer();
        weft_ca::parse_replica(issuer.cert_der(), issuer.cluster()).ok()
    }

    /// Installs a renewed intermediate (same key).
    pub fn replace_issuer(&self, issuer: CertificateAuthority) {
        *self.issuer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(issuer);
        *self.signed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The root, or the refusal naming why this replica cannot do `what`.
    fn root(&self, what: &str) -> Result<Arc<CertificateAuthority>, Refusal> {
        self.current_root().ok_or_else(|| {
            Refusal::new(
                RefusalKind::Unavailable,
                format!(
                    "{what} needs the root key, which {} does not hold",
                    self.name
                ),
            )
        })
    }

    /// Signs replica `node` an intermediate for `csr` (root holder only).
    pub fn sign_replica(
        &self,
        node: &NodeName,
        csr: &[u8],
        now: SystemTime,
    ) -> Result<IssuedCert, Refusal> {
        let root = self.root("signing a replica's intermediate")?;
        let issued = root
            .sign_replica_csr(csr, node, REPLICA_TTL, now)
            .map_err(|e| Refusal::new(RefusalKind::BadCsr, e.to_string()))?;
        let entry = NameEntry {
            serial: issued.serial.clone(),
            not_after_unix: issued.not_after_unix,
        };
        self.store
            .record_issued(&format!("replica:{node}"), &entry)?;
        info!(replica = %node, serial = %issued.serial, not_after_unix = issued.not_after_unix, "CA replica intermediate issued");
        Ok(issued)
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
        let token = JoinToken::generate_at(self.root_sha256(), self.name.clone());
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
                .issuer()
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
        self.issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.last_issue_unix.store(
            unix(SystemTime::now()),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// Checks a join's token (made by this replica, unused, unexpired, right secret) and
    /// that this replica issued no live certificate under the name; consumes nothing.
    /// The caller then claims the name cluster-wide (`names`) and calls `admit`.
    pub fn check_join(&self, req: &ParsedJoin, now: SystemTime) -> Result<TokenRecord, Refusal> {
        let id = req.token.id().clone();
        let refuse = |kind, message: String| {
            warn!(token_id = %id, node = %req.name, reason = %message, "join refused");
            Refusal::new(kind, message)
        };
        if req.token.ca_hash() != self.root_sha256() {
            return Err(refuse(
                RefusalKind::BadToken,
                format!("join token {id} was made for another cluster's CA"),
            ));
        }
        match req.token.replica() {
            Some(r) if *r != self.name => {
                return Err(refuse(
                    RefusalKind::BadToken,
                    format!(
                        "join token {id} was made by CA replica {r}, not {}: only {r} consumes it",
                        self.name
                    ),
                ))
            }
            None if !self.holds_root() => {
                return Err(refuse(
                    RefusalKind::BadToken,
                    format!("join token {id} predates replicas: only the root holder consumes it"),
                ))
            }
            _ => {}
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
        Ok(record)
    }

    /// Admits a joining node whose token `check_join` accepted and whose name was
    /// claimed: signs the CSR, consumes the token (exactly one concurrent join with a
    /// token succeeds), records the certificate.
    pub fn admit(
        &self,
        req: &ParsedJoin,
        record: &TokenRecord,
        now: SystemTime,
    ) -> Result<IssuedCert, Refusal> {
        let id = req.token.id().clone();
        let refuse = |kind, message: String| {
            warn!(token_id = %id, node = %req.name, reason = %message, "join refused");
            Refusal::new(kind, message)
        };
        let issued = self
            .sign(&req.csr, &req.name, now)
            .map_err(|r| refuse(r.kind, r.message))?;
        match self.store.consume_token(record)? {
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
        info!(token_id = %id, node = %req.name, serial = %issued.serial, replica = %self.name, "node joined; certificate issued");
        Ok(issued)
    }

    /// Admits a joining node in one step, where no other replica needs asking (tests and
    /// single-replica clusters): `check_join` then `admit`.
    pub fn join(&self, req: &ParsedJoin, now: SystemTime) -> Result<IssuedCert, Refusal> {
        let record = self.check_join(req, now)?;
        self.admit(req, &record, now)
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

    /// Revokes every unexpired certificate this replica issued to `node`, and `live`
    /// (serial, expiry): the certificate gossip shows the node holding, which another
    /// replica may have issued. Returns the serials newly revoked (expired ones need no
    /// entry: nothing accepts them anyway). The other replicas add what they issued to it
    /// when they see the entry (`publish_revocations`).
    pub fn revoke(
        &self,
        node: &NodeName,
        live: Vec<(String, u64)>,
        reason: &str,
        now: SystemTime,
    ) -> Result<Vec<String>, Refusal> {
        if self.store.serials_of(node.as_str())?.is_empty() && live.is_empty() {
            return Err(Refusal::new(
                RefusalKind::BadRequest,
                format!(
                    "no certificate of {node} is known to CA replica {}: it issued none, and {node} is not in its member list",
                    self.name
                ),
            ));
        }
        let mut serials = self.store.unexpired_serials_of(node.as_str(), unix(now))?;
        for (serial, not_after) in live {
            if not_after > unix(now) && !serials.iter().any(|(s, _)| *s == serial) {
                serials.push((serial, not_after));
            }
        }
        self.revoke_serials(node, false, reason, serials, now)
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
        operator: bool,
        reason: &str,
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
                    operator,
                    signer: Some(self.name.clone()),
                    reason: reason
                        .chars()
                        .take(weft_gossip::record::MAX_REASON)
                        .collect(),
                });
                added.push(serial);
            }
        }
        let issuer = self.issuer();
        if weft_gossip::record::shard_signed(&next, |m| issuer.sign(m).unwrap_or_default())
            .is_none()
        {
            warn!(name = %label, entries = next.revoked.len(), "revocation refused: the list would not fit in gossip");
            return Err(Refusal::new(
                RefusalKind::Unavailable,
                format!(
                    "the revocation list would hold {} entries, more than gossip carries ({} values of {} bytes); nothing was revoked. Entries leave the list when their certificates expire (leaf_ttl); retry then",
                    next.revoked.len(),
                    weft_gossip::record::MAX_CRL_SHARDS,
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
    ) -> Result<(IssuedCert, Vec<Vec<u8>>), Refusal> {
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

    /// Issues an operator certificate: by the root where this node holds it; otherwise
    /// (the root kept offline) by this replica's intermediate, for no longer than the
    /// intermediate itself lasts. Returns it with the chain it needs.
    fn issue_operator(
        &self,
        name: &OperatorName,
        role: Role,
        ttl: Duration,
        csr: &[u8],
        now: SystemTime,
    ) -> Result<(IssuedCert, Vec<Vec<u8>>), Refusal> {
        let (issuer, chain, ttl) = match self.current_root() {
            Some(root) => (root, Vec::new(), ttl),
            None => {
                let left = self
                    .intermediate()
                    .map_or(0, |i| i.not_after_unix.saturating_sub(unix(now)));
                (
                    self.issuer(),
                    self.chain(),
                    ttl.min(Duration::from_secs(left)),
                )
            }
        };
        let issued = issuer
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
        info!(operator = %name, %role, serial = %issued.serial, by_replica = !chain.is_empty(), "operator credential issued");
        Ok((issued, chain))
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
        let (issued, chain) = self.issue_operator(&name, Role::Admin, ttl, &csr, now)?;
        Ok(crate::authority::Credential::new(key, issued.der, chain))
    }

    /// Revokes every credential of operator `name`.
    pub fn revoke_operator(
        &self,
        name: &OperatorName,
        reason: &str,
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
        let added = self.revoke_serials(&label, true, reason, serials, now)?;
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
        let root = self.current_root()?;
        let msg = weft_gossip::record::ca_claim(root.cluster().as_str(), name.as_str(), generation);
        root.sign(&msg)
            .ok()
            .map(|sig| crate::rpc::messages::b64(&sig))
    }

    /// The revocation list, signed with this replica's intermediate and split into gossip
    /// values (None while empty, or if it would not fit).
    pub fn signed_crl(&self) -> Option<Vec<String>> {
        let crl = self.crl.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if crl.version == 0 {
            return None;
        }
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        match &*signed {
            Some((v, s)) if *v == crl.version => Some(s.clone()),
            _ => {
                let issuer = self.issuer();
                let shards = weft_gossip::record::shard_signed(&crl, |m| {
                    issuer.sign(m).unwrap_or_default()
                })?;
                *signed = Some((crl.version, shards.clone()));
                Some(shards)
            }
        }
    }

    /// The current revocation list.
    pub fn crl(&self) -> RevocationList {
        self.crl.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Merges what every replica published (the union in gossip) into this replica's own
    /// list, completes it with the certificates this replica issued to nodes another
    /// replica revoked, and publishes it. The union survives the loss of any replica (or
    /// of this one's store): each replica republishes all of it. Entries leave once their
    /// certificate has been expired for `PRUNE_GRACE`.
    pub async fn publish_revocations(&self, identity: &NodeIdentity, gossip: &Gossip) {
        let seen = gossip.revocations();
        let now = unix(SystemTime::now());
        let own = {
            let mut crl = self.crl.lock().unwrap_or_else(|e| e.into_inner());
            let mut next = crl.clone();
            let mut changed = next.union_from(&seen, now, PRUNE_GRACE.as_secs());
            // A node revoked at another replica: the certificates issued here to it before
            // that moment are revoked too (the other replica did not know their serials).
            let mut completions = Vec::new();
            for r in &seen.revoked {
                let issued_before = r.revoked_at_unix;
                let key = if r.operator {
                    operator_key(&r.node)
                } else {
                    r.node.to_string()
                };
                match self.store.unexpired_serials_of(&key, now) {
                    Ok(serials) => {
                        for (serial, not_after) in serials {
                            let issued_at = not_after.saturating_sub(self.leaf_ttl.as_secs());
                            if issued_at <= issued_before && !next.is_revoked(&serial) {
                                completions.push(Revoked {
                                    node: r.node.clone(),
                                    serial,
                                    revoked_at_unix: issued_before,
                                    not_after_unix: not_after,
                                    operator: r.operator,
                                    signer: Some(self.name.clone()),
                                    reason: r.reason.clone(),
                                });
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot read issued serials"),
                }
            }
            for c in completions {
                if !next.is_revoked(&c.serial) {
                    info!(node = %c.node, serial = %c.serial, "revoking a certificate this replica issued to a node revoked elsewhere");
                    next.revoked.push(c);
                    changed = true;
                }
            }
            if changed {
                next.version += 1;
                if let Err(e) = self.store.set_crl(&next) {
                    warn!(error = %e, "cannot store the merged revocation list");
                    return;
                }
                *crl = next;
            }
            crl.clone()
        };
        match self.signed_crl() {
            Some(shards) => gossip.publish_crl_shards(shards).await,
            None if own.version > 0 => {
                warn!(entries = own.revoked.len(), "the merged revocation list is over what gossip carries; peers keep the lists they have");
            }
            None => {}
        }
        identity.adopt_revocations(own);
    }
}

#[cfg(test)]
mod tests;
