//! Local listeners: one per `[[service.upstream]]` (reconciled whenever the local services
//! change), one per virtual IP and port of each service (`supervise_vips`, reconciled
//! whenever the name table changes) and the HTTP forward proxy. An upstream listener speaks
//! HTTP (L7) when its destination is an HTTP service and splices bytes (L4) otherwise,
//! decided per connection from the catalog. A listener that cannot open is retried and
//! holds readiness back (`ListenerFaults`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use weft_ca::ServiceName;

use super::http::{serve_connection, Target};
use super::inputs::ProxyInputs;
use super::tcp::proxy_connection;

/// How often a listener that could not be opened is tried again.
const REBIND_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Listeners the config asks for that could not be opened, by address, each with one line
/// saying why and what to do. The agent is not ready while any is here (`/readyz`,
/// `weft status`); the supervisors retry every `REBIND_EVERY`.
#[derive(Debug, Default)]
pub struct ListenerFaults(std::sync::Mutex<FaultMap>);

/// Address → (kind of listener, the line saying why it is not open).
type FaultMap = std::collections::BTreeMap<SocketAddr, (&'static str, String)>;

impl ListenerFaults {
    fn map(&self) -> std::sync::MutexGuard<'_, FaultMap> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `addr`, a `kind` listener for `what`, could not be opened.
    fn failed(&self, kind: &'static str, addr: SocketAddr, what: &str, e: &std::io::Error) {
        let hint = bind_hint(addr, e);
        let line = format!("{kind} listener {addr} ({what}) cannot open: {e}{hint}");
        self.map().insert(addr, (kind, line));
    }

    fn opened(&self, addr: SocketAddr) {
        self.map().remove(&addr);
    }

    /// Forgets the faults of `kind` listeners the config no longer asks for.
    fn retain(&self, kind: &'static str, wanted: impl Fn(&SocketAddr) -> bool) {
        self.map().retain(|addr, (k, _)| *k != kind || wanted(addr));
    }

    /// Whether a `kind` listener is failing (its supervisor then retries).
    fn any(&self, kind: &'static str) -> bool {
        self.map().values().any(|(k, _)| *k == kind)
    }

    /// The first fault, for the not-ready reason.
    pub fn first(&self) -> Option<String> {
        let map = self.map();
        let n = map.len();
        map.values().next().map(|(_, t)| {
            if n > 1 {
                format!("{t} (and {} more)", n - 1)
            } else {
                t.clone()
            }
        })
    }

    /// Every fault.
    pub fn all(&self) -> Vec<String> {
        self.map().values().map(|(_, t)| t.clone()).collect()
    }
}

/// What to do about a listener that could not bind, as a `: …` suffix (empty when there
/// is nothing useful to say).
pub fn bind_hint(addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            ": another program holds the port (`ss -lntup 'sport = :{}'` shows which); stop it or choose another port",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied => {
            ": ports below 1024 need CAP_NET_BIND_SERVICE; choose a higher port".to_owned()
        }
        std::io::ErrorKind::AddrNotAvailable => ": the address is not on this host".to_owned(),
        _ => String::new(),
    }
}

const UPSTREAM: &str = "upstream";
const VIRTUAL_IP: &str = "virtual IP";

/// Waits for a change, or for the next retry while a listener of this kind is failing.
async fn next_round(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    shutdown: &CancellationToken,
    retry: bool,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        r = changes.changed() => r.is_ok(),
        _ = tokio::time::sleep(REBIND_EVERY), if retry => true,
    }
}

/// Keeps upstream listeners in line with the local services until `shutdown`.
pub async fn supervise_upstreams(inputs: Arc<ProxyInputs>, shutdown: CancellationToken) {
    let mut changes = inputs.services.subscribe();
    let mut running: HashMap<SocketAddr, (ServiceName, ServiceName, CancellationToken)> =
        HashMap::new();
    loop {
        let wanted: HashMap<SocketAddr, (ServiceName, ServiceName)> = inputs
            .services
            .all()
            .into_iter()
            .flat_map(|s| {
                let source = s.name.clone();
                s.upstreams
                    .into_iter()
                    .map(move |u| (u.listen, (u.service, source.clone())))
            })
            .collect();
        inputs
            .listener_faults
            .retain(UPSTREAM, |a| wanted.contains_key(a));
        running.retain(|addr, (dst, src, stop)| {
            let keep = wanted.get(addr) == Some(&(dst.clone(), src.clone()));
            if !keep {
                info!(listen = %addr, "upstream listener closed");
                stop.cancel();
            }
            keep
        });
        for (addr, (dst, src)) in wanted {
            if running.contains_key(&addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    inputs.listener_faults.opened(addr);
                    info!(listen = %addr, destination = %dst, source = %src, "upstream listener open");
                    let stop = shutdown.child_token();
                    tokio::spawn(serve_upstream(
                        inputs.clone(),
                        listener,
                        dst.clone(),
                        src.clone(),
                        stop.clone(),
                    ));
                    running.insert(addr, (dst, src, stop));
                }
                Err(e) => {
                    let first = !inputs.listener_faults.any(UPSTREAM);
                    inputs
                        .listener_faults
                        .failed(UPSTREAM, addr, &format!("to {dst}"), &e);
                    if first {
                        error!(listen = %addr, destination = %dst, error = %e, "cannot open upstream listener; not ready until it opens (retried every 2 s)")
                    }
                }
            }
        }
        let retry = inputs.listener_faults.any(UPSTREAM);
        if !next_round(&mut changes, &shutdown, retry).await {
            return;
        }
    }
}

/// Keeps a listener on each virtual IP and port of `names` until `shutdown`: a connection
/// to `reviews.weft:9080` is routed as an upstream listener's would be, from an anonymous
/// source (`-`), pinned to a version for `<version>.<service>.weft` (HTTP services).
pub async fn supervise_vips(
    inputs: Arc<ProxyInputs>,
    names: Arc<crate::names::Names>,
    shutdown: CancellationToken,
) {
    let mut changes = names.subscribe();
    let mut running: HashMap<SocketAddr, (crate::names::VipTarget, CancellationToken)> =
        HashMap::new();
    loop {
        let wanted: HashMap<SocketAddr, crate::names::VipTarget> =
            names.listeners().into_iter().collect();
        inputs
            .listener_faults
            .retain(VIRTUAL_IP, |a| wanted.contains_key(a));
        running.retain(|addr, (target, stop)| {
            let keep = wanted.get(addr) == Some(target);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (addr, target) in wanted {
            if running.contains_key(&addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    inputs.listener_faults.opened(addr);
                    tracing::debug!(listen = %addr, service = %target.service, "virtual IP listener open");
                    let stop = shutdown.child_token();
                    tokio::spawn(serve_vip(
                        inputs.clone(),
                        listener,
                        target.clone(),
                        stop.clone(),
                    ));
                    running.insert(addr, (target, stop));
                }
                Err(e) => {
                    let first = !inputs.listener_faults.any(VIRTUAL_IP);
                    inputs.listener_faults.failed(
                        VIRTUAL_IP,
                        addr,
                        &format!("{}.weft", target.service),
                        &e,
                    );
                    if first {
                        error!(listen = %addr, service = %target.service, error = %e, "cannot listen on a virtual IP; not ready until it opens (retried every 2 s)")
                    }
                }
            }
        }
        let retry = inputs.listener_faults.any(VIRTUAL_IP);
        if !next_round(&mut changes, &shutdown, retry).await {
            return;
        }
    }
}

async fn serve_vip(
    inputs: Arc<ProxyInputs>,
    listener: TcpListener,
    target: crate::names::VipTarget,
    stop: CancellationToken,
) {
    let version: Option<Arc<str>> = target.version.as_deref().map(Arc::from);
    accept_loop(listener, stop, move |sock| {
        let inputs = inputs.clone();
        let (dst, version) = (target.service.clone(), version.clone());
        let source = super::local_source::identify(&inputs, &sock).or_declared(None);
        serve_app(inputs, sock, dst, source, version)
    })
    .await;
}

/// Serves one app connection to `dst` as `source`: HTTP when the service speaks it (per
/// request routing, `version` pinned if given), else a byte splice.
async fn serve_app(
    inputs: Arc<ProxyInputs>,
    sock: tokio::net::TcpStream,
    dst: ServiceName,
    source: Option<ServiceName>,
    version: Option<Arc<str>>,
) {
    let http = inputs
        .catalog
        .get()
        .instances
        .iter()
        .any(|i| i.service == dst && i.protocol.is_http());
    if http {
        serve_connection(
            inputs,
            sock,
            Target::Service {
                destination: dst,
                source,
                version,
            },
        )
        .await;
    } else {
        proxy_connection(&inputs, sock, dst, source, version.as_deref()).await;
    }
}

/// Where nftables sends what local services open towards other services' instances
/// (`intercept = true`).
pub const INTERCEPT_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 15006);

/// Serves connections nftables redirected to the agent: each goes to the service whose
/// instance the app meant (its original destination), as the connecting process's
/// service. A connection whose original destination is no instance is closed.
pub async fn serve_intercepted(
    inputs: Arc<ProxyInputs>,
    listener: std::net::TcpListener,
    shutdown: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "the interception listener cannot be used");
            return;
        }
    };
    accept_loop(listener, shutdown, move |sock| {
        let inputs = inputs.clone();
        let meant = original_destination(&sock);
        let source = super::local_source::identify_redirected(&inputs, &sock).or_declared(None);
        async move {
            let catalog = inputs.catalog.get();
            let Some(instance) = meant.and_then(|dst| {
                catalog
                    .instances
                    .iter()
                    .find(|i| i.node_addr.ip() == dst.ip() && i.port == dst.port())
            }) else {
                warn!(destination = ?meant, "intercepted connection to no known instance; closed");
                return;
            };
            let dst = instance.service.clone();
            drop(catalog);
            serve_app(inputs, sock, dst, source, None).await;
        }
    })
    .await;
}

/// Where the app meant to connect before nftables redirected it (SO_ORIGINAL_DST).
fn original_destination(sock: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let addr = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::OriginalDst).ok()?;
    let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Some(SocketAddr::from((ip, u16::from_be(addr.sin_port))))
}

/// Connections one app-side listener serves at once; more wait in the kernel's backlog.
pub const MAX_APP_CONNECTIONS: usize = 4096;

/// Accepts on `listener` until `stop`, handing each socket (no-delay set) to `handle`;
/// at most `MAX_APP_CONNECTIONS` at once (more are accepted and closed at once rather than
/// left to fill the kernel's backlog). Accept errors (e.g. out of file descriptors) are
/// logged and retried after a pause.
async fn accept_loop<F, Fut>(listener: TcpListener, stop: CancellationToken, handle: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_APP_CONNECTIONS));
    loop {
        let (sock, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                limit = MAX_APP_CONNECTIONS,
                "app connection limit reached; connection closed"
            );
            drop(sock);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let conn = handle(sock);
        tokio::spawn(async move {
            conn.await;
            drop(slot);
        });
    }
}

async fn serve_upstream(
    inputs: Arc<ProxyInputs>,
    listener: TcpListener,
    destination: ServiceName,
    source: ServiceName,
    stop: CancellationToken,
) {
    accept_loop(listener, stop, move |sock| {
        let inputs = inputs.clone();
        let dst = destination.clone();
        // The declared source, unless local services name their users: then whoever
        // the connecting process is.
        let src = super::local_source::identify(&inputs, &sock).or_declared(Some(source.clone()));
        serve_app(inputs, sock, dst, src, None)
    })
    .await;
}

/// The HTTP forward proxy (`--proxy`): `http://SERVICE/…` and `CONNECT SERVICE:port`.
pub async fn serve_forward_proxy(
    inputs: Arc<ProxyInputs>,
    listener: std::net::TcpListener,
    shutdown: CancellationToken,
) {
    // Registered with the runtime this runs on (the data plane's), not the binder's.
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP proxy listener cannot be used");
            return;
        }
    };
    accept_loop(listener, shutdown, move |sock| {
        let source = super::local_source::identify(&inputs, &sock).or_declared(None);
        serve_connection(inputs.clone(), sock, Target::Proxy { source })
    })
    .await;
}
