//! `resilience`, `fault` and `ratelimit` entries (name = destination service), and the
//! pure pieces that enforce them: retry budget, outlier ejection state. Token buckets come
//! from `net::ratelimit`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ValueError;

fn dur(field: &'static str, v: &str, min: Duration, max: Duration) -> Result<Duration, ValueError> {
    let d =
        humantime::parse_duration(v).map_err(|e| ValueError::new(field, format!("{v:?}: {e}")))?;
    if d < min || d > max {
        return Err(ValueError::new(
            field,
            format!("must be between {min:?} and {max:?}"),
        ));
    }
    Ok(d)
}

/// Outlier ejection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Consecutive 5xx responses before an instance is ejected.
    pub consecutive_5xx: u32,
    /// First ejection time; doubles with each further ejection (up to 16×).
    pub base_ejection: String,
    /// At most this share of instances ejected at once (percent).
    #[serde(default = "default_max_ejection")]
    pub max_ejection_percent: u32,
}

fn default_max_ejection() -> u32 {
    50
}

/// A `resilience` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resilience {
    /// Overall time for a request including retries (e.g. "5s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Time per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Retries after the first attempt.
    #[serde(default)]
    pub retries: u32,
    /// Retry on 5xx responses (connect failures and resets are always retried).
    #[serde(default = "yes")]
    pub retry_on_5xx: bool,
    /// Also retry non-idempotent methods (POST, PATCH).
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Retries may add at most this percentage of extra load (over a 10 s window).
    #[serde(default = "default_budget")]
    pub retry_budget_percent: u32,
    /// Circuit breaker: requests in flight to this service from this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Outlier ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<Outlier>,
}

fn yes() -> bool {
    true
}

fn default_budget() -> u32 {
    20
}

impl Resilience {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValueError> {
        let (min, max) = (Duration::from_millis(1), Duration::from_secs(3600));
        if let Some(t) = &self.timeout {
            dur("timeout", t, min, max)?;
        }
        if let Some(t) = &self.per_try_timeout {
            dur("per_try_timeout", t, min, max)?;
        }
        if self.retries > 10 {
            return Err(ValueError::new("retries", "at most 10"));
        }
        if self.retry_budget_percent > 100 {
            return Err(ValueError::new("retry_budget_percent", "0-100"));
        }
        if self.max_concurrent == Some(0) {
            return Err(ValueError::new("max_concurrent", "must be positive"));
        }
        if let Some(o) = &self.outlier {
            if o.consecutive_5xx == 0 {
                return Err(ValueError::new(
                    "outlier.consecutive_5xx",
                    "must be positive",
                ));
            }
            dur(
                "outlier.base_ejection",
                &o.base_ejection,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?;
            if o.max_ejection_percent > 100 {
                return Err(ValueError::new("outlier.max_ejection_percent", "0-100"));
            }
        }
        Ok(())
    }

    /// Parsed overall timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }

    /// Parsed per-try timeout.
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}

/// A delay or abort for a share of requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// How long (e.g. "100ms").
    pub duration: String,
    /// Share of requests, percent (0-100).
    pub percent: u32,
}

/// An abort for a share of requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status to answer (400-599).
    pub status: u16,
    /// Share of requests, percent (0-100).
    pub percent: u32,
}

/// A `fault` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Only requests whose normalised path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

impl Fault {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValueError> {
        if self.delay.is_none() && self.abort.is_none() {
            return Err(ValueError::new("delay", "set delay and/or abort"));
        }
        if let Some(d) = &self.delay {
            dur(
                "delay.duration",
                &d.duration,
                Duration::ZERO,
                Duration::from_secs(60),
            )?;
            if d.percent > 100 {
                return Err(ValueError::new("delay.percent", "0-100"));
            }
        }
        if let Some(a) = &self.abort {
            if !(400..=599).contains(&a.status) {
                return Err(ValueError::new("abort.status", "400-599"));
            }
            if a.percent > 100 {
                return Err(ValueError::new("abort.percent", "0-100"));
            }
        }
        if let Some(p) = &self.path_prefix {
            if !p.starts_with('/') {
                return Err(ValueError::new("path_prefix", "must start with /"));
            }
        }
        Ok(())
    }

    /// The delay to apply and the status to abort with, given two uniform draws in 0..100.
    pub fn decide(
        &self,
        path: &str,
        draw_delay: u32,
        draw_abort: u32,
    ) -> (Option<Duration>, Option<u16>) {
        if self
            .path_prefix
            .as_deref()
            .is_some_and(|p| !path.starts_with(p))
        {
            return (None, None);
        }
        let delay = self
            .delay
            .as_ref()
            .filter(|d| draw_delay < d.percent)
            .and_then(|d| humantime::parse_duration(&d.duration).ok());
        let abort = self
            .abort
            .as_ref()
            .filter(|a| draw_abort < a.percent)
            .map(|a| a.status);
        (delay, abort)
    }
}

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

/// Retries allowed as a share of requests over a sliding 10 s window (two 5 s buckets),
/// plus a floor of a few retries per second so quiet services can still retry. Pure.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    window_start: Instant,
    requests: [u64; 2],
    retries: [u64; 2],
}

const HALF_WINDOW: Duration = Duration::from_secs(5);
/// Retries always allowed per window regardless of load.
const MIN_RETRIES: u64 = 10;

impl RetryBudget {
    /// An empty budget.
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            requests: [0; 2],
            retries: [0; 2],
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= HALF_WINDOW * 2 {
            self.requests = [0; 2];
            self.retries = [0; 2];
            self.window_start = now;
        } else if elapsed >= HALF_WINDOW {
            self.requests = [self.requests[1], 0];
            self.retries = [self.retries[1], 0];
            self.window_start += HALF_WINDOW;
        }
    }

    /// Records an original request.
    pub fn request(&mut self, now: Instant) {
        self.roll(now);
        self.requests[1] += 1;
    }

    /// Takes a retry if the budget (`percent` of requests) allows it.
    pub fn try_retry(&mut self, percent: u32, now: Instant) -> bool {
        self.roll(now);
        let requests: u64 = self.requests.iter().sum();
        let retries: u64 = self.retries.iter().sum();
        let allowed = requests * u64::from(percent) / 100 + MIN_RETRIES;
        if retries < allowed {
            self.retries[1] += 1;
            true
        } else {
            false
        }
    }
}

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
    fn budget_caps_retries() {
        let t = Instant::now();
        let mut b = RetryBudget::new(t);
        for _ in 0..1000 {
            b.request(t);
        }
        let allowed = (0..1000).filter(|_| b.try_retry(20, t)).count();
        assert_eq!(allowed, 200 + MIN_RETRIES as usize);
        let later = t + Duration::from_secs(11);
        assert!(b.try_retry(20, later), "a new window has a fresh floor");
    }

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

    #[test]
    fn fault_rates() {
        let f = Fault {
            path_prefix: None,
            delay: Some(FaultDelay {
                duration: "100ms".into(),
                percent: 50,
            }),
            abort: Some(FaultAbort {
                status: 503,
                percent: 10,
            }),
        };
        f.validate().expect("valid");
        let delays = (0..100)
            .filter(|d| f.decide("/", *d, 99).0.is_some())
            .count();
        let aborts = (0..100)
            .filter(|a| f.decide("/", 99, *a).1.is_some())
            .count();
        assert_eq!((delays, aborts), (50, 10));
    }
}
