//! The `fault` entry (name = destination service): a delay and/or an abort for a share
//! of requests, optionally under a path prefix, and the pure decision per request.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::value::{check_range, duration_text};
use crate::config::ValueError;

/// A delay or abort for a share of requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// How long (e.g. "100ms").
    #[serde(with = "duration_text")]
    pub duration: Duration,
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
            check_range(
                "delay.duration",
                d.duration,
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
            .map(|d| d.duration);
        let abort = self
            .abort
            .as_ref()
            .filter(|a| draw_abort < a.percent)
            .map(|a| a.status);
        (delay, abort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rates() {
        let f = Fault {
            path_prefix: None,
            delay: Some(FaultDelay {
                duration: Duration::from_millis(100),
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
