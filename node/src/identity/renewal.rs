//! When to renew the node certificate: at about half its lifetime, with ±10 % jitter
//! (SPIRE's rule), and how long to wait between failed attempts. Pure: no clock, no I/O.

use std::time::Duration;

/// Seconds from `not_before` at which to renew, for a jitter draw in `[-1, 1]`.
pub fn renew_after(lifetime: Duration, jitter: f64) -> Duration {
    let jitter = jitter.clamp(-1.0, 1.0);
    lifetime.mul_f64(0.5 + 0.1 * jitter)
}

/// Time from the start of failed attempt `attempt` (0-based) to the start of the next:
/// 1 s doubling, capped at a tenth of the lifetime (at most 60 s), so a short-lived
/// certificate still gets several tries, and at a quarter of the life `remaining` (at
/// least 250 ms), so the closer the certificate is to expiry the more often the CA is
/// asked. An expired certificate (`remaining` zero) cannot renew over mTLS; it keeps the
/// lifetime's pace rather than spinning.
pub fn retry_backoff(attempt: u32, lifetime: Duration, remaining: Duration) -> Duration {
    let cap = (lifetime / 10).clamp(Duration::from_millis(500), Duration::from_secs(60));
    let cap = if remaining.is_zero() {
        cap
    } else {
        cap.min((remaining / 4).max(Duration::from_millis(250)))
    };
    Duration::from_secs(1u64 << attempt.min(10)).min(cap)
}

/// How long one renewal attempt may take: a tenth of the lifetime (1 s to 15 s), so a
/// CA that does not answer costs a short certificate a retry, not its remaining life.
pub fn attempt_timeout(lifetime: Duration) -> Duration {
    (lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_short_for_short_certificates() {
        assert_eq!(
            attempt_timeout(Duration::from_secs(8)),
            Duration::from_secs(1)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(12)),
            Duration::from_millis(1200)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(86_400)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn renews_between_40_and_60_percent() {
        let life = Duration::from_secs(24 * 3600);
        assert_eq!(renew_after(life, 0.0), Duration::from_secs(12 * 3600));
        assert_eq!(renew_after(life, -5.0), life.mul_f64(0.4));
        assert_eq!(renew_after(life, 1.0), life.mul_f64(0.6));
    }

    #[test]
    fn backoff_is_capped_by_lifetime() {
        let short = Duration::from_secs(20);
        let plenty = short / 2;
        assert_eq!(retry_backoff(0, short, plenty), Duration::from_secs(1));
        assert_eq!(retry_backoff(5, short, plenty), Duration::from_secs(2));
        let long = Duration::from_secs(86400);
        assert_eq!(retry_backoff(30, long, long / 2), Duration::from_secs(60));
    }

    #[test]
    fn backoff_quickens_near_expiry_but_not_after_it() {
        let day = Duration::from_secs(86400);
        assert_eq!(
            retry_backoff(30, day, Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_backoff(30, day, Duration::from_millis(400)),
            Duration::from_millis(250)
        );
        let short = Duration::from_secs(12);
        assert_eq!(
            retry_backoff(3, short, Duration::from_secs(3)),
            Duration::from_millis(750)
        );
        assert_eq!(
            retry_backoff(30, day, Duration::ZERO),
            Duration::from_secs(60)
        );
    }
}
