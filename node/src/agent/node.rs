//! The running node's shared state: identity, certificate, gossip, QUIC endpoint, store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weft_ca::{unix, LeafInfo, NodeKey, TrustRoot};
use weft_gossip::{encode_signed, Gossip, GossipKey, Keyring, Member, MemberStatus, NodeRecord};

use crate::authority::Authority;
use crate::catalog::{LocalServices, SharedCatalog};
use crate::config::Settings;
use crate::identity::{ClusterInfo, IdentityFiles};
use crate::proxy::dial::ConnPool;
use crate::routing::Router;
use crate::rpc::{self, CtlRequest, CtlResponse, MemberAddr, RefusalKind};
use crate::store::Store;
use crate::telemetry::{AccessLog, Metrics};
use crate::tls::{CertStore, Revocations};

/// Agent version published by gossip.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared state of a running agent.
pub struct Node {
    /// Effective settings.
    pub settings: RwLock<Settings>,
    /// Cluster and node name.
    pub info: ClusterInfo,
    /// The node key.
    pub key: NodeKey,
    /// Current certificate (DER) and its parsed fields.
    cert: RwLock<(Vec<u8>, LeafInfo)>,
    /// Certificates presented by TLS.
    pub certs: CertStore,
    /// The cluster root.
    pub trust: Arc<TrustRoot>,
    /// Revocation list used by every verifier.
    pub revoked: Revocations,
    /// Peers marked failed at the last catalog refresh.
    pub failed_peers: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Woken when open peer connections must check again whether they may stay: a
    /// newer revocation list, or this node's own certificate expired.
    pub recheck_connections: tokio::sync::Notify,
    /// Identity files.
    pub files: IdentityFiles,
    /// The store.
    pub store: Store,
    /// Gossip.
    pub gossip: Gossip,
    /// QUIC endpoint (server and client).
    pub endpoint: quinn::Endpoint,
    /// Client config for control requests.
    pub ctl_client: quinn::ClientConfig,
    /// The CA role, on the CA node.
    pub authority: Option<Authority>,
    /// The admin token.
    pub admin_token: String,
    /// Cancelled when the agent must stop.
    pub shutdown: CancellationToken,
    /// Set when a graceful leave was asked for.
    pub leaving: AtomicBool,
    /// Last `signed_at_ms` used, so records always move forward.
    last_signed_ms: AtomicU64,
    /// Renewal failures in a row (for warnings and metrics).
    pub renew_failures: AtomicU64,
    /// Successful renewals since start.
    pub renewals: AtomicU64,
    /// This node's services and their health.
    pub services: Arc<LocalServices>,
    /// The cluster-wide catalog, refreshed every gossip round.
    pub catalog: SharedCatalog,
    /// Instance choice.
    pub router: Router,
    /// Data-plane QUIC connections, one per peer.
    pub pool: ConnPool,
    /// Client config for data-plane connections.
    pub data_client: quinn::ClientConfig,
    /// Data-plane metrics.
    pub metrics: Arc<Metrics>,
    /// The access log.
    pub access_log: AccessLog,
    /// Keep-alive pool of HTTP connections to local instances.
    pub backend: crate::proxy::inbound::BackendClient,
    /// The replicated cluster config.
    pub config: Arc<crate::cluster_config::ConfigReplica>,
    /// Rate limits, retry budgets, breakers, outliers.
    pub traffic: crate::proxy::traffic::TrafficState,
    /// When this node's config digest last equalled every alive peer's (Unix ms).
    pub config_synced_at_ms: AtomicU64,
}

/// Parts assembled by the agent before the node exists.
pub struct NodeParts {
    /// Settings.
    pub settings: Settings,
    /// Cluster info.
    pub info: ClusterInfo,
    /// Node key.
    pub key: NodeKey,
    /// Certificate DER.
    pub cert_der: Vec<u8>,
    /// TLS certificates.
    pub certs: CertStore,
    /// Root.
    pub trust: Arc<TrustRoot>,
    /// Revocations.
    pub revoked: Revocations,
    /// Files.
    pub files: IdentityFiles,
    /// Store.
    pub store: Store,
    /// Gossip.
    pub gossip: Gossip,
    /// Endpoint.
    pub endpoint: quinn::Endpoint,
    /// Control client config.
    pub ctl_client: quinn::ClientConfig,
    /// CA role.
    pub authority: Option<Authority>,
    /// Admin token.
    pub admin_token: String,
    /// Local services.
    pub services: Arc<LocalServices>,
    /// Data client config.
    pub data_client: quinn::ClientConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Access log.
    pub access_log: AccessLog,
    /// Cluster config replica.
    pub config: Arc<crate::cluster_config::ConfigReplica>,
}

impl Node {
    /// Assembles the node.
    pub fn new(p: NodeParts) -> Result<Self, weft_ca::VerifyError> {
        let leaf = LeafInfo::parse(&p.cert_der)?;
        Ok(Self {
            settings: RwLock::new(p.settings),
            info: p.info,
            key: p.key,
            cert: RwLock::new((p.cert_der, leaf)),
            certs: p.certs,
            trust: p.trust,
            revoked: p.revoked,
            recheck_connections: tokio::sync::Notify::new(),
            failed_peers: std::sync::Mutex::default(),
            files: p.files,
            store: p.store,
            gossip: p.gossip,
            endpoint: p.endpoint,
            ctl_client: p.ctl_client,
            authority: p.authority,
            admin_token: p.admin_token,
            shutdown: CancellationToken::new(),
            leaving: AtomicBool::new(false),
            last_signed_ms: AtomicU64::new(0),
            renew_failures: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            services: p.services,
            catalog: SharedCatalog::default(),
            router: Router::default(),
            pool: ConnPool::default(),
            data_client: p.data_client,
            metrics: p.metrics,
            access_log: p.access_log,
            backend: crate::proxy::inbound::backend_client(),
            config: p.config,
            traffic: crate::proxy::traffic::TrafficState::default(),
            config_synced_at_ms: AtomicU64::new(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            ),
        })
    }

    /// A copy of the current settings.
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current certificate and its fields.
    pub fn cert(&self) -> (Vec<u8>, LeafInfo) {
        self.cert.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs a renewed certificate: on disk first, then in TLS, then in gossip.
    pub async fn install_cert(&self, der: Vec<u8>) -> Result<LeafInfo, String> {
        let leaf = self
            .trust
            .verify_node(&der, SystemTime::now())
            .map_err(|e| format!("renewed certificate does not verify: {e}"))?;
        if leaf.id.node_name() != &self.info.name {
            return Err(format!("renewed certificate is for {}", leaf.id));
        }
        self.certs
            .replace(&self.key, &der, self.trust.ca_der())
            .map_err(|e| e.to_string())?;
        self.files.save_cert(&der).map_err(|e| e.to_string())?;
        *self.cert.write().unwrap_or_else(|e| e.into_inner()) = (der, leaf.clone());
        self.publish_record().await;
        Ok(leaf)
    }

    fn next_signed_ms(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let prev = self.last_signed_ms.fetch_max(now, Ordering::SeqCst);
        if prev >= now {
            self.last_signed_ms.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
    }

    /// This node's signed gossip record.
    pub fn signed_record(&self) -> String {
        let s = self.settings();
        let (der, _) = self.cert();
        let record = NodeRecord {
            name: self.info.name.clone(),
            quic_addr: s.quic_advertise(),
            zone: s.zone.clone(),
            version: VERSION.to_owned(),
            cert: NodeRecord::encode_cert(&der),
            ca: self.authority.is_some(),
            leaving: self.leaving.load(Ordering::SeqCst),
            signed_at_ms: self.next_signed_ms(),
        };
        encode_signed(&record, |m| self.key.sign(m).unwrap_or_default())
    }

    /// Re-publishes this node's record (after a renewal, a reload or a leave).
    pub async fn publish_record(&self) {
        self.gossip.publish_record(self.signed_record()).await;
    }

    /// This node's signed service set.
    pub fn signed_services(&self) -> String {
        let set = self.services.service_set(self.next_signed_ms());
        encode_signed(&set, |m| self.key.sign(m).unwrap_or_default())
    }

    /// Publishes the service set (after a registration or a health change).
    pub async fn publish_services(&self) {
        self.gossip.publish_services(self.signed_services()).await;
    }

    /// Rebuilds the catalog from the verified members and drops connections to nodes
    /// that left, were revoked, or have just been marked failed (streams waiting on a
    /// dead peer fail now and are retried elsewhere). A node that stays failed may be
    /// dialled again for last-known routing; that connection is kept.
    pub async fn refresh_catalog(&self) {
        let members = self.members().await;
        let failed: std::collections::HashSet<String> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Failed)
            .map(|m| m.name.clone())
            .collect();
        let newly_failed: std::collections::HashSet<String> = {
            let mut last = self.failed_peers.lock().unwrap_or_else(|e| e.into_inner());
            let newly = failed.difference(&last).cloned().collect();
            *last = failed;
            newly
        };
        let gone: std::collections::HashSet<String> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Left || m.revoked)
            .map(|m| m.name.clone())
            .chain(newly_failed)
            .collect();
        self.pool.retain(|n| !gone.contains(n));
        self.catalog.set(crate::catalog::Catalog::build(&members));
    }

    /// The service graph: every service as a node, and the edges observed by every alive
    /// member in the last minute (merged), from gossip alone.
    pub async fn graph(&self) -> serde_json::Value {
        let members = self.members().await;
        let summaries = members
            .iter()
            .filter(|m| {
                m.status == MemberStatus::Alive
                    && m.edge_summary.len() <= weft_gossip::membership::MAX_EDGES_VALUE
            })
            .filter_map(|m| {
                serde_json::from_str::<Vec<crate::telemetry::edges::EdgeSummary>>(&m.edge_summary)
                    .ok()
            })
            .flatten();
        let edges = crate::telemetry::edges::merge(summaries);
        let mut services: Vec<String> = self
            .catalog
            .get()
            .instances
            .iter()
            .map(|i| i.service.to_string())
            .chain(
                edges
                    .iter()
                    .flat_map(|e| [e.source.clone(), e.destination.clone()]),
            )
            .filter(|s| s != "-")
            .collect();
        services.sort();
        services.dedup();
        serde_json::json!({ "services": services, "edges": edges })
    }

    /// Verified members. Adopts a newer revocation list seen with them at once, so TLS
    /// refuses a revoked peer as soon as any view shows it revoked.
    pub async fn members(&self) -> Vec<Member> {
        let members = self.gossip.members().await;
        self.adopt_revocations();
        members
    }

    fn adopt_revocations(&self) {
        let newest = self.gossip.revocations();
        let current = self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version;
        if newest.version > current {
            self.install_revocations(newest);
        }
    }

    /// Persists and installs a newer revocation list, and wakes every peer connection so
    /// that those of revoked nodes close now rather than at their next stream.
    fn install_revocations(&self, newest: weft_gossip::RevocationList) {
        info!(
            version = newest.version,
            revoked = newest.revoked.len(),
            "revocation list updated"
        );
        if let Err(e) = self.store.set_crl(&newest) {
            warn!(error = %e, "cannot persist the revocation list");
        }
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = newest;
        self.recheck_connections.notify_waiters();
    }

    /// Authorises `src → dst` (`http`: raw path and method) under the current policy.
    /// Counts denials (and would-be denials in dry-run) and logs them.
    pub fn authorize(
        &self,
        src: &str,
        dst: &str,
        http: Option<(&str, &str)>,
    ) -> crate::cluster_config::policy::Decision {
        let applied = self.config.applied();
        let d = crate::cluster_config::policy::decide(
            &applied.policy_default,
            applied.policy_rules.iter().map(|(n, r)| (n.as_str(), r)),
            src,
            dst,
            http,
        );
        if d.verdict == crate::cluster_config::policy::Action::Deny {
            let mode = if d.dry_run { "dry_run" } else { "enforce" };
            self.metrics
                .policy_denied
                .get_or_create(&crate::telemetry::metrics::ModeLabels { mode: mode.into() })
                .inc();
            if d.dry_run {
                info!(source = src, destination = dst, rule = %d.rule, "policy would deny (dry run)");
            } else {
                warn!(source = src, destination = dst, rule = %d.rule, "denied by policy");
            }
        }
        d
    }

    /// Whether a certificate serial is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_revoked(serial)
    }

    /// Members' addresses for a joining node.
    pub async fn member_addrs(&self) -> Vec<MemberAddr> {
        self.members()
            .await
            .into_iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .map(|m| MemberAddr {
                name: m.name,
                gossip_addr: m.gossip_addr,
                quic_addr: m.address,
                ca: m.ca,
            })
            .collect()
    }

    /// Opens a control connection to node `name` at `addr`, authenticated both ways.
    pub async fn connect(
        &self,
        name: &str,
        addr: std::net::SocketAddr,
    ) -> Result<quinn::Connection, rpc::RpcError> {
        let connecting = self
            .endpoint
            .connect_with(self.ctl_client.clone(), addr, name)
            .map_err(|e| rpc::RpcError::Connect(e.to_string()))?;
        tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| rpc::RpcError::Timeout)?
            .map_err(|e| rpc::RpcError::Connect(e.to_string()))
    }

    /// Where the CA node may be: from gossip first (alive before failed), then the
    /// address remembered from the join or an earlier gossip view. A node that joined a
    /// moment ago can reach the CA before gossip has converged.
    async fn ca_candidates(&self) -> Vec<(String, std::net::SocketAddr)> {
        let mut members: Vec<Member> = self
            .members()
            .await
            .into_iter()
            .filter(|m| m.ca && !m.is_self && m.status != MemberStatus::Left)
            .collect();
        members.sort_by_key(|m| m.status != MemberStatus::Alive);
        let mut out: Vec<(String, std::net::SocketAddr)> =
            members.into_iter().map(|m| (m.name, m.address)).collect();
        if let Ok(Some(p)) = self.store.ca_peer() {
            if !out.iter().any(|(n, a)| *n == p.name && *a == p.quic_addr) {
                out.push((p.name, p.quic_addr));
            }
        }
        out
    }

    /// Applies a keyring change to this node: persisted first, then used by the gossip
    /// socket for its next datagram.
    pub fn apply_keyring_op(&self, op: &crate::rpc::KeyringOp) -> Result<Keyring, String> {
        use crate::rpc::KeyringOp;
        let parse_id = |id: &str| {
            u32::from_str_radix(id, 16).map_err(|_| format!("bad key id {id:?}: 8 hex digits"))
        };
        let mut ring = self.gossip.keyring().get();
        match op {
            KeyringOp::Install { key } => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .map_err(|_| "the key is not base64".to_owned())?;
                let key = GossipKey::from_bytes(&bytes).map_err(|e| e.to_string())?;
                ring.install(key).map_err(|e| e.to_string())?;
            }
            KeyringOp::Use { id } => ring.use_key(parse_id(id)?).map_err(|e| e.to_string())?,
            KeyringOp::Remove { id } => ring.remove(parse_id(id)?).map_err(|e| e.to_string())?,
        }
        self.files
            .save_keyring(&ring)
            .map_err(|e| format!("cannot persist the keyring: {e}"))?;
        self.gossip
            .keyring()
            .replace(ring.clone())
            .map_err(|e| e.to_string())?;
        info!(op = ?op_name(op), primary = format!("{:08x}", ring.primary), keys = ring.keys.len(), "gossip keyring changed");
        Ok(ring)
    }

    /// Sends one control request to member `name` at `addr`.
    pub async fn call_member(
        &self,
        name: &str,
        addr: std::net::SocketAddr,
        request: &CtlRequest,
    ) -> Result<CtlResponse, String> {
        let conn = self.connect(name, addr).await.map_err(|e| e.to_string())?;
        let resp = rpc::call(&conn, request, rpc::MAX_RESPONSE)
            .await
            .map_err(|e| e.to_string());
        conn.close(0u32.into(), b"done");
        resp
    }

    /// Sends a control request to the CA node.
    pub async fn call_ca(
        &self,
        request: &CtlRequest,
    ) -> Result<CtlResponse, (RefusalKind, String)> {
        let candidates = self.ca_candidates().await;
        if candidates.is_empty() {
            return Err((
                RefusalKind::Unavailable,
                "no CA node is known (not in gossip yet)".into(),
            ));
        }
        let mut errors = Vec::new();
        for (name, addr) in candidates {
            let conn = match self.connect(&name, addr).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("CA node {name} at {addr}: {e}"));
                    continue;
                }
            };
            let resp = rpc::call(&conn, request, rpc::MAX_RESPONSE)
                .await
                .map_err(|e| (RefusalKind::Unavailable, format!("CA node {name}: {e}")));
            conn.close(0u32.into(), b"done");
            return resp;
        }
        Err((
            RefusalKind::Unavailable,
            format!("the CA node is not reachable: {}", errors.join("; ")),
        ))
    }

    /// Adopts a newer revocation list from gossip (or the local CA), and on the CA node
    /// publishes its own.
    pub async fn sync_revocations(&self) {
        let mut newest = self.gossip.revocations();
        if let Some(a) = &self.authority {
            let own = a.crl();
            if own.version >= newest.version {
                newest = own;
                if let Some(signed) = a.signed_crl() {
                    self.gossip.publish_crl(signed).await;
                }
            }
        }
        let current_version = self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version;
        if newest.version > current_version {
            self.install_revocations(newest);
        }
    }

    /// Whether this node's own certificate has expired (the CA was unreachable for its
    /// whole remaining life).
    pub fn own_cert_expired(&self) -> bool {
        let (_, leaf) = self.cert();
        leaf.not_after_unix <= unix(crate::clock::now())
    }

    /// Fails closed once this node's certificate has expired: closes every pooled
    /// connection and wakes inbound ones, which close themselves. No traffic is carried
    /// on an identity that is no longer valid (peers refuse new handshakes by themselves).
    pub fn enforce_own_expiry(&self) {
        if self.own_cert_expired() {
            self.pool.retain(|_| false);
            self.recheck_connections.notify_waiters();
        }
    }

    /// Why this node is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        let (_, leaf) = self.cert();
        if leaf.not_after_unix <= unix(crate::clock::now()) {
            return Some("node certificate has expired".into());
        }
        if self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_revoked(&leaf.serial)
        {
            return Some("node certificate is revoked".into());
        }
        if self.shutdown.is_cancelled() {
            return Some("shutting down".into());
        }
        None
    }
}

fn op_name(op: &crate::rpc::KeyringOp) -> &'static str {
    match op {
        crate::rpc::KeyringOp::Install { .. } => "install",
        crate::rpc::KeyringOp::Use { .. } => "use",
        crate::rpc::KeyringOp::Remove { .. } => "remove",
    }
}
