//! Runs chitchat (over the sealed transport, or any chitchat `Transport` through
//! `Gossip::start_with_transport`) and turns its state into a verified member list. Only
//! records whose signature and certificate verify are used; for each chitchat id the last
//! verified record is kept, so a member cannot rewrite another node's state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use serde::Serialize;
use tracing::{debug, info, warn};
use weft_ca::{LeafInfo, NodeName, TrustRoot};

use crate::fanout::GossipTransport;
use crate::record::{
    verify_crl, verify_node_record, verify_service_set, NodeRecord, RecordError, RevocationList,
    ServiceRecord, ServiceSet, CRL_KEY, NODE_KEY, SERVICES_KEY,
};
use crate::stats::GossipStats;
use crate::transport::{SealedTransport, SharedKeyring};

/// chitchat key carrying a node's recent per-edge traffic summary.
pub const EDGES_KEY: &str = "weft.edges";
/// Largest edge summary published or read.
pub const MAX_EDGES_VALUE: usize = 8 * 1024;

/// chitchat key carrying a node's per-version request totals (rollouts, the graph).
pub const FIGURES_KEY: &str = "weft.figures";
/// Largest per-version totals value published or read.
pub const MAX_FIGURES_VALUE: usize = 12 * 1024;

/// chitchat key carrying a node's config digest.
pub const CONFIG_DIGEST_KEY: &str = "weft.cfg";

/// chitchat key carrying the signed config entries this node wrote recently, so a write
/// rides the gossip deltas to every node instead of waiting for a pull.
pub const CONFIG_ENTRIES_KEY: &str = "weft.cfg.new";

/// Largest value of recent config entries published or read.
pub const MAX_CONFIG_ENTRIES_VALUE: usize = 16 * 1024;

/// chitchat's settings for `config`: weft's protocol version, failure detector and
/// grace periods. Public so the simulation (`sim`) runs exactly what agents run.
pub fn chitchat_config(config: &GossipConfig) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: ChitchatId::new(config.name.as_str(), config.generation, config.advertise),
        cluster_id: config.cluster.clone(),
        gossip_interval: config.interval,
        listen_addr: config.listen,
        seed_nodes: config.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            sampling_window_size: 1000,
            max_interval: Duration::from_secs(10),
            // The prior mean heartbeat interval, which chitchat weighs as five samples:
            // three rounds keep a young window (a cluster just formed, whose first
            // intervals were shortened by rounds at full fanout on news: `fanout`) from
            // reading the first ordinary gaps as failures, and weigh little once the
            // window holds its samples. One round gave 725 false failures in a quiet 10 s
            // at 1 000 simulated nodes; five delayed detecting a just-joined member past
            // 5 s at 100 (GOSSIP.md, BENCHMARKS.md).
            initial_interval: config.interval * 3,
            dead_node_grace_period: Duration::from_secs(24 * 3600),
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        // V1 compresses the digest (zstd): the digest of every member is most of
        // what gossip sends (BENCHMARKS.md, "Gossip at fleet scale"), and V1 is what
        // lets it fit in a datagram past ~1 400 members. Every weft agent runs
        // chitchat 0.13, which reads both versions.
        protocol_version: chitchat::ProtocolVersion::V1,
    }
}

/// Wakes when gossip state changes; see [`Gossip::changes`].
pub struct GossipChanges {
    keys: tokio::sync::watch::Receiver<u64>,
    live: tokio::sync::watch::Receiver<BTreeMap<ChitchatId, chitchat::NodeState>>,
}

impl GossipChanges {
    /// Waits for the next change; false once gossip has stopped.
    pub async fn changed(&mut self) -> bool {
        tokio::select! {
            r = self.keys.changed() => r.is_ok(),
            r = self.live.changed() => r.is_ok(),
        }
    }
}

/// Settings for one gossip participant.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// This node's name (the chitchat node id).
    pub name: NodeName,
    /// Increases on every start (Unix milliseconds of the start).
    pub generation: u64,
    /// Bind address of the gossip socket.
    pub listen: SocketAddr,
    /// Address peers send gossip to.
    pub advertise: SocketAddr,
    /// Gossip addresses of known peers.
    pub seeds: Vec<String>,
    /// The cluster name: chitchat refuses gossip from another cluster id.
    pub cluster: String,
    /// Time between gossip rounds.
    pub interval: Duration,
    /// chitchat's failure-detector threshold (time since last heartbeat / mean interval).
    pub phi_threshold: f64,
}

/// A member's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Heartbeats arrive.
    Alive,
    /// Heartbeats stopped without a leave announcement.
    Failed,
    /// Announced a graceful leave.
    Left,
}

impl std::fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Alive => "alive",
            Self::Failed => "failed",
            Self::Left => "left",
        })
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
    /// The node process's generation (its start time): changes when the node restarts.
    pub generation: u64,
    /// QUIC address.
    pub address: SocketAddr,
    /// alive, failed or left.
    pub status: MemberStatus,
    /// Zone label.
    pub zone: String,
    /// Agent version.
    pub version: String,
    /// Whether it is a CA replica (its certificate was issued by its own intermediate, or
    /// it proved it holds the root): it takes joins, renewals and revocations.
    pub ca: bool,
    /// Whether it proved it holds the root key.
    pub root: bool,
    /// Expiry of its intermediate (Unix seconds; 0 when it has none).
    pub ca_expiry_unix: u64,
    /// SHA-256 (hex) of the root its certificate chains to.
    pub cert_root: String,
    /// Certificate expiry, Unix seconds.
    pub cert_expiry_unix: u64,
    /// Certificate serial (hex).
    pub cert_serial: String,
    /// SHA-256 of the certificate (hex).
    pub cert_fingerprint: String,
    /// Whether its certificate is revoked.
    pub revoked: bool,
    /// Whether this entry is the local node.
    pub is_self: bool,
    /// The services it runs (verified with its certificate).
    pub services: Vec<ServiceRecord>,
    /// Digest of the cluster config it holds (a hint for pulls; not trusted otherwise).
    pub config_digest: String,
    /// The signed config entries it wrote recently (JSON; each entry is verified by the
    /// config replica before it is applied, never trusted because of who carried it).
    #[serde(skip)]
    pub config_entries: String,
    /// Its recent per-edge traffic summary (JSON, for dashboards; not trusted otherwise).
    #[serde(skip)]
    pub edge_summary: String,
    /// Its per-version request totals (JSON; figures only, not trusted otherwise).
    #[serde(skip)]
    pub figures: String,
    /// The node certificate, DER (not serialised).
    #[serde(skip)]
    pub cert_der: Vec<u8>,
}

struct Verified {
    raw: String,
    record: NodeRecord,
    leaf: LeafInfo,
    services_raw: String,
    services: ServiceSet,
}

#[derive(Default)]
struct Cache {
    records: HashMap<ChitchatId, Verified>,
    /// Names that have published a record bound to its generation: their unbound
    /// (pre-binding) records are replays from then on.
    bound: std::collections::HashSet<Arc<str>>,
    rejected: HashMap<ChitchatId, String>,
    /// The union of every replica's verified list (grow-only until expiry).
    crl: RevocationList,
    /// Each publisher's last value seen per shard key, verified or not (not looked at
    /// again).
    crl_raw: HashMap<(ChitchatId, String), String>,
    /// The newest trust bundle verified, and the raw values already looked at.
    bundle: Option<crate::trust::TrustBundle>,
    bundle_raw: std::collections::HashSet<String>,
}

/// A running gossip participant. Call `leave` (optional) and then `shutdown`.
pub struct Gossip {
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    self_id: ChitchatId,
    root: Arc<RwLock<TrustRoot>>,
    cache: Mutex<Cache>,
    stats: Arc<GossipStats>,
    keyring: SharedKeyring,
    interval: Duration,
    /// Bumped by chitchat's key-change callback (see `changes`).
    key_changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Bumped when a member's recent config entries changed.
    entry_changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Keeps that callback subscribed.
    _key_listener: chitchat::ListenerHandle,
    /// Tells the transport about membership news (`fanout`).
    _news_watch: crate::fanout::MembersWatch,
}

/// Gossip could not start.
#[derive(Debug, thiserror::Error)]
#[error("gossip failed to start: {0}")]
pub struct GossipError(String);

impl Gossip {
    /// Starts chitchat over sealed UDP (`SealedTransport` with `keyring`, counting into
    /// `stats`) with the initial signed record value.
    pub async fn start(
        config: GossipConfig,
        keyring: SharedKeyring,
        root: Arc<RwLock<TrustRoot>>,
        stats: Arc<GossipStats>,
        signed_record: String,
    ) -> Result<Self, GossipError> {
        let transport = SealedTransport::new(keyring.clone(), stats.clone());
        Self::start_with_transport(config, &transport, keyring, root, stats, signed_record).await
    }

    /// Starts chitchat over any chitchat transport, e.g. a [`MemoryNetwork`] in tests, with
    /// the initial signed record value. Everything above the transport (record and
    /// certificate verification, members, revocations, leave) is the same as with `start`.
    ///
    /// The socket is opened on `config.listen` before this returns; `transport` need not
    /// outlive the call. `keyring` is what [`Gossip::keyring`] hands out (for rotation and
    /// join grants); whether datagrams are sealed with it is up to the transport
    /// (`SealedTransport` does, `MemoryNetwork` does not). `stats` receives the rejected
    /// record count; datagram counters only if the transport writes them.
    ///
    /// [`MemoryNetwork`]: crate::memory::MemoryNetwork
    pub async fn start_with_transport(
        config: GossipConfig,
        transport: &dyn GossipTransport,
        keyring: SharedKeyring,
        root: Arc<RwLock<TrustRoot>>,
        stats: Arc<GossipStats>,
        signed_record: String,
    ) -> Result<Self, GossipError> {
        let self_id = ChitchatId::new(config.name.as_str(), config.generation, config.advertise);
        let chitchat_config = chitchat_config(&config);
        let news = transport.news(config.listen);
        let handle = spawn_chitchat(
            chitchat_config,
            vec![(NODE_KEY.to_owned(), signed_record)],
            transport,
        )
        .await
        .map_err(|e| GossipError(format!("{e:#}")))?;
        let news_watch = crate::fanout::spawn_watch(&handle, news, config.interval);
        let key_changes = Arc::new(tokio::sync::watch::channel(0u64).0);
        let entry_changes = Arc::new(tokio::sync::watch::channel(0u64).0);
        let (tx, entries_tx) = (key_changes.clone(), entry_changes.clone());
        let entries_key = &CONFIG_ENTRIES_KEY["weft.".len()..];
        // Runs inside chitchat's lock for every key a delta changes: only counter bumps.
        let key_listener = handle
            .with_chitchat(|c| {
                let (tx, entries_tx) = (tx.clone(), entries_tx.clone());
                c.subscribe_event("weft.", move |e| {
                    tx.send_modify(|n| *n += 1);
                    if e.key == entries_key {
                        entries_tx.send_modify(|n| *n += 1);
                    }
                })
            })
            .await;
        info!(listen = %config.listen, seeds = ?config.seeds, "gossip started");
        Ok(Self {
            handle: tokio::sync::Mutex::new(Some(handle)),
            self_id,
            root,
            cache: Mutex::new(Cache::default()),
            stats,
            keyring,
            interval: config.interval,
            key_changes,
            entry_changes,
            _key_listener: key_listener,
            _news_watch: news_watch,
        })
    }

    /// The transport's counters.
    pub fn stats(&self) -> &Arc<GossipStats> {
        &self.stats
    }

    /// The keyring, for rotation.
    pub fn keyring(&self) -> &SharedKeyring {
        &self.keyring
    }

    /// Sets a key of this node's gossip state.
    async fn set(&self, key: &str, value: String) {
        if let Some(h) = self.handle.lock().await.as_ref() {
            h.with_chitchat(|c| c.self_node_state().set(key, value.clone()))
                .await;
        }
    }

    /// Publishes a new signed node record.
    pub async fn publish_record(&self, signed_record: String) {
        self.set(NODE_KEY, signed_record).await;
    }

    /// Publishes this node's signed service set.
    pub async fn publish_services(&self, signed_set: String) {
        self.set(SERVICES_KEY, signed_set).await;
    }

    /// Publishes this node's edge summary (values over `MAX_EDGES_VALUE` are not sent).
    pub async fn publish_edges(&self, summary: String) {
        if summary.len() <= MAX_EDGES_VALUE {
            self.set(EDGES_KEY, summary).await;
        }
    }

    /// Publishes this node's per-version totals (values over `MAX_FIGURES_VALUE` are not
    /// sent).
    pub async fn publish_figures(&self, totals: String) {
        if totals.len() <= MAX_FIGURES_VALUE {
            self.set(FIGURES_KEY, totals).await;
        }
    }

    /// Publishes the digest of this node's cluster config.
    pub async fn publish_config_digest(&self, digest: String) {
        self.set(CONFIG_DIGEST_KEY, digest).await;
    }

    /// Publishes the signed config entries this node wrote recently (values over
    /// `MAX_CONFIG_ENTRIES_VALUE` are not sent: those entries travel by pull only).
    pub async fn publish_config_entries(&self, entries: String) {
        if entries.len() <= MAX_CONFIG_ENTRIES_VALUE {
            self.set(CONFIG_ENTRIES_KEY, entries).await;
        }
    }

    /// A handle that wakes whenever gossip learned something: as soon as a delta changed
    /// one of weft's keys of any member, and when a member joined, failed or left
    /// (chitchat decides liveness once per gossip round). `None` once gossip has
    /// stopped.
    pub async fn changes(&self) -> Option<GossipChanges> {
        let guard = self.handle.lock().await;
        let handle = guard.as_ref()?;
        let live = handle.with_chitchat(|c| c.live_nodes_watcher()).await;
        Some(GossipChanges {
            keys: self.key_changes.subscribe(),
            live,
        })
    }

    /// Wakes as soon as a delta brought a member's new recent config entries
    /// (`CONFIG_ENTRIES_KEY`); read them from [`Member::config_entries`].
    pub fn config_entry_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.entry_changes.subscribe()
    }

    /// Publishes a signed trust bundle (root holder only).
    pub async fn publish_roots(&self, signed: String) {
        self.set(crate::trust::ROOTS_KEY, signed).await;
    }

    /// The newest trust bundle verified from gossip, if any was published.
    pub fn trust_bundle(&self) -> Option<crate::trust::TrustBundle> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bundle
            .clone()
    }

    /// Publishes a CA-signed revocation list in one value (replicas and tests).
    pub async fn publish_crl(&self, signed_crl: String) {
        self.set(CRL_KEY, signed_crl).await;
    }

    /// Publishes a replica's revocation list split into signed shards
    /// (`record::shard_signed`); shard keys beyond them are emptied.
    pub async fn publish_crl_shards(&self, shards: Vec<String>) {
        let n = shards.len();
        for (i, shard) in shards.into_iter().enumerate() {
            self.set(&crate::record::crl_key(i), shard).await;
        }
        if let Some(h) = self.handle.lock().await.as_ref() {
            h.with_chitchat(|c| {
                let state = c.self_node_state();
                for i in n..crate::record::MAX_CRL_SHARDS {
                    let key = crate::record::crl_key(i);
                    if state.get(&key).is_some_and(|v| !v.is_empty()) {
                        state.set(&key, String::new());
                    }
                }
            })
            .await;
        }
    }

    /// Verifies what changed since the last call and returns the members, sorted by name.
    pub async fn members(&self) -> Vec<Member> {
        let Some((states, live)) = self.snapshot().await else {
            return Vec::new();
        };
        let now = SystemTime::now();
        let root = self.root.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());

        for (id, values) in states.iter() {
            let Some(raw) = values.get(NODE_KEY) else {
                continue;
            };
            if cache.records.get(id).is_some_and(|v| v.raw == *raw)
                || cache.rejected.get(id) == Some(raw)
            {
                continue;
            }
            let verified =
                verify_node_record(raw, &id.node_id, &root, now).and_then(|(record, leaf)| {
                    let bound = record.generation != 0;
                    let matches = record.generation == id.generation_id
                        && record.gossip_addr == Some(id.gossip_advertise_addr);
                    if (bound && !matches) || (!bound && cache.bound.contains(&id.node_id)) {
                        return Err(RecordError::Replayed {
                            signed: record.generation,
                            signed_addr: record
                                .gossip_addr
                                .map_or_else(|| "-".into(), |a| a.to_string()),
                            published: id.generation_id,
                            published_addr: id.gossip_advertise_addr.to_string(),
                        });
                    }
                    Ok((record, leaf))
                });
            match verified {
                Ok((mut record, leaf)) => {
                    if record.generation != 0 {
                        cache.bound.insert(id.node_id.clone());
                    }
                    if record.ca && !crate::record::ca_claim_holds(&record, &leaf, &root) {
                        self.stats
                            .false_ca_claims
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        warn!(node = %id.node_id, "ignoring a CA claim without an intermediate for this node or the root's proof");
                        record.ca = false;
                    }
                    let newer = cache
                        .records
                        .get(id)
                        .is_none_or(|old| record.signed_at_ms >= old.record.signed_at_ms);
                    if newer {
                        let (services_raw, services) = cache
                            .records
                            .remove(id)
                            .map(|old| (old.services_raw, old.services))
                            .unwrap_or_default();
                        cache.records.insert(
                            id.clone(),
                            Verified {
                                raw: raw.clone(),
                                record,
                                leaf,
                                services_raw,
                                services,
                            },
                        );
                    }
                }
                Err(e) => {
                    self.stats
                        .rejected_records
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(node = %id.node_id, error = %e, "ignoring gossiped node record that does not verify");
                    cache.rejected.insert(id.clone(), raw.clone());
                }
            }
        }
        // Service sets, verified with the certificate of the same node's verified record.
        for (id, values) in states.iter() {
            let Some(raw) = values.get(SERVICES_KEY) else {
                continue;
            };
            let Some(v) = cache.records.get_mut(id) else {
                continue;
            };
            if v.services_raw == *raw {
                continue;
            }
            let cert = v.record.cert_der().unwrap_or_default();
            match verify_service_set(raw, &cert) {
                Ok(set) if set.signed_at_ms >= v.services.signed_at_ms => {
                    v.services = set;
                    v.services_raw = raw.clone();
                }
                Ok(_) => {}
                Err(e) => {
                    self.stats
                        .rejected_records
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(node = %id.node_id, error = %e, "ignoring gossiped service set that does not verify");
                    v.services_raw = raw.clone();
                }
            }
        }
        cache.records.retain(|id, _| states.contains_key(id));
        cache.rejected.retain(|id, _| states.contains_key(id));

        // Revocation lists: each replica publishes its own, signed with its intermediate's
        // key (the root's on a root holder without one); the union of those that verify is
        // in force. A list from a member that is not a proven replica is ignored.
        let now_unix = weft_ca::unix(now);
        let shards = states.iter().flat_map(|(id, values)| {
            values
                .iter()
                .filter(|(k, v)| crate::record::is_crl_key(k) && !v.is_empty())
                .map(move |(k, v)| (id, k, v))
        });
        for (id, key, raw) in shards {
            let slot = (id.clone(), key.clone());
            if cache.crl_raw.get(&slot) == Some(raw) {
                continue;
            }
            let signer = cache.records.get(id).and_then(|v| {
                if !v.record.ca {
                    return None;
                }
                match v.leaf.issuer {
                    Some(_) => v.record.chain_der().ok()?.into_iter().next(),
                    None => Some(root.ca_der().to_vec()),
                }
            });
            let verified = match &signer {
                Some(der) => verify_crl(raw, der),
                None => Err(RecordError::Malformed(
                    "published by a member that is not a CA replica",
                )),
            };
            match verified {
                Ok(crl) => {
                    if cache
                        .crl
                        .union_from(&crl, now_unix, crate::record::REVOCATION_GRACE_SECS)
                    {
                        cache.crl.version += 1;
                    }
                    cache.crl_raw.insert(slot, raw.clone());
                }
                Err(e) if signer.is_none() && !cache.records.contains_key(id) => {
                    // Its record is not verified yet: look again next round.
                    debug!(node = %id.node_id, error = %e, "revocation list waits for its publisher's record");
                }
                Err(e) => {
                    self.stats
                        .rejected_records
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(node = %id.node_id, error = %e, "ignoring revocation list that does not verify");
                    cache.crl_raw.insert(slot, raw.clone());
                }
            }
        }
        cache.crl_raw.retain(|(id, _), _| states.contains_key(id));

        // The trust bundle: the highest version signed by a root this node trusts.
        for values in states.values() {
            let Some(raw) = values.get(crate::trust::ROOTS_KEY) else {
                continue;
            };
            if cache.bundle_raw.contains(raw) {
                continue;
            }
            if cache.bundle_raw.len() >= 64 {
                cache.bundle_raw.clear();
            }
            cache.bundle_raw.insert(raw.clone());
            match crate::trust::verify_bundle(raw, &root) {
                Ok(b) if cache.bundle.as_ref().is_none_or(|c| b.version > c.version) => {
                    cache.bundle = Some(b);
                }
                Ok(_) => {}
                Err(e) => {
                    self.stats
                        .rejected_records
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(error = %e, "ignoring trust bundle that does not verify");
                }
            }
        }

        // One member per name: its newest verified generation.
        let mut by_name: BTreeMap<&str, (&ChitchatId, &Verified)> = BTreeMap::new();
        for (id, v) in &cache.records {
            let entry = by_name.entry(&id.node_id).or_insert((id, v));
            if id.generation_id > entry.0.generation_id {
                *entry = (id, v);
            }
        }
        by_name
            .into_values()
            .map(|(id, v)| {
                let status = if v.record.leaving {
                    MemberStatus::Left
                } else if live.contains(id) {
                    MemberStatus::Alive
                } else {
                    MemberStatus::Failed
                };
                Member {
                    name: v.record.name.to_string(),
                    gossip_addr: id.gossip_advertise_addr,
                    generation: id.generation_id,
                    address: v.record.quic_addr,
                    status,
                    zone: v.record.zone.clone(),
                    version: v.record.version.clone(),
                    ca: v.record.ca,
                    root: crate::record::root_claim_holds(&v.record, &root),
                    ca_expiry_unix: v.leaf.issuer.as_ref().map_or(0, |i| i.not_after_unix),
                    cert_root: v.leaf.root.clone().unwrap_or_default(),
                    cert_expiry_unix: v.leaf.not_after_unix,
                    cert_serial: v.leaf.serial.clone(),
                    cert_fingerprint: v.leaf.fingerprint.clone(),
                    revoked: cache.crl.is_revoked(&v.leaf.serial),
                    is_self: *id == self.self_id,
                    services: v.services.services.clone(),
                    edge_summary: states
                        .get(id)
                        .and_then(|kv| kv.get(EDGES_KEY))
                        .cloned()
                        .unwrap_or_default(),
                    figures: states
                        .get(id)
                        .and_then(|kv| kv.get(FIGURES_KEY))
                        .cloned()
                        .unwrap_or_default(),
                    config_digest: states
                        .get(id)
                        .and_then(|kv| kv.get(CONFIG_DIGEST_KEY))
                        .cloned()
                        .unwrap_or_default(),
                    config_entries: states
                        .get(id)
                        .and_then(|kv| kv.get(CONFIG_ENTRIES_KEY))
                        .cloned()
                        .unwrap_or_default(),
                    cert_der: v.record.cert_der().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The newest verified revocation list (call `members` first to refresh it).
    pub fn revocations(&self) -> RevocationList {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .crl
            .clone()
    }

    #[allow(clippy::type_complexity)]
    async fn snapshot(
        &self,
    ) -> Option<(
        BTreeMap<ChitchatId, HashMap<String, String>>,
        std::collections::HashSet<ChitchatId>,
    )> {
        let guard = self.handle.lock().await;
        let handle = guard.as_ref()?;
        Some(
            handle
                .with_chitchat(|c| {
                    let states = c
                        .node_states()
                        .iter()
                        .map(|(id, st)| {
                            let kv = st
                                .key_values()
                                .filter(|(k, _)| {
                                    *k == NODE_KEY
                                        || crate::record::is_crl_key(k)
                                        || *k == crate::trust::ROOTS_KEY
                                        || *k == SERVICES_KEY
                                        || *k == CONFIG_DIGEST_KEY
                                        || *k == CONFIG_ENTRIES_KEY
                                        || *k == EDGES_KEY
                                        || *k == FIGURES_KEY
                                })
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .collect();
                            (id.clone(), kv)
                        })
                        .collect();
                    let live = c.live_nodes().cloned().collect();
                    (states, live)
                })
                .await,
        )
    }

    /// Announces a graceful leave: publishes `leaving_record` and waits a few gossip
    /// rounds (at most 3 s) so peers see it before the node stops.
    pub async fn leave(&self, leaving_record: String) {
        self.publish_record(leaving_record).await;
        let wait = (self.interval * 6).min(Duration::from_secs(3));
        tokio::time::sleep(wait).await;
    }

    /// Stops gossiping.
    pub async fn shutdown(&self) {
        if let Some(h) = self.handle.lock().await.take() {
            if let Err(e) = h.shutdown().await {
                warn!(error = %e, "gossip stopped with an error");
            }
        }
    }
}
