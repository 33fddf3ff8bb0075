//! Two gossip participants over real sealed UDP sockets on loopback.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use weft_ca::{CertificateAuthority, ClusterName, NodeKey, NodeName, SpiffeId, TrustRoot};
use weft_gossip::*;

fn free_udp() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr")
}

struct Node {
    gossip: Gossip,
    addr: SocketAddr,
}

async fn start(ca: &CertificateAuthority, name: &str, ring: &Keyring, seeds: Vec<String>) -> Node {
    let cluster = ClusterName::new("weft").expect("valid");
    let name = NodeName::new(name).expect("valid");
    let key = NodeKey::generate().expect("key");
    let csr = key
        .csr_der(&SpiffeId::node(cluster.clone(), name.clone()))
        .expect("csr");
    let cert = ca
        .sign_node_csr(&csr, &name, Duration::from_secs(3600), SystemTime::now())
        .expect("cert");
    let addr = free_udp();
    let record = NodeRecord {
        name: name.clone(),
        quic_addr: addr,
        zone: String::new(),
        version: "test".into(),
        cert: NodeRecord::encode_cert(&cert.der),
        ca: false,
        leaving: false,
        signed_at_ms: 1,
        generation: 1,
        gossip_addr: Some(addr),
        ca_proof: None,
        chain: Vec::new(),
    };
    let signed = encode_signed(&record, |m| key.sign(m).expect("sign"));
    let root = TrustRoot::new(cluster, ca.cert_der().to_vec()).expect("root");
    let gossip = Gossip::start(
        GossipConfig {
            name,
            generation: 1,
            listen: addr,
            advertise: addr,
            seeds,
            cluster: "weft".into(),
            interval: Duration::from_millis(100),
            phi_threshold: 8.0,
        },
        SharedKeyring::new(ring.clone()),
        Arc::new(RwLock::new(root)),
        Arc::new(GossipStats::default()),
        signed,
    )
    .await
    .expect("start");
    Node { gossip, addr }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_see_each_other_and_drop_junk() {
    let ca = CertificateAuthority::create(
        ClusterName::new("weft").expect("valid"),
        SystemTime::now(),
        Duration::from_secs(86400),
    )
    .expect("ca")
    .0;
    let ring = Keyring::single(GossipKey::generate());
    let a = start(&ca, "a", &ring, vec![]).await;
    let b = start(&ca, "b", &ring, vec![a.addr.to_string()]).await;

    wait_for("both alive on a", async || {
        let m = a.gossip.members().await;
        m.len() == 2 && m.iter().all(|m| m.status == MemberStatus::Alive)
    })
    .await;

    // Junk and a datagram sealed with another key are dropped and counted.
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    junk.send_to(b"definitely not gossip", a.addr)
        .expect("send");
    let foreign = Sealer::new(&Keyring::single(GossipKey::generate())).expect("ring");
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    junk.send_to(&foreign.seal(b"\0\0\0\x01x", now_ms).expect("seal"), a.addr)
        .expect("send");
    // Authentic but undecodable: sealed with the right key, garbage inside.
    let own = Sealer::new(&ring).expect("ring");
    junk.send_to(
        &own.seal(b"\0\0\0\x01garbage", now_ms).expect("seal"),
        a.addr,
    )
    .expect("send");
    let stats = a.gossip.stats().clone();
    wait_for("drops counted", async || {
        let d = stats.dropped_by_reason();
        d.iter().find(|r| r.0 == "malformed").map(|r| r.1) >= Some(1)
            && d.iter().find(|r| r.0 == "unknown_key").map(|r| r.1) >= Some(1)
            && d.iter().find(|r| r.0 == "undecodable").map(|r| r.1) >= Some(1)
    })
    .await;

    // Gossip keeps flowing after the junk: b stops, a marks it failed.
    b.gossip.shutdown().await;
    wait_for("b failed on a", async || {
        a.gossip
            .members()
            .await
            .iter()
            .any(|m| m.name == "b" && m.status == MemberStatus::Failed)
    })
    .await;
    a.gossip.shutdown().await;
}
