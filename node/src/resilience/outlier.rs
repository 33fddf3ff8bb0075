//! Outlier ejection: consecutive 5xx responses eject an endpoint for a while (longer
//! each time), never more than the configured share of instances at once. Pure: the
//! caller passes `now`.

use std::time::{Duration, Instant};

/// Consecutive-5xx tracking and ejection of one endpoint. Pure.
#[derive(Debug, Clone, Default)]
pub struct OutlierState {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl OutlierState {
    /// Whether it is ejected at `now`.
    pub fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }

    /// Records a response; returns true when this response ejects the endpoint (the
    /// caller checks the max-ejection share first via `may_eject`).
    pub fn record(
        &mut self,
        is_5xx: bool,
        threshold: u32,
        base: Duration,
        may_eject: bool,
        now: Instant,
    ) -> bool {
        if !is_5xx {
            self.consecutive = 0;
            return false;
        }
        self.consecutive += 1;
        if self.consecutive >= threshold && may_eject && !self.ejected(now) {
            let factor = 1u32 << self.ejections.min(4);
            self.ejected_until = Some(now + base * factor);
            self.ejections += 1;
            self.consecutive = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_grows() {
        let t = Instant::now();
        let mut o = OutlierState::default();
        let base = Duration::from_secs(1);
        assert!(!o.record(true, 2, base, true, t));
        assert!(o.record(true, 2, base, true, t));
        assert!(o.ejected(t + Duration::from_millis(999)));
        assert!(!o.ejected(t + Duration::from_secs(1)));
        let t2 = t + Duration::from_secs(2);
        o.record(true, 2, base, true, t2);
        assert!(o.record(true, 2, base, true, t2));
        assert!(
            o.ejected(t2 + Duration::from_millis(1999)),
            "second ejection lasts twice as long"
        );
        let mut ok = OutlierState::default();
        ok.record(true, 2, base, true, t);
        ok.record(false, 2, base, true, t);
        assert!(
            !ok.record(true, 2, base, true, t),
            "a success resets the streak"
        );
    }
}
