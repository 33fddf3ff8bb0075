//! Losing the CA node's disk loses nothing: a backup made through the agent (age,
//! passphrase), the CA node killed and its data dir deleted, the backup restored on
//! another member (a wrong passphrase refused first); that member takes the CA role:
//! renewals go on, its tokens admit new nodes, revocations work, and it adds a replica.

use std::process::Output;
use std::time::Duration;

use weft_tests::{eventually, stdout_ok as ok, Cluster};

const CONVERGE: Duration = Duration::from_secs(20);
const PASS: &str = "correct horse battery staple";

fn weft(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(weft_tests::weft_bin())
        .args(args)
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_CREDENTIAL")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run weft: {e}"))
}

fn env(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[test]
fn a_restored_backup_makes_another_member_the_ca() -> anyhow::Result<()> {
    let mut c = Cluster::new("a_restored_backup_makes_another_member_the_ca");
    c.formed_with(3, &["--leaf-ttl", "20s"])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ca.age");
    let file_s = file.to_string_lossy().into_owned();
    // The operator keeps their credential off the CA node.
    let cred = std::fs::read_to_string(c.data_dir("vm-1").join("admin-credential"))?;
    let as_admin = |api: String| -> Vec<(String, String)> {
        vec![
            ("WEFT_TOKEN".into(), cred.trim().to_owned()),
            ("WEFT_API".into(), api),
        ]
    };
    let vm1_env = as_admin(c.agent("vm-1").api());
    let mut backup_env = env(&vm1_env);
    backup_env.push(("WEFT_CA_PASSPHRASE", PASS));
    ok(&weft(&["ca", "backup", "--out", &file_s], &backup_env))?;
    anyhow::ensure!(std::fs::metadata(&file)?.len() > 0, "empty backup");

    // The CA node is gone for good.
    c.agent_mut("vm-1").kill();
    std::fs::remove_dir_all(c.data_dir("vm-1"))?;

    // The others say so where people look.
    let vm3_api = c.agent("vm-3").api();
    eventually("vm-3 warns that no CA replica is alive", CONVERGE, || {
        let status = weft_tests::http_get(&vm3_api, "/v1/self")?;
        Ok(status.contains("no CA replica is alive").then_some(()))
    })?;
    anyhow::ensure!(c.agent("vm-3").metric("weft_ca_holders_alive")? == 0.0);

    // Restore on vm-2 (stopped): a wrong passphrase is refused, the right one works.
    c.agent_mut("vm-2").kill();
    let vm2_dir = c.data_dir("vm-2").to_string_lossy().into_owned();
    let wrong = weft(
        &["ca", "restore", "--in", &file_s, "--data-dir", &vm2_dir],
        &[("WEFT_CA_PASSPHRASE", "not the passphrase at all")],
    );
    anyhow::ensure!(!wrong.status.success(), "a wrong passphrase was accepted");
    let err = String::from_utf8_lossy(&wrong.stderr);
    anyhow::ensure!(err.contains("does not open with this passphrase"), "{err}");
    ok(&weft(
        &["ca", "restore", "--in", &file_s, "--data-dir", &vm2_dir],
        &[("WEFT_CA_PASSPHRASE", PASS)],
    ))?;
    c.spawn("vm-2", &[]);
    c.wait_ready("vm-2")?;

    // vm-3 sees vm-2 as the CA and keeps renewing its 20 s certificate through it.
    let vm3 = c.agent("vm-3");
    eventually("vm-2 shown as the CA on vm-3", CONVERGE, || {
        Ok(vm3
            .members()?
            .iter()
            .any(|m| m["name"] == "vm-2" && m["ca"] == true)
            .then_some(()))
    })?;
    eventually("weft ca status on vm-3 names vm-2, alive", CONVERGE, || {
        let status: serde_json::Value = serde_json::from_str(&ok(&weft(
            &["ca", "status", "--json"],
            &[("WEFT_API", vm3.api().as_str())],
        ))?)?;
        let holders = status["holders"].as_array().cloned().unwrap_or_default();
        Ok(holders
            .iter()
            .any(|x| x["node"] == "vm-2" && x["status"] == "alive")
            .then_some(()))
    })?;
    anyhow::ensure!(vm3.metric("weft_ca_holders_alive")? == 1.0);
    let renewals = vm3.metric("weft_cert_renewals_total")?;
    eventually(
        "vm-3 renews through the restored CA",
        Duration::from_secs(25),
        || Ok((vm3.metric("weft_cert_renewals_total")? > renewals).then_some(())),
    )?;

    // Tokens from the restored CA admit a node; revocations work.
    let vm3_env = as_admin(vm3.api());
    let token = ok(&weft(&["token", "create", "--ttl", "10m"], &env(&vm3_env)))?;
    let seed = vm3.ip.to_string();
    c.join_with_token("vm-4", &seed, &token)?;
    ok(&weft(
        &["node", "revoke", "vm-4", "--no-rotate"],
        &env(&vm3_env),
    ))?;
    c.wait_revoked("vm-3", "vm-4", CONVERGE)?;

    // The restored root holder adds a replica; vm-3 then sees two.
    ok(&weft(&["ca", "add-replica", "vm-3"], &env(&vm3_env)))?;
    let vm3 = c.agent("vm-3");
    eventually("vm-2 and vm-3 both CA replicas", CONVERGE, || {
        let replicas = vm3
            .members()?
            .iter()
            .filter(|m| m["ca"] == true && m["status"] == "alive")
            .count();
        Ok((replicas == 2).then_some(()))
    })?;
    Ok(())
}
