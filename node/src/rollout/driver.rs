//! Who drives a rollout, and the driver's memory between ticks. Every node runs the same
//! tick each second with what it sees (the applied config, the alive members, every
//! member's gossiped per-version totals); the owner of a rollout — the alive member that
//! ranks first for the service by rendezvous hashing — is the only one that writes. A
//! new owner (the old one died or left) continues from the progress every node holds and
//! starts its own measurement interval; it never writes a step the plan does not have, and
//! what it writes is fenced by the config's version order (the newest write wins
//! everywhere).

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};

use super::decide;
use super::progress::Decision;
use super::{Figures, Progress, RolloutView};
use crate::telemetry::versions::ClusterTotals;

/// The alive member that drives `service`'s rollout: the highest SHA-256 of
/// (service, member), so every node agrees given the same members and a member's
/// failure moves only its own rollouts.
pub fn owner<'a>(service: &str, alive: &'a [String]) -> Option<&'a str> {
    alive
        .iter()
        .max_by_key(|m| {
            let mut h = Sha256::new();
            h.update(service.as_bytes());
            h.update([0]);
            h.update(m.as_bytes());
            h.finalize()
        })
        .map(String::as_str)
}

/// A measurement interval in progress on this node.
#[derive(Debug)]
struct Window {
    /// The plan and the step start it measures.
    key: (String, u64),
    /// When this node started measuring (Unix ms).
    since_ms: u64,
    /// Every member's totals then.
    baseline: ClusterTotals,
}

/// The driver's memory: one window per rollout this node drives.
#[derive(Debug, Default)]
pub struct Driver {
    windows: HashMap<String, Window>,
}

impl Driver {
    /// One tick: the progress entries this node should write now (service, progress),
    /// for the rollouts it owns. `totals` is every member's current per-version totals;
    /// `settled` says this node's view can be trusted (it has run long enough to see the
    /// members and its config matches every alive peer's): an unsettled node writes
    /// nothing, since it may not know the latest progress or the other members yet.
    pub fn tick(
        &mut self,
        rollouts: &HashMap<String, RolloutView>,
        totals: &ClusterTotals,
        alive: &[String],
        me: &str,
        now_ms: u64,
        settled: bool,
    ) -> Vec<(String, Progress)> {
        self.windows.retain(|service, _| {
            rollouts.contains_key(service) && owner(service, alive) == Some(me)
        });
        if !settled {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (service, view) in rollouts {
            if owner(service, alive) != Some(me) || !view.in_force {
                continue;
            }
            let plan = &view.plan;
            let mut cur = view.progress.clone();
            if cur.as_ref().is_some_and(|p| p.state.is_final()) {
                continue;
            }
            // Taking over from another node: say so in the history.
            let mut took_over = false;
            if let (Some(p), Some(by)) = (cur.as_mut(), view.progress_by.as_deref()) {
                if by != me {
                    p.push(Decision {
                        at_ms: now_ms,
                        node: me.to_owned(),
                        action: "takeover".into(),
                        weight: p.weight,
                        reason: format!("{me} drives it from step {} (was {by})", p.step + 1),
                        new: None,
                        old: None,
                    });
                    took_over = true;
                }
            }
            let key = (
                plan.id.clone(),
                cur.as_ref().map_or(0, |p| p.step_started_ms),
            );
            let window = self
                .windows
                .entry(service.clone())
                .or_insert_with(|| Window {
                    key: key.clone(),
                    since_ms: now_ms,
                    baseline: totals.clone(),
                });
            if window.key != key {
                *window = Window {
                    key,
                    since_ms: now_ms,
                    baseline: totals.clone(),
                };
            }
            let step_started = cur.as_ref().map_or(now_ms, |p| p.step_started_ms);
            let interval = plan.interval_ms;
            let judged = (now_ms.saturating_sub(window.since_ms) >= interval
                && now_ms.saturating_sub(step_started) >= interval)
                .then(|| {
                    let delta = totals.delta(&window.baseline);
                    let of = |v: &str| {
                        delta
                            .get(&(service.clone(), v.to_owned()))
                            .cloned()
                            .unwrap_or_else(Figures::default)
                    };
                    (of(&plan.to), of(&plan.from))
                });
            let write = match decide::next(plan, cur.as_ref(), now_ms, me, judged) {
                Some(p) => Some(p),
                None if took_over => cur,
                None => None,
            };
            if let Some(mut p) = write {
                p.seq = view.last_seq + 1;
                out.push((service.clone(), p));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Plan, State};
    use crate::telemetry::versions::VersionTotals;

    fn plan() -> Plan {
        serde_json::from_value(serde_json::json!({
            "id": "ab", "from": "v1", "to": "v2", "steps": [10, 50, 100], "interval_ms": 5000,
            "max_error_rate": 0.01, "min_requests": 20, "started_ms": 1
        }))
        .expect("a plan")
    }

    fn totals(v1: u64, v2: u64) -> ClusterTotals {
        let mut t = VersionTotals::default();
        for _ in 0..v1 {
            t.record("reviews", "v1", false, 1.0);
        }
        for _ in 0..v2 {
            t.record("reviews", "v2", false, 1.0);
        }
        let mut c = ClusterTotals::default();
        c.add_member("a", 1, t.published());
        c
    }

    #[test]
    fn one_owner_among_the_alive_and_it_moves_when_that_one_dies() {
        let alive: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let first = owner("reviews", &alive).expect("an owner").to_owned();
        let rest: Vec<String> = alive.iter().filter(|m| **m != first).cloned().collect();
        let second = owner("reviews", &rest).expect("another");
        assert_ne!(first, second);
        assert_eq!(owner("reviews", &[]), None);
    }

    #[test]
    fn the_owner_starts_measures_a_whole_interval_and_advances_the_others_write_nothing() {
        let alive = vec!["a".to_string(), "b".to_string()];
        let me = owner("reviews", &alive).expect("owner").to_owned();
        let other = alive.iter().find(|m| **m != me).expect("other").clone();
        let mut rollouts = HashMap::new();
        rollouts.insert("reviews".to_string(), RolloutView::new(plan(), None, None));
        let mut d = Driver::default();
        assert!(Driver::default()
            .tick(&rollouts, &totals(0, 0), &alive, &other, 0, true)
            .is_empty());
        assert!(
            d.tick(&rollouts, &totals(0, 0), &alive, &me, 500, false)
                .is_empty(),
            "an unsettled node writes nothing"
        );
        let w = d.tick(&rollouts, &totals(0, 0), &alive, &me, 1000, true);
        let started = w[0].1.clone();
        assert_eq!((started.weight, started.seq), (10, 1));
        rollouts.insert(
            "reviews".into(),
            RolloutView::new(plan(), Some(started.clone()), Some(me.clone())),
        );
        assert!(
            d.tick(&rollouts, &totals(10, 1), &alive, &me, 2000, true)
                .is_empty(),
            "the window opens"
        );
        assert!(
            d.tick(&rollouts, &totals(50, 10), &alive, &me, 6000, true)
                .is_empty(),
            "not a whole interval since the window opened"
        );
        let w = d.tick(&rollouts, &totals(300, 40), &alive, &me, 7000, true);
        assert_eq!(
            w[0].1.weight, 50,
            "30 requests to v2 in the window: advanced"
        );
        assert_eq!(w[0].1.seq, 2);
        // Another node takes over the written progress: it says so and measures anew.
        let advanced = w[0].1.clone();
        rollouts.insert(
            "reviews".into(),
            RolloutView::new(plan(), Some(advanced), Some(me.clone())),
        );
        let survivors = vec![other.clone()];
        let mut d2 = Driver::default();
        let w = d2.tick(&rollouts, &totals(300, 40), &survivors, &other, 8000, true);
        let last = w[0].1.history.last().expect("a decision");
        assert_eq!(
            (last.action.as_str(), w[0].1.weight, w[0].1.state),
            ("takeover", 50, State::Progressing)
        );
    }
}
