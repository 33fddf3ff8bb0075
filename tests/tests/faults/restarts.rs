//! Rolling restarts (scenario 12): both nodes serving `api` are stopped with SIGTERM and
//! restarted, one after the other, under a steady client. Asserts that not one
//! (idempotent) request fails while they go down and come back.

use std::time::{Duration, Instant};

use weft_tests::Cluster;

use crate::common::{long, loopback_with_api, report, routable_on, steady_client_on};

/// Scenario 12: a rolling restart (SIGTERM, restart, next) of both `api` nodes under
/// steady load: no idempotent request fails.
#[test]
fn rolling_restart_under_load_fails_no_request() -> anyhow::Result<()> {
    let mut c = Cluster::new("rolling_restart_under_load_fails_no_request");
    let (up, _backends) = loopback_with_api(&mut c, &[])?;
    let client = steady_client_on(up, "/");
    std::thread::sleep(Duration::from_secs(1));
    let rounds = if long() { 5 } else { 1 };
    let t = Instant::now();
    for _ in 0..rounds {
        for n in ["vm-2", "vm-3"] {
            c.agent_mut(n).signal("TERM");
            c.agent_mut(n).wait_exit(Duration::from_secs(15))?;
            c.spawn(n, &[]);
            c.wait_ready(n)?;
            c.wait_all_alive(
                &["vm-1"],
                &["vm-1", "vm-2", "vm-3"],
                Duration::from_secs(15),
            )?;
            // The restarted node is routable again before the next goes down.
            routable_on(&c, "vm-1", "api", n)?;
        }
    }
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let samples = client.stop()?;
    let failed = samples.iter().filter(|s| s.answered_by.is_none()).count();
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    report(
        "12 rolling restart under load",
        if failed == 0 { "pass" } else { "FAIL" },
        &format!(
            "{rounds} round(s) over 2 nodes in {took:.2?}: {} requests, {failed} failed, slowest {slowest:.2?}",
            samples.len()
        ),
    );
    assert_eq!(failed, 0, "requests failed during the rolling restart");
    Ok(())
}
