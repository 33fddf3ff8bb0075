//! This node's replica of the cluster config: the merged state, its HLC, persistence in
//! the store, and the typed view the data plane reads (rebuilt on every change).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tracing::{info, warn};

use super::hlc::Clock;
use super::policy::{PolicyDefault, PolicyRule};
use super::route::Route;
use super::state::{ConfigState, Entry, Kind};
use super::{validate, ValueError};
use crate::store::{Store, StoreError};

/// The typed config the data plane uses.
#[derive(Debug, Default)]
pub struct Applied {
    /// Routes by destination service.
    pub routes: HashMap<String, Route>,
    /// The policy default.
    pub policy_default: PolicyDefault,
    /// Policy rules by name, sorted by name.
    pub policy_rules: Vec<(String, PolicyRule)>,
    /// Resilience settings by destination service.
    pub resilience: HashMap<String, super::traffic::Resilience>,
    /// Faults by destination service.
    pub faults: HashMap<String, super::traffic::Fault>,
    /// Rate limits by destination service.
    pub ratelimits: HashMap<String, super::traffic::RateLimit>,
}

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
    applied: RwLock<Arc<Applied>>,
    store: Store,
    version: watch::Sender<u64>,
}

fn build(state: &ConfigState) -> Applied {
    let mut a = Applied::default();
    for e in state.live(Kind::Route) {
        if let Some(r) = e
            .value
            .clone()
            .and_then(|v| serde_json::from_value::<Route>(v).ok())
        {
            a.routes.insert(e.name.clone(), r);
        }
    }
    fn typed<T: serde::de::DeserializeOwned>(
        state: &ConfigState,
        kind: Kind,
    ) -> HashMap<String, T> {
        state
            .live(kind)
            .filter_map(|e| {
                Some((
                    e.name.clone(),
                    serde_json::from_value(e.value.clone()?).ok()?,
                ))
            })
            .collect()
    }
    a.resilience = typed(state, Kind::Resilience);
    a.faults = typed(state, Kind::Fault);
    a.ratelimits = typed(state, Kind::Ratelimit);
    for e in state.live(Kind::Policy) {
        let Some(v) = e.value.clone() else { continue };
        if e.name == "default" {
            if let Ok(d) = serde_json::from_value(v) {
                a.policy_default = d;
            }
        } else if let Ok(r) = serde_json::from_value(v) {
            a.policy_rules.push((e.name.clone(), r));
        }
    }
    a
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ConfigReplica {
    /// Loads the persisted entries (the data plane starts on the last known config even
    /// if no peer is reachable). Entries that no longer validate are skipped and logged.
    pub fn load(store: Store, node: &str) -> Result<Self, StoreError> {
        let mut state = ConfigState::default();
        let mut clock = Clock::new(node);
        for e in store.config_entries()? {
            if let Some(v) = &e.value {
                if let Err(err) = validate(e.kind, &e.name, v) {
                    warn!(kind = %e.kind, name = %e.name, error = %err, "stored config entry no longer validates; skipped");
                    continue;
                }
            }
            clock.observe(&e.version, u64::MAX / 2);
            state.merge(e);
        }
        let applied = Arc::new(build(&state));
        Ok(Self {
            inner: Mutex::new((state, clock)),
            applied: RwLock::new(applied),
            store,
            version: watch::channel(0).0,
        })
    }

    /// The typed view (cheap to clone).
    pub fn applied(&self) -> Arc<Applied> {
        self.applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self, state: &ConfigState) {
        *self.applied.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(build(state));
        self.version.send_modify(|v| *v += 1);
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
            version: clock.tick(now_ms()),
            value,
        };
        self.store.put_config(&entry)?;
        let _ = self.store.push_config_history(&entry);
        state.merge(entry.clone());
        self.changed(state);
        info!(kind = %kind, name, deleted = entry.value.is_none(), "config written");
        Ok(entry)
    }

    /// Merges entries pulled from a peer: each is validated first; a bad one is logged and
    /// skipped, never applied in part. Returns how many changed this replica.
    pub fn merge_remote(&self, entries: Vec<Entry>, from: &str) -> usize {
        let now = now_ms();
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
            if let Err(err) = self.store.put_config(&e) {
                warn!(error = %err, "cannot persist a config entry; not applied");
                continue;
            }
            let _ = self.store.push_config_history(&e);
            state.merge(e);
            changed += 1;
        }
        for (kind, name) in state.prune(now) {
            let _ = self.store.delete_config(kind, &name);
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
        self.store.config_history(kind, name)
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
