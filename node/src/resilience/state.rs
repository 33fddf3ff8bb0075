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
        let now = Instant::now();
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
        let now = Instant::now();
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        bounded(&mut b);
        b.entry(dst.to_owned())
            .or_insert_with(|| RetryBudget::new(now))
            .request(now);
    }

    /// Takes a retry from `dst`'s budget.
    pub fn try_retry(&self, dst: &str, percent: u32) -> bool {
        let now = Instant::now();
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        b.entry(dst.to_owned())
            .or_insert_with(|| RetryBudget::new(now))
            .try_retry(percent, now)
    }

    /// Enters the circuit breaker of `dst`; None when `max` requests are already in flight.
    pub fn enter(&self, dst: &str, max: Option<u32>) -> Option<InFlight> {
        let counter = {
            let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            bounded(&mut m);
            m.entry(dst.to_owned()).or_default().clone()
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
        let now = Instant::now();
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
        let now = Instant::now();
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
