//! Join tokens used twice (scenario 1): a token replayed from a second host, and the same
//! host reusing its token after wiping its data dir. Asserts that both joins are refused
//! (the agent exits with a failure) and that the CA logs each refusal with the token id.

use std::time::Duration;

use weft_tests::Cluster;

use crate::common::report;

/// Scenario 1: a join token replayed from a second host, and reused by the same host
/// after wiping its data dir, is refused, and the CA logs the token id.
#[test]
fn join_token_replay_and_reuse_after_wipe_are_refused() -> anyhow::Result<()> {
    let mut c = Cluster::new("join_token_replay_and_reuse_after_wipe_are_refused");
    c.bootstrap("vm-1", &[])?;
    let seed = c.agent("vm-1").ip.to_string();
    let token = c.agent("vm-1").token("10m")?;
    let token_id = token.split('.').nth(1).unwrap_or_default().to_owned();
    c.join_with_token("vm-2", &seed, &token)?;
    // Replay from another host.
    c.spawn("vm-3", &["--join", &seed, "--token", &token]);
    let replay = c.agent_mut("vm-3").wait_exit(Duration::from_secs(20))?;
    // Reuse after a wipe.
    c.agent_mut("vm-2").kill();
    std::fs::remove_dir_all(c.data_dir("vm-2"))?;
    c.spawn("vm-2", &["--join", &seed, "--token", &token]);
    let reuse = c.agent_mut("vm-2").wait_exit(Duration::from_secs(20))?;
    let ca_log = c.agent("vm-1").log_text();
    let logged = ca_log
        .lines()
        .filter(|l| l.contains(&token_id) && (l.contains("refused") || l.contains("WARN")))
        .count();
    // The last line each refused agent logged: why it stopped.
    let reasons = ["vm-3", "vm-2"].map(|n| {
        c.agent(n)
            .log_text()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned()
    });
    let ok = replay != Some(0) && reuse != Some(0) && logged >= 2;
    report(
        "1 join token replay and reuse after wipe",
        if ok { "pass" } else { "FAIL" },
        &format!("both refused ({replay:?}, {reuse:?}): {reasons:?}; CA log lines naming token id {token_id}: {logged}"),
    );
    assert!(
        ok,
        "replay {replay:?}, reuse {reuse:?}, CA lines {logged}\n{ca_log}"
    );
    Ok(())
}
