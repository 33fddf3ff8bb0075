//! The `rollout_progress` entry the driving node writes for itself: where the rollout it
//! drives stands (state, weight, step) and every decision with its figures. It is signed
//! with that node's own key, not an operator's: every node accepts it only if it belongs
//! to the operator-signed plan (same id) and puts a weight that plan allows
//! (`check_against`), so a node can move a rollout only along the steps an operator
//! signed, never elsewhere.

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use super::Figures;
use crate::config::ValueError;

/// Most decisions kept in an entry (the oldest are dropped).
pub const MAX_HISTORY: usize = 64;

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Moving step by step.
    Progressing,
    /// Held by an operator.
    Paused,
    /// All traffic on the new version (done).
    Promoted,
    /// A gate failed: all traffic back on the old version (done).
    RolledBack,
    /// Stopped by an operator: all traffic on the old version (done).
    Aborted,
}

impl State {
    /// Whether nothing more happens.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Promoted | Self::RolledBack | Self::Aborted)
    }

    /// The label in metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "progressing",
            Self::Paused => "paused",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
            Self::Aborted => "aborted",
        }
    }

    /// A number for `weft_rollout_state` (0 progressing … 4 aborted).
    pub fn code(self) -> i64 {
        match self {
            Self::Progressing => 0,
            Self::Paused => 1,
            Self::Promoted => 2,
            Self::RolledBack => 3,
            Self::Aborted => 4,
        }
    }
}

/// One decision of the driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// When (Unix ms).
    pub at_ms: u64,
    /// The node that decided.
    pub node: String,
    /// `start`, `advance`, `hold`, `promote`, `rollback`, `pause`, `resume`, `abort`,
    /// `takeover`.
    pub action: String,
    /// The weight on the new version after it.
    pub weight: u32,
    /// Why, in words (names the failed gate and its figures).
    pub reason: String,
    /// The new version's figures over the interval judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Figures>,
    /// The old version's figures over the same interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Figures>,
}

/// A `rollout_progress` entry's value (the entry name is the service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// The plan's id.
    pub plan: String,
    /// Decisions written for this service so far, across its rollouts: replicas order
    /// progress by it before time (`Entry::supersedes`), so a write from an older
    /// progress never wins.
    #[serde(default)]
    pub seq: u64,
    /// Where it stands.
    pub state: State,
    /// Percent of traffic on the new version.
    pub weight: u32,
    /// Index of the current step in the plan.
    pub step: usize,
    /// When the current step's interval started (Unix ms).
    pub step_started_ms: u64,
    /// Decisions, oldest first (at most `MAX_HISTORY`).
    pub history: Vec<Decision>,
}

impl Progress {
    /// Checks the value on its own.
    pub fn validate(&self) -> Result<(), ValueError> {
        if self.weight > 100 {
            return Err(ValueError::new("weight", "at most 100"));
        }
        if self.step >= super::plan::MAX_STEPS {
            return Err(ValueError::new("step", "beyond the most steps a plan has"));
        }
        if self.history.len() > MAX_HISTORY {
            return Err(ValueError::new(
                "history",
                format!("at most {MAX_HISTORY} decisions"),
            ));
        }
        if self
            .history
            .iter()
            .any(|d| d.action.len() > 16 || d.reason.len() > 512 || d.node.len() > 128)
        {
            return Err(ValueError::new("history", "a decision's text is too long"));
        }
        Ok(())
    }

    /// Whether a node may have written this for `plan`: the same rollout, a weight and a
    /// step the plan has, and a state that matches the weight.
    pub fn check_against(&self, plan: &Plan) -> Result<(), String> {
        if self.plan != plan.id {
            return Err(format!(
                "progress for rollout {} but the plan is {}",
                self.plan, plan.id
            ));
        }
        if !plan.allows_weight(self.weight) || self.step >= plan.steps.len() {
            return Err(format!(
                "weight {} (step {}) is not a step of the plan {:?}",
                self.weight, self.step, plan.steps
            ));
        }
        let consistent = match self.state {
            State::Promoted => self.weight == 100,
            State::RolledBack | State::Aborted => self.weight == 0,
            State::Progressing | State::Paused => self.weight == plan.steps[self.step],
        };
        if !consistent {
            return Err(format!(
                "state {} with weight {} at step {}",
                self.state.as_str(),
                self.weight,
                self.step
            ));
        }
        Ok(())
    }

    /// Appends a decision, dropping the oldest beyond `MAX_HISTORY`.
    pub fn push(&mut self, d: Decision) {
        self.history.push(d);
        if self.history.len() > MAX_HISTORY {
            let extra = self.history.len() - MAX_HISTORY;
            self.history.drain(..extra);
        }
    }
}

/// The weight on the new version every node routes by: the operator's promote or abort
/// first, then the driver's progress if it belongs to this plan, else 0 (everything on the
/// old version until a driver has started the rollout).
pub fn effective_weight(plan: &Plan, progress: Option<&Progress>) -> (u32, State) {
    let ours = progress.filter(|p| p.check_against(plan).is_ok());
    match (plan.command, ours) {
        (super::plan::Command::Promote, _) => (100, State::Promoted),
        (super::plan::Command::Abort, _) => (0, State::Aborted),
        (_, Some(p)) if p.state.is_final() => (p.weight, p.state),
        (super::plan::Command::Pause, Some(p)) => (p.weight, State::Paused),
        (super::plan::Command::Pause, None) => (0, State::Paused),
        (super::plan::Command::Run, Some(p)) => (p.weight, State::Progressing),
        (super::plan::Command::Run, None) => (0, State::Progressing),
    }
}
