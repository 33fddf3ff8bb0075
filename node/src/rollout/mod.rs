//! Progressive delivery: `weft rollout` moves a service's traffic from one version to
//! another step by step, judging the new version against the old on cluster-wide figures
//! at each step, and promotes or rolls back on its own. `ROLLOUT.md` is the design (who
//! drives, what every node checks, the failure cases).
//!
//! * `plan`: the operator-signed `rollout` entry (versions, steps, interval, gates, and
//!   the operator's command: run, pause, promote, abort).
//! * `progress`: the `rollout_progress` entry the driving node signs for itself, checked
//!   by every node against the plan; the weight every node routes by (`effective_weight`).
//! * `decide`: the pure step function (judge the interval, advance, hold, roll back).
//! * `driver`: the loop on every node; the one alive node that owns a rollout drives it.
//!
//! The figures come from `telemetry::versions` (per-version totals every node gossips).

pub mod decide;
pub mod driver;
pub mod plan;
pub mod progress;

use std::collections::hash_map::Entry as MapEntry;

use serde::Serialize;

pub use crate::telemetry::versions::Figures;
pub use plan::{Command, Plan};
pub use progress::{effective_weight, Decision, Progress, State};

use crate::routing::route::{Route, RouteMatch, RouteRule, WeightedVersion};

/// A rollout as every node sees it: the plan, the progress that belongs to it, and the
/// weight and state they give.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    /// The operator's plan.
    pub plan: Plan,
    /// The driver's progress, if it belongs to this plan.
    pub progress: Option<Progress>,
    /// The node that wrote that progress.
    pub progress_by: Option<String>,
    /// The decision count of the progress entry held, whichever rollout it belongs to
    /// (the next write counts on from it).
    pub last_seq: u64,
    /// Percent of traffic on the new version.
    pub weight: u32,
    /// Where it stands.
    pub state: State,
    /// Whether its weight is in force (false once an operator wrote the service's route
    /// after the rollout's plan: the later word wins).
    pub in_force: bool,
}

impl RolloutView {
    /// The view of `plan` with the progress entry held (ignored unless it belongs to it).
    pub fn new(plan: Plan, progress: Option<Progress>, progress_by: Option<String>) -> Self {
        let last_seq = progress.as_ref().map_or(0, |p| p.seq);
        let progress = progress.filter(|p| p.check_against(&plan).is_ok());
        let progress_by = progress.as_ref().and(progress_by);
        let (weight, state) = effective_weight(&plan, progress.as_ref());
        Self {
            plan,
            progress,
            progress_by,
            last_seq,
            weight,
            state,
            in_force: true,
        }
    }

    /// Folds the rollout's weight into the service's route: every rule without a match
    /// (the default split) sends `100 - weight` to the old version and `weight` to the
    /// new; a route without such a rule gets one at the end; a service without a route
    /// gets one. Header or path rules (A/B pins) are left as the operator wrote them.
    pub fn overlay(&self, route: MapEntry<'_, String, Route>) {
        let split = vec![
            WeightedVersion {
                version: self.plan.from.clone(),
                weight: 100 - self.weight,
            },
            WeightedVersion {
                version: self.plan.to.clone(),
                weight: self.weight,
            },
        ];
        let default_rule = || RouteRule {
            matches: RouteMatch::default(),
            to: split.clone(),
        };
        let route = route.or_insert_with(|| Route {
            rules: Vec::new(),
            sticky: None,
            mirror: None,
        });
        let mut found = false;
        for rule in &mut route.rules {
            if rule.matches == RouteMatch::default() {
                rule.to = split.clone();
                found = true;
            }
        }
        if !found {
            route.rules.push(default_rule());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn plan() -> Plan {
        serde_json::from_value(serde_json::json!({
            "id": "ab", "from": "v1", "to": "v2", "steps": [10, 50, 100], "interval_ms": 5000,
            "max_error_rate": 0.01, "min_requests": 20, "started_ms": 1
        }))
        .expect("a plan")
    }

    fn progress(weight: u32, step: usize, state: State) -> Progress {
        Progress {
            plan: "ab".into(),
            seq: 0,
            state,
            weight,
            step,
            step_started_ms: 1,
            history: Vec::new(),
        }
    }

    #[test]
    fn the_weight_comes_from_progress_of_this_plan_and_operator_commands_win() {
        let v = RolloutView::new(
            plan(),
            Some(progress(50, 1, State::Progressing)),
            Some("n1".into()),
        );
        assert_eq!((v.weight, v.state), (50, State::Progressing));
        // Progress of another rollout, or a weight the plan does not have, is ignored.
        let mut other = progress(50, 1, State::Progressing);
        other.plan = "cd".into();
        assert_eq!(RolloutView::new(plan(), Some(other), None).weight, 0);
        assert_eq!(
            RolloutView::new(plan(), Some(progress(70, 1, State::Progressing)), None).weight,
            0
        );
        let mut aborted = plan();
        aborted.command = Command::Abort;
        let v = RolloutView::new(aborted, Some(progress(100, 2, State::Promoted)), None);
        assert_eq!((v.weight, v.state), (0, State::Aborted));
        let mut paused = plan();
        paused.command = Command::Pause;
        let v = RolloutView::new(paused, Some(progress(10, 0, State::Progressing)), None);
        assert_eq!((v.weight, v.state), (10, State::Paused));
    }

    #[test]
    fn the_overlay_replaces_the_default_split_and_keeps_pins() {
        let mut routes: HashMap<String, Route> = HashMap::new();
        routes.insert(
            "reviews".into(),
            serde_json::from_value(serde_json::json!({ "rules": [
                { "match": { "headers": [{ "name": "x-beta", "present": true }] }, "to": [{ "version": "v3", "weight": 1 }] },
                { "to": [{ "version": "v1", "weight": 100 }] }
            ]}))
            .expect("a route"),
        );
        let v = RolloutView::new(plan(), Some(progress(10, 0, State::Progressing)), None);
        v.overlay(routes.entry("reviews".into()));
        let r = &routes["reviews"];
        assert_eq!(r.rules[0].to[0].version, "v3", "the pin is kept");
        assert_eq!(
            r.rules[1].to,
            vec![
                WeightedVersion {
                    version: "v1".into(),
                    weight: 90
                },
                WeightedVersion {
                    version: "v2".into(),
                    weight: 10
                }
            ]
        );
        v.overlay(routes.entry("ratings".into()));
        assert_eq!(routes["ratings"].rules.len(), 1);
        routes["ratings"].validate().expect("a valid route");
    }
}
