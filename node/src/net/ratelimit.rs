//! A token bucket (pure: the caller passes `now`), and a bounded set of them per source
//! address, to limit join requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

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

/// A global bucket plus one per source IP (at most `MAX_SOURCES` tracked).
#[derive(Debug)]
pub struct JoinLimiter {
    global: TokenBucket,
    per_ip: HashMap<IpAddr, TokenBucket>,
}

const MAX_SOURCES: usize = 4096;

impl JoinLimiter {
    /// 20 joins/s cluster-wide through this node (burst 50), 2/s per address (burst 10).
    pub fn new(now: Instant) -> Self {
        Self {
            global: TokenBucket::new(20.0, 50.0, now),
            per_ip: HashMap::new(),
        }
    }

    /// Whether a request from `ip` may proceed.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.per_ip.len() >= MAX_SOURCES && !self.per_ip.contains_key(&ip) {
            self.per_ip.clear();
        }
        let bucket = self
            .per_ip
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(2.0, 10.0, now));
        bucket.try_take(now) && self.global.try_take(now)
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

    #[test]
    fn per_ip_limit() {
        let t0 = Instant::now();
        let mut l = JoinLimiter::new(t0);
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        for _ in 0..10 {
            assert!(l.allow(a, t0));
        }
        assert!(!l.allow(a, t0));
        assert!(l.allow(b, t0));
    }
}
