//! The secure cluster, with real agent processes on 127.x.y.z: forming, tokens, failure
//! detection, leave, restart, renewal.

use std::time::{Duration, Instant};

use weft_tests::{eventually, Cluster};

const CONVERGE: Duration = Duration::from_secs(15);

/// Asserts that agent `name` exits with a failure within 20 s and its log says `says`.
fn assert_refused(c: &mut Cluster, name: &str, says: &str) -> anyhow::Result<()> {
    assert_ne!(
        c.agent_mut(name).wait_exit(Duration::from_secs(20))?,
        Some(0)
    );
    let log = c.agent(name).log_text();
    assert!(log.contains(says), "{log}");
    Ok(())
}

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
    assert_refused(&mut c, "vm-3", "already used")?;

    // Expired token.
    let short = c.agent("vm-1").token("1s")?;
    std::thread::sleep(Duration::from_millis(2100));
    c.spawn("vm-4", &["--join", &seed, "--token", &short]);
    assert_refused(&mut c, "vm-4", "expired")?;

    // A token pinning another CA: the joiner refuses the seed before sending anything.
    let good = c.agent("vm-1").token("10m")?;
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[3] = "A".repeat(43);
    let foreign = parts.join(".");
    c.spawn("vm-5", &["--join", &seed, "--token", &foreign]);
    assert_refused(&mut c, "vm-5", "does not match the token")?;

    // A name held by a live node with a valid certificate is refused.
    let fresh = c.agent("vm-1").token("10m")?;
    c.spawn_as("impostor", "vm-2", &["--join", &seed, "--token", &fresh]);
    assert_refused(&mut c, "impostor", "is taken")?;

    // No token at all: nobody gets in.
    c.spawn("vm-6", &[]);
    assert_refused(
        &mut c,
        "vm-6",
        "--join SEED and a token from `weft token create`",
    )?;

    // The refusals are logged on the CA with the token id.
    let ca_log = c.agent("vm-1").log_text();
    let used_id = token.split('.').nth(1).unwrap_or_default();
    let short_id = short.split('.').nth(1).unwrap_or_default();
    for id in [used_id, short_id] {
        assert!(
            ca_log
                .lines()
                .any(|l| l.contains("join refused") && l.contains(id)),
            "{ca_log}"
        );
    }
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
        c.wait_status(
            observer,
            "vm-3",
            "failed",
            Duration::from_secs(5).saturating_sub(killed_at.elapsed()),
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
    c.wait_status("vm-1", "vm-2", "left", CONVERGE)?;
    Ok(())
}

#[test]
fn restarted_agent_rejoins_without_token_with_same_certificate() -> anyhow::Result<()> {
    let mut c = Cluster::new("restarted_agent_rejoins_without_token_with_same_certificate");
    c.start_nodes(3, &[])?;
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
    c.wait_status("vm-1", "vm-2", "failed", CONVERGE)?;

    // No --join, no --token: it rejoins from the peers it remembers.
    c.spawn("vm-2", &[]);
    c.wait_ready("vm-2")?;
    c.wait_all_see_all(&["vm-1", "vm-2", "vm-3"], CONVERGE)?;
    assert_eq!(fingerprint(&c)?, before);

    // The CA node restarts too, and the cluster is whole again.
    c.agent_mut("vm-1").kill();
    c.spawn("vm-1", &[]);
    c.wait_ready("vm-1")?;
    c.wait_all_see_all(&["vm-1", "vm-2", "vm-3"], CONVERGE)?;
    Ok(())
}

#[test]
fn certificates_renew_without_dropping_out() -> anyhow::Result<()> {
    let mut c = Cluster::new("certificates_renew_without_dropping_out");
    c.formed_with(2, &["--leaf-ttl", "20s"])?;
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
    c.allow_error("certificate is revoked");
    c.formed(3)?;

    let primary = |n: &str| -> anyhow::Result<String> {
        let v: serde_json::Value =
            serde_json::from_str(&weft_tests::http_get(&c.agent(n).api(), "/v1/gossip/keys")?)?;
        Ok(v["primary"].as_str().unwrap_or_default().to_owned())
    };
    let old_key = primary("vm-1")?;
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
        c.wait_revoked(observer, "vm-3", CONVERGE)?;
    }
    // ... vm-3 knows it is out, and no node accepts its handshakes any more.
    c.wait_not_ready("vm-3", CONVERGE)?;
    // ... and says how the host comes back, in its log and in `weft status`.
    assert!(c.agent("vm-3").log_text().contains("delete its data dir"));
    let out = c.agent("vm-3").cli(&["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("weft token create"),
        "{err}"
    );
    // The gossip key was rotated out of vm-3's reach.
    for n in ["vm-1", "vm-2"] {
        assert_ne!(primary(n)?, old_key, "{n} still seals with the old key");
    }
    assert_eq!(primary("vm-3")?, old_key, "vm-3 took part in the rotation");
    let vm3 = c.agent("vm-3");
    let out = vm3.cli(&["token", "create"]);
    assert!(!out.status.success(), "a revoked node still reached the CA");
    // Everyone else is unaffected.
    assert!(c.agent("vm-2").token("10m").is_ok());
    Ok(())
}

#[test]
fn one_token_admits_exactly_one_of_two_concurrent_joins() -> anyhow::Result<()> {
    let mut c = Cluster::new("one_token_admits_exactly_one_of_two_concurrent_joins");
    c.start_nodes(2, &[])?;
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
    c.start_nodes(2, &["--leaf-ttl", "6s"])?;
    c.agent_mut("vm-2").kill();
    std::thread::sleep(Duration::from_secs(8));

    // Without a token it stops and says what to do.
    c.spawn("vm-2", &[]);
    assert_refused(&mut c, "vm-2", "re-join with a new token")?;

    // With a new token it re-joins under the same name (the old certificate expired).
    let token = c.agent("vm-1").token("10m")?;
    let seed = c.agent("vm-1").ip.to_string();
    c.spawn("vm-2", &["--join", &seed, "--token", &token]);
    c.wait_ready("vm-2")?;
    c.wait_all_see_all(&["vm-1", "vm-2"], CONVERGE)?;
    Ok(())
}

/// The CA node loses its store (identity kept): the revocation list it had published is
/// adopted back from gossip, so a revocation made afterwards carries a newer version and
/// is honoured everywhere instead of being ignored as old.
#[test]
fn revocations_after_the_ca_lost_its_store_still_apply() -> anyhow::Result<()> {
    let mut c = Cluster::new("revocations_after_the_ca_lost_its_store_still_apply");
    c.formed(3)?;
    c.cli_ok("vm-1", &["node", "revoke", "vm-3", "--no-rotate"])?;
    for observer in ["vm-1", "vm-2"] {
        c.wait_revoked(observer, "vm-3", CONVERGE)?;
    }
    c.agent_mut("vm-1").kill();
    std::fs::remove_dir_all(c.data_dir("vm-1").join("store"))?;
    c.spawn("vm-1", &["--join", &c.agent("vm-2").ip.to_string()]);
    c.wait_ready("vm-1")?;
    c.join("vm-4", "vm-1", &[])?;
    c.cli_ok("vm-2", &["node", "revoke", "vm-4", "--no-rotate"])?;
    for observer in ["vm-1", "vm-2", "vm-4"] {
        c.wait_revoked(observer, "vm-4", CONVERGE)?;
        c.wait_revoked(observer, "vm-3", CONVERGE)?;
    }
    Ok(())
}
