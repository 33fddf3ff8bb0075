//! Per-destination resilience state on this node: rate-limit buckets, retry budgets,
//! in-flight counts for the circuit breaker, and outlier ejection per endpoint. The
//! decisions themselves are pure (`ratelimit`, `retry`, `outlier` beside this file);
//! this holds them behind short, non-async locks, each map bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::outlier::OutlierState;
use super::ratelimit::{RateLimit, TokenBucket};
use super::retry::RetryBudget;
use super::settings::Outlier;

/// Most keys kept per map (bounded memory under arbitrary service names).
const MAX_KEYS: usize = 10_000;

/// Now, from tokio's clock: the real monotonic clock in the agent, but one that
/// `#[tokio::test(start_paused = true)]` tests can pause and advance. The pure types
/// beside this file keep taking `std::time::Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The resilience state of this node.
#[derive(Debug, Default)]
pub struct ResilienceState {
    buckets: Mutex<HashMap<String, (TokenBucket, u64)>>,
    budgets: Mutex<HashMap<String, RetryBudget>>,
    inflight: Mutex<HashMap<String, Arc<AtomicU32>>>,
    outliers: Mutex<HashMap<String, OutlierState>>,
}

/// Holds one in-flight slot of a destination's circuit breaker; released on drop.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn bounded<V>(map: &mut HashMap<String, V>) {
    if map.len() >= MAX_KEYS {
        map.clear();
    }
}

impl ResilienceState {
    /// Takes a token for `dst` (per source if configured); false → 429.
    pub fn allow_rate(&self, dst: &str, src: &str, rl: &RateLimit) -> bool {
        let key = if rl.per_source {
            format!("{dst}/{src}")
        } else {
            dst.to_owned()
        };
        // The bucket is rebuilt when the settings change (compared by their bits).
        let fingerprint = rl.rps.to_bits() ^ u64::from(rl.burst.unwrap_or(0)).rotate_left(32);
        let burst = f64::from(rl.burst.unwrap_or(0)).max(rl.rps.max(1.0));
        let now = now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        bounded(&mut buckets);
        let entry = buckets
            .entry(key)
            .or_insert_with(|| (TokenBucket::new(rl.rps, burst, now), fingerprint));
        if entry.1 != fingerprint {
            *entry = (TokenBucket::new(rl.rps, burst, now), fingerprint);
        }
        entry.0.try_take(now)
    }

    /// Counts an original request to `dst` in its retry budget.
    pub fn budget_request(&self, dst: &str) {
        let now = now();
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        // The hot path (a destination seen before) allocates nothing.
        if let Some(budget) = b.get_mut(dst) {
            budget.request(now);
            return;
        }
        bounded(&mut b);
        b.entry(dst.to_owned())
            .or_insert_with(|| RetryBudget::new(now))
            .request(now);
    }

    /// Takes a retry from `dst`'s budget.
    pub fn try_retry(&self, dst: &str, percent: u32) -> bool {
        let now = now();
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        b.entry(dst.to_owned())
            .or_insert_with(|| RetryBudget::new(now))
            .try_retry(percent, now)
    }

    /// Enters the circuit breaker of `dst`; None when `max` requests are already in flight.
    pub fn enter(&self, dst: &str, max: Option<u32>) -> Option<InFlight> {
        let counter = {
            let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match m.get(dst) {
                Some(c) => c.clone(),
                None => {
                    bounded(&mut m);
                    m.entry(dst.to_owned()).or_default().clone()
                }
            }
        };
        let now = counter.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = InFlight(counter);
        match max {
            Some(m) if now > m => None, // dropping `slot` releases it
            _ => Some(slot),
        }
    }

    /// Endpoint keys currently ejected.
    pub fn ejected(&self) -> Vec<String> {
        let now = now();
        self.outliers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| s.ejected(now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Records a response from `endpoint` (one of `total` instances); true if it was
    /// ejected now.
    pub fn record_response(
        &self,
        endpoint: &str,
        is_5xx: bool,
        cfg: &Outlier,
        total: usize,
    ) -> bool {
        let now = now();
        let mut m = self.outliers.lock().unwrap_or_else(|e| e.into_inner());
        bounded(&mut m);
        let ejected_now = m.values().filter(|s| s.ejected(now)).count();
        let may_eject = (ejected_now + 1) * 100 <= total * cfg.max_ejection_percent as usize;
        m.entry(endpoint.to_owned()).or_default().record(
            is_5xx,
            cfg.consecutive_5xx,
            cfg.base_ejection,
            may_eject,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    //! The timer logic through `ResilienceState` itself (not only the pure types), on
    //! tokio's paused clock: time moves only by `advance`, so the boundaries are exact.

    use std::time::Duration;

    use tokio::time::advance;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn outlier_ejection_ends_after_base_and_doubles_the_second_time() {
        let s = ResilienceState::default();
        let cfg = Outlier {
            consecutive_5xx: 2,
            base_ejection: Duration::from_secs(1),
            max_ejection_percent: 50,
        };
        assert!(
            !s.record_response("a", true, &cfg, 2),
            "one 5xx is not enough"
        );
        assert!(
            s.record_response("a", true, &cfg, 2),
            "the second one ejects"
        );
        assert_eq!(s.ejected(), ["a"]);
        s.record_response("b", true, &cfg, 2);
        assert!(
            !s.record_response("b", true, &cfg, 2),
            "a second of two instances would exceed 50 %"
        );

        advance(Duration::from_secs(1) - MS).await;
        assert_eq!(
            s.ejected(),
            ["a"],
            "still ejected just before base_ejection"
        );
        advance(MS).await;
        assert!(s.ejected().is_empty(), "back after base_ejection");

        s.record_response("a", true, &cfg, 2);
        assert!(s.record_response("a", true, &cfg, 2), "ejected again");
        advance(Duration::from_secs(2) - MS).await;
        assert_eq!(
            s.ejected(),
            ["a"],
            "the second ejection lasts twice as long"
        );
        advance(MS).await;
        assert!(s.ejected().is_empty(), "back after twice base_ejection");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_budget_rolls_over_ten_seconds() {
        // `retry::MIN_RETRIES`: retries always allowed per window.
        const FLOOR: usize = 10;
        let s = ResilienceState::default();
        for _ in 0..100 {
            s.budget_request("api");
        }
        let allowed = (0..100).filter(|_| s.try_retry("api", 20)).count();
        assert_eq!(allowed, 20 + FLOOR, "20 % of 100 requests plus the floor");

        advance(Duration::from_secs(5)).await;
        assert!(
            !s.try_retry("api", 20),
            "5 s on, the older half of the window still counts"
        );
        advance(Duration::from_secs(5)).await;
        let allowed = (0..100).filter(|_| s.try_retry("api", 20)).count();
        assert_eq!(
            allowed, FLOOR,
            "10 s on, the window has rolled: the floor only"
        );

        // A budget left alone for a whole window starts over at once.
        for _ in 0..100 {
            s.budget_request("web");
        }
        while s.try_retry("web", 20) {}
        advance(Duration::from_secs(10)).await;
        let allowed = (0..100).filter(|_| s.try_retry("web", 20)).count();
        assert_eq!(allowed, FLOOR);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refills_with_time_up_to_the_burst() {
        let s = ResilienceState::default();
        let rl = RateLimit {
            rps: 2.0,
            burst: None,
            per_source: false,
        };
        assert!(s.allow_rate("api", "web", &rl) && s.allow_rate("api", "web", &rl));
        assert!(
            !s.allow_rate("api", "web", &rl),
            "the burst (one second) is spent"
        );

        advance(Duration::from_millis(400)).await;
        assert!(!s.allow_rate("api", "web", &rl), "0.8 tokens after 400 ms");
        advance(Duration::from_millis(200)).await;
        assert!(s.allow_rate("api", "web", &rl), "1.2 tokens after 600 ms");
        assert!(!s.allow_rate("api", "web", &rl));

        advance(Duration::from_secs(10)).await;
        let allowed = (0..10).filter(|_| s.allow_rate("api", "web", &rl)).count();
        assert_eq!(
            allowed, 2,
            "an idle bucket refills to the burst, no further"
        );

        let per_source = RateLimit {
            per_source: true,
            ..rl
        };
        assert!(s.allow_rate("api", "web", &per_source) && s.allow_rate("api", "web", &per_source));
        assert!(!s.allow_rate("api", "web", &per_source));
        assert!(
            s.allow_rate("api", "cart", &per_source),
            "another source has a bucket of its own"
        );
    }
}
