//! `weft agent`: establishes the identity, then runs gossip, the QUIC server, the API,
//! certificate renewal and housekeeping until SIGTERM, SIGINT or `weft leave`.

mod api;
mod api_server;
mod loops;
pub mod preflight;
mod records;
mod replica;
mod rollouts;
mod rotation;
mod setup;
pub mod state;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use weft_gossip::{Gossip, GossipConfig, GossipStats, SharedKeyring};

use crate::authority::Authority;
use crate::ca_role::slot::CaSlot;
use crate::ca_role::CaRole;
use crate::catalog::{LocalServices, RegistryError};
use crate::cluster_config::ConfigReplica;
use crate::config::{AgentArgs, ConfigError, Settings};
use crate::identity::{IdentityError, IdentityFiles, NodeIdentity};
use crate::proxy::runtime::DataRuntime;
use crate::proxy::{ConnPool, ProxyInputs, ProxyParts};
use crate::rpc::join_client::JoinFailure;
use crate::rpc::{CaClient, CtlClient, ServerInputs};
use crate::store::{files::ensure_private_dir, Store, StoreError};
use crate::telemetry::{AccessLog, Metrics};
use crate::tls::{self, CertStore, TlsError};
use records::RecordSigner;
use state::{Agent, VERSION};

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data-plane thread could not start.
    #[error("cannot start the data-plane thread: {0}")]
    DataRuntime(std::io::Error),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The settings failed the preflight checks (nothing was created or spent).
    #[error("{} (nothing was changed; `weft validate` checks a file)", .0.join("; "))]
    Preflight(Vec<String>),
    /// Identity files.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Joining failed.
    #[error(transparent)]
    Join(#[from] JoinFailure),
    /// The data directory cannot be created.
    #[error("cannot create {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster root or this node's certificate is unusable.
    #[error("cluster root or node certificate unusable: {0}")]
    Certificate(#[from] weft_ca::VerifyError),
    /// Creating keys or certificates failed.
    #[error(transparent)]
    Ca(#[from] weft_ca::CaError),
    /// The CA refused to issue this node's own certificate.
    #[error("the CA refused this node's certificate: {0}")]
    Refused(#[from] crate::ca_role::Refusal),
    /// The services in the config file are invalid.
    #[error(transparent)]
    Services(#[from] RegistryError),
    /// Gossip could not start.
    #[error(transparent)]
    Gossip(#[from] weft_gossip::GossipError),
    /// The access log cannot be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    /// A socket could not be bound.
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        /// What listens there.
        what: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory holds no usable identity for this start.
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    /// The `.weft` DNS server cannot listen.
    #[error(transparent)]
    Dns(#[from] crate::names::dns::DnsError),
    /// The nftables lock-down cannot be set.
    #[error(transparent)]
    Intercept(#[from] crate::interception::InterceptError),
}

/// Seconds since the Unix epoch, for display.
pub fn api_now_unix() -> u64 {
    crate::clock::unix_secs()
}

/// Gossip rounds between announcing a leave and closing the QUIC endpoint.
const LEAVE_GRACE_ROUNDS: u32 = 4;

/// Time allowed for in-flight work after shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs the agent until it is told to stop.
pub async fn run(args: AgentArgs, settings: Settings) -> Result<(), AgentError> {
    // Every listener's connection cap assumes the descriptors exist: raise the soft
    // limit to the hard one (the systemd unit sets both to 65 536).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(open_files = n, "open-file limit"),
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
    ensure_private_dir(&settings.data_dir).map_err(|source| AgentError::DataDir {
        dir: settings.data_dir.display().to_string(),
        source,
    })?;
    let files = IdentityFiles::new(&settings.data_dir);
    // Before a CA is bootstrapped or a join token spent, and before the store is opened:
    // every problem of the file at once. Ports are tried only on a first start (later, a
    // listener that cannot open holds readiness back and says why).
    let ports = if files.exists() {
        preflight::Ports::Skip
    } else {
        preflight::Ports::Probe
    };
    let findings = preflight::check(&settings, ports);
    for w in &findings.warnings {
        warn!("{w}");
    }
    if !findings.errors.is_empty() {
        return Err(AgentError::Preflight(findings.errors));
    }
    let store = Store::open(&settings.data_dir.join("store"))?;
    let mut identity = setup::establish(&settings, &files, &store).await?;
    let admin_token = files.admin_token()?;

    let trust = Arc::new(identity.trust_root()?);
    let revoked = Arc::new(RwLock::new(store.crl()?));
    let certs = CertStore::new(
        &identity.key,
        &identity.cert_der,
        &identity.chain,
        &identity.ca_der,
    )?;
    let mut server_config = tls::server_config(&certs, trust.clone(), revoked.clone())?;
    let mut ctl_config = tls::ctl_client_config(&certs, trust.clone(), revoked.clone())?;
    let mut data_config = tls::data_client_config(&certs, trust.clone(), revoked.clone())?;
    // Datagrams as big as the interface of the QUIC address carries (loopback, jumbo
    // frames), within what one GSO batch may hold.
    let max_payload = tls::datagrams::max_payload_for(settings.quic_listen().ip());
    server_config.transport_config(tls::transport_for(true, max_payload));
    ctl_config.transport_config(tls::transport_for(false, max_payload));
    data_config.transport_config(tls::transport_for(false, max_payload));
    info!(max_payload, "QUIC datagram size bound");
    let services = Arc::new(LocalServices::new(
        store.clone(),
        vec![settings.bind, settings.advertise],
        &settings.services,
    )?);
    let data_runtime = DataRuntime::start().map_err(AgentError::DataRuntime)?;
    // The endpoint's UDP socket and driver live on the data-plane thread.
    let endpoint = {
        let _data_thread = data_runtime.handle().enter();
        tls::bind_endpoint(server_config, settings.quic_listen())
    }
    .map_err(|source| AgentError::Bind {
        what: "QUIC",
        addr: format!("{}/udp", settings.quic_listen()),
        source,
    })?;
    let ca = CaSlot::new(setup::ca_role(&mut identity, &store, &settings, &trust)?.map(Arc::new));

    let seeds: Vec<String> = store
        .peers()?
        .iter()
        .filter(|p| p.gossip_addr != settings.gossip_advertise())
        .map(|p| p.gossip_addr.to_string())
        .collect();
    let keyring = SharedKeyring::new(identity.keyring.clone());
    let gossip_stats = Arc::new(GossipStats::default());
    let metrics = Arc::new(Metrics::new(gossip_stats.clone()));
    let records = RecordSigner::new(crate::clock::unix_ms());
    let node_identity = Arc::new(NodeIdentity::new(
        identity.info.clone(),
        identity.key,
        identity.cert_der,
        identity.chain,
        certs,
        trust.clone(),
        revoked,
        files,
        store.clone(),
        identity.trust.version,
    )?);
    let authority = Arc::new(Authority::new(
        trust.clone(),
        node_identity.clone(),
        metrics.authority_refused.clone(),
    ));
    let config = Arc::new(ConfigReplica::load(
        store.clone(),
        node_identity.info.name.as_str(),
        authority.clone(),
    )?);
    let admin_credential =
        setup::admin_credential(&settings.data_dir, &trust, ca.get().as_deref(), false)?;

    // The first record is signed before gossip starts; the agent re-signs from then on.
    let boot_record = boot_record(
        &node_identity,
        &settings,
        ca.get().as_deref(),
        records.generation(),
    );
    let gossip = Arc::new(
        Gossip::start(
            GossipConfig {
                name: node_identity.info.name.clone(),
                generation: records.generation(),
                listen: settings.gossip_listen(),
                advertise: settings.gossip_advertise(),
                seeds,
                cluster: node_identity.info.cluster.to_string(),
                interval: settings.gossip_interval,
                phi_threshold: 8.0,
            },
            keyring,
            Arc::new(RwLock::new((*trust).clone())),
            gossip_stats.clone(),
            boot_record,
        )
        .await?,
    );

    let api_listener = tokio::net::TcpListener::bind(settings.api)
        .await
        .map_err(|source| AgentError::Bind {
            what: "API",
            addr: format!("{}/tcp", settings.api),
            source,
        })?;
    // Bound here so that a taken port stops the start; served on the data-plane thread.
    let proxy_listener = std::net::TcpListener::bind(settings.proxy)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| AgentError::Bind {
            what: "HTTP proxy",
            addr: format!("{}/tcp", settings.proxy),
            source,
        })?;
    let dns_server = match settings.dns {
        Some(addr) => Some(crate::names::dns::DnsServer::bind(addr).await?),
        None => None,
    };
    let names = settings
        .vip_range
        .map(|range| Arc::new(crate::names::Names::new(range)));
    let shutdown_logs = tokio_util::sync::CancellationToken::new();
    let access_log = AccessLog::start(
        settings.access_log.clone(),
        metrics.clone(),
        shutdown_logs.clone(),
    )
    .await
    .map_err(AgentError::AccessLog)?;
    let spans = match &settings.otlp_endpoint {
        None => None,
        Some(endpoint) => Some(
            crate::telemetry::spans::start(
                endpoint,
                identity.info.name.as_str(),
                identity.info.cluster.as_str(),
                metrics.spans.clone(),
                shutdown_logs.clone(),
            )
            .map_err(|e| AgentError::Preflight(vec![e.to_string()]))?,
        ),
    };
    let (spans, spans_task) = match spans {
        Some((sink, task)) => (Some(sink), Some(task)),
        None => (None, None),
    };

    let shutdown = tokio_util::sync::CancellationToken::new();
    let data = Arc::new(ProxyInputs::new(ProxyParts {
        identity: node_identity.clone(),
        services,
        config: config.view(),
        pool: ConnPool::new(endpoint.clone(), data_config),
        metrics,
        access_log,
        spans,
        zone: settings.zone.clone(),
        request_timeout: settings.request_timeout,
        gossip_interval: settings.gossip_interval,
        shutdown: shutdown.clone(),
        runtime: data_runtime.handle().clone(),
    }));
    let ctl = CtlClient::new(endpoint.clone(), ctl_config);
    let ca_client = CaClient::new(ctl.clone(), gossip.clone(), store.clone());
    let agent = Arc::new(Agent {
        settings: RwLock::new(settings.clone()),
        identity: node_identity,
        store,
        gossip,
        records,
        ca,
        ctl,
        ca_client,
        config,
        data,
        admin_token,
        authority,
        admin_credential: RwLock::new(admin_credential),
        recent_figures: std::sync::Mutex::default(),
        names: names.clone(),
        shutdown,
    });
    agent.sign_legacy_config();
    agent.publish_record().await;
    agent.publish_services().await;
    // The catalog holds this node's own services before the API can answer "ready".
    agent.refresh_catalog().await;

    let tasks = TaskTracker::new();
    let (replica_orders, replica_inbox) = crate::ca_role::slot::ReplicaOrders::channel();
    let server = Arc::new(ServerInputs {
        endpoint: endpoint.clone(),
        identity: agent.identity.clone(),
        ca: agent.ca.clone(),
        replicas: replica_orders,
        ca_client: agent.ca_client.clone(),
        gossip: agent.gossip.clone(),
        config: agent.config.clone(),
        authority: agent.authority.clone(),
        data: agent.data.clone(),
        shutdown: agent.shutdown.clone(),
    });
    tasks.spawn(crate::rpc::server::serve(server, tasks.clone()));
    if let Some(path) = std::env::var_os(crate::clock::TEST_CLOCK_ENV) {
        tasks.spawn(crate::clock::follow_file(
            path.into(),
            agent.shutdown.clone(),
        ));
    }
    tasks.spawn(replica::replica_loop(agent.clone(), replica_inbox));
    tasks.spawn(loops::renew_loop(agent.clone()));
    tasks.spawn(loops::housekeeping_loop(agent.clone()));
    tasks.spawn(loops::catalog_loop(agent.clone()));
    tasks.spawn(loops::publish_services_loop(agent.clone()));
    tasks.spawn(loops::edges_loop(agent.clone()));
    tasks.spawn(rollouts::rollout_loop(agent.clone()));
    tasks.spawn(crate::cluster_config::sync::run(
        agent.config.clone(),
        agent.gossip.clone(),
        agent.ctl.clone(),
        agent.shutdown.clone(),
    ));
    tasks.spawn(crate::health::supervise(
        agent.data.services.clone(),
        agent.shutdown.clone(),
    ));
    tasks.spawn_on(
        crate::proxy::listeners::supervise_upstreams(agent.data.clone(), agent.shutdown.clone()),
        data_runtime.handle(),
    );
    if settings.intercept {
        let addr = std::net::SocketAddr::from(crate::proxy::listeners::INTERCEPT_ADDR);
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| AgentError::Bind {
                what: "interception listener",
                addr: format!("{addr}/tcp"),
                source,
            })?;
        tasks.spawn_on(
            crate::proxy::listeners::serve_intercepted(
                agent.data.clone(),
                listener,
                agent.shutdown.clone(),
            ),
            data_runtime.handle(),
        );
        // In force before the agent says it is ready; a failure stops the start.
        let applied = loops::apply_lockdown(&agent)?;
        tasks.spawn(loops::lockdown_loop(agent.clone(), applied));
    }
    if let Some(names) = &names {
        tasks.spawn_on(
            crate::proxy::listeners::supervise_vips(
                agent.data.clone(),
                names.clone(),
                agent.shutdown.clone(),
            ),
            data_runtime.handle(),
        );
    }
    if let Some(server) = dns_server {
        // Without virtual IPs every name is unknown: NXDOMAIN for all of `.weft`.
        let zone: Arc<dyn crate::names::dns::Lookup> = match &names {
            Some(n) => n.clone(),
            None => Arc::new(|_: &str| None),
        };
        tasks.spawn(server.run(zone, agent.shutdown.clone()));
    }
    tasks.spawn_on(
        crate::proxy::listeners::serve_forward_proxy(
            agent.data.clone(),
            proxy_listener,
            agent.shutdown.clone(),
        ),
        data_runtime.handle(),
    );
    {
        let agent = agent.clone();
        let router = weft_web::router(agent.clone());
        tasks.spawn(api_server::serve(
            api_listener,
            router,
            agent.shutdown.clone(),
        ));
    }

    match agent.not_ready_reason() {
        None => info!(
            node = %agent.identity.info.name,
            cluster = %agent.identity.info.cluster,
            gossip = %settings.gossip_advertise(),
            quic = %settings.quic_advertise(),
            api = %settings.api,
            ca_replica = agent.ca.is_some(),
            "agent ready; dashboard at http://{}/", settings.api
        ),
        // Not "ready": a revoked or expired node serves nothing, and says what to do.
        Some(reason) => warn!(
            node = %agent.identity.info.name,
            api = %settings.api,
            "agent started but NOT ready: {reason}"
        ),
    }
    if settings.dev {
        info!(
            "dev mode: try `WEFT_API={} WEFT_DATA_DIR={} weft token create`",
            settings.api,
            settings.data_dir.display()
        );
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    wait_for_stop(&agent, &args).await;

    // Graceful stop: announce the leave, stop accepting, drain, stop gossip.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    agent.records.set_leaving();
    agent.gossip.leave(agent.signed_record()).await;
    // Peers learn of the leave within a few gossip rounds and stop sending here; until
    // then keep serving what they still send (closing at once made their dials time out).
    tokio::time::sleep(agent.settings().gossip_interval * LEAVE_GRACE_ROUNDS).await;
    agent.shutdown.cancel();
    endpoint.close(0u32.into(), b"agent stopping");
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        warn!("some tasks did not finish within the drain period");
    }
    agent.gossip.shutdown().await;
    shutdown_logs.cancel();
    if let Some(task) = spans_task {
        // The last spans' export, bounded by the exporter's own timeout.
        let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
    }
    tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle())
        .await
        .ok();
    data_runtime.stop().await;
    info!("agent stopped after leaving the cluster");
    if settings.ephemeral {
        drop(agent);
        if let Err(e) = std::fs::remove_dir_all(&settings.data_dir) {
            warn!(error = %e, dir = %settings.data_dir.display(), "cannot remove the dev data dir");
        }
    }
    Ok(())
}

/// The record gossip starts with (signed once more by the agent as soon as it runs).
fn boot_record(
    identity: &NodeIdentity,
    settings: &Settings,
    ca: Option<&CaRole>,
    generation: u64,
) -> String {
    let (der, _) = identity.cert();
    let record = weft_gossip::NodeRecord {
        name: identity.info.name.clone(),
        quic_addr: settings.quic_advertise(),
        zone: settings.zone.clone(),
        version: VERSION.to_owned(),
        cert: weft_gossip::NodeRecord::encode_cert(&der),
        ca: ca.is_some(),
        leaving: false,
        signed_at_ms: 0,
        generation,
        gossip_addr: Some(settings.gossip_advertise()),
        ca_proof: ca.and_then(|ca| ca.ca_proof(&identity.info.name, generation)),
        chain: identity
            .chain()
            .iter()
            .map(|c| weft_gossip::NodeRecord::encode_cert(c))
            .collect(),
    };
    weft_gossip::encode_signed(&record, |m| identity.key.sign(m).unwrap_or_default())
}

/// Waits for SIGTERM/SIGINT or a leave through the API; reloads the config on SIGHUP.
async fn wait_for_stop(agent: &Arc<Agent>, args: &AgentArgs) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stop with `weft leave`");
        agent.shutdown.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: leaving the cluster"); return; }
            _ = int.recv() => { info!("SIGINT: leaving the cluster"); return; }
            _ = agent.shutdown.cancelled() => return,
            _ = hup.recv() => reload(agent, args).await,
        }
    }
}

/// SIGHUP: re-reads the config file; applies what can change at run time (zone, gossip
/// details published in the record) and says what needs a restart.
async fn reload(agent: &Arc<Agent>, args: &AgentArgs) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let current = agent.settings();
    let Some(path) = current.config_path.clone() else {
        info!("SIGHUP: no config file to reload");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        return;
    };
    // Flags given at start still win over the file.
    match Settings::resolve(args) {
        Ok(mut fresh) => {
            fresh.data_dir = current.data_dir.clone();
            if fresh.name != current.name {
                warn!(
                    "SIGHUP: the node name cannot change; keeping {}",
                    current.name
                );
                fresh.name = current.name.clone();
            }
            let restart_needed = fresh.bind != current.bind
                || fresh.gossip_port != current.gossip_port
                || fresh.quic_port != current.quic_port
                || fresh.api != current.api;
            if restart_needed {
                warn!(
                    "SIGHUP: addresses or ports changed in {}; they apply at the next restart",
                    path.display()
                );
                fresh.bind = current.bind;
                fresh.advertise = current.advertise;
                fresh.gossip_port = current.gossip_port;
                fresh.quic_port = current.quic_port;
                fresh.api = current.api;
            }
            let zone_changed = fresh.zone != current.zone;
            let findings = preflight::check(&fresh, preflight::Ports::Skip);
            if let Some(e) = findings.errors.first() {
                error!(error = %e, problems = findings.errors.len(), file = %path.display(), "SIGHUP: config not reloaded, keeping the running one (`weft validate` lists every problem)");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                return;
            }
            if let Err(e) = agent.data.services.set_file(&fresh.services) {
                error!(error = %e, file = %path.display(), "SIGHUP: config not reloaded, keeping the running one");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                return;
            }
            if zone_changed {
                agent.data.set_zone(&fresh.zone);
            }
            agent.data.set_request_timeout(fresh.request_timeout);
            *agent.settings.write().unwrap_or_else(|e| e.into_inner()) = fresh;
            if zone_changed {
                agent.publish_record().await;
            }
            info!(file = %path.display(), "configuration reloaded");
        }
        Err(e) => error!(error = %e, "SIGHUP: config not reloaded, keeping the running one"),
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}
