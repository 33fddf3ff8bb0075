//! A check's verdict over time: the first result decides, then it takes
//! `unhealthy_threshold` failures in a row to turn unhealthy and `healthy_threshold`
//! passes in a row to turn healthy again. Pure.

/// The health of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    verdict: Option<bool>,
    streak: u32,
}

impl HealthState {
    /// Whether the instance may receive traffic (false until the first check passes).
    pub fn healthy(&self) -> bool {
        self.verdict == Some(true)
    }

    /// Records one probe; returns true when the verdict changed.
    pub fn record(
        &mut self,
        passed: bool,
        unhealthy_threshold: u32,
        healthy_threshold: u32,
    ) -> bool {
        match self.verdict {
            None => {
                self.verdict = Some(passed);
                self.streak = 0;
                true
            }
            Some(current) if current == passed => {
                self.streak = 0;
                false
            }
            Some(_) => {
                self.streak += 1;
                let needed = if passed {
                    healthy_threshold
                } else {
                    unhealthy_threshold
                };
                if self.streak >= needed {
                    self.verdict = Some(passed);
                    self.streak = 0;
                    true
                } else {
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let mut h = HealthState::default();
        assert!(!h.healthy());
        assert!(h.record(true, 2, 3));
        assert!(h.healthy());
        assert!(!h.record(false, 2, 3));
        assert!(!h.record(true, 2, 3), "a pass resets the failure streak");
        assert!(!h.record(false, 2, 3));
        assert!(h.record(false, 2, 3));
        assert!(!h.healthy());
        assert!(!h.record(true, 2, 3) && !h.record(true, 2, 3));
        assert!(h.record(true, 2, 3));
        assert!(h.healthy());
    }
}
