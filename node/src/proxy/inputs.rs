//! Everything the data plane reads, and nothing else: the narrow bundle the agent builds
//! once and hands to the listeners and the inbound server (the shape of ztunnel's
//! `ProxyInputs`). The proxy never sees the agent, the store, gossip or the CA.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::inbound::BackendClient;
use super::pool::ConnPool;
use super::streams::PeerClients;
use crate::catalog::{LocalServices, SharedCatalog};
use crate::cluster_config::AppliedView;
use crate::identity::NodeIdentity;
use crate::resilience::ResilienceState;
use crate::routing::LoadBalancer;
use crate::telemetry::{AccessLog, Metrics};

/// The data plane's inputs.
pub struct ProxyInputs {
    /// This node's identity: certificate expiry, revocation list, change signal.
    pub identity: Arc<NodeIdentity>,
    /// The cluster-wide catalog (refreshed every gossip round).
    pub catalog: SharedCatalog,
    /// This node's own services and their health.
    pub services: Arc<LocalServices>,
    /// Routes, policy and resilience settings, typed.
    pub config: AppliedView,
    /// QUIC connections to peers, one per peer process.
    pub pool: Arc<ConnPool>,
    /// HTTP to other nodes over reused streams on those connections.
    pub peers: PeerClients,
    /// Instance choice.
    pub balancer: LoadBalancer,
    /// Rate limits, retry budgets, breakers, outliers.
    pub resilience: Arc<ResilienceState>,
    /// Data-plane metrics.
    pub metrics: Arc<Metrics>,
    /// The access log.
    pub access_log: AccessLog,
    /// Spans out, when an OTLP collector is configured.
    pub spans: Option<crate::telemetry::spans::SpanSink>,
    /// Keep-alive pool of HTTP connections to local instances.
    pub backend: BackendClient,
    /// The pooled h2c client to local instances of `http2`/`grpc` services.
    pub backend_h2: BackendClient,
    /// This node's zone (the balancer prefers it; changes on reload).
    zone: RwLock<Arc<str>>,
    /// The default time an HTTP request may wait for its response head, milliseconds
    /// (0: none; changes on reload).
    request_timeout_ms: std::sync::atomic::AtomicU64,
    /// One gossip round: how long a peer's new registration may take to reach us.
    pub gossip_interval: Duration,
    /// Cancelled when the agent stops.
    pub shutdown: CancellationToken,
    /// The data-plane thread's runtime (`runtime::DataRuntime`): everything that serves
    /// traffic is spawned there.
    pub runtime: tokio::runtime::Handle,
    /// Mirrored requests in flight at most (`MAX_MIRRORS_IN_FLIGHT`); a copy that finds
    /// none free is skipped, never queued.
    pub mirror_slots: Arc<tokio::sync::Semaphore>,
    /// Listeners the config asks for that could not be opened: readiness waits for them.
    pub listener_faults: super::listeners::ListenerFaults,
}

/// Most mirrored copies in flight on a node.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;

impl std::fmt::Debug for ProxyInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyInputs").finish_non_exhaustive()
    }
}

/// The parts `ProxyInputs::new` takes from the agent.
pub struct ProxyParts {
    /// See `ProxyInputs::identity`.
    pub identity: Arc<NodeIdentity>,
    /// See `ProxyInputs::services`.
    pub services: Arc<LocalServices>,
    /// See `ProxyInputs::config`.
    pub config: AppliedView,
    /// See `ProxyInputs::pool`.
    pub pool: ConnPool,
    /// See `ProxyInputs::metrics`.
    pub metrics: Arc<Metrics>,
    /// See `ProxyInputs::access_log`.
    pub access_log: AccessLog,
    /// Spans out, when an OTLP collector is configured.
    pub spans: Option<crate::telemetry::spans::SpanSink>,
    /// This node's zone.
    pub zone: String,
    /// The default request timeout (None: none).
    pub request_timeout: Option<Duration>,
    /// See `ProxyInputs::gossip_interval`.
    pub gossip_interval: Duration,
    /// See `ProxyInputs::shutdown`.
    pub shutdown: CancellationToken,
    /// See `ProxyInputs::runtime`.
    pub runtime: tokio::runtime::Handle,
}

impl ProxyInputs {
    /// The bundle, with an empty catalog and fresh balancer and resilience state.
    pub fn new(p: ProxyParts) -> Self {
        let pool = Arc::new(p.pool);
        Self {
            identity: p.identity,
            catalog: SharedCatalog::default(),
            services: p.services,
            config: p.config,
            peers: PeerClients::new(pool.clone()),
            pool,
            balancer: LoadBalancer::default(),
            resilience: Arc::default(),
            metrics: p.metrics,
            access_log: p.access_log,
            spans: p.spans,
            backend: super::inbound::backend_client(false),
            backend_h2: super::inbound::backend_client(true),
            zone: RwLock::new(p.zone.into()),
            request_timeout_ms: std::sync::atomic::AtomicU64::new(
                p.request_timeout.map_or(0, |d| d.as_millis() as u64),
            ),
            gossip_interval: p.gossip_interval,
            shutdown: p.shutdown,
            runtime: p.runtime,
            mirror_slots: Arc::new(tokio::sync::Semaphore::new(MAX_MIRRORS_IN_FLIGHT)),
            listener_faults: Default::default(),
        }
    }

    /// This node's zone.
    pub fn zone(&self) -> Arc<str> {
        self.zone.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The default request timeout, if any.
    pub fn request_timeout(&self) -> Option<Duration> {
        match self
            .request_timeout_ms
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Sets the default request timeout (config reload).
    pub fn set_request_timeout(&self, timeout: Option<Duration>) {
        self.request_timeout_ms.store(
            timeout.map_or(0, |d| d.as_millis() as u64),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Sets the zone (config reload).
    pub fn set_zone(&self, zone: &str) {
        *self.zone.write().unwrap_or_else(|e| e.into_inner()) = zone.into();
    }

    /// The node name, for access logs.
    pub fn node_name(&self) -> &str {
        self.identity.info.name.as_str()
    }

    /// Fails closed once this node's certificate has expired: closes every pooled
    /// connection and wakes inbound ones, which close themselves. No traffic is carried
    /// on an identity that is no longer valid (peers refuse new handshakes by themselves).
    pub fn enforce_own_expiry(&self) {
        if self.identity.own_cert_expired() {
            self.pool.close_all();
            self.identity.wake_connections();
        }
    }
}

impl ProxyInputs {
    /// Authorises `src → dst` under the policy in force, through `policy::enforce`.
    pub fn authorize(
        &self,
        src: &str,
        dst: &str,
        http: Option<(&str, &str)>,
    ) -> crate::policy::Decision {
        crate::policy::enforce(&self.config.get().policy, &self.metrics, src, dst, http)
    }

    /// Authorises a raw (L4) stream `src → dst`, where `dst_protocol` is what the
    /// destination registered (never what the sender claims). A raw stream to an HTTP
    /// service that has path or method rules is refused: its requests cannot be checked
    /// against them (use the service's HTTP port through the mesh instead).
    pub fn authorize_stream(
        &self,
        src: &str,
        dst: &str,
        dst_protocol: crate::catalog::Protocol,
    ) -> crate::policy::Decision {
        if dst_protocol.is_http() {
            let applied = self.config.get();
            if let Some(rule) = applied.policy.http_rule_for(src, dst) {
                tracing::warn!(
                    source = src,
                    destination = dst,
                    rule,
                    "raw stream to an HTTP service refused: rule {rule} decides by path or method"
                );
                self.metrics
                    .policy_denied
                    .get_or_create(&crate::telemetry::metrics::ModeLabels {
                        mode: "enforce".into(),
                    })
                    .inc();
                return crate::policy::Decision {
                    allowed: false,
                    verdict: crate::policy::Action::Deny,
                    rule: rule.to_owned(),
                    reason: format!(
                        "{dst} is an HTTP service and rule {rule} decides by path or method, which a raw stream (CONNECT or TCP) cannot be checked against"
                    ),
                    dry_run: false,
                };
            }
        }
        self.authorize(src, dst, None)
    }
}
