//! Time in one place. `unix_ms`/`unix_secs`: real wall-clock time for stamps (gossip
//! records, the config HLC, display). `now`: the clock of the certificate logic: when to renew, whether this node's certificate has
//! expired, readiness and the expiry metric. Real time plus an offset that only a test can
//! set, through a file named by `WEFT_TEST_CLOCK_FILE` (whole seconds, may be negative),
//! so the fault suite can step a node 13 or 25 hours ahead without waiting. TLS
//! verification keeps the real clock: peers judge a node's certificate by real time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The environment variable naming the offset file (tests only).
pub const TEST_CLOCK_ENV: &str = "WEFT_TEST_CLOCK_FILE";

static OFFSET_SECS: AtomicI64 = AtomicI64::new(0);

/// Now, as the certificate logic sees it.
pub fn now() -> SystemTime {
    let offset = OFFSET_SECS.load(Ordering::Relaxed);
    let step = Duration::from_secs(offset.unsigned_abs());
    if offset >= 0 {
        SystemTime::now() + step
    } else {
        SystemTime::now()
            .checked_sub(step)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Real wall-clock time in milliseconds since the Unix epoch (0 before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Real wall-clock time in whole seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    weft_ca::unix(SystemTime::now())
}

/// Sets the offset (tests).
pub fn set_offset(secs: i64) {
    OFFSET_SECS.store(secs, Ordering::Relaxed);
}

/// Follows the offset file every 200 ms until shutdown (started only when
/// `WEFT_TEST_CLOCK_FILE` is set; a missing or unreadable file means no offset).
pub async fn follow_file(path: PathBuf, shutdown: CancellationToken) {
    warn!(file = %path.display(), "test clock enabled: certificate logic follows an offset file");
    loop {
        let offset = tokio::fs::read_to_string(&path)
            .await
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        set_offset(offset);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_moves_now_both_ways() {
        let real = SystemTime::now();
        set_offset(3600);
        assert!(now() >= real + Duration::from_secs(3600));
        set_offset(-3600);
        assert!(now() < real);
        set_offset(0);
        assert!(now() >= real);
    }
}
