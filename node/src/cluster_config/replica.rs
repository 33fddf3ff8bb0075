//! This node's replica of the cluster config: the merged state, its HLC, persistence in
//! the store, and the typed view the data plane reads (`applied`, rebuilt on every
//! change).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing::{info, warn};

use super::applied::{Applied, AppliedView};
use super::hlc::Clock;
use super::state::{history_prefix, ConfigState, Entry, Kind};
use super::validate;
use crate::config::ValueError;
use crate::store::{Store, StoreError};

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The value does not validate.
    #[error(transparent)]
    Invalid(#[from] ValueError),
    /// The store failed; nothing was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The replica.
#[derive(Debug)]
pub struct ConfigReplica {
    inner: Mutex<(ConfigState, Clock)>,
    applied: AppliedView,
    /// When this replica's digest last equalled every alive peer's (Unix ms).
    synced_at_ms: AtomicU64,
    store: Store,
    version: watch::Sender<u64>,
}

impl ConfigReplica {
    /// Loads the persisted entries (the data plane starts on the last known config even
    /// if no peer is reachable). Entries that no longer validate are skipped and logged.
    pub fn load(store: Store, node: &str) -> Result<Self, StoreError> {
        let mut state = ConfigState::default();
        let mut clock = Clock::new(node);
        for e in store.config_entries::<Entry>()? {
            if let Some(v) = &e.value {
                if let Err(err) = validate(e.kind, &e.name, v) {
                    warn!(kind = %e.kind, name = %e.name, error = %err, "stored config entry no longer validates; skipped");
                    continue;
                }
            }
            clock.observe(&e.version, u64::MAX / 2);
            state.merge(e);
        }
        let applied = AppliedView::new(Applied::build(&state));
        Ok(Self {
            inner: Mutex::new((state, clock)),
            applied,
            synced_at_ms: AtomicU64::new(crate::clock::unix_ms()),
            store,
            version: watch::channel(0).0,
        })
    }

    /// The typed view now (cheap to clone).
    pub fn applied(&self) -> Arc<Applied> {
        self.applied.get()
    }

    /// A read-only handle on the typed view, for the data plane.
    pub fn view(&self) -> AppliedView {
        self.applied.clone()
    }

    /// Records that this replica's digest equals every alive peer's now.
    pub fn mark_synced(&self) {
        self.synced_at_ms
            .store(crate::clock::unix_ms(), Ordering::Relaxed);
    }

    /// When the digest last equalled every alive peer's (Unix ms).
    pub fn synced_at_ms(&self) -> u64 {
        self.synced_at_ms.load(Ordering::Relaxed)
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self, state: &ConfigState) {
        self.applied.set(Applied::build(state));
        self.version.send_modify(|v| *v += 1);
    }

    /// Appends `e` to its history (best effort: the entry itself is already stored).
    fn remember(&self, e: &Entry) {
        let (prefix, version) = e.history_key();
        if let Err(err) = self.store.push_config_history(&prefix, &version, e) {
            warn!(kind = %e.kind, name = %e.name, error = %err, "cannot record config history");
        }
    }

    /// A local write (`value: None` deletes). Validated, stamped, persisted, applied.
    pub fn write(
        &self,
        kind: Kind,
        name: &str,
        value: Option<serde_json::Value>,
    ) -> Result<Entry, WriteError> {
        match &value {
            Some(v) => validate(kind, name, v)?,
            None => super::validate_name(kind, name)?,
        }
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (state, clock) = &mut *guard;
        let entry = Entry {
            kind,
            name: name.to_owned(),
            version: clock.tick(crate::clock::unix_ms()),
            value,
        };
        self.store.put_config(&entry.store_key(), &entry)?;
        self.remember(&entry);
        state.merge(entry.clone());
        self.changed(state);
        info!(kind = %kind, name, deleted = entry.value.is_none(), "config written");
        Ok(entry)
    }

    /// Merges entries pulled from a peer: each is validated first; a bad one is logged and
    /// skipped, never applied in part. Returns how many changed this replica.
    pub fn merge_remote(&self, entries: Vec<Entry>, from: &str) -> usize {
        let now = crate::clock::unix_ms();
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (state, clock) = &mut *guard;
        let mut changed = 0;
        for e in entries {
            if let Some(v) = &e.value {
                if let Err(err) = validate(e.kind, &e.name, v) {
                    warn!(peer = from, kind = %e.kind, name = %e.name, error = %err, "rejected a config entry from a peer");
                    continue;
                }
            }
            if !clock.observe(&e.version, now) {
                warn!(peer = from, kind = %e.kind, name = %e.name, "rejected a config entry stamped far in the future");
                continue;
            }
            let newer = state
                .get(e.kind, &e.name)
                .is_none_or(|cur| cur.version < e.version);
            if !newer {
                continue;
            }
            if let Err(err) = self.store.put_config(&e.store_key(), &e) {
                warn!(error = %err, "cannot persist a config entry; not applied");
                continue;
            }
            self.remember(&e);
            state.merge(e);
            changed += 1;
        }
        for (kind, name) in state.prune(now) {
            let _ = self
                .store
                .delete_config(&super::state::store_key(kind, &name));
        }
        if changed > 0 {
            self.changed(state);
        }
        changed
    }

    /// The digest of this replica.
    pub fn digest(&self) -> String {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .digest()
    }

    /// Every entry (tombstones too), for a peer's pull.
    pub fn dump(&self) -> Vec<Entry> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .all()
            .cloned()
            .collect()
    }

    /// Live entries, optionally of one kind.
    pub fn list(&self, kind: Option<Kind>) -> Vec<Entry> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .0
            .all()
            .filter(|e| e.value.is_some() && kind.is_none_or(|k| k == e.kind))
            .cloned()
            .collect()
    }

    /// One live entry.
    pub fn get(&self, kind: Kind, name: &str) -> Option<Entry> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .0
            .get(kind, name)
            .filter(|e| e.value.is_some())
            .cloned()
    }

    /// The remembered versions of an entry, oldest first (deletes included).
    pub fn history(&self, kind: Kind, name: &str) -> Result<Vec<Entry>, StoreError> {
        self.store.config_history(&history_prefix(kind, name))
    }

    /// Live entries in total (for `weft_config_entries`).
    pub fn live_count(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .live_count()
    }
}
