//! Hybrid logical clock: physical milliseconds plus a logical counter, so that versions
//! move forward even when wall clocks disagree, and ties break by node name. Pure.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A version stamp. Ordered by (wall, logical, node).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (at least the writer's wall clock).
    pub wall: u64,
    /// Counter within the same millisecond.
    pub logical: u32,
    /// Node that wrote it: the tie-breaker.
    pub node: String,
}

impl Ord for Hlc {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.wall, self.logical, &self.node).cmp(&(other.wall, other.logical, &other.node))
    }
}

impl PartialOrd for Hlc {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Largest forward jump accepted from a remote stamp (protects against a peer with a
/// clock far in the future dragging everyone's versions along).
pub const MAX_DRIFT_MS: u64 = 10 * 1000;

/// A node's clock state.
#[derive(Debug, Clone)]
pub struct Clock {
    node: String,
    last_wall: u64,
    last_logical: u32,
}

impl Clock {
    /// A clock for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            last_wall: 0,
            last_logical: 0,
        }
    }

    /// A stamp for a local write at physical time `now_ms`: greater than every stamp
    /// this clock has issued or observed.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        if now_ms > self.last_wall {
            self.last_wall = now_ms;
            self.last_logical = 0;
        } else {
            self.last_logical = self.last_logical.saturating_add(1);
        }
        Hlc {
            wall: self.last_wall,
            logical: self.last_logical,
            node: self.node.clone(),
        }
    }

    /// Takes a remote stamp into account (so later local writes order after it).
    /// Returns false, changing nothing, if it is more than `MAX_DRIFT_MS` ahead of `now_ms`.
    pub fn observe(&mut self, remote: &Hlc, now_ms: u64) -> bool {
        if remote.wall > now_ms.saturating_add(MAX_DRIFT_MS) {
            return false;
        }
        if (remote.wall, remote.logical) > (self.last_wall, self.last_logical) {
            self.last_wall = remote.wall;
            self.last_logical = remote.logical;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_increase_even_when_time_goes_back() {
        let mut c = Clock::new("a");
        let t1 = c.tick(1000);
        let t2 = c.tick(1000);
        let t3 = c.tick(900);
        assert!(t1 < t2 && t2 < t3);
        assert_eq!(t3.wall, 1000);
    }

    #[test]
    fn observing_a_later_stamp_orders_local_writes_after_it() {
        let mut a = Clock::new("a");
        let mut b = Clock::new("b");
        let remote = b.tick(5000);
        assert!(a.observe(&remote, 1000 + MAX_DRIFT_MS));
        let local = a.tick(1000);
        assert!(
            local > remote,
            "a's clock lags but its write still wins over what it saw"
        );
    }

    #[test]
    fn far_future_stamps_are_refused() {
        let mut a = Clock::new("a");
        let evil = Hlc {
            wall: 10 * MAX_DRIFT_MS,
            logical: 0,
            node: "x".into(),
        };
        assert!(!a.observe(&evil, 1000));
        assert_eq!(a.tick(1000).wall, 1000);
    }

    #[test]
    fn ties_break_by_node_name() {
        let x = Hlc {
            wall: 1,
            logical: 0,
            node: "a".into(),
        };
        let y = Hlc {
            wall: 1,
            logical: 0,
            node: "b".into(),
        };
        assert!(x < y);
    }
}
