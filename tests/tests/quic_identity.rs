//! Who may open a data-plane stream: only a member with a valid, unrevoked certificate
//! from the cluster CA, and only for a source service its node runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use weft_ca::{CertificateAuthority, ClusterName, NodeKey, NodeName, ServiceName, SpiffeId};
use weft_gossip::{Protocol, RevocationList};
use weft_node::proxy::header::StreamHeader;
use weft_node::tls::{self, CertStore};
use weft_tests::backends::Backend;
use weft_tests::{eventually, no_cert_data_config, trust_of, Cluster};

const CONVERGE: Duration = Duration::from_secs(15);

fn header(dst: &str, src: Option<&str>) -> Vec<u8> {
    StreamHeader {
        protocol: Protocol::Tcp,
        destination: ServiceName::new(dst).expect("valid"),
        source: src.map(|s| ServiceName::new(s).expect("valid")),
        traceparent: None,
    }
    .encode()
}

/// Connects with `config`, sends `header` + "hello", returns what comes back.
async fn exchange(
    config: quinn::ClientConfig,
    addr: SocketAddr,
    server: &str,
    header: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let result = async {
        let conn = endpoint.connect_with(config, addr, server)?.await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(header).await?;
        send.write_all(b"hello").await?;
        send.finish()?;
        let got = recv.read_to_end(1024).await?;
        anyhow::Ok(got)
    };
    let r = tokio::time::timeout(Duration::from_secs(10), result).await;
    endpoint.close(0u32.into(), b"");
    r.map_err(|_| anyhow::anyhow!("timed out"))?
}

fn member_config(dir: &Path) -> anyhow::Result<quinn::ClientConfig> {
    let (trust, id) = trust_of(dir)?;
    let certs = CertStore::new(&id.key, &id.cert_der, &id.chain, &id.ca_der)?;
    Ok(tls::data_client_config(
        &certs,
        trust,
        Arc::new(RwLock::new(RevocationList::default())),
    )?)
}

#[test]
fn only_valid_members_open_streams_for_their_own_services() -> anyhow::Result<()> {
    let mut c = Cluster::new("only_valid_members_open_streams_for_their_own_services");
    c.start_nodes(3, &[])?;
    let echo = Backend::echo();
    let port = echo.port().to_string();
    for (node, args) in [
        ("vm-2", ["--name", "echo", "--port", port.as_str()]),
        ("vm-1", ["--name", "frontend", "--port", "1"]),
        ("vm-3", ["--name", "batch", "--port", "1"]),
    ] {
        c.register(node, &args)?;
    }
    let vm2: SocketAddr = format!("{}:7443", c.agent("vm-2").ip).parse()?;
    let agent2 = c.agent("vm-2");
    eventually("vm-2 knows frontend and batch", CONVERGE, || {
        let out = agent2.cli(&["services", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok((text.contains("\"frontend\"") && text.contains("\"batch\"")).then_some(()))
    })?;
    let rt = tokio::runtime::Runtime::new()?;
    // Opens a stream to `echo` on vm-2 with `config`, speaking for service `source`.
    let open_echo = |config: quinn::ClientConfig, source: Option<&str>| {
        rt.block_on(exchange(config, vm2, "vm-2", &header("echo", source)))
    };

    // A member, for a service it runs: works.
    let vm1_config = member_config(&c.agent("vm-1").data_dir)?;
    let got = open_echo(vm1_config.clone(), Some("frontend"))?;
    assert_eq!(got, b"hello");

    // The same member asserting a service it does not run: refused.
    let r = open_echo(vm1_config, Some("batch"));
    assert!(r.is_err(), "vm-1 spoke for batch: {r:?}");
    assert!(agent2
        .log_text()
        .contains("source service is not registered on the peer node"));

    // Without a client certificate: refused.
    let (trust, _) = trust_of(&c.agent("vm-1").data_dir)?;
    let no_cert = no_cert_data_config(trust.clone())?;
    let r = open_echo(no_cert, None);
    assert!(r.is_err(), "no client certificate got through: {r:?}");

    // A certificate for "vm-1" from another CA (same cluster name): refused.
    let cluster = ClusterName::new("weft")?;
    let (foreign_ca, _) = CertificateAuthority::create(
        cluster.clone(),
        SystemTime::now(),
        Duration::from_secs(3600),
    )?;
    let key = NodeKey::generate()?;
    let name = NodeName::new("vm-1")?;
    let cert = foreign_ca
        .sign_node_csr(
            &key.csr_der(&SpiffeId::node(cluster, name.clone()))?,
            &name,
            Duration::from_secs(600),
            SystemTime::now(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let certs = CertStore::new(&key, &cert.der, &[], foreign_ca.cert_der())?;
    let foreign = tls::data_client_config(&certs, trust.clone(), Arc::default())?;
    let r = open_echo(foreign, Some("frontend"));
    assert!(r.is_err(), "a foreign CA's certificate got through: {r:?}");

    // A revoked member: refused.
    let out = c.agent("vm-1").cli(&["node", "revoke", "vm-3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_revoked("vm-2", "vm-3", CONVERGE)?;
    let vm3_config = member_config(&c.agent("vm-3").data_dir)?;
    let r = open_echo(vm3_config, Some("batch"));
    assert!(r.is_err(), "a revoked certificate got through: {r:?}");
    assert_eq!(
        echo.count(),
        1,
        "only the legitimate stream reached the backend"
    );
    Ok(())
}
