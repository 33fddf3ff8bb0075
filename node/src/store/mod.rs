//! The node's embedded store (sled). Nothing else in weft touches sled: this module
//! offers a narrow, typed API. Identity files (keys, certificates) are not here but in
//! `identity`, written with `files::write_atomic`.
//!
//! What the store holds and how it is rebuilt if lost:
//! * `peers`: gossip addresses of known members — rebuilt from gossip after one join.
//! * `tokens`, `names`, `issued`, `crl` (CA node only): join tokens, the current
//!   certificate per node name, issued serials, the revocation list. The CRL is also
//!   gossiped and is re-learned from peers; outstanding tokens are lost with the CA store
//!   (create new ones), and `names` is re-learned from the member list.

pub mod files;

use std::net::SocketAddr;
use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use weft_ca::{TokenId, TokenRecord};
use weft_gossip::RevocationList;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error("another weft agent is using {dir} (its store is locked): stop it, or give this one its own --data-dir")]
    Locked {
        /// The store's directory.
        dir: String,
    },
    /// sled failed (I/O, corruption).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A value did not decode.
    #[error("store: corrupt value under {0}")]
    Corrupt(String),
}

/// Versions of one config entry kept for `weft config history`.
pub const HISTORY_LEN: usize = 20;

/// A known peer, remembered so a restart can rejoin without `--join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
    /// QUIC address.
    pub quic_addr: SocketAddr,
}

/// The certificate the CA currently considers a node name's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// Serial of its newest certificate.
    pub serial: String,
    /// Expiry of that certificate, Unix seconds.
    pub not_after_unix: u64,
}

/// A replica's decision that a node name is taken until `until_unix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaim {
    /// Who claimed it: `token:<id>` for a join, `node` for the node itself.
    pub claimant: String,
    /// Expiry of the certificate the claim is for, Unix seconds.
    pub until_unix: u64,
    /// A renewal by the authenticated holder: extends whoever's claim is in force.
    #[serde(default)]
    pub renewal: bool,
}

/// The outcome of consuming a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consume {
    /// This call consumed it.
    Consumed,
    /// Another call changed it first (used concurrently).
    Raced,
    /// It does not exist.
    Missing,
}

/// Raw (key, value) rows of one sled tree.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// The CA's records, as a backup carries them.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct CaState {
    /// Tree name → raw (key, value) rows.
    pub trees: std::collections::BTreeMap<String, Rows>,
    /// The revocation list.
    pub crl: serde_json::Value,
}

/// Audit records a node keeps.
pub const AUDIT_LEN: usize = 10_000;

/// The sled database of one node.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    peers: sled::Tree,
    tokens: sled::Tree,
    names: sled::Tree,
    issued: sled::Tree,
    meta: sled::Tree,
    services: sled::Tree,
    config: sled::Tree,
    config_history: sled::Tree,
    operators: sled::Tree,
    audit: sled::Tree,
    /// Records in `audit` (counted once at open: sled's `len` walks the tree).
    audit_len: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Serial → expiry (Unix seconds, big-endian u64) of every certificate issued.
    expiry: sled::Tree,
    /// Node-name claims this CA replica decided (it owns the name): name → `NameClaim`.
    claims: sled::Tree,
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt(key.to_owned()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            // The store is small (peers, tokens, services, config): a small page cache
            // keeps the agent's memory low.
            .cache_capacity(4 << 20)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::Locked {
                        dir: dir.parent().unwrap_or(dir).display().to_string(),
                    }
                }
                other => StoreError::Sled(other),
            })?;
        Ok(Self {
            peers: db.open_tree("peers")?,
            tokens: db.open_tree("tokens")?,
            names: db.open_tree("names")?,
            issued: db.open_tree("issued")?,
            meta: db.open_tree("meta")?,
            services: db.open_tree("services")?,
            config: db.open_tree("config")?,
            config_history: db.open_tree("config_history")?,
            operators: db.open_tree("operators")?,
            audit_len: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(
                db.open_tree("audit")?.len(),
            )),
            audit: db.open_tree("audit")?,
            expiry: db.open_tree("expiry")?,
            claims: db.open_tree("claims")?,
            db,
        })
    }

    /// Flushes to disk; called after every write that matters.
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Replaces the remembered peers.
    pub fn set_peers(&self, peers: &[Peer]) -> Result<(), StoreError> {
        let current = self.peers()?;
        if current == peers {
            return Ok(());
        }
        self.peers.clear()?;
        for p in peers {
            self.peers.insert(p.name.as_bytes(), encode(p))?;
        }
        self.flush()
    }

    /// The remembered peers.
    pub fn peers(&self) -> Result<Vec<Peer>, StoreError> {
        self.peers
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode("peers", &v)
            })
            .collect()
    }

    /// Stores a new token record.
    pub fn put_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        self.tokens.insert(record.id.as_str(), encode(record))?;
        self.flush()
    }

    /// Reads a token record.
    pub fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens
            .get(id.as_str())?
            .map(|v| decode("tokens", &v))
            .transpose()
    }

    /// Marks `record` used if it is still exactly as read: exactly one concurrent caller
    /// wins.
    pub fn consume_token(&self, record: &TokenRecord) -> Result<Consume, StoreError> {
        let Some(current) = self.tokens.get(record.id.as_str())? else {
            return Ok(Consume::Missing);
        };
        if decode::<TokenRecord>("tokens", &current)?.used {
            return Ok(Consume::Raced);
        }
        let used = TokenRecord {
            used: true,
            ..record.clone()
        };
        match self.tokens.compare_and_swap(
            record.id.as_str(),
            Some(current),
            Some(encode(&used)),
        )? {
            Ok(()) => {
                self.flush()?;
                Ok(Consume::Consumed)
            }
            Err(_) => Ok(Consume::Raced),
        }
    }

    /// Drops token records that expired more than a day ago.
    pub fn prune_tokens(&self, now_unix: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for kv in self.tokens.iter() {
            let (k, v) = kv?;
            let rec: TokenRecord = decode("tokens", &v)?;
            if rec.expires_at_unix + 86_400 < now_unix {
                self.tokens.remove(k)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.flush()?;
        }
        Ok(removed)
    }

    /// Claims node name `name` for `claim` unless another claimant holds an unexpired claim
    /// (a compare-and-swap: of two concurrent claims exactly one wins). The same claimant
    /// may claim again; a renewal (`claim.renewal`) always extends. Returns the claim in
    /// force.
    pub fn claim_name(
        &self,
        name: &str,
        claim: &NameClaim,
        now_unix: u64,
    ) -> Result<Result<NameClaim, NameClaim>, StoreError> {
        loop {
            let current = self.claims.get(name)?;
            let held: Option<NameClaim> =
                current.as_ref().map(|v| decode("claims", v)).transpose()?;
            let next = match &held {
                Some(h)
                    if h.until_unix > now_unix
                        && h.claimant != claim.claimant
                        && !claim.renewal =>
                {
                    return Ok(Err(h.clone()));
                }
                Some(h) if h.until_unix > now_unix => NameClaim {
                    until_unix: h.until_unix.max(claim.until_unix),
                    claimant: if claim.renewal {
                        h.claimant.clone()
                    } else {
                        claim.claimant.clone()
                    },
                    renewal: false,
                },
                _ => NameClaim {
                    renewal: false,
                    ..claim.clone()
                },
            };
            if self
                .claims
                .compare_and_swap(name, current, Some(encode(&next)))?
                .is_ok()
            {
                self.flush()?;
                return Ok(Ok(next));
            }
        }
    }

    /// Drops `claimant`'s claim on `name` (a join that failed after claiming).
    pub fn release_name(&self, name: &str, claimant: &str) -> Result<(), StoreError> {
        if let Some(v) = self.claims.get(name)? {
            let held: NameClaim = decode("claims", &v)?;
            if held.claimant == claimant {
                let _ = self.claims.compare_and_swap(name, Some(v), None::<&[u8]>)?;
                self.flush()?;
            }
        }
        Ok(())
    }

    /// The certificate currently held under a node name.
    pub fn name(&self, node: &str) -> Result<Option<NameEntry>, StoreError> {
        self.names
            .get(node)?
            .map(|v| decode("names", &v))
            .transpose()
    }

    /// Records a certificate issued to `node`. Returns false if the serial was already
    /// used (the caller must issue again with another serial).
    pub fn record_issued(&self, node: &str, entry: &NameEntry) -> Result<bool, StoreError> {
        let fresh = self
            .issued
            .compare_and_swap(
                entry.serial.as_bytes(),
                None::<&[u8]>,
                Some(node.as_bytes()),
            )?
            .is_ok();
        if !fresh {
            return Ok(false);
        }
        self.expiry
            .insert(entry.serial.as_bytes(), &entry.not_after_unix.to_be_bytes())?;
        self.names.insert(node, encode(entry))?;
        self.flush()?;
        Ok(true)
    }

    /// Appends an audit record (not flushed on its own: the change it records was), keeping
    /// the newest `AUDIT_LEN`.
    pub fn push_audit<T: Serialize>(&self, record: &T) -> Result<(), StoreError> {
        let id = self.db.generate_id()?;
        let key = format!("{:020}-{id:020}", crate::clock::unix_ms());
        use std::sync::atomic::Ordering;
        self.audit.insert(key.as_bytes(), encode(record))?;
        if self.audit_len.fetch_add(1, Ordering::Relaxed) >= AUDIT_LEN
            && self.audit.pop_min()?.is_some()
        {
            self.audit_len.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The newest `limit` audit records, newest first.
    pub fn audit<T: DeserializeOwned>(&self, limit: usize) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for kv in self.audit.iter().rev().take(limit) {
            let (_, v) = kv?;
            out.push(decode("audit", &v)?);
        }
        Ok(out)
    }

    /// Every record of the CA's trees (tokens, names, issued serials, expiries, operators)
    /// and its revocation list, for a backup: tree name → (key, value) rows.
    pub fn export_ca_state(&self) -> Result<CaState, StoreError> {
        let mut trees = std::collections::BTreeMap::new();
        for (name, tree) in self.ca_trees() {
            let mut rows = Vec::new();
            for kv in tree.iter() {
                let (k, v) = kv?;
                rows.push((k.to_vec(), v.to_vec()));
            }
            trees.insert(name.to_owned(), rows);
        }
        Ok(CaState {
            trees,
            crl: serde_json::to_value(self.crl()?).unwrap_or_default(),
        })
    }

    /// Writes a backup's CA state into this store (rows are added; existing ones with the
    /// same key are replaced) and flushes.
    pub fn import_ca_state(&self, state: &CaState) -> Result<(), StoreError> {
        for (name, tree) in self.ca_trees() {
            for (k, v) in state.trees.get(name).map(Vec::as_slice).unwrap_or_default() {
                tree.insert(k.as_slice(), v.as_slice())?;
            }
        }
        if let Ok(crl) = serde_json::from_value::<RevocationList>(state.crl.clone()) {
            if crl.version >= self.crl()?.version {
                self.set_crl(&crl)?;
            }
        }
        self.flush()
    }

    fn ca_trees(&self) -> [(&'static str, &sled::Tree); 6] {
        [
            ("claims", &self.claims),
            ("tokens", &self.tokens),
            ("names", &self.names),
            ("issued", &self.issued),
            ("expiry", &self.expiry),
            ("operators", &self.operators),
        ]
    }

    /// Records (or replaces) an operator's record (CA node).
    pub fn put_operator<T: Serialize>(&self, name: &str, record: &T) -> Result<(), StoreError> {
        self.operators.insert(name, encode(record))?;
        self.flush()
    }

    /// Every operator record (CA node).
    pub fn operators<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for kv in self.operators.iter() {
            let (_, v) = kv?;
            out.push(decode("operators", &v)?);
        }
        Ok(out)
    }

    /// One operator's record (CA node).
    pub fn operator<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        self.operators
            .get(name)?
            .map(|v| decode("operators", &v))
            .transpose()
    }

    /// Serials issued to `node` that are still valid at `now_unix`, with their expiry
    /// (serials issued before expiry was recorded count as valid, expiry 0).
    pub fn unexpired_serials_of(
        &self,
        node: &str,
        now_unix: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for serial in self.serials_of(node)? {
            let not_after = self
                .expiry
                .get(serial.as_bytes())?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map_or(0, u64::from_be_bytes);
            if not_after == 0 || not_after > now_unix {
                out.push((serial, not_after));
            }
        }
        Ok(out)
    }

    /// Serials issued to `node` (from the issued index).
    pub fn serials_of(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.issued.iter() {
            let (k, v) = kv?;
            if v.as_ref() == node.as_bytes() {
                out.push(String::from_utf8_lossy(&k).into_owned());
            }
        }
        Ok(out)
    }

    /// Remembers where the CA node is, for renewals and forwarded requests before gossip
    /// has converged.
    pub fn set_ca_peer(&self, peer: &Peer) -> Result<(), StoreError> {
        if self.ca_peer()?.as_ref() == Some(peer) {
            return Ok(());
        }
        self.meta.insert("ca_peer", encode(peer))?;
        self.flush()
    }

    /// The root rotation this root holder is running or ran last.
    pub fn rotation<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        self.meta
            .get("rotation")?
            .map(|v| decode("rotation", &v))
            .transpose()
    }

    /// Records the state of a root rotation (flushed: it must survive a crash).
    pub fn set_rotation<T: Serialize>(&self, state: &T) -> Result<(), StoreError> {
        self.meta.insert("rotation", encode(state))?;
        self.flush()
    }

    /// The CA node last seen.
    pub fn ca_peer(&self) -> Result<Option<Peer>, StoreError> {
        self.meta
            .get("ca_peer")?
            .map(|v| decode("ca_peer", &v))
            .transpose()
    }

    /// Services registered through the API (their type is the catalog's).
    pub fn services<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        self.services
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode("services", &v)
            })
            .collect()
    }

    /// Stores an API-registered service under its name.
    pub fn put_service<T: Serialize>(&self, name: &str, c: &T) -> Result<(), StoreError> {
        self.services.insert(name.as_bytes(), encode(c))?;
        self.flush()
    }

    /// Removes an API-registered service.
    pub fn delete_service(&self, name: &str) -> Result<(), StoreError> {
        self.services.remove(name)?;
        self.flush()
    }

    /// Every stored cluster-config entry (their type and keys are `cluster_config`'s).
    pub fn config_entries<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        self.config
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode("config", &v)
            })
            .collect()
    }

    /// Stores a cluster-config entry under `key` (flushed before it is applied).
    pub fn put_config<T: Serialize>(&self, key: &str, e: &T) -> Result<(), StoreError> {
        self.config.insert(key, encode(e))?;
        self.flush()
    }

    /// Appends a version of an entry to the history under `prefix` (`version` sorts the
    /// versions), keeping the newest `HISTORY_LEN`.
    pub fn push_config_history<T: Serialize>(
        &self,
        prefix: &str,
        version: &str,
        e: &T,
    ) -> Result<(), StoreError> {
        let key = format!("{prefix}{version}");
        self.config_history.insert(key.as_bytes(), encode(e))?;
        let keys: Vec<sled::IVec> = self
            .config_history
            .scan_prefix(prefix.as_bytes())
            .keys()
            .collect::<Result<_, _>>()?;
        if keys.len() > HISTORY_LEN {
            for k in &keys[..keys.len() - HISTORY_LEN] {
                self.config_history.remove(k)?;
            }
        }
        Ok(())
    }

    /// The remembered versions under `prefix`, oldest first.
    pub fn config_history<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        self.config_history
            .scan_prefix(prefix.as_bytes())
            .values()
            .map(|v| decode("config_history", &v?))
            .collect()
    }

    /// Forgets a pruned tombstone.
    pub fn delete_config(&self, key: &str) -> Result<(), StoreError> {
        self.config.remove(key)?;
        self.flush()
    }

    /// The newest revocation list this node knows.
    pub fn crl(&self) -> Result<RevocationList, StoreError> {
        Ok(self
            .meta
            .get("crl")?
            .map(|v| decode("crl", &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Stores a revocation list.
    pub fn set_crl(&self, crl: &RevocationList) -> Result<(), StoreError> {
        self.meta.insert("crl", encode(crl))?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_ca::JoinToken;

    #[test]
    fn the_audit_trail_keeps_the_newest_records_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for i in 0..AUDIT_LEN + 5 {
            store.push_audit(&i).expect("push");
        }
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        store
            .push_audit(&(AUDIT_LEN + 5))
            .expect("push after reopen");
        let newest: Vec<usize> = store.audit(AUDIT_LEN + 10).expect("read");
        assert_eq!(newest.len(), AUDIT_LEN);
        assert_eq!(newest.first(), Some(&(AUDIT_LEN + 5)));
        assert_eq!(newest.last(), Some(&6));
    }

    #[test]
    fn token_is_consumed_once_even_concurrently() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let token = JoinToken::generate([0; 32]);
        let rec = token.record(u64::MAX);
        store.put_token(&rec).expect("put");
        let results: Vec<Consume> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| store.consume_token(&rec).expect("consume")))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        assert_eq!(
            results.iter().filter(|r| **r == Consume::Consumed).count(),
            1
        );
        assert!(store.token(token.id()).expect("read").expect("exists").used);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let peer = Peer {
            name: "b".into(),
            gossip_addr: "127.0.0.2:7946".parse().expect("addr"),
            quic_addr: "127.0.0.2:7443".parse().expect("addr"),
        };
        {
            let store = Store::open(dir.path()).expect("open");
            store.set_peers(std::slice::from_ref(&peer)).expect("peers");
            let e = NameEntry {
                serial: "01".into(),
                not_after_unix: 5,
            };
            assert!(store.record_issued("b", &e).expect("issued"));
            assert!(
                !store.record_issued("c", &e).expect("dup"),
                "serial reuse refused"
            );
        }
        // sled's flusher thread releases the file lock shortly after the last handle drops.
        let mut reopened = Store::open(dir.path());
        for _ in 0..50 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            reopened = Store::open(dir.path());
        }
        let store = reopened.expect("reopen");
        assert_eq!(store.peers().expect("peers"), vec![peer]);
        assert_eq!(
            store.serials_of("b").expect("serials"),
            vec!["01".to_owned()]
        );
    }
}
