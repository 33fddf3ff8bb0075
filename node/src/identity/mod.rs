//! The node's identity on disk: its key, certificate (with the intermediate it chains
//! through), the cluster root, the root key (on the root holder only), a CA replica's
//! intermediate and its key (on replicas), the gossip keyring and the admin token. Every file is written
//! atomically; private material with mode 0600. Beside it: the running identity
//! (`live`: certificate, revocation list, expiry, a signal when they change), when to
//! renew (`renewal`) and gossip key rotation (`keyring`).

pub mod keyring;
pub mod live;
pub mod pem;
pub mod renewal;

pub use live::{CertInstallError, NodeIdentity};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_ca::{CertificateAuthority, ClusterName, NodeKey, NodeName};
use weft_gossip::{Keyring, TrustBundle};

use crate::store::files::{read_limited, write_atomic};

const MAX_FILE: u64 = 64 * 1024;

/// Reading or writing identity files failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// I/O on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file's content is unusable.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Who this node is, as recorded in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInfo {
    /// Cluster name.
    pub cluster: ClusterName,
    /// This node's name.
    pub name: NodeName,
}

/// A node certificate with the intermediates it chains through, as written to `node.crt`.
#[derive(Debug, Clone, Copy)]
pub struct CertChain<'a> {
    /// The node certificate, DER.
    pub leaf: &'a [u8],
    /// Its intermediates, DER (empty: issued by the root).
    pub chain: &'a [Vec<u8>],
}

/// Paths of the identity files in a data directory.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    dir: PathBuf,
}

/// Everything loaded from the identity files.
#[derive(Debug)]
pub struct Identity {
    /// Cluster and node name.
    pub info: ClusterInfo,
    /// The node key.
    pub key: NodeKey,
    /// The node certificate, DER.
    pub cert_der: Vec<u8>,
    /// The intermediates the node certificate chains through (empty: issued by the root).
    pub chain: Vec<Vec<u8>>,
    /// The cluster root certificate, DER.
    pub ca_der: Vec<u8>,
    /// The root CA, on the node that holds its key.
    pub ca: Option<CertificateAuthority>,
    /// This node's CA replica (its intermediate and key), on replicas.
    pub replica: Option<CertificateAuthority>,
    /// During a root rotation, on the root holder: the root being replaced.
    pub old_ca: Option<CertificateAuthority>,
    /// The roots this node trusts (`trust.json`; before any rotation, `ca.crt` alone).
    pub trust: TrustBundle,
    /// Gossip keys.
    pub keyring: Keyring,
}

impl Identity {
    /// The roots this identity trusts, as a (shared, updatable) `TrustRoot`.
    pub fn trust_root(&self) -> Result<weft_ca::TrustRoot, weft_ca::VerifyError> {
        let bad = |e: weft_gossip::RecordError| weft_ca::VerifyError::Malformed(e.to_string());
        weft_ca::TrustRoot::with_roots(
            self.info.cluster.clone(),
            self.trust.roots_der().map_err(bad)?,
            self.trust.retired_der().map_err(bad)?,
        )
    }
}

impl IdentityFiles {
    /// Identity files under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether this data directory already holds an identity.
    pub fn exists(&self) -> bool {
        self.path("cluster.json").exists()
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, IdentityError> {
        let p = self.path(name);
        read_limited(&p, MAX_FILE).map_err(|source| IdentityError::Io {
            path: p.display().to_string(),
            source,
        })
    }

    fn read_text(&self, name: &str) -> Result<String, IdentityError> {
        String::from_utf8(self.read(name)?).map_err(|_| self.corrupt(name, "not UTF-8"))
    }

    fn corrupt(&self, name: &str, message: impl Into<String>) -> IdentityError {
        IdentityError::Corrupt {
            path: self.path(name).display().to_string(),
            message: message.into(),
        }
    }

    fn write(&self, name: &str, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
        let p = self.path(name);
        write_atomic(&p, contents, mode).map_err(|source| IdentityError::Io {
            path: p.display().to_string(),
            source,
        })
    }

    fn read_cert(&self, name: &str) -> Result<Vec<u8>, IdentityError> {
        pem::decode("CERTIFICATE", &self.read_text(name)?)
            .ok_or_else(|| self.corrupt(name, "no PEM certificate"))
    }

    /// Loads the whole identity.
    pub fn load(&self) -> Result<Identity, IdentityError> {
        let info: ClusterInfo = serde_json::from_slice(&self.read("cluster.json")?)
            .map_err(|e| self.corrupt("cluster.json", e.to_string()))?;
        let key = NodeKey::from_pem(&self.read_text("node.key")?)
            .map_err(|e| self.corrupt("node.key", e.to_string()))?;
        let mut certs = pem::decode_all("CERTIFICATE", &self.read_text("node.crt")?).into_iter();
        let cert_der = certs
            .next()
            .ok_or_else(|| self.corrupt("node.crt", "no PEM certificate"))?;
        let chain: Vec<Vec<u8>> = certs.collect();
        let ca_der = self.read_cert("ca.crt")?;
        let replica = if self.path("replica.key").exists() {
            let key = NodeKey::from_pem(&self.read_text("replica.key")?)
                .map_err(|e| self.corrupt("replica.key", e.to_string()))?;
            let cert = self.read_cert("replica.crt")?;
            Some(
                CertificateAuthority::load(info.cluster.clone(), &cert, key)
                    .map_err(|e| self.corrupt("replica.crt", e.to_string()))?,
            )
        } else {
            None
        };
        let ca = if self.path("ca.key").exists() {
            let ca_key = NodeKey::from_pem(&self.read_text("ca.key")?)
                .map_err(|e| self.corrupt("ca.key", e.to_string()))?;
            Some(
                CertificateAuthority::load(info.cluster.clone(), &ca_der, ca_key)
                    .map_err(|e| self.corrupt("ca.key", e.to_string()))?,
            )
        } else {
            None
        };
        let old_ca = if self.path("ca.old.key").exists() {
            let key = NodeKey::from_pem(&self.read_text("ca.old.key")?)
                .map_err(|e| self.corrupt("ca.old.key", e.to_string()))?;
            let cert = self.read_cert("ca.old.crt")?;
            Some(
                CertificateAuthority::load(info.cluster.clone(), &cert, key)
                    .map_err(|e| self.corrupt("ca.old.key", e.to_string()))?,
            )
        } else {
            None
        };
        let trust = if self.path("trust.json").exists() {
            serde_json::from_slice(&self.read("trust.json")?)
                .map_err(|e| self.corrupt("trust.json", e.to_string()))?
        } else {
            TrustBundle::new(0, std::slice::from_ref(&ca_der), &[])
        };
        let keyring: Keyring = serde_json::from_slice(&self.read("gossip.keys")?)
            .map_err(|e| self.corrupt("gossip.keys", e.to_string()))?;
        Ok(Identity {
            info,
            key,
            old_ca,
            trust,
            cert_der,
            chain,
            ca_der,
            ca,
            replica,
            keyring,
        })
    }

    /// Writes a complete new identity (bootstrap or join). `cluster.json` goes last, so a
    /// crash part-way leaves no identity rather than half of one.
    pub fn save_new(
        &self,
        info: &ClusterInfo,
        key: &NodeKey,
        cert: CertChain<'_>,
        ca_der: &[u8],
        ca_key: Option<&NodeKey>,
        keyring: &Keyring,
    ) -> Result<(), IdentityError> {
        self.write("node.key", key.to_pem().as_bytes(), 0o600)?;
        self.save_cert(cert.leaf, cert.chain)?;
        self.write(
            "ca.crt",
            pem::encode("CERTIFICATE", ca_der).as_bytes(),
            0o644,
        )?;
        if let Some(k) = ca_key {
            self.write("ca.key", k.to_pem().as_bytes(), 0o600)?;
        }
        self.save_keyring(keyring)?;
        let json = serde_json::to_vec_pretty(info).unwrap_or_default();
        self.write("cluster.json", &json, 0o644)
    }

    /// The root key (PEM), on the node that holds it.
    pub fn ca_key_pem(&self) -> Result<Option<String>, IdentityError> {
        if !self.path("ca.key").exists() {
            return Ok(None);
        }
        self.read_text("ca.key").map(Some)
    }

    /// Persists the roots this node trusts: `trust.json`, and `ca.crt` as the current root.
    pub fn save_trust(&self, bundle: &TrustBundle) -> Result<(), IdentityError> {
        let current = bundle
            .roots_der()
            .ok()
            .and_then(|r| r.into_iter().next())
            .ok_or_else(|| self.corrupt("trust.json", "a bundle without roots"))?;
        let json = serde_json::to_vec_pretty(bundle).unwrap_or_default();
        self.write("trust.json", &json, 0o644)?;
        self.write(
            "ca.crt",
            pem::encode("CERTIFICATE", &current).as_bytes(),
            0o644,
        )
    }

    /// Starts a root rotation on the root holder: the current root and key move to
    /// `ca.old.*`, the new ones become `ca.key` (0600) and `ca.crt`.
    pub fn save_rotated_root(
        &self,
        old: (&NodeKey, &[u8]),
        new: (&NodeKey, &[u8]),
    ) -> Result<(), IdentityError> {
        self.write(
            "ca.old.crt",
            pem::encode("CERTIFICATE", old.1).as_bytes(),
            0o644,
        )?;
        self.write("ca.old.key", old.0.to_pem().as_bytes(), 0o600)?;
        self.write("ca.key", new.0.to_pem().as_bytes(), 0o600)?;
        self.write(
            "ca.crt",
            pem::encode("CERTIFICATE", new.1).as_bytes(),
            0o644,
        )
    }

    /// Ends a root rotation: the old root's key and certificate are deleted.
    pub fn remove_old_root(&self) -> Result<(), IdentityError> {
        self.remove(&["ca.old.key", "ca.old.crt"])
    }

    /// Deletes `names` in order (a missing file is fine).
    fn remove(&self, names: &[&str]) -> Result<(), IdentityError> {
        for name in names {
            let p = self.path(name);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IdentityError::Io {
                        path: p.display().to_string(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Makes this node the root holder (a restored backup): writes `ca.key` (0600).
    pub fn save_ca_key(&self, key: &NodeKey) -> Result<(), IdentityError> {
        self.write("ca.key", key.to_pem().as_bytes(), 0o600)
    }

    /// The cluster root certificate this node trusts (DER).
    pub fn root_cert(&self) -> Result<Vec<u8>, IdentityError> {
        self.read_cert("ca.crt")
    }

    /// Replaces the node certificate and its chain (renewal).
    pub fn save_cert(&self, cert_der: &[u8], chain: &[Vec<u8>]) -> Result<(), IdentityError> {
        let mut text = pem::encode("CERTIFICATE", cert_der);
        for c in chain {
            text.push_str(&pem::encode("CERTIFICATE", c));
        }
        self.write("node.crt", text.as_bytes(), 0o644)
    }

    /// Makes (or renews, with the same key) this node's CA replica: its intermediate, then
    /// its key (0600). The key's presence is what makes a replica, so a crash between the
    /// two leaves a node that is not (yet) one, never a key without its certificate.
    pub fn save_replica(&self, key: &NodeKey, cert_der: &[u8]) -> Result<(), IdentityError> {
        self.write(
            "replica.crt",
            pem::encode("CERTIFICATE", cert_der).as_bytes(),
            0o644,
        )?;
        self.write("replica.key", key.to_pem().as_bytes(), 0o600)
    }

    /// This node's replica key, if it is a replica (renewals keep the key).
    pub fn replica_key(&self) -> Result<Option<NodeKey>, IdentityError> {
        if !self.path("replica.key").exists() {
            return Ok(None);
        }
        NodeKey::from_pem(&self.read_text("replica.key")?)
            .map(Some)
            .map_err(|e| self.corrupt("replica.key", e.to_string()))
    }

    /// Stops being a replica: the key, then the intermediate, are removed.
    pub fn remove_replica(&self) -> Result<(), IdentityError> {
        self.remove(&["replica.key", "replica.crt"])
    }

    /// Replaces the gossip keyring.
    pub fn save_keyring(&self, keyring: &Keyring) -> Result<(), IdentityError> {
        let json = serde_json::to_vec(keyring).unwrap_or_default();
        self.write("gossip.keys", &json, 0o600)
    }

    /// Reads the admin token, creating it (0600) if missing.
    pub fn admin_token(&self) -> Result<String, IdentityError> {
        let name = "admin-token";
        if self.path(name).exists() {
            let t = self.read_text(name)?.trim().to_owned();
            if t.len() >= 32 {
                return Ok(t);
            }
        }
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let token = hex::encode(bytes);
        self.write(name, format!("{token}\n").as_bytes(), 0o600)?;
        Ok(token)
    }
}
