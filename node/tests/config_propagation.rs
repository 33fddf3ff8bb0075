//! Cluster-config propagation across several nodes in one process, with no root, no
//! network namespace and no socket: each node has a real `Store` (sled in a tempdir), a
//! `ConfigReplica` and a `Gossip` over one shared `MemoryNetwork`, and runs the real
//! anti-entropy loop (`cluster_config::sync::run`). Only the pull itself is in memory
//! (`MemoryPull`, the `Pull` seam): it reads the peer replica's `dump()` directly and is
//! refused on a link the network has cut, so a partition blocks pulls as well as gossip.
//!
//! It exists because the only other multi-node config tests run whole agents over mTLS
//! QUIC and need network namespaces for partitions. Everything runs on tokio's paused
//! clock: gossip rounds, failure detection and the sync loop's 1 s tick are all
//! `tokio::time`, so a scenario of tens of (virtual) seconds takes milliseconds and a
//! loaded machine cannot make it flaky. Every wait is bounded and says what it waited for.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weft_ca::{
    CertificateAuthority, ClusterName, NodeKey, NodeName, OperatorName, Role, SpiffeId, TrustRoot,
};
use weft_gossip::{
    encode_signed, Gossip, GossipConfig, GossipKey, GossipStats, Keyring, MemberStatus,
    MemoryNetwork, NodeRecord, SharedKeyring,
};
use weft_node::authority::{Act, Authority, Credential, Revocations};
use weft_node::cluster_config::sync::{self, Pull, PullError};
use weft_node::cluster_config::{ConfigReplica, Entry, Kind, WriteError};
use weft_node::resilience::RateLimit;
use weft_node::routing::Route;
use weft_node::store::Store;

/// The agent's gossip defaults (GOSSIP.md): 250 ms rounds, phi threshold 8.
const ROUND: Duration = Duration::from_millis(250);
const PHI: f64 = 8.0;
/// Upper bound for one scenario step, in virtual time.
const STEP: Duration = Duration::from_secs(20);

fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7946))
}

fn quic_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7443))
}

fn name(i: usize) -> String {
    format!("n{i}")
}

/// A credential for operator `who` with `role`, issued by `ca`.
fn credential(ca: &CertificateAuthority, who: &str, role: Role) -> Credential {
    let key = NodeKey::generate().expect("operator key");
    let cert = ca
        .sign_operator_csr(
            &key.named_csr_der(who).expect("operator csr"),
            &OperatorName::new(who).expect("valid operator name"),
            role,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .expect("operator certificate");
    Credential::new(key, cert.der, Vec::new())
}

/// No certificate is revoked in these scenarios.
struct NoRevocations;

impl Revocations for NoRevocations {
    fn revoked_at(&self, _serial: &str) -> Option<u64> {
        None
    }
}

/// Pulls and refusals of every `MemoryPull` of a cluster, for failure messages.
#[derive(Debug, Default)]
struct PullCounts {
    served: AtomicU64,
    refused: AtomicU64,
}

/// A peer as the in-memory pull reaches it.
struct Peer {
    gossip: SocketAddr,
    quic: SocketAddr,
    replica: Arc<ConfigReplica>,
}

/// The in-memory `Pull`: a pull from `name` is that node's `dump()`, unless the network
/// has cut the link either way (a request needs its answer to come back).
struct MemoryPull {
    me: SocketAddr,
    net: MemoryNetwork,
    peers: Arc<HashMap<String, Peer>>,
    counts: Arc<PullCounts>,
}

fn pull_error(peer: &str, why: String) -> PullError {
    PullError {
        peer: peer.to_owned(),
        source: why.into(),
    }
}

impl Pull for MemoryPull {
    fn pull(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Vec<Entry>, PullError>> + Send {
        let result = match self.peers.get(name) {
            None => Err(pull_error(name, "no such node".into())),
            Some(p) if p.quic != addr => Err(pull_error(
                name,
                format!("asked at {addr}, but it listens on {}", p.quic),
            )),
            Some(p) if self.net.is_cut(self.me, p.gossip) || self.net.is_cut(p.gossip, self.me) => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                Err(pull_error(name, "the link is cut".into()))
            }
            Some(p) => {
                self.counts.served.fetch_add(1, Ordering::Relaxed);
                Ok(p.replica.dump())
            }
        };
        std::future::ready(result)
    }
}

struct Node {
    replica: Arc<ConfigReplica>,
    gossip: Arc<Gossip>,
    _dir: tempfile::TempDir,
}

/// Nodes `n0..` with a store, a replica and gossip each (all seeded with `n0`), and the
/// sync loop of every node running.
struct ConfigCluster {
    /// The cluster's CA.
    ca: CertificateAuthority,
    /// The operator every write is signed by (role operator, issued by the test CA).
    operator: Credential,
    cluster_name: ClusterName,
    net: MemoryNetwork,
    nodes: Vec<Node>,
    peers: Arc<HashMap<String, Peer>>,
    counts: Arc<PullCounts>,
    shutdown: CancellationToken,
    syncs: Vec<JoinHandle<()>>,
}

impl ConfigCluster {
    async fn start(n: usize) -> Self {
        let cluster = ClusterName::new("weft").expect("valid cluster name");
        let (ca, _) = CertificateAuthority::create(
            cluster.clone(),
            SystemTime::now(),
            Duration::from_secs(86400),
        )
        .expect("create CA");
        let root = TrustRoot::new(cluster.clone(), ca.cert_der().to_vec()).expect("trust root");
        let operator = credential(&ca, "alice", Role::Operator);
        let net = MemoryNetwork::new();
        let mut nodes = Vec::new();
        for i in 0..n {
            let node_name = NodeName::new(name(i)).expect("valid node name");
            let key = NodeKey::generate().expect("node key");
            let csr = key
                .csr_der(&SpiffeId::node(cluster.clone(), node_name.clone()))
                .expect("csr");
            let cert = ca
                .sign_node_csr(
                    &csr,
                    &node_name,
                    Duration::from_secs(3600),
                    SystemTime::now(),
                )
                .expect("node certificate");
            let record = NodeRecord {
                name: node_name.clone(),
                quic_addr: quic_addr(i),
                zone: "zone-a".into(),
                version: "test".into(),
                cert: NodeRecord::encode_cert(&cert.der),
                ca: false,
                leaving: false,
                signed_at_ms: 1,
                generation: 1,
                gossip_addr: Some(gossip_addr(i)),
                ca_proof: None,
                chain: Vec::new(),
            };
            let signed = encode_signed(&record, |m| key.sign(m).expect("sign record"));
            let seeds = if i == 0 {
                vec![]
            } else {
                vec![gossip_addr(0).to_string()]
            };
            let gossip = Gossip::start_with_transport(
                GossipConfig {
                    name: node_name,
                    generation: 1,
                    listen: gossip_addr(i),
                    advertise: gossip_addr(i),
                    seeds,
                    cluster: "weft".into(),
                    interval: ROUND,
                    phi_threshold: PHI,
                },
                &net,
                SharedKeyring::new(Keyring::single(GossipKey::generate())),
                Arc::new(RwLock::new(root.clone())),
                Arc::new(GossipStats::default()),
                signed,
            )
            .await
            .expect("start gossip on the in-memory network");
            let dir = tempfile::tempdir().expect("temporary store directory");
            let store = Store::open(dir.path()).expect("open the store");
            let authority = Arc::new(Authority::new(
                Arc::new(root.clone()),
                Arc::new(NoRevocations),
                Default::default(),
            ));
            let replica =
                ConfigReplica::load(store, &name(i), authority).expect("load the replica");
            nodes.push(Node {
                replica: Arc::new(replica),
                gossip: Arc::new(gossip),
                _dir: dir,
            });
            // Spread the gossip ticks over the round: on the paused clock, nodes started
            // together would tick at the very same instant.
            tokio::time::sleep(ROUND / n as u32).await;
        }

        let peers: Arc<HashMap<String, Peer>> = Arc::new(
            nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let peer = Peer {
                        gossip: gossip_addr(i),
                        quic: quic_addr(i),
                        replica: node.replica.clone(),
                    };
                    (name(i), peer)
                })
                .collect(),
        );
        let counts = Arc::new(PullCounts::default());
        let shutdown = CancellationToken::new();
        let syncs = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let puller = MemoryPull {
                    me: gossip_addr(i),
                    net: net.clone(),
                    peers: peers.clone(),
                    counts: counts.clone(),
                };
                tokio::spawn(sync::run(
                    node.replica.clone(),
                    node.gossip.clone(),
                    puller,
                    shutdown.clone(),
                ))
            })
            .collect();
        Self {
            ca,
            operator,
            cluster_name: cluster,
            net,
            nodes,
            peers,
            counts,
            shutdown,
            syncs,
        }
    }

    fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }

    fn replica(&self, i: usize) -> &ConfigReplica {
        &self.nodes[i].replica
    }

    /// A write through node `i`, as its API makes it: stamped by the node, signed by
    /// the operator, verified and applied.
    fn write(
        &self,
        i: usize,
        kind: Kind,
        entry_name: &str,
        value: Option<serde_json::Value>,
    ) -> Result<Entry, WriteError> {
        let version = self.replica(i).stamp(kind, entry_name);
        let act = Act::ConfigWrite {
            kind,
            name: entry_name.to_owned(),
            version: version.clone(),
            value: value.clone(),
        };
        let signed = self
            .operator
            .sign(self.cluster_name.clone(), &name(i), act, SystemTime::now())
            .expect("sign");
        self.replica(i).apply_signed(Entry {
            kind,
            name: entry_name.to_owned(),
            version,
            value,
            auth: Some(signed),
        })
    }

    /// A puller like `n{i}`'s sync loop has, counting apart from the loops'.
    fn puller(&self, i: usize) -> MemoryPull {
        MemoryPull {
            me: gossip_addr(i),
            net: self.net.clone(),
            peers: self.peers.clone(),
            counts: Arc::default(),
        }
    }

    /// Every node's digest, live entries and member view, and the pull and network
    /// counters: for failure messages.
    async fn report(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let live: Vec<String> = node
                .replica
                .list(None)
                .iter()
                .map(|e| format!("{}/{}={}", e.kind, e.name, e.version.node))
                .collect();
            let members: Vec<String> = node
                .gossip
                .members()
                .await
                .iter()
                .filter(|m| !m.is_self)
                .map(|m| format!("{}={}", m.name, m.status))
                .collect();
            out.push_str(&format!(
                "  {}: digest {} live [{}] sees [{}]\n",
                name(i),
                node.replica.digest(),
                live.join(" "),
                members.join(" "),
            ));
        }
        out.push_str(&format!(
            "  pulls served {}, refused {}; network {:?}",
            self.counts.served.load(Ordering::Relaxed),
            self.counts.refused.load(Ordering::Relaxed),
            self.net.stats(),
        ));
        out
    }

    /// Waits until `check` passes, polling every 50 ms of virtual time; after `limit`,
    /// fails with `what`, the last mismatch and `report`.
    async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> Result<(), String>,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let last = match check() {
                Ok(()) => return start.elapsed(),
                Err(e) => e,
            };
            if start.elapsed() >= limit {
                panic!(
                    "timed out after {limit:?} (virtual) waiting for {what}: {last}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ok if every node of `group` sees every other one with `status`.
    async fn sees(
        &self,
        group: &[usize],
        others: &[usize],
        status: MemberStatus,
    ) -> Result<(), String> {
        for &o in group {
            let members = self.nodes[o].gossip.members().await;
            for &s in others.iter().filter(|s| **s != o) {
                let got = members.iter().find(|m| m.name == name(s)).map(|m| m.status);
                if got != Some(status) {
                    return Err(format!(
                        "{} sees {} as {got:?}, expected {status}",
                        name(o),
                        name(s)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Waits until every node sees every other alive.
    async fn wait_all_alive(&self, when: &str) {
        let all = self.all();
        let start = Instant::now();
        loop {
            let Err(last) = self.sees(&all, &all, MemberStatus::Alive).await else {
                return;
            };
            if start.elapsed() >= STEP {
                panic!(
                    "timed out after {STEP:?} (virtual) waiting for every node alive everywhere ({when}): {last}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ok if every node of `group` has the digest of `group[0]`.
    fn agree(&self, group: &[usize]) -> Result<String, String> {
        let first = group.first().ok_or("an empty group")?;
        let want = self.replica(*first).digest();
        for &i in group {
            let got = self.replica(i).digest();
            if got != want {
                return Err(format!(
                    "{} has digest {got}, {} has {want}",
                    name(i),
                    name(*first)
                ));
            }
        }
        Ok(want)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.syncs {
            tokio::time::timeout(STEP, task)
                .await
                .expect("the sync loop stops when cancelled")
                .expect("the sync loop did not panic");
        }
        for node in &self.nodes {
            node.gossip.shutdown().await;
        }
    }
}

/// A weighted split for `reviews`, as `weft config set route reviews` would store it.
fn reviews_route() -> serde_json::Value {
    serde_json::json!({
        "rules": [
            {
                "match": {"path": {"prefix": "/api"}, "headers": [{"name": "x-canary", "exact": "1"}]},
                "to": [{"version": "v2", "weight": 100}]
            },
            {"to": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}
        ]
    })
}

fn ratelimit(rps: f64) -> serde_json::Value {
    serde_json::json!({ "rps": rps })
}

/// The rate limit that `i` applies to `service`, if any.
fn applied_rps(c: &ConfigCluster, i: usize, service: &str) -> Option<f64> {
    c.replica(i)
        .applied()
        .ratelimits
        .get(service)
        .map(|r| r.rps)
}

#[tokio::test(start_paused = true)]
async fn a_write_on_one_node_is_applied_on_every_node() {
    let c = ConfigCluster::start(4).await;
    c.wait_all_alive("after start").await;
    let empty = c
        .agree(&c.all())
        .expect("every node starts with the same empty config");

    let value = reviews_route();
    let want: Route = serde_json::from_value(value.clone()).expect("the route parses");
    let entry = c
        .write(2, Kind::Route, "reviews", Some(value))
        .expect("a valid route is written");
    assert_eq!(entry.version.node, "n2");
    assert_ne!(c.replica(2).digest(), empty);

    let took = c
        .wait_until("n2's route applied on every node", STEP, || {
            let digest = c.agree(&c.all())?;
            if digest == empty {
                return Err("nobody else has it yet".into());
            }
            for i in c.all() {
                if c.replica(i).applied().routes.get("reviews") != Some(&want) {
                    return Err(format!("{} does not apply the route", name(i)));
                }
                if c.replica(i).get(Kind::Route, "reviews").as_ref() != Some(&entry) {
                    return Err(format!("{} holds another version", name(i)));
                }
            }
            Ok(())
        })
        .await;
    println!("route applied on every node {took:?} after the write (virtual)");
    c.stop().await;
}

#[tokio::test(start_paused = true)]
async fn partitioned_sides_converge_apart_then_together_with_last_writer_wins() {
    let c = ConfigCluster::start(4).await;
    c.wait_all_alive("after start").await;
    let (left, right) = ([0, 1], [2, 3]);

    // Both sides write the same entry, and one entry of their own, right after the cut,
    // while each side still sees the other alive: pulls across the cut are attempted
    // and must be refused.
    c.net
        .partition(&left.map(gossip_addr), &right.map(gossip_addr));
    let left_write = c
        .write(0, Kind::Ratelimit, "reviews", Some(ratelimit(50.0)))
        .expect("valid rate limit");
    c.write(1, Kind::Ratelimit, "ratings", Some(ratelimit(5.0)))
        .expect("valid rate limit");
    let right_write = c
        .write(3, Kind::Ratelimit, "reviews", Some(ratelimit(80.0)))
        .expect("valid rate limit");
    c.write(2, Kind::Route, "details", Some(reviews_route()))
        .expect("valid route");
    // The pulls honour the cut (and the sides still see each other alive: the failure
    // detector needs a second or so).
    let probe = c.puller(2);
    assert!(
        probe.pull("n0", quic_addr(0)).await.is_err(),
        "a pull across the cut is refused"
    );
    assert!(
        probe.pull("n3", quic_addr(3)).await.is_ok(),
        "a pull within a side is served"
    );

    let took = c
        .wait_until("each side converged on its own writes", STEP, || {
            let l = c.agree(&left)?;
            let r = c.agree(&right)?;
            for i in left {
                let (reviews, ratings) = (applied_rps(&c, i, "reviews"), applied_rps(&c, i, "ratings"));
                if (reviews, ratings) != (Some(50.0), Some(5.0)) {
                    return Err(format!(
                        "{} applies reviews {reviews:?} and ratings {ratings:?} rps, expected 50 and 5",
                        name(i)
                    ));
                }
            }
            for i in right {
                let reviews = applied_rps(&c, i, "reviews");
                let details = c.replica(i).applied().routes.contains_key("details");
                if (reviews, details) != (Some(80.0), true) {
                    return Err(format!(
                        "{} applies reviews {reviews:?} rps and the details route: {details}, expected 80 and true",
                        name(i)
                    ));
                }
            }
            if l == r {
                return Err("the two sides agree across the partition".into());
            }
            Ok(())
        })
        .await;
    println!("each side converged {took:?} after its writes (virtual)");

    // Long enough for failure detection and many sync ticks: nothing crosses.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let l = c.agree(&left).expect("the left side still agrees");
    let r = c.agree(&right).expect("the right side still agrees");
    if l == r
        || c.replica(0).get(Kind::Route, "details").is_some()
        || c.replica(3).get(Kind::Ratelimit, "ratings").is_some()
    {
        panic!("a write crossed the partition\n{}", c.report().await);
    }
    if let Err(e) = c.sees(&left, &right, MemberStatus::Failed).await {
        panic!("10 s into the partition: {e}\n{}", c.report().await);
    }

    c.net.heal_all();
    let winner = if left_write.version > right_write.version {
        &left_write
    } else {
        &right_write
    };
    let want_rps = if winner == &left_write { 50.0 } else { 80.0 };
    let took = c
        .wait_until("every node on one digest after the heal", STEP, || {
            c.agree(&c.all())?;
            for i in c.all() {
                let r = c.replica(i);
                if r.get(Kind::Ratelimit, "reviews").as_ref() != Some(winner) {
                    return Err(format!("{} keeps the losing write of reviews", name(i)));
                }
                let applied = r.applied();
                let rl: Option<&RateLimit> = applied.ratelimits.get("reviews");
                if rl.map(|r| r.rps) != Some(want_rps)
                    || applied_rps(&c, i, "ratings") != Some(5.0)
                    || !applied.routes.contains_key("details")
                {
                    return Err(format!("{} does not apply both sides' writes", name(i)));
                }
            }
            Ok(())
        })
        .await;
    println!(
        "converged {took:?} after the heal (virtual); {} won; sync pulls refused by the cut: {}",
        winner.version.node,
        c.counts.refused.load(Ordering::Relaxed)
    );
    c.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_delete_propagates_as_a_tombstone() {
    let c = ConfigCluster::start(3).await;
    c.wait_all_alive("after start").await;
    c.write(0, Kind::Ratelimit, "reviews", Some(ratelimit(50.0)))
        .expect("valid rate limit");
    c.wait_until("the rate limit on every node", STEP, || {
        c.agree(&c.all())?;
        for i in c.all() {
            if applied_rps(&c, i, "reviews") != Some(50.0) {
                return Err(format!("{} does not apply it", name(i)));
            }
        }
        Ok(())
    })
    .await;

    let tombstone = c
        .write(2, Kind::Ratelimit, "reviews", None)
        .expect("delete");
    assert!(tombstone.value.is_none());
    let took = c
        .wait_until("the delete on every node", STEP, || {
            c.agree(&c.all())?;
            for i in c.all() {
                let r = c.replica(i);
                if applied_rps(&c, i, "reviews").is_some()
                    || r.get(Kind::Ratelimit, "reviews").is_some()
                {
                    return Err(format!("{} still applies the deleted entry", name(i)));
                }
                if !r.dump().contains(&tombstone) {
                    return Err(format!("{} lacks the tombstone", name(i)));
                }
                if r.live_count() != 0 {
                    return Err(format!("{} has {} live entries", name(i), r.live_count()));
                }
            }
            Ok(())
        })
        .await;
    println!("delete reached every node {took:?} after it was written (virtual)");
    c.stop().await;
}

/// What a member holding the gossip key and a node certificate (but no operator
/// credential) can push: nothing. Unsigned entries, entries signed by another cluster's
/// operator or by a viewer, entries changed after signing and entries stamped in the
/// future are all refused by the replica that pulls them, which keeps what it had.
#[tokio::test(start_paused = true)]
async fn entries_a_member_forges_are_refused() {
    let c = ConfigCluster::start(1).await;
    let good = c
        .write(0, Kind::Ratelimit, "reviews", Some(ratelimit(50.0)))
        .expect("signed write");
    let digest = c.replica(0).digest();
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let later = |ahead_ms: u64| weft_node::cluster_config::hlc::Hlc {
        wall: now_ms + ahead_ms,
        logical: 0,
        node: "n9".into(),
    };
    let entry = |version, value: serde_json::Value, auth| Entry {
        kind: Kind::Ratelimit,
        name: "reviews".into(),
        version,
        value: Some(value),
        auth,
    };
    let sign = |cred: &Credential,
                version: &weft_node::cluster_config::hlc::Hlc,
                value: &serde_json::Value| {
        cred.sign(
            c.cluster_name.clone(),
            "n9",
            Act::ConfigWrite {
                kind: Kind::Ratelimit,
                name: "reviews".into(),
                version: version.clone(),
                value: Some(value.clone()),
            },
            SystemTime::now(),
        )
        .expect("sign")
    };
    let open = ratelimit(1_000_000.0);
    let (foreign_ca, _) = CertificateAuthority::create(
        c.cluster_name.clone(),
        SystemTime::now(),
        Duration::from_secs(86400),
    )
    .expect("another CA with the same cluster name");
    let foreign = credential(&foreign_ca, "alice", Role::Admin);
    let viewer = credential(&c.ca, "bob", Role::Viewer);
    let v1 = later(1);
    let mut tampered = sign(&c.operator, &v1, &ratelimit(60.0));
    tampered.payload = tampered.payload.replace("60", "1000000");
    let v_future = later(10 * 60 * 1000);
    let forged = vec![
        entry(later(1), open.clone(), None),
        entry(
            later(2),
            open.clone(),
            Some(sign(&foreign, &later(2), &open)),
        ),
        entry(
            later(3),
            open.clone(),
            Some(sign(&viewer, &later(3), &open)),
        ),
        entry(v1, open.clone(), Some(tampered)),
        entry(
            later(4),
            open.clone(),
            Some(sign(&c.operator, &later(5), &open)),
        ),
        entry(
            v_future.clone(),
            open.clone(),
            Some(sign(&c.operator, &v_future, &open)),
        ),
    ];
    for (i, e) in forged.into_iter().enumerate() {
        assert_eq!(
            c.replica(0).merge_remote(vec![e], "n9"),
            0,
            "forged entry #{i} must not be applied"
        );
    }
    assert_eq!(c.replica(0).digest(), digest, "nothing changed");
    assert_eq!(
        c.replica(0)
            .get(Kind::Ratelimit, "reviews")
            .map(|e| e.value),
        Some(good.value),
    );
    // The genuine operator's entry from another node is accepted.
    let v = later(6);
    let genuine = entry(
        v.clone(),
        ratelimit(70.0),
        Some(sign(&c.operator, &v, &ratelimit(70.0))),
    );
    assert_eq!(c.replica(0).merge_remote(vec![genuine], "n9"), 1);
}

/// A pull pages through everything a peer holds: every page is bounded, the pages
/// together are exactly the peer's entries, and nothing repeats.
#[tokio::test(start_paused = true)]
async fn pull_pages_cover_every_entry_once() {
    let c = ConfigCluster::start(1).await;
    for i in 0..300 {
        c.write(
            0,
            Kind::Ratelimit,
            &format!("svc-{i:03}"),
            Some(ratelimit(i as f64 + 1.0)),
        )
        .expect("signed write");
    }
    c.write(0, Kind::Ratelimit, "svc-007", None)
        .expect("a tombstone too");
    let all = c.replica(0).dump();
    let mut paged = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (entries, next) = c.replica(0).page(after.as_ref(), 16 * 1024);
        let bytes: usize = entries
            .iter()
            .map(|e| serde_json::to_vec(e).expect("json").len() + 1)
            .sum();
        assert!(
            bytes <= 16 * 1024 || entries.len() == 1,
            "page of {bytes} bytes"
        );
        assert!(!entries.is_empty());
        paged.extend(entries);
        pages += 1;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(pages > 5, "{pages} pages: the test must span several");
    assert_eq!(paged, all);
}
