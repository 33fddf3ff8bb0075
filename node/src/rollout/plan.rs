//! The `rollout` entry an operator signs: which service moves from which version to which,
//! in what steps, how often, and the gates the new version must meet at each step. The
//! entry is also how an operator steers a running rollout (`command`): pause, resume,
//! promote, abort are new signed writes of the same plan with another command.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ValueError;

/// Most steps in a plan.
pub const MAX_STEPS: usize = 20;
/// Shortest step interval (the figures are published every second).
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Longest step interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// What the operator asks of the rollout now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Move step by step while the gates hold.
    #[default]
    Run,
    /// Hold the current weight; no decisions.
    Pause,
    /// All traffic to the new version now.
    Promote,
    /// All traffic back to the old version now.
    Abort,
}

/// A `rollout` entry's value (the entry name is the service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Identifies this rollout across the commands that steer it (hex, set at start):
    /// progress written for another id is not this rollout's.
    pub id: String,
    /// The version traffic leaves.
    pub from: String,
    /// The version traffic moves to.
    pub to: String,
    /// Percent of traffic on `to` at each step, increasing, the last 100.
    pub steps: Vec<u32>,
    /// Time at each step before its figures are judged, ms.
    pub interval_ms: u64,
    /// Highest share of failed requests (0..1) the new version may have at a step
    /// (unless the old one fails as often).
    pub max_error_rate: f64,
    /// Highest p99 latency the new version may have at a step, ms (unless the old one is
    /// as slow); none: latency is not a gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    /// Fewest requests the new version must have served in an interval for the step to be
    /// judged; fewer and the step holds.
    pub min_requests: u64,
    /// What the operator asks now.
    #[serde(default)]
    pub command: Command,
    /// When the operator started it (Unix ms).
    pub started_ms: u64,
}

fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl Plan {
    /// Checks every field; names the first bad one and the fix.
    pub fn validate(&self) -> Result<(), ValueError> {
        if self.id.is_empty()
            || self.id.len() > 32
            || !self.id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ValueError::new("id", "up to 32 hex digits"));
        }
        for (field, v) in [("from", &self.from), ("to", &self.to)] {
            if !label_ok(v) {
                return Err(ValueError::new(
                    field,
                    format!("{v:?}: a version label, up to 63 of [A-Za-z0-9._-]"),
                ));
            }
        }
        if self.from == self.to {
            return Err(ValueError::new("to", "must differ from --from"));
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(ValueError::new(
                "steps",
                format!("between 1 and {MAX_STEPS} steps, e.g. 10,50,100"),
            ));
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1])
            || self.steps[0] == 0
            || self.steps.last() != Some(&100)
        {
            return Err(ValueError::new(
                "steps",
                format!(
                    "{:?}: percentages that increase, above 0, ending at 100 (e.g. 10,50,100)",
                    self.steps
                ),
            ));
        }
        let interval = Duration::from_millis(self.interval_ms);
        crate::config::value::check_range("interval", interval, MIN_INTERVAL, MAX_INTERVAL)?;
        if !(0.0..=1.0).contains(&self.max_error_rate) || self.max_error_rate.is_nan() {
            return Err(ValueError::new(
                "max_error_rate",
                "a share between 0 and 1 (the CLI takes 1% or 0.01)",
            ));
        }
        if let Some(p) = self.max_p99_ms {
            if !(p > 0.0 && p <= 3_600_000.0) {
                return Err(ValueError::new("max_p99_ms", "between 0 and one hour"));
            }
        }
        if self.min_requests > 1_000_000_000 {
            return Err(ValueError::new("min_requests", "at most 10^9"));
        }
        Ok(())
    }

    /// The step interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Whether `weight` is one this plan can put on the new version (0: all on the old).
    pub fn allows_weight(&self, weight: u32) -> bool {
        weight == 0 || self.steps.contains(&weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn plan() -> Plan {
        Plan {
            id: "ab12".into(),
            from: "v1".into(),
            to: "v2".into(),
            steps: vec![10, 50, 100],
            interval_ms: 5_000,
            max_error_rate: 0.01,
            max_p99_ms: Some(500.0),
            min_requests: 20,
            command: Command::Run,
            started_ms: 1,
        }
    }

    #[test]
    fn a_good_plan_validates_and_bad_fields_are_named() {
        plan().validate().expect("valid");
        let bad = |f: fn(&mut Plan)| {
            let mut p = plan();
            f(&mut p);
            p.validate().expect_err("invalid").field
        };
        assert_eq!(bad(|p| p.steps = vec![50, 10, 100]), "steps");
        assert_eq!(bad(|p| p.steps = vec![10, 50]), "steps");
        assert_eq!(bad(|p| p.steps = vec![0, 100]), "steps");
        assert_eq!(bad(|p| p.to = "v1".into()), "to");
        assert_eq!(bad(|p| p.from = "v 1".into()), "from");
        assert_eq!(bad(|p| p.interval_ms = 10), "interval");
        assert_eq!(bad(|p| p.max_error_rate = 5.0), "max_error_rate");
        assert_eq!(bad(|p| p.id = "zz".into()), "id");
        assert!(plan().allows_weight(50) && plan().allows_weight(0) && !plan().allows_weight(70));
    }
}
