//! The running identity, shared by everything that needs to know who this node is and
//! whom it still trusts: the current certificate (swapped on renewal), the cluster root,
//! the revocation list every TLS verifier reads, and a signal (`changed`) that wakes open
//! peer connections when either changes so they can re-check whether they may stay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::Notify;
use tracing::{info, warn};
use weft_ca::{unix, LeafInfo, NodeKey, TrustRoot, VerifyError};
use weft_gossip::RevocationList;

use super::{ClusterInfo, IdentityError, IdentityFiles};
use crate::store::Store;
use crate::tls::{CertStore, Revocations, TlsError};

/// A renewed certificate could not be installed; the current one stays.
#[derive(Debug, thiserror::Error)]
pub enum CertInstallError {
    /// It does not chain to the root, or is not a node certificate.
    #[error("renewed certificate does not verify: {0}")]
    Verify(#[from] VerifyError),
    /// It names another node.
    #[error("renewed certificate is for {0}")]
    WrongNode(String),
    /// TLS refused it.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// It could not be saved.
    #[error(transparent)]
    Save(#[from] IdentityError),
}

/// Why a revoked node serves nothing, and what brings it back: its name and key are
/// refused everywhere, so only a new identity helps.
pub const REVOKED_HOW_TO_RECOVER: &str = "this node's certificate is revoked (weft node revoke): every member refuses it; to bring the host back, stop the agent, delete its data dir (/var/lib/weft), make a token on a member (weft token create) and start it with that token";

/// This node's identity while it runs.
pub struct NodeIdentity {
    /// Cluster and node name.
    pub info: ClusterInfo,
    /// The node key.
    pub key: NodeKey,
    /// The cluster root.
    pub trust: Arc<TrustRoot>,
    /// The identity files.
    pub files: IdentityFiles,
    /// Certificates presented by TLS.
    certs: CertStore,
    /// Current certificate (DER) and its parsed fields.
    cert: RwLock<(Vec<u8>, LeafInfo)>,
    /// The intermediates the current certificate chains through.
    chain: RwLock<Vec<Vec<u8>>>,
    /// `not_after` of the current certificate (Unix seconds), for cheap expiry checks.
    not_after: AtomicU64,
    /// Revocation list used by every verifier.
    revoked: Revocations,
    /// Where the revocation list is persisted.
    store: Store,
    /// The version of the trust bundle in force (0: the roots from the join or bootstrap).
    trust_version: AtomicU64,
    /// Woken when open peer connections must check again whether they may stay: a
    /// newer revocation list, or this node's own certificate expired.
    changed: Notify,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("name", &self.info.name)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// The running identity with certificate `cert_der`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        info: ClusterInfo,
        key: NodeKey,
        cert_der: Vec<u8>,
        chain: Vec<Vec<u8>>,
        certs: CertStore,
        trust: Arc<TrustRoot>,
        revoked: Revocations,
        files: IdentityFiles,
        store: Store,
        trust_version: u64,
    ) -> Result<Self, VerifyError> {
        let leaf = LeafInfo::parse(&cert_der)?;
        Ok(Self {
            info,
            key,
            trust,
            files,
            certs,
            not_after: AtomicU64::new(leaf.not_after_unix),
            cert: RwLock::new((cert_der, leaf)),
            chain: RwLock::new(chain),
            revoked,
            store,
            trust_version: AtomicU64::new(trust_version),
            changed: Notify::new(),
        })
    }

    /// The current certificate and its fields.
    pub fn cert(&self) -> (Vec<u8>, LeafInfo) {
        self.cert.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The intermediates the current certificate chains through.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        self.chain.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current certificate's fields.
    pub fn leaf(&self) -> LeafInfo {
        self.cert
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Installs a renewed certificate: on disk first, then in TLS. The caller publishes
    /// it in gossip.
    pub fn install_cert(
        &self,
        der: Vec<u8>,
        chain: Vec<Vec<u8>>,
    ) -> Result<LeafInfo, CertInstallError> {
        let leaf = self
            .trust
            .verify_node_chain(&der, &chain, SystemTime::now())?;
        if leaf.id.node_name() != &self.info.name {
            return Err(CertInstallError::WrongNode(leaf.id.to_string()));
        }
        self.certs
            .replace(&self.key, &der, &chain, &self.trust.ca_der())?;
        self.files.save_cert(&der, &chain)?;
        self.not_after.store(leaf.not_after_unix, Ordering::Relaxed);
        *self.chain.write().unwrap_or_else(|e| e.into_inner()) = chain;
        *self.cert.write().unwrap_or_else(|e| e.into_inner()) = (der, leaf.clone());
        Ok(leaf)
    }

    /// Whether this node's own certificate has expired (by the certificate clock).
    pub fn own_cert_expired(&self) -> bool {
        self.not_after.load(Ordering::Relaxed) <= unix(crate::clock::now())
    }

    /// Why this identity cannot carry traffic, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.own_cert_expired() {
            return Some("node certificate has expired");
        }
        let serial = self.leaf().serial;
        if self.is_revoked(&serial) {
            return Some(REVOKED_HOW_TO_RECOVER);
        }
        None
    }

    /// Whether a certificate serial is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_revoked(serial)
    }

    /// This node's store (for the audit trail of what it executed).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// When the certificate with `serial` was revoked (Unix seconds), if it was.
    pub fn revoked_at(&self, serial: &str) -> Option<u64> {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .revoked_at(serial)
    }

    /// The version of the revocation list in force.
    pub fn revocation_version(&self) -> u64 {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version
    }

    /// Merges `newest` into the list in force if it adds or expires anything: persisted,
    /// installed for every verifier, and every peer connection woken so that those of
    /// revoked nodes close now rather than at their next stream.
    pub fn adopt_revocations(&self, newest: RevocationList) {
        // A grow-only set: what this node already held stays until its certificate expired
        // (plus the grace for clocks), even if the list seen lacks it; the union of the
        // replicas' lists is compared by content (each replica counts its own versions).
        let mut merged = self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !merged.union_from(
            &newest,
            crate::clock::unix_secs(),
            weft_gossip::record::REVOCATION_GRACE_SECS,
        ) {
            return;
        }
        merged.version += 1;
        let newest = merged;
        info!(
            version = newest.version,
            revoked = newest.revoked.len(),
            "revocation list updated"
        );
        if let Err(e) = self.store.set_crl(&newest) {
            warn!(error = %e, "cannot persist the revocation list");
        }
        let own = self.leaf().serial;
        let newly_revoked = newest.is_revoked(&own) && !self.is_revoked(&own);
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = newest;
        self.changed.notify_waiters();
        if newly_revoked {
            tracing::error!("{REVOKED_HOW_TO_RECOVER}");
        }
    }

    /// The version of the trust bundle in force.
    pub fn trust_version(&self) -> u64 {
        self.trust_version.load(Ordering::SeqCst)
    }

    /// Adopts a verified trust bundle newer than the one in force: the roots every
    /// verifier uses change at once, the bundle is persisted, and this node presents the
    /// new current root from its next handshake on. Returns whether it changed anything.
    pub fn adopt_bundle(&self, bundle: &weft_gossip::TrustBundle) -> bool {
        if bundle.version <= self.trust_version() {
            return false;
        }
        let (Ok(roots), Ok(retired)) = (bundle.roots_der(), bundle.retired_der()) else {
            return false;
        };
        if let Err(e) = self.trust.set_roots(roots, retired) {
            warn!(error = %e, "cannot adopt the trust bundle");
            return false;
        }
        if let Err(e) = self.files.save_trust(bundle) {
            warn!(error = %e, "cannot persist the trust bundle");
        }
        let (der, _) = self.cert();
        if let Err(e) = self
            .certs
            .replace(&self.key, &der, &self.chain(), &self.trust.ca_der())
        {
            warn!(error = %e, "cannot present the new root");
        }
        self.trust_version.store(bundle.version, Ordering::SeqCst);
        info!(
            version = bundle.version,
            roots = bundle.roots.len(),
            retired = bundle.retired.len(),
            "trust bundle adopted"
        );
        self.changed.notify_waiters();
        true
    }

    /// Wakes every open peer connection to re-check itself (e.g. at own expiry).
    pub fn wake_connections(&self) {
        self.changed.notify_waiters();
    }

    /// Resolves at the next `adopt_revocations` or `wake_connections`.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

impl crate::authority::Revocations for NodeIdentity {
    fn revoked_at(&self, serial: &str) -> Option<u64> {
        NodeIdentity::revoked_at(self, serial)
    }
}
