//! The `resilience` entry (name = destination service): timeouts, retries and their
//! budget, the circuit breaker's limit and outlier ejection. Durations are `Duration`
//! from the moment the entry is validated; nothing on the request path parses text.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::value::{check_range, duration_text, opt_duration_text};
use crate::config::ValueError;

/// Outlier ejection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Consecutive 5xx responses before an instance is ejected.
    pub consecutive_5xx: u32,
    /// First ejection time; doubles with each further ejection (up to 16×).
    #[serde(with = "duration_text")]
    pub base_ejection: Duration,
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
    #[serde(
        default,
        with = "opt_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Time per attempt.
    #[serde(
        default,
        with = "opt_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_try_timeout: Option<Duration>,
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
        if let Some(t) = self.timeout {
            check_range("timeout", t, min, max)?;
        }
        if let Some(t) = self.per_try_timeout {
            check_range("per_try_timeout", t, min, max)?;
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
            check_range(
                "outlier.base_ejection",
                o.base_ejection,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?;
            if o.max_ejection_percent > 100 {
                return Err(ValueError::new("outlier.max_ejection_percent", "0-100"));
            }
        }
        Ok(())
    }
}
