//! Rate limits: the `ratelimit` entry (name = destination service) and the token
//! bucket that enforces it (pure: the caller passes `now`; also used by the join server).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::ValueError;

/// A `ratelimit` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, per node sending to the destination.
    pub rps: f64,
    /// Burst size (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// A separate bucket per source service.
    #[serde(default)]
    pub per_source: bool,
}

impl RateLimit {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValueError> {
        if !(self.rps > 0.0 && self.rps <= 1_000_000.0) {
            return Err(ValueError::new("rps", "between 0 and 1000000"));
        }
        if self.burst == Some(0) {
            return Err(ValueError::new("burst", "must be positive"));
        }
        Ok(())
    }
}

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 2.0, t0);
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_secs(1)));
    }
}
