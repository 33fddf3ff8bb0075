//! The replicated config: entries `(kind, name) → value` with an HLC version; last
//! writer wins; deletes are tombstones. Pure: merging, digests, pruning.
//!
//! Tombstones are kept for `TOMBSTONE_TTL` (7 days): long enough for any node that was
//! merely down or partitioned to come back and learn of the delete. A node offline for
//! longer than that could bring a deleted entry back; such a node should be wiped and
//! re-joined (its certificate has long expired by then anyway: leaves last 24 h).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::hlc::Hlc;

/// How long deletes are remembered.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 86400);
/// Most entries a node keeps (bounds memory and the pull answer).
pub const MAX_ENTRIES: usize = 10_000;

/// The kinds of config entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// HTTP routing for a destination service (entry name = the service).
    Route,
    /// Authorization: `default` (allow|deny, dry-run) or one rule.
    Policy,
    /// Timeouts, retries, circuit breaking, outlier ejection for a destination service.
    Resilience,
    /// Injected delays and aborts for a destination service.
    Fault,
    /// Token-bucket rate limit for a destination service.
    Ratelimit,
    /// A progressive rollout of a service from one version to another (operator-signed
    /// plan; entry name = the service).
    Rollout,
    /// Where a rollout stands, written and signed by the node driving it (entry name =
    /// the service); accepted only within its operator-signed plan.
    #[serde(rename = "rollout_progress")]
    RolloutProgress,
    /// A failed or departed member forgotten cluster-wide (entry name = the node; admin):
    /// hidden from every node's member list until it comes back with a newer generation.
    Forget,
}

/// A config kind name that this agent does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// Not a kind at all.
    #[error("unknown config kind {0:?} (expected route, policy, resilience, fault, ratelimit, rollout or forget)")]
    Unknown(String),
}

impl std::str::FromStr for Kind {
    type Err = KindError;
    fn from_str(s: &str) -> Result<Self, KindError> {
        match s {
            "route" => Ok(Self::Route),
            "policy" => Ok(Self::Policy),
            "resilience" => Ok(Self::Resilience),
            "fault" => Ok(Self::Fault),
            "ratelimit" => Ok(Self::Ratelimit),
            "rollout" => Ok(Self::Rollout),
            "rollout_progress" => Ok(Self::RolloutProgress),
            "forget" => Ok(Self::Forget),
            other => Err(KindError::Unknown(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Route => "route",
            Self::Policy => "policy",
            Self::Resilience => "resilience",
            Self::Fault => "fault",
            Self::Ratelimit => "ratelimit",
            Self::Rollout => "rollout",
            Self::RolloutProgress => "rollout_progress",
            Self::Forget => "forget",
        })
    }
}

/// One versioned entry; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Kind.
    pub kind: Kind,
    /// Name within the kind.
    pub name: String,
    /// Version.
    pub version: Hlc,
    /// The value, or None when deleted.
    pub value: Option<serde_json::Value>,
    /// The operator's signature over kind, name, version and value (absent only on
    /// entries written before operator credentials existed, which only the node that
    /// stored them keeps trusting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::authority::envelope::Signed>,
}

impl Entry {
    /// Whether this entry replaces `cur` (same kind and name): a newer version wins —
    /// except that rollout progress is ordered by its decision count first, so a node that
    /// comes back holding an old progress can never move a rollout backwards by writing
    /// after it; the version breaks ties. A total order either way, so replicas converge.
    ///
    /// Two drivers that wrote the same count (one acted before it had caught up) are
    /// ordered by what they say, so the rollout still never moves backwards: a finished
    /// rollout (promoted, rolled back, aborted) before one still running, then the later
    /// step.
    pub fn supersedes(&self, cur: &Entry) -> bool {
        if self.kind == Kind::RolloutProgress {
            let (a, b) = (progress_order(self), progress_order(cur));
            if a != b {
                return a > b;
            }
        }
        self.version > cur.version
    }

    /// Its key in the store.
    pub fn store_key(&self) -> String {
        store_key(self.kind, &self.name)
    }

    /// The prefix of its versions in the store's history, and this version's suffix
    /// (zero-padded so that versions sort oldest first).
    pub fn history_key(&self) -> (String, String) {
        (
            history_prefix(self.kind, &self.name),
            format!(
                "{:020}-{:010}-{}",
                self.version.wall, self.version.logical, self.version.node
            ),
        )
    }
}

/// How far a rollout progress value has come: (decision count, finished, step); zeros
/// for anything else.
fn progress_order(e: &Entry) -> (u64, bool, u64) {
    let Some(v) = e.value.as_ref() else {
        return (0, false, 0);
    };
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let finished = matches!(
        v.get("state").and_then(serde_json::Value::as_str),
        Some("promoted" | "rolled_back" | "aborted")
    );
    (num("seq"), finished, num("step"))
}

/// The store key of entry `kind`/`name`.
pub fn store_key(kind: Kind, name: &str) -> String {
    format!("{kind}/{name}")
}

/// The store's history prefix of entry `kind`/`name`.
pub fn history_prefix(kind: Kind, name: &str) -> String {
    format!("{kind}/{name}/")
}

/// All entries a node holds.
#[derive(Debug, Clone, Default)]
pub struct ConfigState {
    entries: BTreeMap<(Kind, String), Entry>,
}

impl ConfigState {
    /// Merges an entry: it replaces the current one only if its version is greater.
    /// Returns true when it changed something.
    pub fn merge(&mut self, e: Entry) -> bool {
        let key = (e.kind, e.name.clone());
        match self.entries.get(&key) {
            Some(cur) if !e.supersedes(cur) => false,
            None if self.entries.len() >= MAX_ENTRIES => false,
            _ => {
                self.entries.insert(key, e);
                true
            }
        }
    }

    /// The entry for `(kind, name)`, tombstones included.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Entry> {
        self.entries.get(&(kind, name.to_owned()))
    }

    /// Live (not deleted) entries of `kind`.
    pub fn live(&self, kind: Kind) -> impl Iterator<Item = &Entry> {
        self.entries
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|(_, e)| e)
            .filter(|e| e.value.is_some())
    }

    /// Every entry, tombstones included (for pulls and persistence).
    pub fn all(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Entries (tombstones too) after `after` in key order, for one page of a pull.
    pub fn after<'a>(
        &'a self,
        after: Option<&(Kind, String)>,
    ) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        use std::ops::Bound;
        match after {
            None => Box::new(self.entries.values()),
            Some(k) => Box::new(
                self.entries
                    .range((Bound::Excluded(k.clone()), Bound::Unbounded))
                    .map(|(_, e)| e),
            ),
        }
    }

    /// Live entries in total.
    pub fn live_count(&self) -> usize {
        self.entries.values().filter(|e| e.value.is_some()).count()
    }

    /// A digest of what this node holds: equal digests mean equal state.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for e in self.entries.values() {
            h.update(e.kind.to_string().as_bytes());
            h.update([0]);
            h.update(e.name.as_bytes());
            h.update([0]);
            h.update(e.version.wall.to_be_bytes());
            h.update(e.version.logical.to_be_bytes());
            h.update(e.version.node.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..12])
    }

    /// Drops tombstones older than `TOMBSTONE_TTL` at `now_ms`; returns the keys dropped.
    pub fn prune(&mut self, now_ms: u64) -> Vec<(Kind, String)> {
        let ttl = TOMBSTONE_TTL.as_millis() as u64;
        let old: Vec<(Kind, String)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.value.is_none() && e.version.wall.saturating_add(ttl) < now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.entries.remove(k);
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(name: &str, wall: u64, node: &str, v: Option<i64>) -> Entry {
        Entry {
            kind: Kind::Route,
            name: name.into(),
            version: Hlc {
                wall,
                logical: 0,
                node: node.into(),
            },
            value: v.map(Into::into),
            auth: None,
        }
    }

    #[test]
    fn last_writer_wins_and_ties_break_by_node() {
        let mut s = ConfigState::default();
        assert!(s.merge(e("r", 10, "a", Some(1))));
        assert!(!s.merge(e("r", 9, "z", Some(2))), "older loses");
        assert!(
            s.merge(e("r", 10, "b", Some(3))),
            "same time: higher node name wins"
        );
        assert_eq!(
            s.get(Kind::Route, "r").and_then(|e| e.value.clone()),
            Some(3.into())
        );
    }

    #[test]
    fn tombstones_win_over_older_values_and_are_pruned_late() {
        let mut s = ConfigState::default();
        s.merge(e("r", 10, "a", Some(1)));
        assert!(s.merge(e("r", 11, "a", None)));
        assert!(
            !s.merge(e("r", 10, "b", Some(5))),
            "a stale write cannot resurrect it"
        );
        assert_eq!(s.live(Kind::Route).count(), 0);
        assert!(s.prune(11 + 1000).is_empty(), "kept while young");
        assert_eq!(s.prune(11 + TOMBSTONE_TTL.as_millis() as u64 + 1).len(), 1);
    }

    #[test]
    fn rollout_progress_is_ordered_by_decisions_before_time() {
        let p = |wall: u64, seq: u64| Entry {
            kind: Kind::RolloutProgress,
            name: "reviews".into(),
            version: Hlc {
                wall,
                logical: 0,
                node: "n".into(),
            },
            value: Some(serde_json::json!({ "seq": seq })),
            auth: None,
        };
        let mut s = ConfigState::default();
        assert!(s.merge(p(10, 5)));
        assert!(
            !s.merge(p(20, 3)),
            "written later from an older progress: refused"
        );
        assert!(s.merge(p(5, 6)), "more decisions win even stamped earlier");
        assert!(s.merge(p(6, 6)), "the version breaks ties");
        // The same count from two drivers: the later step wins whatever the stamp, and
        // a finished rollout wins over a running one.
        let at = |wall: u64, step: u64, state: &str| {
            let mut e = p(wall, 9);
            e.value = Some(serde_json::json!({ "seq": 9, "step": step, "state": state }));
            e
        };
        assert!(s.merge(at(10, 2, "progressing")));
        assert!(
            !s.merge(at(50, 1, "progressing")),
            "a takeover from an older step loses"
        );
        assert!(s.merge(at(11, 1, "rolled_back")), "finished wins");
        assert!(!s.merge(at(60, 2, "progressing")));
    }

    proptest! {
        /// Any delivery order of the same writes converges to the same state.
        #[test]
        fn merge_order_does_not_matter(writes in proptest::collection::vec((0u8..4, 0u64..20, 0u8..3, proptest::option::of(0i64..5)), 1..30), seed in any::<u64>()) {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<Entry> = writes.iter()
                .filter(|(n, w, node, _)| seen.insert((*n, *w, *node)))
                .map(|(n, w, node, v)| e(&format!("r{n}"), *w, &format!("n{node}"), *v)).collect();
            let mut a = ConfigState::default();
            for x in &entries { a.merge(x.clone()); }
            let mut shuffled = entries.clone();
            let len = shuffled.len();
            let mut r = seed;
            for i in (1..len).rev() {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (r >> 33) as usize % (i + 1));
            }
            let mut b = ConfigState::default();
            for x in shuffled.into_iter().rev() { b.merge(x); }
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert_eq!(a.all().collect::<Vec<_>>(), b.all().collect::<Vec<_>>());
        }
    }
}
