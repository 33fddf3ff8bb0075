//! CA backup and restore: the root key, the root certificate and the CA's records
//! (tokens, issued names and serials, operators, the revocation list) in one file,
//! encrypted with a passphrase in the age format (scrypt + ChaCha20-Poly1305, via the
//! `age` crate: a standard format the `age` tool can also open, and no home-made crypto).
//! Losing the CA node's disk then loses nothing: `weft ca restore` makes another member
//! the root holder.

use std::io::{Read as _, Write as _};

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};
use weft_ca::{ClusterName, NodeKey};

use crate::store::CaState;

/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 12;
/// Largest backup file read.
pub const MAX_BACKUP: u64 = 64 << 20;

/// Why a backup could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The passphrase is too short.
    #[error("WEFT_CA_PASSPHRASE must be at least {MIN_PASSPHRASE} characters")]
    WeakPassphrase,
    /// Decryption failed: wrong passphrase or not a backup.
    #[error("the backup does not open with this passphrase (WEFT_CA_PASSPHRASE), or it is not a weft CA backup: {0}")]
    Open(String),
    /// Encryption failed.
    #[error("cannot encrypt the backup: {0}")]
    Seal(String),
    /// The decrypted content is not a backup of this format.
    #[error("the backup is damaged or from another version: {0}")]
    Format(String),
    /// The backup belongs to another cluster or root.
    #[error("this backup is of {found}, but this node belongs to {expected}: restore it on a member of that cluster")]
    OtherCluster {
        /// The node's cluster and root.
        expected: String,
        /// The backup's.
        found: String,
    },
}

/// What a backup holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaBackup {
    /// Format version (1).
    pub version: u32,
    /// The cluster.
    pub cluster: ClusterName,
    /// The root certificate, DER.
    pub root_cert: Vec<u8>,
    /// The root key, PEM (PKCS#8).
    pub root_key_pem: String,
    /// The CA's records.
    pub state: CaState,
    /// When it was made, Unix seconds.
    pub made_at_unix: u64,
}

impl CaBackup {
    /// Checks that the root key loads and belongs to `root_cert`.
    pub fn check(&self) -> Result<NodeKey, BackupError> {
        let key = NodeKey::from_pem(&self.root_key_pem)
            .map_err(|e| BackupError::Format(format!("root key: {e}")))?;
        weft_ca::CertificateAuthority::load(self.cluster.clone(), &self.root_cert, key)
            .map_err(|e| BackupError::Format(format!("root key and certificate: {e}")))?;
        NodeKey::from_pem(&self.root_key_pem).map_err(|e| BackupError::Format(e.to_string()))
    }
}

fn passphrase(p: &str) -> Result<SecretString, BackupError> {
    if p.chars().count() < MIN_PASSPHRASE {
        return Err(BackupError::WeakPassphrase);
    }
    Ok(SecretString::from(p.to_owned()))
}

/// Encrypts `backup` with `pass`.
pub fn seal(backup: &CaBackup, pass: &str) -> Result<Vec<u8>, BackupError> {
    let plain = serde_json::to_vec(backup).map_err(|e| BackupError::Seal(e.to_string()))?;
    let encryptor = age::Encryptor::with_user_passphrase(passphrase(pass)?);
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| BackupError::Seal(e.to_string()))?;
    writer
        .write_all(&plain)
        .map_err(|e| BackupError::Seal(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| BackupError::Seal(e.to_string()))?;
    Ok(out)
}

/// Decrypts a backup with `pass` and checks its key against its certificate.
pub fn open(sealed: &[u8], pass: &str) -> Result<CaBackup, BackupError> {
    let decryptor = age::Decryptor::new(sealed).map_err(|e| BackupError::Open(e.to_string()))?;
    let identity = age::scrypt::Identity::new(SecretString::from(pass.to_owned()));
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| BackupError::Open(e.to_string()))?;
    let mut plain = Vec::new();
    reader
        .take(MAX_BACKUP)
        .read_to_end(&mut plain)
        .map_err(|e| BackupError::Open(e.to_string()))?;
    let backup: CaBackup =
        serde_json::from_slice(&plain).map_err(|e| BackupError::Format(e.to_string()))?;
    if backup.version != 1 {
        return Err(BackupError::Format(format!("version {}", backup.version)));
    }
    backup.check()?;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn backup() -> CaBackup {
        let cluster = ClusterName::new("weft").expect("valid");
        let (ca, key) = weft_ca::CertificateAuthority::create(
            cluster.clone(),
            SystemTime::now(),
            Duration::from_secs(86400),
        )
        .expect("ca");
        CaBackup {
            version: 1,
            cluster,
            root_cert: ca.cert_der().to_vec(),
            root_key_pem: key.to_pem(),
            state: CaState::default(),
            made_at_unix: 1,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let b = backup();
        assert!(matches!(
            seal(&b, "short"),
            Err(BackupError::WeakPassphrase)
        ));
        let sealed = seal(&b, "correct horse battery").expect("sealed");
        assert!(
            !sealed
                .windows(b.root_key_pem.len().min(40))
                .any(|w| w == &b.root_key_pem.as_bytes()[..b.root_key_pem.len().min(40)]),
            "the key is not in the file in clear"
        );
        let back = open(&sealed, "correct horse battery").expect("opens");
        assert_eq!(back.root_cert, b.root_cert);
        let err = open(&sealed, "wrong horse battery").expect_err("wrong passphrase");
        assert!(err.to_string().contains("does not open"), "{err}");
        assert!(open(b"not age", "correct horse battery").is_err());
    }
}
