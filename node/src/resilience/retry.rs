//! Retries: how many attempts a request gets and which failures may be retried
//! (`RetryPolicy`, from the `resilience` entry or the defaults), and the retry budget
//! that caps the extra load retries may add. Connect attempts in `proxy::dial` use the
//! same `DEFAULT_ATTEMPTS`. Pure: the caller passes `now`.

use std::time::{Duration, Instant};

use hyper::Method;

use super::settings::Resilience;

/// Attempts per connection or request when no `resilience` entry says otherwise.
pub const DEFAULT_ATTEMPTS: usize = 3;

/// What a request may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: usize,
    /// Retry on 5xx responses (connect failures and resets always may be).
    pub retry_5xx: bool,
    /// Whether this request may be retried at all (idempotent, or allowed).
    pub may_retry: bool,
    /// Retries may add at most this percentage of extra load.
    pub budget_percent: u32,
    /// A gRPC trailers-only `UNAVAILABLE` may be retried even where `may_retry` is false
    /// (the server did not take the call).
    pub retry_unavailable: bool,
}

impl RetryPolicy {
    /// The policy for a gRPC call: like `for_request`, and a trailers-only `UNAVAILABLE`
    /// (the server did not take the call) may be retried whatever the method, within the
    /// attempts and the budget.
    pub fn for_grpc(settings: Option<&Resilience>) -> Self {
        Self {
            retry_unavailable: true,
            ..Self::for_request(&Method::POST, settings)
        }
    }

    /// The policy for a request with `method` under `settings` (None: connect failures and
    /// resets only, idempotent methods only, `DEFAULT_ATTEMPTS`).
    pub fn for_request(method: &Method, settings: Option<&Resilience>) -> Self {
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        match settings {
            Some(r) => Self {
                max_attempts: 1 + r.retries as usize,
                retry_5xx: r.retry_on_5xx,
                may_retry: idempotent || r.retry_non_idempotent,
                budget_percent: r.retry_budget_percent,
                retry_unavailable: false,
            },
            None => Self {
                max_attempts: DEFAULT_ATTEMPTS,
                retry_5xx: false,
                may_retry: idempotent,
                budget_percent: 100,
                retry_unavailable: false,
            },
        }
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
    fn policy_follows_method_and_settings() {
        let none = RetryPolicy::for_request(&Method::POST, None);
        assert_eq!(
            (none.max_attempts, none.may_retry),
            (DEFAULT_ATTEMPTS, false)
        );
        let get = RetryPolicy::for_request(&Method::GET, None);
        assert!(get.may_retry && !get.retry_5xx);
        let r: Resilience =
            serde_json::from_str(r#"{"retries": 2, "retry_non_idempotent": true}"#).expect("valid");
        let post = RetryPolicy::for_request(&Method::POST, Some(&r));
        assert_eq!(post.max_attempts, 3);
        assert!(post.may_retry && post.retry_5xx);
        assert_eq!(post.budget_percent, 20);
    }
}
