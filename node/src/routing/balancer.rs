//! Load balancing: power of two choices over peak-EWMA latency (as linkerd2-proxy does),
//! same-zone instances first. Pure: the caller passes `now` and the random draws.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Latency estimate of one endpoint.
#[derive(Debug, Clone)]
struct PeakEwma {
    /// Estimated latency, nanoseconds.
    cost: f64,
    last: Instant,
    pending: u32,
}

/// How quickly old latency observations fade.
const DECAY: Duration = Duration::from_secs(10);
/// Cost of an endpoint never measured: optimistic, so new instances get tried.
const DEFAULT_COST_NS: f64 = 1_000_000.0;
/// Endpoints remembered at most.
const MAX_ENDPOINTS: usize = 10_000;

/// Per-endpoint latency state, keyed by an endpoint id (e.g. `node/service`).
#[derive(Debug, Default)]
pub struct Balancer {
    endpoints: HashMap<String, PeakEwma>,
}

impl Balancer {
    fn entry(&mut self, key: &str, now: Instant) -> &mut PeakEwma {
        if self.endpoints.len() >= MAX_ENDPOINTS && !self.endpoints.contains_key(key) {
            self.endpoints
                .retain(|_, e| e.pending > 0 && now.duration_since(e.last) < DECAY * 6);
        }
        self.endpoints.entry(key.to_owned()).or_insert(PeakEwma {
            cost: DEFAULT_COST_NS,
            last: now,
            pending: 0,
        })
    }

    /// The load score of an endpoint: decayed latency times (pending + 1).
    pub fn load(&self, key: &str, now: Instant) -> f64 {
        match self.endpoints.get(key) {
            None => DEFAULT_COST_NS,
            Some(e) => {
                let elapsed = now.saturating_duration_since(e.last).as_secs_f64();
                let w = (-elapsed / DECAY.as_secs_f64()).exp();
                // Fade toward the default when idle.
                let cost = e.cost * w + DEFAULT_COST_NS * (1.0 - w);
                cost * f64::from(e.pending + 1)
            }
        }
    }

    /// Picks among `keys` (already filtered to the preferred zone by the caller): two
    /// distinct candidates drawn with `draw(n)` (uniform in `0..n`), the lower load wins.
    pub fn pick(
        &self,
        keys: &[&str],
        now: Instant,
        mut draw: impl FnMut(usize) -> usize,
    ) -> Option<usize> {
        match keys.len() {
            0 => None,
            1 => Some(0),
            n => {
                let a = draw(n);
                let mut b = draw(n - 1);
                if b >= a {
                    b += 1;
                }
                Some(if self.load(keys[a], now) <= self.load(keys[b], now) {
                    a
                } else {
                    b
                })
            }
        }
    }

    /// A request to `key` starts.
    pub fn start(&mut self, key: &str, now: Instant) {
        self.entry(key, now).pending += 1;
    }

    /// A request to `key` failed before any response: it no longer counts as pending,
    /// and its latency estimate is left alone (dead instances leave the set through
    /// health checks and failure detection, not through latency).
    pub fn cancel(&mut self, key: &str, now: Instant) {
        let e = self.entry(key, now);
        e.pending = e.pending.saturating_sub(1);
    }

    /// A request to `key` ended after `rtt`.
    pub fn finish(&mut self, key: &str, rtt: Duration, now: Instant) {
        let e = self.entry(key, now);
        e.pending = e.pending.saturating_sub(1);
        let rtt = rtt.as_nanos() as f64;
        if rtt > e.cost {
            e.cost = rtt; // peak: jump up at once
        } else {
            let elapsed = now.saturating_duration_since(e.last).as_secs_f64();
            let w = (-elapsed / DECAY.as_secs_f64()).exp();
            e.cost = e.cost * w + rtt * (1.0 - w);
        }
        e.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_faster_endpoint() {
        let mut b = Balancer::default();
        let t = Instant::now();
        for _ in 0..10 {
            b.start("slow", t);
            b.finish("slow", Duration::from_millis(50), t);
            b.start("fast", t);
            b.finish("fast", Duration::from_millis(1), t);
        }
        let keys = ["slow", "fast"];
        let mut draws = [0, 0].into_iter();
        assert_eq!(b.pick(&keys, t, |_| draws.next().unwrap_or(0)), Some(1));
    }

    #[test]
    fn pending_requests_count() {
        let mut b = Balancer::default();
        let t = Instant::now();
        b.start("busy", t);
        b.start("busy", t);
        assert!(b.load("busy", t) > b.load("idle", t));
    }

    #[test]
    fn single_and_empty() {
        let b = Balancer::default();
        assert_eq!(b.pick(&[], Instant::now(), |_| 0), None);
        assert_eq!(b.pick(&["a"], Instant::now(), |_| 0), Some(0));
    }

    #[test]
    fn two_distinct_candidates() {
        let b = Balancer::default();
        let keys = ["a", "b", "c"];
        for first in 0..3 {
            for second in 0..2 {
                let mut d = [first, second].into_iter();
                let picked = b
                    .pick(&keys, Instant::now(), |_| d.next().unwrap_or(0))
                    .expect("some");
                assert!(picked < 3);
            }
        }
    }
}
