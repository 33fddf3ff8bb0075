//! The secure cluster, with real agent processes on 127.x.y.z: forming, tokens, failure
//! detection, leave, restart, renewal.

use std::time::{Duration, Instant};

use weft_tests::{eventually, Cluster};

const CONVERGE: Duration = Duration::from_secs(15);

#[test]
fn three_agents_form_a_cluster_with_tokens() -> anyhow::Result<()> {
    let mut c = Cluster::new("three_agents_form_a_cluster_with_tokens");
    c.formed(3)?;

    // Every member shows the fields operators need, and exactly one holds the CA.
    let members = c.agent("vm-3").members()?;
    assert_eq!(members.iter().filter(|m| m["ca"] == true).count(), 1);
    for m in &members {
        for field in [
            "name",
            "address",
            "status",
            "zone",
            "version",
            "cert_expiry_unix",
        ] {
            assert!(!m[field].is_null(), "{field} missing in {m}");
        }
    }
    // A token created on a member that does not hold the CA is forwarded to the CA node.
    c.join("vm-4", "vm-2", &[])?;
    c.wait_all_alive(
        &["vm-1", "vm-4"],
        &["vm-1", "vm-2", "vm-3", "vm-4"],
        CONVERGE,
    )?;
    Ok(())
}

#[test]
fn bad_tokens_are_refused_with_a_reason() -> anyhow::Result<()> {
    let mut c = Cluster::new("bad_tokens_are_refused_with_a_reason");
    c.bootstrap("vm-1", &[])?;
    let seed = c.agent("vm-1").ip.to_string();

    // Used token: one join succeeds, the second is refused.
    let token = c.agent("vm-1").token("10m")?;
    c.spawn("vm-2", &["--join", &seed, "--token", &token]);
    c.wait_ready("vm-2")?;
    c.spawn("vm-3", &["--join", &seed, "--token", &token]);
    assert_ne!(
        c.agent_mut("vm-3").wait_exit(Duration::from_secs(20))?,
        Some(0)
    );
    assert!(
        c.agent("vm-3").log_text().contains("already used"),
        "{}",
        c.agent("vm-3").log_text()
    );

    // Expired token.
    let short = c.agent("vm-1").token("1s")?;
    std::thread::sleep(Duration::from_millis(2100));
    c.spawn("vm-4", &["--join", &seed, "--token", &short]);
    assert_ne!(
        c.agent_mut("vm-4").wait_exit(Duration::from_secs(20))?,
        Some(0)
    );
    assert!(
        c.agent("vm-4").log_text().contains("expired"),
        "{}",
        c.agent("vm-4").log_text()
    );

    // A token pinning another CA: the joiner refuses the seed before sending anything.
    let good = c.agent("vm-1").token("10m")?;
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[3] = "A".repeat(43);
    let foreign = parts.join(".");
    c.spawn("vm-5", &["--join", &seed, "--token", &foreign]);
    assert_ne!(
        c.agent_mut("vm-5").wait_exit(Duration::from_secs(20))?,
        Some(0)
    );
    assert!(
        c.agent("vm-5")
            .log_text()
            .contains("does not match the token"),
        "{}",
        c.agent("vm-5").log_text()
    );

    // A name held by a live node with a valid certificate is refused.
    let fresh = c.agent("vm-1").token("10m")?;
    c.spawn_as("impostor", "vm-2", &["--join", &seed, "--token", &fresh]);
    assert_ne!(
        c.agent_mut("impostor").wait_exit(Duration::from_secs(20))?,
        Some(0)
    );
    assert!(
        c.agent("impostor").log_text().contains("is taken"),
        "{}",
        c.agent("impostor").log_text()
    );

    // No token at all: nobody gets in.
    c.spawn("vm-6", &[]);
    assert_ne!(
        c.agent_mut("vm-6").wait_exit(Duration::from_secs(20))?,
        Some(0)
    );
    assert!(c
        .agent("vm-6")
        .log_text()
        .contains("--join SEED --token TOKEN"));

    // The refusals are logged on the CA with the token id.
    let ca_log = c.agent("vm-1").log_text();
    let used_id = token.split('.').nth(1).unwrap_or_default();
    let short_id = short.split('.').nth(1).unwrap_or_default();
    assert!(
        ca_log
            .lines()
            .any(|l| l.contains("join refused") && l.contains(used_id)),
        "{ca_log}"
    );
    assert!(
        ca_log
            .lines()
            .any(|l| l.contains("join refused") && l.contains(short_id)),
        "{ca_log}"
    );
    // Only the two legitimate members are in the cluster.
    c.wait_all_alive(&["vm-1"], &["vm-1", "vm-2"], CONVERGE)?;
    Ok(())
}

#[test]
fn killed_agent_is_failed_within_5s_and_sigterm_is_left() -> anyhow::Result<()> {
    let mut c = Cluster::new("killed_agent_is_failed_within_5s_and_sigterm_is_left");
    c.formed(3)?;

    let killed_at = Instant::now();
    c.agent_mut("vm-3").kill();
    for observer in ["vm-1", "vm-2"] {
        let agent = c.agent(observer);
        eventually(
            "vm-3 failed",
            Duration::from_secs(5).saturating_sub(killed_at.elapsed()),
            || Ok((agent.status_of("vm-3")?.as_deref() == Some("failed")).then_some(())),
        )?;
    }
    println!(
        "vm-3 marked failed on both observers after {:?}",
        killed_at.elapsed()
    );

    c.agent("vm-2").signal("TERM");
    assert_eq!(
        c.agent_mut("vm-2").wait_exit(Duration::from_secs(15))?,
        Some(0)
    );
    let agent = c.agent("vm-1");
    eventually("vm-2 left", CONVERGE, || {
        Ok((agent.status_of("vm-2")?.as_deref() == Some("left")).then_some(()))
    })?;
    Ok(())
}

#[test]
fn restarted_agent_rejoins_without_token_with_same_certificate() -> anyhow::Result<()> {
    let mut c = Cluster::new("restarted_agent_rejoins_without_token_with_same_certificate");
    c.bootstrap("vm-1", &[])?;
    c.join("vm-2", "vm-1", &[])?;
    c.join("vm-3", "vm-1", &[])?;
    c.wait_all_alive(&["vm-1"], &["vm-1", "vm-2", "vm-3"], CONVERGE)?;
    let fingerprint = |c: &Cluster| -> anyhow::Result<String> {
        let m = c.agent("vm-1").members()?;
        Ok(m.iter()
            .find(|m| m["name"] == "vm-2")
            .and_then(|m| m["cert_fingerprint"].as_str())
            .unwrap_or_default()
            .to_owned())
    };
    let before = fingerprint(&c)?;
    c.agent_mut("vm-2").kill();
    let agent = c.agent("vm-1");
    eventually("vm-2 failed", CONVERGE, || {
        Ok((agent.status_of("vm-2")?.as_deref() == Some("failed")).then_some(()))
    })?;

    // No --join, no --token: it rejoins from the peers it remembers.
    c.spawn("vm-2", &[]);
    c.wait_ready("vm-2")?;
    c.wait_all_alive(
        &["vm-1", "vm-2", "vm-3"],
        &["vm-1", "vm-2", "vm-3"],
        CONVERGE,
    )?;
    assert_eq!(fingerprint(&c)?, before);

    // The CA node restarts too, and the cluster is whole again.
    c.agent_mut("vm-1").kill();
    c.spawn("vm-1", &[]);
    c.wait_ready("vm-1")?;
    c.wait_all_alive(
        &["vm-1", "vm-2", "vm-3"],
        &["vm-1", "vm-2", "vm-3"],
        CONVERGE,
    )?;
    Ok(())
}

#[test]
fn certificates_renew_without_dropping_out() -> anyhow::Result<()> {
    let mut c = Cluster::new("certificates_renew_without_dropping_out");
    c.bootstrap("vm-1", &["--leaf-ttl", "20s"])?;
    c.join("vm-2", "vm-1", &[])?;
    c.wait_all_alive(&["vm-1", "vm-2"], &["vm-1", "vm-2"], CONVERGE)?;
    let start = Instant::now();
    let vm2 = c.agent("vm-2");
    let vm1 = c.agent("vm-1");
    // Poll throughout: vm-2 must stay alive and ready while it renews at least twice.
    loop {
        assert_eq!(
            vm1.status_of("vm-2")?.as_deref(),
            Some("alive"),
            "vm-2 dropped out"
        );
        weft_tests::http_get(&vm2.api(), "/readyz")?;
        let renewals = vm2.metric("weft_cert_renewals_total")?;
        if renewals >= 2.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "only {renewals} renewals in 40s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(vm2.metric("weft_cert_expiry_seconds")? > 0.0);
    Ok(())
}

#[test]
fn revoked_node_is_refused_everywhere() -> anyhow::Result<()> {
    let mut c = Cluster::new("revoked_node_is_refused_everywhere");
    c.formed(3)?;

    // Revoked from a member that does not hold the CA: forwarded to the CA node.
    let out = c.agent("vm-2").cli(&["node", "revoke", "vm-3", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        answer["serials"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );

    // The revocation list spreads by gossip: every node marks vm-3 revoked ...
    for observer in ["vm-1", "vm-2", "vm-3"] {
        let agent = c.agent(observer);
        eventually(&format!("vm-3 revoked on {observer}"), CONVERGE, || {
            let members = agent.members()?;
            Ok(members
                .iter()
                .any(|m| m["name"] == "vm-3" && m["revoked"] == true)
                .then_some(()))
        })?;
    }
    // ... vm-3 knows it is out, and no node accepts its handshakes any more.
    let vm3 = c.agent("vm-3");
    eventually("vm-3 not ready", CONVERGE, || {
        Ok(weft_tests::http_get(&vm3.api(), "/readyz")
            .is_err()
            .then_some(()))
    })?;
    let out = vm3.cli(&["token", "create"]);
    assert!(!out.status.success(), "a revoked node still reached the CA");
    // Everyone else is unaffected.
    assert!(c.agent("vm-2").token("10m").is_ok());
    Ok(())
}

#[test]
fn one_token_admits_exactly_one_of_two_concurrent_joins() -> anyhow::Result<()> {
    let mut c = Cluster::new("one_token_admits_exactly_one_of_two_concurrent_joins");
    c.bootstrap("vm-1", &[])?;
    c.join("vm-2", "vm-1", &[])?;
    let token = c.agent("vm-1").token("10m")?;
    // One joins through the CA node, the other through a member that forwards.
    let (s1, s2) = (
        c.agent("vm-1").ip.to_string(),
        c.agent("vm-2").ip.to_string(),
    );
    c.spawn("vm-3", &["--join", &s1, "--token", &token]);
    c.spawn("vm-4", &["--join", &s2, "--token", &token]);
    let ready = |c: &Cluster, n: &str| weft_tests::http_get(&c.agent(n).api(), "/readyz").is_ok();
    let winner = eventually(
        "one joiner ready or both exited",
        Duration::from_secs(20),
        || {
            for (me, other) in [("vm-3", "vm-4"), ("vm-4", "vm-3")] {
                if ready(&c, me)
                    && !c.agent(other).log_text().is_empty()
                    && c.agent(other).log_text().contains("already used")
                {
                    return Ok(Some(me));
                }
            }
            Ok(None)
        },
    )?;
    let loser = if winner == "vm-3" { "vm-4" } else { "vm-3" };
    assert_ne!(
        c.agent_mut(loser).wait_exit(Duration::from_secs(10))?,
        Some(0)
    );
    c.wait_all_alive(&["vm-1"], &["vm-1", "vm-2", winner], CONVERGE)?;
    Ok(())
}

#[test]
fn expired_certificate_needs_a_new_token() -> anyhow::Result<()> {
    let mut c = Cluster::new("expired_certificate_needs_a_new_token");
    c.bootstrap("vm-1", &["--leaf-ttl", "6s"])?;
    c.join("vm-2", "vm-1", &[])?;
    c.agent_mut("vm-2").kill();
    std::thread::sleep(Duration::from_secs(8));

    // Without a token it stops and says what to do.
    c.spawn("vm-2", &[]);
    assert_ne!(
        c.agent_mut("vm-2").wait_exit(Duration::from_secs(20))?,
        Some(0)
    );
    assert!(
        c.agent("vm-2")
            .log_text()
            .contains("re-join with a new token"),
        "{}",
        c.agent("vm-2").log_text()
    );

    // With a new token it re-joins under the same name (the old certificate expired).
    let token = c.agent("vm-1").token("10m")?;
    let seed = c.agent("vm-1").ip.to_string();
    c.spawn("vm-2", &["--join", &seed, "--token", &token]);
    c.wait_ready("vm-2")?;
    c.wait_all_alive(&["vm-1", "vm-2"], &["vm-1", "vm-2"], CONVERGE)?;
    Ok(())
}
