//! No node is an admin: with real agents, root on a member VM (its key, its data dir, its
//! admin token, its own mTLS connection) cannot change the cluster; an operator
//! credential can, within its role, from any host, until it is revoked.

use std::process::Output;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use weft_gossip::RevocationList;
use weft_node::authority::{Act, Credential};
use weft_node::rpc::{CtlClient, CtlRequest, CtlResponse};
use weft_node::tls::{self, CertStore};
use weft_tests::{eventually, http_get, stdout_ok as ok, trust_of, Cluster};

const CONVERGE: Duration = Duration::from_secs(15);

fn refused(out: &Output, needle: &str) -> anyhow::Result<()> {
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(!out.status.success(), "expected a refusal, got success");
    anyhow::ensure!(
        err.contains(needle),
        "refusal {err:?} does not say {needle:?}"
    );
    Ok(())
}

/// Runs `f` with a control client that presents `dir`'s node certificate.
fn with_ctl<T>(
    dir: &std::path::Path,
    f: impl AsyncFnOnce(&CtlClient) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (trust, id) = trust_of(dir)?;
        let certs = CertStore::new(&id.key, &id.cert_der, &id.chain, &id.ca_der)?;
        let config = tls::ctl_client_config(
            &certs,
            trust,
            Arc::new(RwLock::new(RevocationList::default())),
        )?;
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let ctl = CtlClient::new(endpoint.clone(), config);
        let r = f(&ctl).await;
        endpoint.close(0u32.into(), b"");
        r
    })
}

#[test]
fn a_member_without_a_credential_changes_nothing_and_operators_act_within_their_role(
) -> anyhow::Result<()> {
    let mut c = Cluster::new("a_member_without_a_credential_changes_nothing");
    c.formed(3)?;
    let vm2 = c.agent("vm-2");

    // Root on vm-2 with only what vm-2 holds: every cluster-wide write is refused.
    let missing = "needs an operator credential";
    refused(
        &vm2.cli_as_node(
            &["route", "set", "--force", "reviews", "--split", "v1=100"],
            &[],
        ),
        missing,
    )?;
    refused(
        &vm2.cli_as_node(&["policy", "default", "allow"], &[]),
        missing,
    )?;
    refused(&vm2.cli_as_node(&["token", "create"], &[]), missing)?;
    refused(&vm2.cli_as_node(&["node", "revoke", "vm-3"], &[]), missing)?;
    refused(&vm2.cli_as_node(&["gossip-key", "install"], &[]), missing)?;
    let token = std::fs::read_to_string(vm2.data_dir.join("admin-token"))?;
    refused(
        &vm2.cli_as_node(&["token", "create"], &[("WEFT_TOKEN", token.trim())]),
        missing,
    )?;

    // Over its own mTLS connection to the CA node, vm-2 can sign with its node key, not
    // as an operator; and a genuine signed act captured in transit works once only.
    let ca_addr: std::net::SocketAddr = format!("{}:7443", c.agent("vm-1").ip).parse()?;
    let cluster = weft_ca::ClusterName::new("weft")?;
    let (_, vm2_id) = trust_of(&vm2.data_dir)?;
    let as_node = Credential::new(vm2_id.key, vm2_id.cert_der, vm2_id.chain);
    let forged = as_node.sign(
        cluster.clone(),
        "vm-2",
        Act::CreateToken { ttl_secs: 600 },
        SystemTime::now(),
    )?;
    let admin = Credential::parse(&std::fs::read_to_string(
        c.agent("vm-1").data_dir.join("admin-credential"),
    )?)?;
    let genuine = admin.sign(
        cluster.clone(),
        "vm-2",
        Act::CreateToken { ttl_secs: 600 },
        SystemTime::now(),
    )?;
    let answers = with_ctl(&vm2.data_dir, async |ctl| {
        let mut out = Vec::new();
        for signed in [forged, genuine.clone(), genuine] {
            out.push(
                ctl.call("vm-1", ca_addr, &CtlRequest::Operator { signed })
                    .await?,
            );
        }
        Ok(out)
    })?;
    match &answers[0] {
        CtlResponse::Error { message, .. } => {
            anyhow::ensure!(
                message.contains("operator certificate refused"),
                "{message}"
            )
        }
        other => anyhow::bail!("a node key passed as an operator: {other:?}"),
    }
    anyhow::ensure!(
        matches!(answers[1], CtlResponse::Token { .. }),
        "{:?}",
        answers[1]
    );
    match &answers[2] {
        CtlResponse::Error { message, .. } => {
            anyhow::ensure!(message.contains("already used"), "{message}")
        }
        other => anyhow::bail!("a replayed act was executed twice: {other:?}"),
    }

    // Nothing changed anywhere: no entry, vm-3 not revoked, one gossip key.
    for n in ["vm-1", "vm-2", "vm-3"] {
        let list = http_get(&c.agent(n).api(), "/v1/config")?;
        anyhow::ensure!(list.trim() == "[]", "{n} holds config: {list}");
        anyhow::ensure!(
            c.agent(n).status_of("vm-3")?.as_deref() == Some("alive"),
            "vm-3 not alive on {n}"
        );
        let keys = http_get(&c.agent(n).api(), "/v1/gossip/keys")?;
        let keys: serde_json::Value = serde_json::from_str(&keys)?;
        anyhow::ensure!(
            keys["keys"].as_array().map(Vec::len) == Some(1),
            "{n}: {keys}"
        );
    }
    let refused_count = c
        .agent("vm-1")
        .metric("weft_authority_refused_total{what=\"command\",reason=\"certificate\"}")?;
    anyhow::ensure!(refused_count >= 1.0, "refusals counted: {refused_count}");

    // An operator credential, carried to vm-2: writes work there and reach everyone.
    let op = ok(&c.agent("vm-1").cli(&[
        "operator", "create", "dave", "--role", "operator", "--ttl", "1d",
    ]))?;
    let viewer = ok(&c
        .agent("vm-1")
        .cli(&["operator", "create", "carol", "--role", "viewer"]))?;
    let as_dave = [("WEFT_TOKEN", op.as_str())];
    ok(&vm2.cli_as_node(
        &["route", "set", "--force", "reviews", "--split", "v1=100"],
        &as_dave,
    ))?;
    for n in ["vm-1", "vm-2", "vm-3"] {
        eventually(&format!("route on {n}"), CONVERGE, || {
            Ok(http_get(&c.agent(n).api(), "/v1/config/route/reviews")
                .ok()
                .filter(|b| b.contains("\"v1\"")))
        })?;
    }
    // Every node's audit trail names the operator, the node that received the write and
    // the change; the CA node's names who created dave.
    let audit = ok(&c.agent("vm-3").cli(&["audit", "--json"]))?;
    let audit: Vec<serde_json::Value> = serde_json::from_str(&audit)?;
    anyhow::ensure!(
        audit.iter().any(|r| r["operator"] == "dave (operator)"
            && r["via"] == "vm-2"
            && r["change"] == "set route/reviews"),
        "vm-3's audit: {audit:?}"
    );
    let ca_audit = ok(&c.agent("vm-1").cli(&["audit"]))?;
    anyhow::ensure!(
        ca_audit.contains("admin (admin) via vm-1: create operator dave (operator) [applied]"),
        "vm-1's audit: {ca_audit}"
    );
    let history = ok(&vm2.cli_as_node(&["config", "history", "route", "reviews"], &[]))?;
    anyhow::ensure!(
        history.contains("dave"),
        "history names the operator: {history}"
    );
    // An operator cannot do admin acts; a viewer cannot write but can list.
    refused(
        &vm2.cli_as_node(&["token", "create"], &as_dave),
        "has role operator",
    )?;
    let as_carol = [("WEFT_TOKEN", viewer.as_str())];
    refused(
        &vm2.cli_as_node(
            &[
                "route",
                "set",
                "--force",
                "reviews",
                "--split",
                "v1=50,v2=50",
            ],
            &as_carol,
        ),
        "has role viewer",
    )?;
    let listed = ok(&vm2.cli_as_node(&["operator", "list"], &as_carol))?;
    anyhow::ensure!(
        listed.contains("dave") && listed.contains("admin"),
        "{listed}"
    );

    // Revoked: dave can write nowhere within a few gossip rounds.
    ok(&c.agent("vm-1").cli(&["operator", "revoke", "dave"]))?;
    for n in ["vm-2", "vm-3"] {
        let agent = c.agent(n);
        eventually(
            &format!("dave refused on {n}"),
            Duration::from_secs(5),
            || {
                let out = agent.cli_as_node(
                    &["route", "set", "--force", "ratings", "--split", "v1=100"],
                    &as_dave,
                );
                Ok((!out.status.success()
                    && String::from_utf8_lossy(&out.stderr).contains("revoked"))
                .then_some(()))
            },
        )?;
    }
    anyhow::ensure!(
        http_get(&c.agent("vm-1").api(), "/v1/config/route/ratings").is_err(),
        "a revoked operator's write got through"
    );
    Ok(())
}

/// A member writes an unsigned entry straight into its own store (root on that VM can):
/// it applies it itself, but every other node refuses it, counts it, and keeps routing
/// by what operators signed.
#[test]
fn an_entry_injected_by_a_member_is_dropped_by_every_other_node() -> anyhow::Result<()> {
    let mut c = Cluster::new("an_entry_injected_by_a_member_is_dropped");
    c.formed(3)?;
    c.agent_mut("vm-3").kill();
    let store = weft_node::store::Store::open(&c.data_dir("vm-3").join("store"))?;
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_millis() as u64;
    let forged = weft_node::cluster_config::Entry {
        kind: weft_node::cluster_config::Kind::Policy,
        name: "default".into(),
        version: weft_node::cluster_config::hlc::Hlc {
            wall: now_ms,
            logical: 0,
            node: "vm-3".into(),
        },
        value: Some(serde_json::json!({"default": "allow"})),
        auth: None,
    };
    store.put_config(&forged.store_key(), &forged)?;
    drop(store);
    c.spawn("vm-3", &[]);
    c.wait_ready("vm-3")?;
    for n in ["vm-1", "vm-2"] {
        let agent = c.agent(n);
        eventually(&format!("{n} refuses vm-3's entry"), CONVERGE, || {
            Ok((agent.metric(
                "weft_authority_refused_total{what=\"config_entry\",reason=\"missing\"}",
            )? >= 1.0)
                .then_some(()))
        })?;
        anyhow::ensure!(
            http_get(&agent.api(), "/v1/config/policy/default").is_err(),
            "{n} applied an unsigned entry"
        );
    }
    Ok(())
}

/// Upgrade: a bootstrap node from before operator credentials (no `admin-credential`,
/// an unsigned entry in its store) issues its admin credential on start, signs the old
/// entry so that nodes joining later accept it, and its old admin token keeps working
/// for scripts (it stands for the credential there).
#[test]
fn an_upgraded_bootstrap_node_issues_its_credential_and_signs_old_entries() -> anyhow::Result<()> {
    let mut c = Cluster::new("an_upgraded_bootstrap_node_issues_its_credential");
    c.start_nodes(1, &[])?;
    c.agent_mut("vm-1").kill();
    let dir = c.data_dir("vm-1");
    std::fs::remove_file(dir.join("admin-credential"))?;
    let store = weft_node::store::Store::open(&dir.join("store"))?;
    let old = weft_node::cluster_config::Entry {
        kind: weft_node::cluster_config::Kind::Ratelimit,
        name: "reviews".into(),
        version: weft_node::cluster_config::hlc::Hlc {
            wall: 1_000,
            logical: 0,
            node: "vm-1".into(),
        },
        value: Some(serde_json::json!({"rps": 5.0})),
        auth: None,
    };
    store.put_config(&old.store_key(), &old)?;
    drop(store);
    c.spawn("vm-1", &[]);
    c.wait_ready("vm-1")?;
    anyhow::ensure!(
        dir.join("admin-credential").exists(),
        "no admin credential after the upgrade"
    );

    // The old admin token, as a script would send it.
    let token = std::fs::read_to_string(dir.join("admin-token"))?;
    let api = c.agent("vm-1").api();
    let body = r#"{"rps":7.0}"#;
    let (status, answer) = weft_tests::backends::http_raw(
        &api,
        &format!(
            "PUT /v1/config/ratelimit/ratings HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            token.trim(),
            body.len()
        ),
    )?;
    anyhow::ensure!(status == 200, "admin token refused: {status} {answer}");

    // A node joining now accepts both entries: the old one was signed again.
    c.join("vm-2", "vm-1", &[])?;
    for name in ["reviews", "ratings"] {
        eventually(&format!("ratelimit {name} on vm-2"), CONVERGE, || {
            Ok(http_get(
                &c.agent("vm-2").api(),
                &format!("/v1/config/ratelimit/{name}"),
            )
            .ok())
        })?;
    }
    Ok(())
}
