//! Config entries that ride the gossip: the node that accepted a write publishes it,
//! signature and all, in its own gossip key (`weft.cfg.new`), so the write reaches every
//! node in the deltas chitchat already sends, in about the time a new service takes, and
//! under loss too (a lost delta is offered again next round). Receivers verify each entry
//! exactly as a pulled one (`ConfigReplica::merge_remote`): who carried it counts for
//! nothing. The QUIC pull (`sync`) stays for catch-up (a node that was down, a partition,
//! entries too large to ride).
//!
//! Only the writer publishes, never a node that merely applied an entry: the value
//! spreads through chitchat once, not once per node. It holds the newest few writes of
//! the last minutes, within a byte budget.

use std::collections::VecDeque;

use super::state::Entry;

/// How long a write keeps riding (later it is found by pull only).
pub const RIDE_FOR_MS: u64 = 5 * 60 * 1000;
/// Most writes one value carries.
pub const MAX_RIDING: usize = 8;
/// Largest single entry that rides (JSON bytes); larger ones travel by pull only.
pub const MAX_RIDING_ENTRY: usize = 6 * 1024;
/// The value's budget (gossip refuses larger ones).
pub const MAX_RIDING_VALUE: usize = weft_gossip::MAX_CONFIG_ENTRIES_VALUE;

/// A riding value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RidingError {
    /// Larger than any agent publishes.
    #[error("riding config value of {0} bytes is over the {MAX_RIDING_VALUE}-byte limit")]
    TooLarge(usize),
    /// Not a JSON array of entries.
    #[error("riding config value is not a list of entries: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// The writes this node accepted recently, newest last.
#[derive(Debug, Default)]
pub struct Recent {
    writes: VecDeque<(u64, Entry)>,
}

impl Recent {
    /// Remembers a write accepted at `now_ms` (entries too large to ride are skipped).
    pub fn push(&mut self, entry: Entry, now_ms: u64) {
        if serde_json::to_vec(&entry).map_or(usize::MAX, |v| v.len()) > MAX_RIDING_ENTRY {
            return;
        }
        self.writes
            .retain(|(_, e)| (e.kind, &e.name) != (entry.kind, &entry.name));
        self.writes.push_back((now_ms, entry));
        while self.writes.len() > MAX_RIDING {
            self.writes.pop_front();
        }
    }

    /// The gossip value at `now_ms`: the newest writes younger than `RIDE_FOR_MS` that
    /// fit `MAX_RIDING_VALUE`, as a JSON array (`[]` when none).
    pub fn value(&mut self, now_ms: u64) -> String {
        self.writes
            .retain(|(at, _)| now_ms.saturating_sub(*at) < RIDE_FOR_MS);
        let mut picked: Vec<&Entry> = Vec::new();
        let mut size = 2;
        for (_, e) in self.writes.iter().rev() {
            let n = serde_json::to_vec(e).map_or(usize::MAX, |v| v.len()) + 1;
            if size + n > MAX_RIDING_VALUE {
                break;
            }
            size += n;
            picked.push(e);
        }
        picked.reverse();
        serde_json::to_string(&picked).unwrap_or_else(|_| "[]".into())
    }
}

/// Reads a member's riding value (an empty value carries nothing).
pub fn decode(value: &str) -> Result<Vec<Entry>, RidingError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    if value.len() > MAX_RIDING_VALUE {
        return Err(RidingError::TooLarge(value.len()));
    }
    let entries: Vec<Entry> = serde_json::from_str(value)?;
    Ok(entries.into_iter().take(MAX_RIDING).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::hlc::Hlc;
    use super::super::state::Kind;
    use super::*;

    fn entry(name: &str, wall: u64, size: usize) -> Entry {
        Entry {
            kind: Kind::Route,
            name: name.into(),
            version: Hlc {
                wall,
                logical: 0,
                node: "n1".into(),
            },
            value: Some(serde_json::json!({ "pad": "x".repeat(size) })),
            auth: None,
        }
    }

    #[test]
    fn carries_the_newest_writes_within_the_budget_and_age() {
        let mut r = Recent::default();
        for i in 0..12 {
            r.push(entry(&format!("s{i}"), i, 10), 1_000 + i);
        }
        let got = decode(&r.value(2_000)).expect("decodes");
        assert_eq!(got.len(), MAX_RIDING);
        assert_eq!(got.last().expect("one").name, "s11");
        assert_eq!(got.first().expect("one").name, "s4");
        // A newer write of the same entry replaces the older one.
        r.push(entry("s11", 99, 10), 3_000);
        let got = decode(&r.value(3_000)).expect("decodes");
        assert_eq!(got.iter().filter(|e| e.name == "s11").count(), 1);
        assert_eq!(got.last().expect("one").version.wall, 99);
        // Old writes stop riding.
        assert_eq!(r.value(3_000 + RIDE_FOR_MS), "[]");
    }

    #[test]
    fn large_entries_do_not_ride_and_the_value_keeps_to_its_budget() {
        let mut r = Recent::default();
        r.push(entry("huge", 1, MAX_RIDING_ENTRY), 1);
        assert_eq!(r.value(1), "[]");
        for i in 0..8 {
            r.push(entry(&format!("big{i}"), i, MAX_RIDING_ENTRY - 200), 1);
        }
        let v = r.value(1);
        assert!(v.len() <= MAX_RIDING_VALUE, "{}", v.len());
        assert!(decode(&v).expect("decodes").len() >= 2);
    }

    #[test]
    fn refuses_oversized_and_malformed_values() {
        assert!(matches!(
            decode(&"x".repeat(MAX_RIDING_VALUE + 1)),
            Err(RidingError::TooLarge(_))
        ));
        assert!(decode("{\"kind\":1}").is_err());
        assert!(decode("").expect("empty is fine").is_empty());
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in ".{0,400}") {
            let _ = decode(&s);
        }
    }
}
