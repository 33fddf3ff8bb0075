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

/// Checks that an entry was written by someone allowed to: the operator signature
/// (implemented by `authority::Authority`).
pub trait EntryCheck: Send + Sync {
    /// `Ok` names the operator who signed it; `Err` is the one-line reason to refuse it.
    fn check(&self, e: &Entry, now_ms: u64) -> Result<String, String>;
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The value does not validate.
    #[error(transparent)]
    Invalid(#[from] ValueError),
    /// Not signed by an operator allowed to write it.
    #[error("{0}")]
    Refused(String),
    /// This node already holds a newer version of the entry.
    #[error("{kind}/{name} has a newer version than the one signed; run the command again")]
    Stale {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
    },
    /// The store failed; nothing was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The replica.
pub struct ConfigReplica {
    check: Arc<dyn EntryCheck>,
    node: String,
    inner: Mutex<(ConfigState, Clock)>,
    applied: AppliedView,
    /// When this replica's digest last equalled every alive peer's (Unix ms).
    synced_at_ms: AtomicU64,
    store: Store,
    version: watch::Sender<u64>,
    /// Writes this node accepted recently: they ride the gossip (`riding`).
    recent: Mutex<super::riding::Recent>,
}

impl std::fmt::Debug for ConfigReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigReplica").finish_non_exhaustive()
    }
}

/// A node-written rollout progress must belong to the operator-signed plan this replica
/// holds and put a weight that plan allows; other kinds pass.
fn within_plan(state: &ConfigState, e: &Entry) -> Result<(), String> {
    if e.kind != Kind::RolloutProgress {
        return Ok(());
    }
    let Some(value) = &e.value else {
        return Err("rollout progress cannot be deleted by a node".into());
    };
    let plan = state
        .get(Kind::Rollout, &e.name)
        .and_then(|p| p.value.clone())
        .ok_or_else(|| format!("no rollout of {} to make progress on", e.name))?;
    let plan: crate::rollout::Plan =
        serde_json::from_value(plan).map_err(|err| format!("the rollout plan: {err}"))?;
    let progress: crate::rollout::Progress =
        serde_json::from_value(value.clone()).map_err(|err| format!("rollout progress: {err}"))?;
    progress.check_against(&plan)
}

impl ConfigReplica {
    /// Loads the persisted entries (the data plane starts on the last known config even
    /// if no peer is reachable). Entries that no longer validate are skipped and logged.
    /// What this node stored was checked when it arrived (or predates signatures), so it
    /// is not checked again; everything new is checked by `check`.
    pub fn load(store: Store, node: &str, check: Arc<dyn EntryCheck>) -> Result<Self, StoreError> {
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
            check,
            node: node.to_owned(),
            inner: Mutex::new((state, clock)),
            applied,
            synced_at_ms: AtomicU64::new(crate::clock::unix_ms()),
            store,
            version: watch::channel(0).0,
            recent: Mutex::new(super::riding::Recent::default()),
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

    /// The audit record of an applied entry: a JSON line in the journal and a record in
    /// the store (`weft audit`). `operator` is what `EntryCheck` said of the signer.
    fn audit(&self, e: &Entry, operator: &str, from_peer: Option<&str>) {
        let line = serde_json::json!({
            "operator": operator,
            "via": e.version.node,
            "node": self.node,
            "change": format!("{} {}/{}", if e.value.is_some() { "set" } else { "delete" }, e.kind, e.name),
            "outcome": "applied",
            "from_peer": from_peer,
            "version_ms": e.version.wall,
            "at_ms": crate::clock::unix_ms(),
        });
        info!(target: "weft::audit", audit = %line, "config change applied");
        if let Err(err) = self.store.push_audit(&line) {
            warn!(error = %err, "cannot record an audit record");
        }
    }

    /// Appends `e` to its history (best effort: the entry itself is already stored).
    fn remember(&self, e: &Entry) {
        let (prefix, version) = e.history_key();
        if let Err(err) = self.store.push_config_history(&prefix, &version, e) {
            warn!(kind = %e.kind, name = %e.name, error = %err, "cannot record config history");
        }
    }

    /// A version for a new write of `kind`/`name` by this node: after every version it
    /// has seen, that one included. The operator signs it (see `apply_signed`).
    pub fn stamp(&self, kind: Kind, name: &str) -> super::hlc::Hlc {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (state, clock) = &mut *guard;
        if let Some(cur) = state.get(kind, name) {
            clock.observe(&cur.version, u64::MAX / 2);
        }
        clock.tick(crate::clock::unix_ms())
    }

    /// A signed write received by this node's API (`value: None` deletes): validated,
    /// verified, persisted, applied.
    pub fn apply_signed(&self, entry: Entry) -> Result<Entry, WriteError> {
        match &entry.value {
            Some(v) => validate(entry.kind, &entry.name, v)?,
            None => super::validate_name(entry.kind, &entry.name)?,
        }
        let now = crate::clock::unix_ms();
        let operator = self.check.check(&entry, now).map_err(WriteError::Refused)?;
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (state, clock) = &mut *guard;
        within_plan(state, &entry).map_err(WriteError::Refused)?;
        if state
            .get(entry.kind, &entry.name)
            .is_some_and(|cur| !entry.supersedes(cur))
        {
            return Err(WriteError::Stale {
                kind: entry.kind,
                name: entry.name,
            });
        }
        if !clock.observe(&entry.version, now) {
            return Err(WriteError::Refused(
                "the entry's version is stamped in the future".into(),
            ));
        }
        self.store.put_config(&entry.store_key(), &entry)?;
        self.remember(&entry);
        state.merge(entry.clone());
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone(), now);
        self.changed(state);
        self.audit(&entry, &operator, None);
        Ok(entry)
    }

    /// Entries this node holds that carry no operator signature (written before
    /// signatures existed), for the root holder to sign again.
    pub fn unsigned(&self) -> Vec<Entry> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .all()
            .filter(|e| e.auth.is_none())
            .cloned()
            .collect()
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
            let newer = state
                .get(e.kind, &e.name)
                .is_none_or(|cur| e.supersedes(cur));
            if !newer {
                continue;
            }
            if let Err(err) = within_plan(state, &e) {
                warn!(peer = from, kind = %e.kind, name = %e.name, error = %err, "refused a rollout progress entry from a peer");
                continue;
            }
            let operator = match self.check.check(&e, now) {
                Ok(operator) => operator,
                Err(err) => {
                    warn!(peer = from, kind = %e.kind, name = %e.name, error = %err, "refused a config entry from a peer: not signed by an allowed operator");
                    continue;
                }
            };
            if !clock.observe(&e.version, now) {
                warn!(peer = from, kind = %e.kind, name = %e.name, "rejected a config entry stamped far in the future");
                continue;
            }
            if let Err(err) = self.store.put_config(&e.store_key(), &e) {
                warn!(error = %err, "cannot persist a config entry; not applied");
                continue;
            }
            self.remember(&e);
            self.audit(&e, &operator, Some(from));
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

    /// The gossip value carrying the writes this node accepted recently (`riding`).
    pub fn riding_value(&self) -> String {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .value(crate::clock::unix_ms())
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

    /// One page of a peer's pull: entries after `after` in key order, at most
    /// `max_bytes` of them as JSON (at least one), and the key to continue after when
    /// more remain.
    pub fn page(
        &self,
        after: Option<&(Kind, String)>,
        max_bytes: usize,
    ) -> (Vec<Entry>, Option<(Kind, String)>) {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut size = 0;
        let mut rest = guard.0.after(after).peekable();
        while let Some(e) = rest.peek() {
            let len = serde_json::to_vec(e).map(|v| v.len()).unwrap_or(0) + 1;
            if !out.is_empty() && size + len > max_bytes {
                break;
            }
            size += len;
            out.push((*e).clone());
            rest.next();
        }
        let next = match rest.peek() {
            Some(_) => out.last().map(|e| (e.kind, e.name.clone())),
            None => None,
        };
        (out, next)
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
