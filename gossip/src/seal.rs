//! Sealing gossip datagrams with the cluster gossip key (AES-256-GCM).
//!
//! Datagram layout (all integers big-endian):
//!
//! ```text
//! 0      1        5           13        25
//! | ver | key id | sent at ms | nonce  | ciphertext + 16-byte tag |
//! ```
//!
//! The 25-byte header is the AEAD's associated data, so the key id and timestamp cannot
//! be changed. A receiver tries only the key named by the id, drops datagrams sent more
//! than `MAX_AGE` ago or in the future, and remembers recent nonces so an authentic
//! datagram replayed within that window is dropped too.

use std::collections::{HashSet, VecDeque};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest::{digest, SHA256};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

const VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 4 + 8 + NONCE_LEN;
/// Bytes sealing adds to a datagram.
pub const OVERHEAD: usize = HEADER_LEN + 16;
/// How old (or how far in the future) a datagram may be, in milliseconds. Nodes' clocks
/// must agree within this bound.
pub const MAX_AGE_MS: u64 = 30_000;
/// How many recent nonces are remembered against replay.
const REPLAY_CACHE: usize = 65_536;

/// A 256-bit gossip key, with the id that names it on the wire.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipKey {
    #[serde(with = "b64")]
    bytes: Vec<u8>,
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKey(id={:08x})", self.id())
    }
}

impl GossipKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != 32 {
            return Err(SealError::KeyLength);
        }
        Ok(Self {
            bytes: bytes.to_vec(),
        })
    }

    /// The key id: the first four bytes of SHA-256 of the key.
    pub fn id(&self) -> u32 {
        let d = digest(&SHA256, &self.bytes);
        let b = d.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// The keys a node accepts, and the one it seals with. Rotation: add the new key
/// everywhere, switch the primary, then remove the old key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    /// Accepted keys.
    pub keys: Vec<GossipKey>,
    /// Id of the key used for sealing.
    pub primary: u32,
}

/// Most keys a keyring holds at once (a rotation needs two).
pub const MAX_KEYS: usize = 4;

/// Why a keyring change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// `use` or `remove` of a key that is not installed.
    #[error("gossip key {0:08x} is not installed")]
    NotInstalled(u32),
    /// Removing the key currently used for sealing.
    #[error("gossip key {0:08x} is the primary key: switch to another key first")]
    RemovePrimary(u32),
    /// Installing past `MAX_KEYS`.
    #[error("the keyring already holds {MAX_KEYS} keys: remove one first")]
    Full,
}

impl Keyring {
    /// A keyring with one key.
    pub fn single(key: GossipKey) -> Self {
        Self {
            primary: key.id(),
            keys: vec![key],
        }
    }

    /// Ids of the installed keys.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(GossipKey::id).collect()
    }

    /// Adds a key that is accepted but not yet used for sealing (idempotent).
    pub fn install(&mut self, key: GossipKey) -> Result<(), KeyringError> {
        if self.ids().contains(&key.id()) {
            return Ok(());
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Seals with key `id` from now on (it must be installed).
    pub fn use_key(&mut self, id: u32) -> Result<(), KeyringError> {
        if !self.ids().contains(&id) {
            return Err(KeyringError::NotInstalled(id));
        }
        self.primary = id;
        Ok(())
    }

    /// Stops accepting key `id` (never the primary; idempotent for an absent key).
    pub fn remove(&mut self, id: u32) -> Result<(), KeyringError> {
        if id == self.primary {
            return Err(KeyringError::RemovePrimary(id));
        }
        self.keys.retain(|k| k.id() != id);
        Ok(())
    }
}

/// Why a datagram was dropped, or a keyring refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than a header and tag, or unknown version.
    #[error("datagram too short or of an unknown version")]
    Malformed,
    /// The key id is not in the keyring.
    #[error("datagram sealed with an unknown key")]
    UnknownKey,
    /// Authentication failed.
    #[error("datagram does not authenticate")]
    BadTag,
    /// Sent too long ago or too far in the future.
    #[error("datagram is stale or from the future")]
    Stale,
    /// An authentic datagram seen before.
    #[error("datagram is a replay")]
    Replay,
    /// Would exceed the largest UDP payload.
    #[error("datagram too large to seal")]
    TooLarge,
    /// A key that is not 32 bytes.
    #[error("gossip keys are 32 bytes")]
    KeyLength,
    /// The keyring has no key with the primary id.
    #[error("keyring has no primary key")]
    NoPrimary,
}

/// Seals and opens datagrams with a keyring. Not thread-safe by design: one per socket.
pub struct Sealer {
    keys: Vec<(u32, LessSafeKey)>,
    primary: usize,
    seen: HashSet<[u8; NONCE_LEN]>,
    seen_order: VecDeque<[u8; NONCE_LEN]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

impl Sealer {
    /// Builds a sealer from a keyring.
    pub fn new(ring: &Keyring) -> Result<Self, SealError> {
        let mut keys = Vec::with_capacity(ring.keys.len());
        for k in &ring.keys {
            let unbound =
                UnboundKey::new(&AES_256_GCM, &k.bytes).map_err(|_| SealError::KeyLength)?;
            keys.push((k.id(), LessSafeKey::new(unbound)));
        }
        let primary = keys
            .iter()
            .position(|(id, _)| *id == ring.primary)
            .ok_or(SealError::NoPrimary)?;
        Ok(Self {
            keys,
            primary,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        })
    }

    /// Seals `plain`, stamped with `now_ms`.
    pub fn seal(&self, plain: &[u8], now_ms: u64) -> Result<Vec<u8>, SealError> {
        if plain.len() + OVERHEAD > MAX_DATAGRAM {
            return Err(SealError::TooLarge);
        }
        let (id, key) = &self.keys[self.primary];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&now_ms.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&out[..HEADER_LEN]),
                &mut body,
            )
            .map_err(|_| SealError::TooLarge)?;
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a datagram received at `now_ms`.
    pub fn open(&mut self, datagram: &[u8], now_ms: u64) -> Result<Vec<u8>, SealError> {
        if datagram.len() < OVERHEAD || datagram[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let header = &datagram[..HEADER_LEN];
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&header[5..13]);
        let sent = u64::from_be_bytes(ts);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[13..HEADER_LEN]);
        let key = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == id)
            .map(|(_, k)| k)
            .ok_or(SealError::UnknownKey)?;
        let mut body = datagram[HEADER_LEN..].to_vec();
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut body,
            )
            .map_err(|_| SealError::BadTag)?
            .len();
        body.truncate(plain_len);
        if sent.abs_diff(now_ms) > MAX_AGE_MS {
            return Err(SealError::Stale);
        }
        if !self.seen.insert(nonce) {
            return Err(SealError::Replay);
        }
        self.seen_order.push_back(nonce);
        if self.seen_order.len() > REPLAY_CACHE {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealer() -> (Sealer, Keyring) {
        let ring = Keyring::single(GossipKey::generate());
        (Sealer::new(&ring).expect("ring"), ring)
    }

    #[test]
    fn round_trip() {
        let (mut s, _) = sealer();
        let d = s.seal(b"hello", 1_000_000).expect("seal");
        assert_eq!(d.len(), 5 + OVERHEAD);
        assert_eq!(s.open(&d, 1_000_100).expect("open"), b"hello");
    }

    #[test]
    fn replay_stale_wrong_key_tamper() {
        let (mut s, _) = sealer();
        let d = s.seal(b"x", 1_000_000).expect("seal");
        s.open(&d, 1_000_000).expect("first");
        assert_eq!(s.open(&d, 1_000_000), Err(SealError::Replay));
        let old = s.seal(b"x", 1_000_000).expect("seal");
        assert_eq!(
            s.open(&old, 1_000_000 + MAX_AGE_MS + 1),
            Err(SealError::Stale)
        );

        let (other, _) = sealer();
        let foreign = other.seal(b"x", 1_000_000).expect("seal");
        assert_eq!(s.open(&foreign, 1_000_000), Err(SealError::UnknownKey));

        let mut tampered = s.seal(b"abc", 1_000_000).expect("seal");
        tampered[6] ^= 1; // timestamp is authenticated
        assert_eq!(s.open(&tampered, 1_000_000), Err(SealError::BadTag));
        assert_eq!(s.open(b"junk", 1), Err(SealError::Malformed));
    }

    #[test]
    fn rotation_accepts_both_keys() {
        let old = GossipKey::generate();
        let new = GossipKey::generate();
        let sender_old = Sealer::new(&Keyring::single(old.clone())).expect("ring");
        let mut receiver = Sealer::new(&Keyring {
            keys: vec![old.clone(), new.clone()],
            primary: new.id(),
        })
        .expect("ring");
        let d = sender_old.seal(b"a", 5_000_000).expect("seal");
        receiver
            .open(&d, 5_000_000)
            .expect("old key still accepted");
        let d = receiver.seal(b"b", 5_000_000).expect("seal");
        assert_eq!(&d[1..5], &new.id().to_be_bytes());
    }

    #[test]
    fn oversize_is_refused() {
        let (s, _) = sealer();
        assert_eq!(s.seal(&vec![0; MAX_DATAGRAM], 1), Err(SealError::TooLarge));
        s.seal(&vec![0; MAX_DATAGRAM - OVERHEAD], 1)
            .expect("largest fits");
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (mut s, _) = sealer();
            let _ = s.open(&bytes, 1_000_000);
        }
    }

    #[test]
    fn keyring_rotation_steps() {
        let (old, new) = (GossipKey::generate(), GossipKey::generate());
        let mut ring = Keyring::single(old.clone());
        assert_eq!(
            ring.use_key(new.id()),
            Err(KeyringError::NotInstalled(new.id()))
        );
        ring.install(new.clone()).expect("install");
        ring.install(new.clone()).expect("install twice");
        assert_eq!(ring.keys.len(), 2);
        assert_eq!(
            ring.remove(old.id()),
            Err(KeyringError::RemovePrimary(old.id()))
        );
        ring.use_key(new.id()).expect("use");
        ring.remove(old.id()).expect("remove");
        assert_eq!(ring.ids(), vec![new.id()]);
        assert_eq!(ring.primary, new.id());
        for _ in 0..MAX_KEYS - 1 {
            ring.install(GossipKey::generate()).expect("room");
        }
        assert_eq!(ring.install(GossipKey::generate()), Err(KeyringError::Full));
    }
}
