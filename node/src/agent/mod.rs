//! `weft agent`: establishes the identity, then runs gossip, the QUIC server, the API,
//! certificate renewal and housekeeping until SIGTERM, SIGINT or `weft leave`.

mod api;
pub mod join;
mod metrics;
pub mod node;
mod quic;
pub mod renewal;
mod setup;
mod tasks;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use weft_ca::TrustRoot;
use weft_gossip::{Gossip, GossipConfig, GossipStats, SharedKeyring};

use crate::authority::Authority;
use crate::catalog::LocalServices;
use crate::config::{ConfigError, Settings};
use crate::identity::{IdentityError, IdentityFiles};
use crate::store::{files::ensure_private_dir, Store, StoreError};
use crate::telemetry::{AccessLog, Metrics};
use crate::tls::{self, CertStore, TlsError};
use node::{Node, NodeParts};

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    Join(#[from] join::JoinFailure),
    /// Setting up the identity failed.
    #[error("{0}")]
    Setup(String),
    /// A socket could not be bound.
    #[error("{0}")]
    Bind(String),
}

/// Seconds since the Unix epoch, for display.
pub fn api_now_unix() -> u64 {
    weft_ca::unix(SystemTime::now())
}

/// Gossip rounds between announcing a leave and closing the QUIC endpoint.
const LEAVE_GRACE_ROUNDS: u32 = 4;

/// Time allowed for in-flight work after shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs the agent until it is told to stop.
pub async fn run(args: crate::cli::AgentArgs, settings: Settings) -> Result<(), AgentError> {
    ensure_private_dir(&settings.data_dir).map_err(|e| {
        AgentError::Setup(format!(
            "cannot create {}: {e}",
            settings.data_dir.display()
        ))
    })?;
    let files = IdentityFiles::new(&settings.data_dir);
    let store = Store::open(&settings.data_dir.join("store"))?;
    let identity = setup::establish(&settings, &files, &store).await?;
    let admin_token = files.admin_token()?;

    let trust = Arc::new(
        TrustRoot::new(identity.info.cluster.clone(), identity.ca_der.clone())
            .map_err(|e| AgentError::Setup(format!("cluster root unusable: {e}")))?,
    );
    let revoked = Arc::new(RwLock::new(store.crl()?));
    let certs = CertStore::new(&identity.key, &identity.cert_der, &identity.ca_der)?;
    let server_config = tls::server_config(&certs, trust.clone(), revoked.clone())?;
    let ctl_client = tls::ctl_client_config(&certs, trust.clone(), revoked.clone())?;
    let data_client = tls::data_client_config(&certs, trust.clone(), revoked.clone())?;
    let config = Arc::new(crate::cluster_config::ConfigReplica::load(
        store.clone(),
        identity.info.name.as_str(),
    )?);
    let services = Arc::new(
        LocalServices::new(
            store.clone(),
            vec![settings.bind, settings.advertise],
            &settings.services,
        )
        .map_err(|e| AgentError::Setup(e.to_string()))?,
    );
    let endpoint = tls::bind_endpoint(server_config, settings.quic_listen()).map_err(|e| {
        AgentError::Bind(format!(
            "cannot bind QUIC {}/udp: {e}",
            settings.quic_listen()
        ))
    })?;
    let authority = identity
        .ca
        .map(|ca| Authority::new(ca, store.clone(), settings.leaf_ttl))
        .transpose()?;

    let seeds: Vec<String> = store
        .peers()?
        .iter()
        .filter(|p| p.gossip_addr != settings.gossip_advertise())
        .map(|p| p.gossip_addr.to_string())
        .collect();
    let generation = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let keyring = SharedKeyring::new(identity.keyring.clone());
    let gossip_stats = Arc::new(GossipStats::default());

    // The first record is signed before gossip starts; Node re-signs from then on.
    let boot_record = {
        let leaf_der = identity.cert_der.clone();
        let record = weft_gossip::NodeRecord {
            name: identity.info.name.clone(),
            quic_addr: settings.quic_advertise(),
            zone: settings.zone.clone(),
            version: node::VERSION.to_owned(),
            cert: weft_gossip::NodeRecord::encode_cert(&leaf_der),
            ca: authority.is_some(),
            leaving: false,
            signed_at_ms: 0,
        };
        weft_gossip::encode_signed(&record, |m| identity.key.sign(m).unwrap_or_default())
    };
    let gossip = Gossip::start(
        GossipConfig {
            name: identity.info.name.clone(),
            generation,
            listen: settings.gossip_listen(),
            advertise: settings.gossip_advertise(),
            seeds,
            cluster: identity.info.cluster.to_string(),
            interval: settings.gossip_interval,
            phi_threshold: 8.0,
        },
        keyring,
        Arc::new(RwLock::new((*trust).clone())),
        gossip_stats,
        boot_record,
    )
    .await
    .map_err(|e| AgentError::Bind(e.to_string()))?;

    let api_listener = tokio::net::TcpListener::bind(settings.api)
        .await
        .map_err(|e| AgentError::Bind(format!("cannot bind API {}/tcp: {e}", settings.api)))?;
    let proxy_listener = tokio::net::TcpListener::bind(settings.proxy)
        .await
        .map_err(|e| {
            AgentError::Bind(format!(
                "cannot bind HTTP proxy {}/tcp: {e}",
                settings.proxy
            ))
        })?;
    let metrics = Arc::new(Metrics::default());
    let shutdown_logs = tokio_util::sync::CancellationToken::new();
    let access_log = AccessLog::start(
        settings.access_log.clone(),
        metrics.clone(),
        shutdown_logs.clone(),
    )
    .await
    .map_err(|e| AgentError::Setup(format!("cannot open the access log: {e}")))?;

    let node = Arc::new(
        Node::new(NodeParts {
            settings: settings.clone(),
            info: identity.info.clone(),
            key: identity.key,
            cert_der: identity.cert_der,
            certs,
            trust,
            revoked,
            files,
            store,
            gossip,
            endpoint,
            ctl_client,
            authority,
            admin_token,
            services,
            data_client,
            metrics,
            access_log,
            config,
        })
        .map_err(|e| AgentError::Setup(e.to_string()))?,
    );
    node.publish_record().await;
    node.publish_services().await;
    // The catalog holds this node's own services before the API can answer "ready".
    node.refresh_catalog().await;

    let tasks = TaskTracker::new();
    tasks.spawn(quic::serve(node.clone(), tasks.clone()));
    if let Some(path) = std::env::var_os(crate::clock::TEST_CLOCK_ENV) {
        tasks.spawn(crate::clock::follow_file(
            path.into(),
            node.shutdown.clone(),
        ));
    }
    tasks.spawn(tasks::renew_loop(node.clone()));
    tasks.spawn(tasks::housekeeping_loop(node.clone()));
    tasks.spawn(tasks::catalog_loop(node.clone()));
    tasks.spawn(tasks::publish_services_loop(node.clone()));
    tasks.spawn(tasks::config_loop(node.clone()));
    tasks.spawn(tasks::edges_loop(node.clone()));
    tasks.spawn(crate::health::supervise(
        node.services.clone(),
        node.shutdown.clone(),
    ));
    tasks.spawn(crate::proxy::listeners::supervise_upstreams(
        node.clone(),
        node.shutdown.clone(),
    ));
    tasks.spawn(crate::proxy::listeners::serve_forward_proxy(
        node.clone(),
        proxy_listener,
        node.shutdown.clone(),
    ));
    {
        let node = node.clone();
        let router = weft_web::router(node.clone());
        tasks.spawn(async move {
            let shutdown = node.shutdown.clone();
            if let Err(e) = axum::serve(api_listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
            {
                error!(error = %e, "API server failed");
            }
        });
    }

    info!(
        node = %node.info.name,
        cluster = %node.info.cluster,
        gossip = %settings.gossip_advertise(),
        quic = %settings.quic_advertise(),
        api = %settings.api,
        ca = node.authority.is_some(),
        "agent ready; dashboard at http://{}/", settings.api
    );
    if settings.dev {
        info!(
            "dev mode: try `WEFT_API={} WEFT_DATA_DIR={} weft token create`",
            settings.api,
            settings.data_dir.display()
        );
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    wait_for_stop(&node, &args).await;

    // Graceful stop: announce the leave, stop accepting, drain, stop gossip.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    node.leaving
        .store(true, std::sync::atomic::Ordering::SeqCst);
    node.gossip.leave(node.signed_record()).await;
    // Peers learn of the leave within a few gossip rounds and stop sending here; until
    // then keep serving what they still send (closing at once made their dials time out).
    tokio::time::sleep(node.settings().gossip_interval * LEAVE_GRACE_ROUNDS).await;
    node.shutdown.cancel();
    node.endpoint.close(0u32.into(), b"agent stopping");
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        warn!("some tasks did not finish within the drain period");
    }
    node.gossip.shutdown().await;
    shutdown_logs.cancel();
    tokio::time::timeout(Duration::from_secs(2), node.endpoint.wait_idle())
        .await
        .ok();
    info!("agent stopped after leaving the cluster");
    if settings.ephemeral {
        drop(node);
        if let Err(e) = std::fs::remove_dir_all(&settings.data_dir) {
            warn!(error = %e, dir = %settings.data_dir.display(), "cannot remove the dev data dir");
        }
    }
    Ok(())
}

/// Waits for SIGTERM/SIGINT or a leave through the API; reloads the config on SIGHUP.
async fn wait_for_stop(node: &Arc<Node>, args: &crate::cli::AgentArgs) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stop with `weft leave`");
        node.shutdown.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: leaving the cluster"); return; }
            _ = int.recv() => { info!("SIGINT: leaving the cluster"); return; }
            _ = node.shutdown.cancelled() => return,
            _ = hup.recv() => reload(node, args).await,
        }
    }
}

/// SIGHUP: re-reads the config file; applies what can change at run time (zone, gossip
/// details published in the record) and says what needs a restart.
async fn reload(node: &Arc<Node>, args: &crate::cli::AgentArgs) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let current = node.settings();
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
            if let Err(e) = node.services.set_file(&fresh.services) {
                error!(error = %e, "SIGHUP: services not reloaded, keeping the running ones");
                fresh.services = current.services.clone();
            }
            *node.settings.write().unwrap_or_else(|e| e.into_inner()) = fresh;
            if zone_changed {
                node.publish_record().await;
            }
            info!(file = %path.display(), "configuration reloaded");
        }
        Err(e) => error!(error = %e, "SIGHUP: config not reloaded, keeping the running one"),
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}
