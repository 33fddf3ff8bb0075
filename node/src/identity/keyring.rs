//! Gossip key rotation on this node: the operation (`KeyringOp`, the same JSON as the
//! admin API's request body and the member-to-member control request), parsed once into
//! typed values and applied: persisted first, then used by the gossip socket for its next
//! datagram.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::info;
use weft_gossip::{GossipKey, Keyring, KeyringError, SharedKeyring};

use super::{IdentityError, IdentityFiles};

/// One step of a gossip key rotation: install the new key everywhere, use it everywhere,
/// remove the old one everywhere (the same JSON is the admin API's request body).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyringOp {
    /// Accept a new key (standard base64 of 32 bytes).
    Install {
        /// The key.
        key: String,
    },
    /// Seal with this installed key (8 hex digits).
    Use {
        /// Key id.
        id: String,
    },
    /// Stop accepting this key (8 hex digits; not the one in use).
    Remove {
        /// Key id.
        id: String,
    },
}

impl KeyringOp {
    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Install { .. } => "install",
            Self::Use { .. } => "use",
            Self::Remove { .. } => "remove",
        }
    }
}

/// Why a keyring change was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyringChangeError {
    /// The key id is not 8 hex digits.
    #[error("bad key id {0:?}: 8 hex digits")]
    BadId(String),
    /// The key is not base64.
    #[error("the key is not base64")]
    NotBase64,
    /// The keyring refused the change (unknown id, the key in use, a bad key...).
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The keyring could not be sealed with (see the gossip log).
    #[error(transparent)]
    Seal(#[from] weft_gossip::SealError),
    /// Persisting failed; nothing changed.
    #[error("cannot persist the keyring: {0}")]
    Persist(#[from] IdentityError),
}

fn parse_id(id: &str) -> Result<u32, KeyringChangeError> {
    u32::from_str_radix(id, 16).map_err(|_| KeyringChangeError::BadId(id.to_owned()))
}

/// Applies `op` to `live` (the keyring gossip seals with): persisted in `files` first.
pub fn apply(
    op: &KeyringOp,
    live: &SharedKeyring,
    files: &IdentityFiles,
) -> Result<Keyring, KeyringChangeError> {
    let mut ring = live.get();
    match op {
        KeyringOp::Install { key } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| KeyringChangeError::NotBase64)?;
            ring.install(GossipKey::from_bytes(&bytes)?)?;
        }
        KeyringOp::Use { id } => ring.use_key(parse_id(id)?)?,
        KeyringOp::Remove { id } => ring.remove(parse_id(id)?)?,
    }
    files.save_keyring(&ring)?;
    live.replace(ring.clone())?;
    info!(
        op = op.name(),
        primary = format!("{:08x}", ring.primary),
        keys = ring.keys.len(),
        "gossip keyring changed"
    );
    Ok(ring)
}
