//! A fleet-scale gossip simulation: hundreds or thousands of chitchat nodes in one
//! process over a [`MemoryNetwork`] that encodes every message with chitchat's codec, run
//! with exactly the settings agents use ([`chitchat_config`]) and values the size of
//! weft's (a signed record with its certificate, a service set, a config digest).
//!
//! It exists because nobody can start a thousand agents on one machine, yet a fleet of
//! a thousand VMs is ordinary: it answers what gossip costs and how fast it converges at
//! that size, and whether a message still fits a datagram. The script: all nodes start at
//! once and form; a quiet window measures bytes; loss is switched on; one node publishes a
//! new value; new nodes join; several are killed at once; the cluster is cut in two and
//! healed. Times are virtual: run it on a current-thread runtime with the clock paused
//! (`tokio::time::pause`), so time only moves when every node is idle and the machine's
//! speed cannot change the figures (it only changes how long the run takes).
//!
//! It runs chitchat itself, not the signed-record layer above it: verifying a thousand
//! certificates on every node would measure ECDSA, not gossip. What `Gossip` adds
//! (verification, once per changed value) costs CPU, never bytes or rounds.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use chitchat::{spawn_chitchat, ChitchatHandle, ChitchatId, ProtocolVersion};
use rand::rngs::StdRng;
use rand::{RngCore as _, SeedableRng as _};
use tokio::time::Instant;
use weft_ca::NodeName;

use crate::fanout::{spawn_watch, GossipTransport, MembersWatch};
use crate::membership::{chitchat_config, GossipConfig, CONFIG_DIGEST_KEY};
use crate::memory::MemoryNetwork;
use crate::record::{NODE_KEY, SERVICES_KEY};

pub use chitchat::ProtocolVersion as Protocol;

/// The UDP payload limit chitchat's socket enforces.
pub const UDP_MTU: usize = 65_507;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes at the start.
    pub nodes: usize,
    /// Gossip round interval (agents: 200 ms).
    pub interval: Duration,
    /// Failure-detector threshold (agents: 8).
    pub phi_threshold: f64,
    /// chitchat protocol version (agents: V1, compressed digests).
    pub protocol: ProtocolVersion,
    /// Message loss once the cluster has formed (0.05 = 5 %).
    pub loss: f64,
    /// Nodes that join the formed cluster.
    pub joins: usize,
    /// Nodes killed at once.
    pub kills: usize,
    /// How long the cluster is cut in two (zero: no partition).
    pub partition_for: Duration,
    /// Quiet windows over which bytes and false failures are measured.
    pub window: Duration,
    /// Longest any phase may take (virtual time) before it counts as not converged.
    pub phase_limit: Duration,
    /// Seed of the loss and of the values.
    pub seed: u64,
}

impl SimConfig {
    /// Agents' settings at `nodes` nodes: 5 % loss, 10 joins, 10 kills, a 10 s partition.
    pub fn agents(nodes: usize) -> Self {
        Self {
            nodes,
            interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            protocol: ProtocolVersion::V1,
            loss: 0.05,
            joins: 10.min(nodes / 10).max(1),
            kills: 10.min(nodes / 10).max(1),
            partition_for: Duration::from_secs(10),
            window: Duration::from_secs(10),
            phase_limit: Duration::from_secs(60),
            seed: 7,
        }
    }
}

/// What the simulation measured (virtual times; `None`: not within `phase_limit`).
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Nodes at the start.
    pub nodes: usize,
    /// From all nodes starting at once to every node seeing every other alive.
    pub formed: Option<Duration>,
    /// Mean bytes each node sent per second in the quiet window without loss.
    pub bytes_per_node_s: f64,
    /// The largest any node sent per second in that window.
    pub max_bytes_per_node_s: f64,
    /// Mean bytes per node per second in the quiet window with loss.
    pub lossy_bytes_per_node_s: f64,
    /// (observer, node) pairs seen not alive while every node was up, summed over the
    /// samples of the lossy quiet window (each sample every round).
    pub false_failures: u64,
    /// From one node publishing a new value to every node holding it (under loss).
    pub new_key: Option<Duration>,
    /// From the joiners starting to every node seeing every node alive (under loss).
    pub joined: Option<Duration>,
    /// From the joiners starting to every earlier node seeing every joiner alive.
    pub joiners_seen: Option<Duration>,
    /// From the joiners starting to every joiner seeing every node alive.
    pub joiners_see_all: Option<Duration>,
    /// Per killed node: from the kill to no survivor seeing it alive, sorted.
    pub detection: Vec<Duration>,
    /// Kills never detected everywhere within `phase_limit`.
    pub undetected: usize,
    /// From the partition healing to every node seeing every survivor alive again.
    pub healed: Option<Duration>,
    /// Messages over the MTU (dropped, as UDP would).
    pub oversize: u64,
    /// Messages dropped by the loss rate.
    pub lost: u64,
    /// Round-opening SYNs skipped by the fanout for this size (`fanout`).
    pub syns_skipped: u64,
    /// Rounds opened with all three live peers because of membership news (`fanout`).
    pub news_rounds: u64,
}

impl SimReport {
    /// The detection time at quantile `q` (0..=1).
    pub fn detection_at(&self, q: f64) -> Option<Duration> {
        if self.detection.is_empty() {
            return None;
        }
        let i = ((self.detection.len() as f64 * q).ceil() as usize).clamp(1, self.detection.len());
        Some(self.detection[i - 1])
    }
}

/// The simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A node could not start.
    #[error("simulated node {0} could not start: {1}")]
    Start(usize, String),
    /// The configuration cannot be simulated.
    #[error("cannot simulate: {0}")]
    Config(&'static str),
}

struct Node {
    id: ChitchatId,
    handle: Option<ChitchatHandle>,
    _watch: MembersWatch,
}

/// How often the observer samples every node's view: once a round (finer sampling costs
/// more than the gossip itself at 1 000 nodes; the times are rounded up to it).
fn sample_every(cfg: &SimConfig) -> Duration {
    cfg.interval.max(Duration::from_millis(50))
}

/// Node `i`'s address: spread over 10.0.0.0/8 like a real fleet's (a multiplication by
/// an odd number is a bijection on 24 bits, so no two nodes collide), which compresses
/// no better than real addresses do.
fn addr(i: usize) -> SocketAddr {
    let h = (i as u32).wrapping_mul(2_654_435_761) & 0x00ff_ffff;
    let ip = Ipv4Addr::new(10, (h >> 16) as u8, (h >> 8) as u8, h as u8);
    SocketAddr::new(IpAddr::V4(ip), 7946)
}

/// Node `i`'s name, like a fleet's host names.
fn node_name(i: usize) -> String {
    format!("vm-{}-{i:04}", ["eu-west", "us-east", "ap-south"][i % 3])
}

/// Node `i`'s generation: its start time in Unix ms, spread over a month as restarts
/// spread them in a fleet.
fn generation(i: usize) -> u64 {
    const MONTH_MS: u64 = 30 * 86_400_000;
    1_764_000_000_000 + (i as u64).wrapping_mul(1_000_003 * 7_919) % MONTH_MS
}

/// A value of `n` random bytes in base64url, like a signed record (incompressible).
fn random_value(rng: &mut StdRng, n: usize) -> String {
    let mut b = vec![0u8; n];
    rng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

async fn start_node(
    net: &MemoryNetwork,
    cfg: &SimConfig,
    i: usize,
    seeds: &[String],
    rng: &mut StdRng,
) -> Result<Node, SimError> {
    let name = NodeName::new(node_name(i)).map_err(|e| SimError::Start(i, e.to_string()))?;
    let gossip = GossipConfig {
        name,
        generation: generation(i),
        listen: addr(i),
        advertise: addr(i),
        seeds: seeds.to_vec(),
        cluster: "sim".into(),
        interval: cfg.interval,
        phi_threshold: cfg.phi_threshold,
    };
    let mut chitchat = chitchat_config(&gossip);
    chitchat.protocol_version = cfg.protocol;
    let id = chitchat.chitchat_id.clone();
    // Sizes of weft's values: a signed record with its certificate (~1.9 KB), a signed
    // set of two services, a config digest.
    let values = vec![
        (NODE_KEY.to_owned(), random_value(rng, 1_400)),
        (SERVICES_KEY.to_owned(), random_value(rng, 300)),
        (CONFIG_DIGEST_KEY.to_owned(), random_value(rng, 32)),
    ];
    let news = GossipTransport::news(net, gossip.listen);
    let handle = spawn_chitchat(chitchat, values, net)
        .await
        .map_err(|e| SimError::Start(i, format!("{e:#}")))?;
    let watch = spawn_watch(&handle, news, cfg.interval);
    Ok(Node {
        id,
        handle: Some(handle),
        _watch: watch,
    })
}

/// Whether every running node sees exactly `expect` alive (itself included). Counts
/// first (cheap at 1 000 nodes), the sets only once the counts agree.
async fn all_see_alive(nodes: &[Node], expect: &HashSet<ChitchatId>) -> bool {
    for n in nodes {
        let Some(h) = &n.handle else { continue };
        if h.with_chitchat(|c| c.live_nodes().count()).await != expect.len() {
            return false;
        }
    }
    for n in nodes {
        let Some(h) = &n.handle else { continue };
        let ok = h
            .with_chitchat(|c| c.live_nodes().all(|id| expect.contains(id)))
            .await;
        if !ok {
            return false;
        }
    }
    true
}

/// Whether every running node of `observers` sees every node of `expect` alive.
async fn observers_see(observers: &[Node], expect: &HashSet<ChitchatId>) -> bool {
    for n in observers {
        let Some(h) = &n.handle else { continue };
        let ok = h
            .with_chitchat(|c| {
                let live: HashSet<&ChitchatId> = c.live_nodes().collect();
                expect.iter().all(|id| live.contains(id))
            })
            .await;
        if !ok {
            return false;
        }
    }
    true
}

/// (observer, node) pairs among running nodes where the observer does not see the node
/// alive, while every node of `expect` runs (so nobody else can be seen alive).
async fn not_alive_pairs(nodes: &[Node], expect: &HashSet<ChitchatId>) -> u64 {
    let mut n_missing = 0;
    for n in nodes {
        let Some(h) = &n.handle else { continue };
        let live = h.with_chitchat(|c| c.live_nodes().count()).await;
        n_missing += expect.len().saturating_sub(live) as u64;
    }
    n_missing
}

/// Waits until `done` holds, sampling every `every`; the time it took, or `None` after
/// `limit`.
async fn until<F, Fut>(every: Duration, limit: Duration, mut done: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if done().await {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

fn running_ids(nodes: &[Node]) -> HashSet<ChitchatId> {
    nodes
        .iter()
        .filter(|n| n.handle.is_some())
        .map(|n| n.id.clone())
        .collect()
}

fn bytes_of(net: &MemoryNetwork, nodes: &[Node]) -> Vec<u64> {
    nodes
        .iter()
        .filter(|n| n.handle.is_some())
        .map(|n| net.bytes_sent(n.id.gossip_advertise_addr))
        .collect()
}

/// The encoded size of the SYN a node sends when it knows `members` members (chitchat's
/// own encoder: one node holding `members - 1` other node states, with the ids of a real
/// fleet, gossiping to a seed); `None` when it exceeds the UDP datagram, so chitchat
/// cannot send it at all. Call it on a current-thread runtime with the clock paused.
pub async fn syn_size(members: usize, protocol: Protocol) -> Result<Option<usize>, SimError> {
    let net = MemoryNetwork::new();
    net.measure_bytes(UDP_MTU);
    let mut cfg = SimConfig::agents(members.max(4));
    cfg.protocol = protocol;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let node = start_node(&net, &cfg, 0, &[addr(1).to_string()], &mut rng).await?;
    let Some(h) = &node.handle else {
        return Err(SimError::Config("node did not start"));
    };
    h.with_chitchat(|c| {
        for i in 1..members {
            let id = ChitchatId::new(node_name(i), generation(i), addr(i));
            c.reset_node_state_if_update(&id, std::iter::empty(), 3 + (i % 50) as u64, 0);
        }
    })
    .await;
    tokio::time::sleep(cfg.interval * 3).await;
    let stats = net.stats();
    if let Some(h) = node.handle {
        let _ = h.shutdown().await;
    }
    Ok((stats.oversize == 0 && stats.largest > 0).then_some(stats.largest as usize))
}

/// Runs the script of the module documentation. Call it on a current-thread runtime
/// with the clock paused.
pub async fn run(cfg: &SimConfig) -> Result<SimReport, SimError> {
    if cfg.nodes < 4 || cfg.kills + 2 > cfg.nodes {
        return Err(SimError::Config("need at least 4 nodes and 2 survivors"));
    }
    let every = sample_every(cfg);
    // A UDP receive buffer holds a few hundred small datagrams or a few large ones; a
    // queue of 64 keeps a thousand nodes' queued deltas within memory.
    let net = MemoryNetwork::with_queue_capacity(64);
    net.measure_bytes(UDP_MTU);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let seeds: Vec<String> = (0..3).map(|i| addr(i).to_string()).collect();
    let mut report = SimReport {
        nodes: cfg.nodes,
        ..SimReport::default()
    };

    // 1. Everyone starts at once and forms.
    let mut nodes = Vec::with_capacity(cfg.nodes + cfg.joins);
    for i in 0..cfg.nodes {
        nodes.push(start_node(&net, cfg, i, &seeds, &mut rng).await?);
    }
    let t_start = Instant::now();
    let all = running_ids(&nodes);
    report.formed = until(every, cfg.phase_limit * 2, || all_see_alive(&nodes, &all))
        .await
        .map(|_| t_start.elapsed());

    // 2. A quiet window without loss: bytes.
    let window_bytes = |before: &[u64], after: &[u64]| -> (f64, f64) {
        let rates: Vec<f64> = before
            .iter()
            .zip(after)
            .map(|(b, a)| (a - b) as f64 / cfg.window.as_secs_f64())
            .collect();
        let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        (mean, rates.iter().cloned().fold(0.0, f64::max))
    };
    let before = bytes_of(&net, &nodes);
    tokio::time::sleep(cfg.window).await;
    let after = bytes_of(&net, &nodes);
    (report.bytes_per_node_s, report.max_bytes_per_node_s) = window_bytes(&before, &after);

    // 3. Loss on; a quiet window: bytes and false failures.
    net.set_loss(cfg.loss, cfg.seed);
    let before = bytes_of(&net, &nodes);
    let t0 = Instant::now();
    while t0.elapsed() < cfg.window {
        report.false_failures += not_alive_pairs(&nodes, &all).await;
        tokio::time::sleep(cfg.interval).await;
    }
    let after = bytes_of(&net, &nodes);
    report.lossy_bytes_per_node_s = window_bytes(&before, &after).0;

    // 4. One node publishes a new value.
    let fresh = random_value(&mut rng, 300);
    let publisher = nodes[cfg.nodes / 2].id.clone();
    if let Some(h) = &nodes[cfg.nodes / 2].handle {
        let v = fresh.clone();
        h.with_chitchat(|c| c.self_node_state().set(SERVICES_KEY, v.clone()))
            .await;
    }
    let (nodes_r, publisher_r, fresh_r) = (&nodes, &publisher, &fresh);
    report.new_key = until(every, cfg.phase_limit, || async move {
        for n in nodes_r {
            let Some(h) = &n.handle else { continue };
            let has = h
                .with_chitchat(|c| {
                    c.node_state(publisher_r)
                        .and_then(|s| s.get(SERVICES_KEY))
                        .is_some_and(|v| v == fresh_r)
                })
                .await;
            if !has {
                return false;
            }
        }
        true
    })
    .await;

    // 5. New nodes join.
    for i in cfg.nodes..cfg.nodes + cfg.joins {
        nodes.push(start_node(&net, cfg, i, &seeds, &mut rng).await?);
    }
    let all = running_ids(&nodes);
    let (earlier, joiners) = nodes.split_at(cfg.nodes);
    let joiner_ids = running_ids(joiners);
    let t_join = Instant::now();
    loop {
        if report.joiners_seen.is_none() && observers_see(earlier, &joiner_ids).await {
            report.joiners_seen = Some(t_join.elapsed());
        }
        if report.joiners_see_all.is_none() && observers_see(joiners, &all).await {
            report.joiners_see_all = Some(t_join.elapsed());
        }
        if report.joiners_seen.is_some()
            && report.joiners_see_all.is_some()
            && all_see_alive(&nodes, &all).await
        {
            report.joined = Some(t_join.elapsed());
            break;
        }
        if t_join.elapsed() >= cfg.phase_limit {
            break;
        }
        tokio::time::sleep(every).await;
    }

    // 6. Kills at once (never a seed): each victim's time until no survivor sees it.
    let victims: Vec<usize> = (0..cfg.kills).map(|k| nodes.len() - 1 - k * 3).collect();
    let mut pending: Vec<ChitchatId> = Vec::new();
    for &v in &victims {
        if let Some(h) = nodes[v].handle.take() {
            let _ = h.shutdown().await;
            pending.push(nodes[v].id.clone());
        }
    }
    let t_kill = Instant::now();
    while !pending.is_empty() && t_kill.elapsed() < cfg.phase_limit {
        tokio::time::sleep(every).await;
        let mut still = Vec::new();
        for victim in pending {
            let mut seen = false;
            for n in &nodes {
                let Some(h) = &n.handle else { continue };
                if h.with_chitchat(|c| c.live_nodes().any(|id| *id == victim))
                    .await
                {
                    seen = true;
                    break;
                }
            }
            if seen {
                still.push(victim);
            } else {
                report.detection.push(t_kill.elapsed());
            }
        }
        pending = still;
    }
    report.undetected = pending.len();
    report.detection.sort();

    // 7. A partition in two halves, then healed.
    if !cfg.partition_for.is_zero() {
        let up: Vec<SocketAddr> = nodes
            .iter()
            .filter(|n| n.handle.is_some())
            .map(|n| n.id.gossip_advertise_addr)
            .collect();
        let (a, b) = up.split_at(up.len() / 2);
        net.partition(a, b);
        tokio::time::sleep(cfg.partition_for).await;
        net.heal_all();
        let all = running_ids(&nodes);
        report.healed = until(every, cfg.phase_limit, || all_see_alive(&nodes, &all)).await;
    }

    let stats = net.stats();
    report.oversize = stats.oversize;
    report.lost = stats.lost;
    report.syns_skipped = stats.syns_skipped;
    report.news_rounds = stats.news_rounds;
    for n in &mut nodes {
        if let Some(h) = n.handle.take() {
            let _ = h.shutdown().await;
        }
    }
    Ok(report)
}
