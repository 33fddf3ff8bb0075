//! Hostile gossip against real agents: junk, wrong key, stale and replayed datagrams are
//! dropped and counted; a member publishing state under another node's name is ignored.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use weft_ca::{ClusterName, NodeKey, NodeName, TrustRoot};
use weft_gossip::{
    encode_signed, Gossip, GossipConfig, GossipKey, GossipStats, Keyring, NodeRecord, Sealer,
    SharedKeyring,
};
use weft_node::identity::pem;
use weft_tests::{eventually, Cluster};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn dropped(c: &Cluster, node: &str, reason: &str) -> f64 {
    c.agent(node)
        .metric(&format!("weft_gossip_dropped_total{{reason=\"{reason}\"}}"))
        .unwrap_or(-1.0)
}

fn read_cert(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    pem::decode("CERTIFICATE", &std::fs::read_to_string(path)?)
        .ok_or_else(|| anyhow::anyhow!("no cert in {}", path.display()))
}

#[test]
fn forged_datagrams_are_dropped_and_counted() -> anyhow::Result<()> {
    let mut c = Cluster::new("forged_datagrams_are_dropped_and_counted");
    c.start_nodes(2, &[])?;
    c.wait_all_alive(&["vm-1"], &["vm-1", "vm-2"], Duration::from_secs(15))?;
    let target = c.agent("vm-1").gossip_addr();
    let ring: Keyring = serde_json::from_slice(&std::fs::read(
        c.agent("vm-1").data_dir.join("gossip.keys"),
    )?)?;
    let attacker = UdpSocket::bind(SocketAddr::from((c.subnet.ip(200), 0)))?;

    // Junk.
    attacker.send_to(b"\x01not gossip at all", target)?;
    attacker.send_to(&[0u8; 3], target)?;
    // Sealed with a key that is not the cluster's.
    let foreign = Sealer::new(&Keyring::single(GossipKey::generate()))?;
    attacker.send_to(&foreign.seal(b"\0\0\0\x01hello", now_ms())?, target)?;
    // Sealed with the right key but sent a minute ago (an old capture replayed).
    let own = Sealer::new(&ring)?;
    attacker.send_to(&own.seal(b"\0\0\0\x01hello", now_ms() - 60_000)?, target)?;
    // The same authentic datagram twice: the second is a replay.
    let fresh = own.seal(b"\0\0\0\x01not a chitchat message", now_ms())?;
    attacker.send_to(&fresh, target)?;
    attacker.send_to(&fresh, target)?;
    // The largest datagram UDP allows.
    attacker.send_to(&vec![0x5a; 65_507], target)?;

    eventually("drops counted", Duration::from_secs(10), || {
        Ok((dropped(&c, "vm-1", "malformed") >= 3.0
            && dropped(&c, "vm-1", "unknown_key") >= 1.0
            && dropped(&c, "vm-1", "stale") >= 1.0
            && dropped(&c, "vm-1", "replay") >= 1.0
            && dropped(&c, "vm-1", "undecodable") >= 1.0)
            .then_some(()))
    })?;
    // Membership is unchanged and gossip still flows.
    c.wait_all_see_all(&["vm-1", "vm-2"], Duration::from_secs(5))?;
    c.join("vm-3", "vm-1", &[])?;
    c.wait_all_see_all(&["vm-1", "vm-2", "vm-3"], Duration::from_secs(15))?;
    println!(
        "FAULT | 7 forged gossip datagrams | pass | junk, truncated, 65 507-byte, wrong-key, stale, replayed and undecodable datagrams dropped and counted by reason; membership unchanged; a new node still joined"
    );
    Ok(())
}

/// A rogue member: it holds the cluster's gossip key (copied from a member's data dir,
/// as a compromised member would) and publishes `signed` as vm-2 under a far newer
/// generation (`u64::MAX / 2 + nth`: each rogue run is a new chitchat node) from its own
/// address, `c.subnet.ip(201)`.
async fn rogue_as_vm2(c: &Cluster, signed: String, nth: u64) -> anyhow::Result<Gossip> {
    let d1 = c.agent("vm-1").data_dir.clone();
    let ca_der = read_cert(&d1.join("ca.crt"))?;
    let ring: Keyring = serde_json::from_slice(&std::fs::read(d1.join("gossip.keys"))?)?;
    let rogue_addr = SocketAddr::from((c.subnet.ip(201), 7946));
    Ok(Gossip::start(
        GossipConfig {
            name: NodeName::new("vm-2")?,
            generation: u64::MAX / 2 + nth,
            listen: rogue_addr,
            advertise: rogue_addr,
            seeds: vec![c.agent("vm-1").gossip_addr().to_string()],
            cluster: "weft".into(),
            interval: Duration::from_millis(250),
            phi_threshold: 8.0,
        },
        SharedKeyring::new(ring),
        Arc::new(RwLock::new(TrustRoot::new(
            ClusterName::new("weft")?,
            ca_der,
        )?)),
        Arc::new(GossipStats::default()),
        signed,
    )
    .await?)
}

/// Waits for vm-1 to count `rejected` rejected records in all, then checks for 2 s that it still sees
/// the real vm-2: its own address, alive.
async fn vm2_stays_itself(c: &Cluster, rejected: f64) -> anyhow::Result<()> {
    let vm1 = c.agent("vm-1");
    eventually("forged record rejected", Duration::from_secs(10), || {
        Ok((vm1.metric("weft_gossip_rejected_records_total")? >= rejected).then_some(()))
    })?;
    let real_addr = format!("{}:7443", c.agent("vm-2").ip);
    for _ in 0..10 {
        let members = vm1.members()?;
        let vm2 = members
            .iter()
            .find(|m| m["name"] == "vm-2")
            .ok_or_else(|| anyhow::anyhow!("vm-2 gone"))?;
        assert_eq!(vm2["address"], real_addr.as_str());
        assert_eq!(vm2["status"], "alive");
        assert_ne!(vm2["version"], "evil");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_cannot_publish_under_another_name() -> anyhow::Result<()> {
    let mut c = Cluster::new("member_cannot_publish_under_another_name");
    c.start_nodes(2, &[])?;
    c.wait_all_alive(&["vm-1"], &["vm-1", "vm-2"], Duration::from_secs(15))?;
    let vm2_cert = read_cert(&c.agent("vm-2").data_dir.join("node.crt"))?;
    // It claims to be vm-2 (a newer generation), with vm-2's public certificate but its
    // own signature, pointing vm-2's traffic at itself.
    let rogue_key = NodeKey::generate()?;
    let forged = NodeRecord {
        name: NodeName::new("vm-2")?,
        quic_addr: SocketAddr::from((c.subnet.ip(201), 7443)),
        zone: String::new(),
        version: "evil".into(),
        cert: NodeRecord::encode_cert(&vm2_cert),
        ca: true,
        leaving: false,
        signed_at_ms: u64::MAX / 2,
        generation: u64::MAX / 2,
        gossip_addr: Some(SocketAddr::from((c.subnet.ip(201), 7946))),
        ca_proof: None,
        chain: Vec::new(),
    };
    let signed = encode_signed(&forged, |m| rogue_key.sign(m).unwrap_or_default());
    let rogue = rogue_as_vm2(&c, signed, 0).await?;
    let r = vm2_stays_itself(&c, 1.0).await;
    rogue.shutdown().await;
    r
}

/// Replay: records genuinely signed by vm-2 (one bound to an earlier generation and
/// address with `leaving` set, one from before records were bound) republished by a
/// member under a far newer generation. Neither verifies for the generation it is
/// published under: vm-2 stays alive and routable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genuine_records_replayed_under_another_generation_are_refused() -> anyhow::Result<()> {
    let mut c = Cluster::new("genuine_records_replayed_under_another_generation");
    c.start_nodes(2, &[])?;
    c.wait_all_alive(&["vm-1"], &["vm-1", "vm-2"], Duration::from_secs(15))?;
    let d2 = c.agent("vm-2").data_dir.clone();
    let vm2_key = NodeKey::from_pem(&std::fs::read_to_string(d2.join("node.key"))?)?;
    let vm2_cert = read_cert(&d2.join("node.crt"))?;
    let genuine = |generation: u64, leaving: bool| NodeRecord {
        name: NodeName::new("vm-2").expect("valid"),
        quic_addr: SocketAddr::from((c.agent("vm-2").ip, 7443)),
        zone: String::new(),
        version: "evil".into(),
        cert: NodeRecord::encode_cert(&vm2_cert),
        ca: false,
        leaving,
        signed_at_ms: u64::MAX / 2,
        generation,
        gossip_addr: (generation != 0).then(|| c.agent("vm-2").gossip_addr()),
        ca_proof: None,
        chain: Vec::new(),
    };
    for (i, record) in [genuine(12_345, true), genuine(0, true)]
        .into_iter()
        .enumerate()
    {
        let signed = encode_signed(&record, |m| vm2_key.sign(m).unwrap_or_default());
        let rogue = rogue_as_vm2(&c, signed, i as u64).await?;
        let r = vm2_stays_itself(&c, (i + 1) as f64).await;
        rogue.shutdown().await;
        r?;
    }
    Ok(())
}
