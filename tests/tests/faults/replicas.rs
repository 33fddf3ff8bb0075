//! CA replicas (scenarios 20–22): the bootstrap node (root holder and first replica)
//! killed and its data dir deleted in a five-node cluster with two more replicas, under
//! traffic with 20 s certificates; two joins with one name at two replicas at once; a
//! token used through a forwarding member and replayed at another replica. Asserts that
//! no request fails, every node keeps renewing, a token made on a surviving replica admits
//! a node, a revocation made on a third replica cuts it off everywhere, exactly one of
//! two same-name joins is admitted, and a token is consumed once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_tests::backends::Backend;
use weft_tests::{eventually, Cluster};

use crate::common::{long, renewals, report, routable_on, steady_client_on};

const LEAF: &[&str] = &["--leaf-ttl", "20s"];
const CONVERGE: Duration = Duration::from_secs(20);

/// Runs `weft` against `node` as the operator whose credential is in `cred`.
fn run(c: &Cluster, node: &str, cred: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = c
        .agent(node)
        .cli_as_node(args, &[("WEFT_CREDENTIAL", &cred.to_string_lossy())]);
    anyhow::ensure!(
        out.status.success(),
        "weft {args:?} on {node} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// The bootstrap node's admin credential, copied off it (an operator keeps their own).
fn operator_credential(c: &Cluster, dir: &tempfile::TempDir) -> anyhow::Result<PathBuf> {
    let cred = dir.path().join("admin-credential");
    std::fs::copy(c.data_dir("vm-1").join("admin-credential"), &cred)?;
    Ok(cred)
}

/// Waits until `observer` lists `replicas` (and only them) as alive CA replicas.
fn wait_replicas(c: &Cluster, observer: &str, replicas: &[&str]) -> anyhow::Result<()> {
    let agent = c.agent(observer);
    eventually(
        &format!("replicas {replicas:?} on {observer}"),
        CONVERGE,
        || {
            let mut seen: Vec<String> = agent
                .members()?
                .iter()
                .filter(|m| m["ca"] == true && m["status"] == "alive")
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect();
            seen.sort();
            Ok((seen == replicas).then_some(()))
        },
    )
}

/// Steady requests from `from` to `api`, served by backends on `on`.
fn traffic(
    c: &Cluster,
    from: &str,
    on: [&str; 2],
) -> anyhow::Result<(crate::common::SteadyClient, Vec<Backend>)> {
    let mut backends = Vec::new();
    for n in on {
        let b = Backend::http(n);
        c.register_http(n, "api", b.port())?;
        backends.push(b);
    }
    let up = c.client_upstream(from, "api", 19001)?;
    for want in on {
        routable_on(c, from, "api", want)?;
    }
    Ok((steady_client_on(up, "/"), backends))
}

/// Scenario 20: three replicas in five nodes; the bootstrap node is killed and its data
/// dir deleted; renewals, a join with a token from another replica and a revocation at a
/// third go on, and not one request fails.
#[test]
fn the_cluster_outlives_its_bootstrap_node() -> anyhow::Result<()> {
    let mut c = Cluster::new("the_cluster_outlives_its_bootstrap_node");
    c.bootstrap("vm-1", LEAF)?;
    for i in 2..=5 {
        c.join(&format!("vm-{i}"), "vm-1", LEAF)?;
    }
    c.wait_all_see_all(&["vm-1", "vm-2", "vm-3", "vm-4", "vm-5"], CONVERGE)?;
    let dir = tempfile::tempdir()?;
    let cred = operator_credential(&c, &dir)?;
    // Made replicas through a member that is none (carried out on vm-2 and vm-3).
    for r in ["vm-2", "vm-3"] {
        let out = run(&c, "vm-4", &cred, &["ca", "add-replica", r])?;
        anyhow::ensure!(out.contains("is a CA replica"), "{out}");
    }
    for o in ["vm-1", "vm-4", "vm-5"] {
        wait_replicas(&c, o, &["vm-1", "vm-2", "vm-3"])?;
    }
    let status: serde_json::Value =
        serde_json::from_str(&run(&c, "vm-5", &cred, &["ca", "status", "--json"])?)?;
    let holders = status["holders"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(
        holders.len() == 3 && holders.iter().filter(|h| h["root"] == true).count() == 1,
        "{status}"
    );

    // Traffic from vm-2 to `api` on vm-4 and vm-5.
    let (client, backends) = traffic(&c, "vm-2", ["vm-4", "vm-5"])?;
    let survivors = ["vm-2", "vm-3", "vm-4", "vm-5"];
    let before: Vec<usize> = survivors.iter().map(|n| renewals(&c, n)).collect();

    // The bootstrap node is gone for good.
    c.agent_mut("vm-1").kill();
    std::fs::remove_dir_all(c.data_dir("vm-1"))?;
    let killed = Instant::now();
    for o in survivors {
        c.wait_status(o, "vm-1", "failed", CONVERGE)?;
    }

    // A token made on replica vm-3 admits vm-6 through vm-4, which forwards the join.
    let token = run(&c, "vm-3", &cred, &["token", "create", "--ttl", "10m"])?;
    anyhow::ensure!(
        token.ends_with(".vm-3"),
        "the token names its replica: {token}"
    );
    let seed = c.agent("vm-4").ip.to_string();
    let mut args = vec!["--join", seed.as_str(), "--token", token.as_str()];
    args.extend_from_slice(LEAF);
    c.spawn("vm-6", &args);
    c.wait_ready("vm-6")?;
    let joined_after = killed.elapsed();

    // A revocation made on replica vm-2 (vm-6's certificate came from vm-3) cuts vm-6
    // off everywhere.
    c.wait_status("vm-2", "vm-6", "alive", CONVERGE)?;
    let revoked = run(
        &c,
        "vm-2",
        &cred,
        &["node", "revoke", "vm-6", "--no-rotate"],
    )?;
    anyhow::ensure!(revoked.contains("revoked"), "{revoked}");
    for o in survivors {
        c.wait_revoked(o, "vm-6", CONVERGE)?;
    }
    c.wait_not_ready("vm-6", CONVERGE)?;
    let revoked_after = killed.elapsed();

    // The survivors keep renewing through the replicas for the rest of the run.
    let d = Duration::from_secs(if long() { 120 } else { 45 });
    while killed.elapsed() < d {
        std::thread::sleep(Duration::from_millis(500));
    }
    let samples = client.stop()?;
    let failed = samples.iter().filter(|s| s.answered_by.is_none()).count();
    let after: Vec<usize> = survivors.iter().map(|n| renewals(&c, n)).collect();
    let renewed: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let ok = failed == 0 && renewed.iter().all(|r| *r >= 2);
    report(
        "20 bootstrap node destroyed, 2 replicas left",
        if ok { "pass" } else { "FAIL" },
        &format!(
            "{} s after the kill: {} requests, {failed} failed; renewals per survivor {renewed:?}; new node admitted after {:.1} s, revocation at another replica effective after {:.1} s",
            d.as_secs(),
            samples.len(),
            joined_after.as_secs_f64(),
            revoked_after.as_secs_f64()
        ),
    );
    assert_eq!(
        failed, 0,
        "requests failed after the bootstrap node was destroyed"
    );
    assert!(
        renewed.iter().all(|r| *r >= 2),
        "renewals per survivor after the kill: {renewed:?}"
    );
    drop(backends);
    Ok(())
}

/// Scenarios 21–22: two joins asking for one name at two replicas at once admit exactly
/// one (20 times); a token is consumed once, wherever it is presented.
#[test]
fn names_and_tokens_stay_unique_across_replicas() -> anyhow::Result<()> {
    let mut c = Cluster::new("names_and_tokens_stay_unique_across_replicas");
    c.formed(3)?;
    let dir = tempfile::tempdir()?;
    let cred = operator_credential(&c, &dir)?;
    run(&c, "vm-1", &cred, &["ca", "add-replica", "vm-2"])?;
    for o in ["vm-1", "vm-2", "vm-3"] {
        wait_replicas(&c, o, &["vm-1", "vm-2"])?;
    }
    let seeds = [
        c.agent("vm-1").ip.to_string(),
        c.agent("vm-2").ip.to_string(),
    ];

    let rounds = if long() { 50 } else { 20 };
    let mut both_or_none = Vec::new();
    for i in 0..rounds {
        let name = format!("twin-{i}");
        let tokens = [
            run(&c, "vm-1", &cred, &["token", "create", "--ttl", "5m"])?,
            run(&c, "vm-2", &cred, &["token", "create", "--ttl", "5m"])?,
        ];
        let labels = [format!("{name}-a"), format!("{name}-b")];
        for k in 0..2 {
            c.spawn_as(
                &labels[k],
                &name,
                &["--join", &seeds[k], "--token", &tokens[k]],
            );
        }
        let mut admitted = Vec::new();
        let mut refused = Vec::new();
        for label in &labels {
            let agent = c.agent(label);
            let api = agent.api();
            let outcome = eventually(&format!("{label} admitted or refused"), CONVERGE, || {
                if weft_tests::http_get(&api, "/readyz").is_ok() {
                    return Ok(Some(true));
                }
                Ok(agent.log_text().contains("is taken").then_some(false))
            })?;
            if outcome {
                admitted.push(label.clone());
            } else {
                refused.push(label.clone());
            }
        }
        if admitted.len() != 1 {
            both_or_none.push(format!(
                "{name}: admitted {admitted:?}, refused {refused:?}"
            ));
        }
        for label in &labels {
            c.agent_mut(label).kill();
        }
    }
    report(
        "21 one name, two replicas, at once",
        if both_or_none.is_empty() {
            "pass"
        } else {
            "FAIL"
        },
        &format!(
            "{rounds} rounds, {} without exactly one admitted",
            both_or_none.len()
        ),
    );
    assert!(both_or_none.is_empty(), "{both_or_none:?}");

    // A token of replica vm-2, used through vm-3 (a member that forwards), is consumed
    // once: replayed at replica vm-1, it is refused with the reason.
    let token = run(&c, "vm-2", &cred, &["token", "create", "--ttl", "5m"])?;
    let via = c.agent("vm-3").ip.to_string();
    c.spawn("vm-4", &["--join", &via, "--token", &token]);
    c.wait_ready("vm-4")?;
    c.spawn("vm-5", &["--join", &seeds[0], "--token", &token]);
    assert_ne!(c.agent_mut("vm-5").wait_exit(CONVERGE)?, Some(0));
    let log = c.agent("vm-5").log_text();
    let says = log.contains("already used");
    report(
        "22 a replica's token used through a member, replayed at another replica",
        if says { "pass" } else { "FAIL" },
        "consumed once; the replay is refused as already used",
    );
    assert!(says, "{log}");
    Ok(())
}

/// The SHA-256 (hex) of the roots `node` trusts, from `weft ca status`.
fn roots_on(c: &Cluster, node: &str) -> anyhow::Result<Vec<String>> {
    let out = c.agent(node).cli(&["ca", "status", "--json"]);
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["roots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect())
}

/// Scenario 23: the root is rotated under traffic with 20 s certificates; a node down
/// when it starts comes back (within its certificate's life) without a token. Not one
/// request fails, every node ends on the new root, and the old root leaves the bundle.
#[test]
fn the_root_rotates_under_traffic() -> anyhow::Result<()> {
    let mut c = Cluster::new("the_root_rotates_under_traffic");
    c.bootstrap("vm-1", LEAF)?;
    for i in 2..=5 {
        c.join(&format!("vm-{i}"), "vm-1", LEAF)?;
    }
    let all = ["vm-1", "vm-2", "vm-3", "vm-4", "vm-5"];
    c.wait_all_see_all(&all, CONVERGE)?;
    let out = c.agent("vm-1").cli(&["ca", "add-replica", "vm-2"]);
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_replicas(&c, "vm-3", &["vm-1", "vm-2"])?;
    let old_roots = roots_on(&c, "vm-3")?;
    anyhow::ensure!(old_roots.len() == 1, "{old_roots:?}");

    let (client, backends) = traffic(&c, "vm-2", ["vm-3", "vm-4"])?;

    // vm-5 is down when the rotation starts.
    c.agent_mut("vm-5").kill();
    let started = Instant::now();
    let out = c.agent("vm-3").cli(&["ca", "rotate", "--json"]);
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let new_root = state["new_root_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(old_roots[0] == state["old_root_sha256"], "{state}");
    for n in ["vm-1", "vm-2", "vm-3", "vm-4"] {
        eventually(&format!("{n} trusts both roots"), CONVERGE, || {
            Ok((roots_on(&c, n)?.len() == 2).then_some(()))
        })?;
    }
    // Back within its certificate's life, without a token.
    std::thread::sleep(Duration::from_secs(6));
    let mut args = vec![];
    args.extend_from_slice(LEAF);
    c.spawn("vm-5", &args);
    c.wait_ready("vm-5")?;

    // Every node moves to the new root; then the old root is retired everywhere.
    let vm1 = c.agent("vm-1");
    eventually(
        "every member on the new root",
        Duration::from_secs(90),
        || {
            let members = vm1.members()?;
            Ok((members.len() == 5
                && members
                    .iter()
                    .all(|m| m["status"] == "alive" && m["cert_root"] == new_root.as_str()))
            .then_some(()))
        },
    )?;
    for n in all {
        eventually(
            &format!("old root retired on {n}"),
            Duration::from_secs(90),
            || Ok((roots_on(&c, n)? == [new_root.clone()]).then_some(())),
        )?;
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let samples = client.stop()?;
    let failed = samples.iter().filter(|s| s.answered_by.is_none()).count();
    // Operators act with the credential issued under the new root.
    let token = c.agent("vm-4").token("5m")?;
    anyhow::ensure!(token.starts_with("weft1."), "{token}");
    report(
        "23 root rotated under traffic, a node down at its start",
        if failed == 0 { "pass" } else { "FAIL" },
        &format!(
            "old root retired {:.0} s after the start (20 s certificates); {} requests, {failed} failed; the node down at the start came back without a token",
            took.as_secs_f64(),
            samples.len()
        ),
    );
    assert_eq!(failed, 0, "requests failed during the root rotation");
    drop(backends);
    Ok(())
}

/// Scenario 24: a node holding 600 unexpired certificates (600 renewals over its own
/// control connection) is revoked: the revocation set (600 entries, more than one gossip
/// value) reaches every node and cuts it off everywhere.
#[test]
fn a_revocation_set_larger_than_one_gossip_value_spreads() -> anyhow::Result<()> {
    use weft_node::rpc::{b64, CtlRequest, CtlResponse, MAX_RESPONSE};
    let mut c = Cluster::new("a_revocation_set_larger_than_one_gossip_value_spreads");
    c.formed(3)?;
    let (trust, id) = weft_tests::trust_of(&c.agent("vm-2").data_dir)?;
    let certs = weft_node::tls::CertStore::new(&id.key, &id.cert_der, &id.chain, &id.ca_der)?;
    let config = weft_node::tls::ctl_client_config(&certs, trust, std::sync::Arc::default())?;
    let ca_addr = std::net::SocketAddr::from((c.agent("vm-1").ip, 7443));
    let csr = id.key.csr_der(&weft_ca::SpiffeId::node(
        id.info.cluster.clone(),
        id.info.name.clone(),
    ))?;
    let renewals = 600;
    let rt = tokio::runtime::Runtime::new()?;
    let issued = rt.block_on(async {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let conn = endpoint.connect_with(config, ca_addr, "vm-1")?.await?;
        let mut n = 0;
        for _ in 0..renewals {
            let req = CtlRequest::Renew { csr: b64(&csr) };
            if let CtlResponse::Cert { .. } =
                weft_node::rpc::call(&conn, &req, MAX_RESPONSE).await?
            {
                n += 1;
            }
        }
        conn.close(0u32.into(), b"");
        endpoint.close(0u32.into(), b"");
        anyhow::Ok(n)
    })?;
    anyhow::ensure!(issued == renewals, "{issued} of {renewals} renewals");
    let started = Instant::now();
    let out = c
        .agent("vm-3")
        .cli(&["node", "revoke", "vm-2", "--no-rotate", "--json"]);
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let listed = answer["serials"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(listed > renewals, "{listed} serials revoked");
    for o in ["vm-1", "vm-3"] {
        c.wait_revoked(o, "vm-2", CONVERGE)?;
        let agent = c.agent(o);
        eventually(&format!("{listed} entries on {o}"), CONVERGE, || {
            Ok((agent.metric("weft_revocation_list_entries")? >= listed as f64).then_some(()))
        })?;
    }
    c.wait_not_ready("vm-2", CONVERGE)?;
    report(
        "24 a revocation set larger than one gossip value",
        "pass",
        &format!(
            "{listed} serials revoked at once (16 KiB holds ~90): in force on every node, the node cut off, {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// Scenario 25: the root kept offline (backed up, then `ca.key` removed from the first
/// node): the replicas keep issuing; an operator credential is issued by a replica and
/// works on every node (its chain travels with each signed change); revoking it at the
/// replicas refuses it everywhere; tokens are still made.
#[test]
fn the_root_can_stay_offline() -> anyhow::Result<()> {
    let mut c = Cluster::new("the_root_can_stay_offline");
    c.formed(3)?;
    let out = c.agent("vm-1").cli(&["ca", "add-replica", "vm-2"]);
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_replicas(&c, "vm-3", &["vm-1", "vm-2"])?;
    let dir = tempfile::tempdir()?;
    let backup = dir.path().join("ca.age");
    let out = c.agent("vm-1").cli_as_node(
        &["ca", "backup", "--out", &backup.to_string_lossy()],
        &[
            ("WEFT_CA_PASSPHRASE", "offline root passphrase"),
            (
                "WEFT_CREDENTIAL",
                &c.data_dir("vm-1")
                    .join("admin-credential")
                    .to_string_lossy(),
            ),
        ],
    );
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The root goes offline: only the backup holds it now.
    c.agent_mut("vm-1").kill();
    std::fs::remove_file(c.data_dir("vm-1").join("ca.key"))?;
    c.spawn("vm-1", &[]);
    c.wait_ready("vm-1")?;
    wait_replicas(&c, "vm-3", &["vm-1", "vm-2"])?;
    eventually(
        "no node holds the root, two replicas alive",
        CONVERGE,
        || {
            let status: serde_json::Value =
                serde_json::from_str(&c.cli_ok("vm-3", &["ca", "status", "--json"])?)?;
            let holders = status["holders"].as_array().cloned().unwrap_or_default();
            Ok((holders.len() == 2
                && holders
                    .iter()
                    .all(|x| x["root"] == false && x["status"] == "alive"))
            .then_some(()))
        },
    )?;

    // An operator credential from a replica, used on another node.
    let cred = c.cli_ok(
        "vm-3",
        &[
            "operator", "create", "alice", "--role", "operator", "--ttl", "30d",
        ],
    )?;
    anyhow::ensure!(
        cred.split('.').count() == 4,
        "the credential carries its chain"
    );
    let cred_file = dir.path().join("alice.cred");
    std::fs::write(&cred_file, &cred)?;
    let as_alice = |node: &str, args: &[&str]| {
        c.agent(node)
            .cli_as_node(args, &[("WEFT_CREDENTIAL", &cred_file.to_string_lossy())])
    };
    let out = as_alice(
        "vm-1",
        &["route", "set", "--force", "api", "--split", "v1=100"],
    );
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in ["vm-2", "vm-3"] {
        let agent = c.agent(n);
        eventually(&format!("alice's route applied on {n}"), CONVERGE, || {
            Ok(
                weft_tests::http_get(&agent.api(), "/v1/config/route/api/history")?
                    .contains("alice")
                    .then_some(()),
            )
        })?;
    }
    let list = c.cli_ok("vm-3", &["operator", "list", "--json"])?;
    anyhow::ensure!(list.contains("alice"), "{list}");

    // Revoked at the replicas: refused everywhere.
    c.cli_ok("vm-3", &["operator", "revoke", "alice"])?;
    for n in ["vm-1", "vm-2", "vm-3"] {
        eventually(&format!("alice refused on {n}"), CONVERGE, || {
            let out = as_alice(
                n,
                &["route", "set", "--force", "api", "--split", "v1=50,v2=50"],
            );
            Ok((!out.status.success()).then_some(()))
        })?;
    }
    let token = c.agent("vm-3").token("5m")?;
    report(
        "25 the root kept offline",
        "pass",
        &format!(
            "replicas issue certificates, tokens ({}) and an operator credential that works on every node and is revoked everywhere",
            token.rsplit('.').next().unwrap_or("-")
        ),
    );
    Ok(())
}
