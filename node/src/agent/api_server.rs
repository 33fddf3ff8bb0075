//! The API and dashboard listener, bounded: at most `MAX_API_CONNECTIONS` connections at
//! once (one more is accepted and closed at once, so that a flood of idle connections
//! cannot fill the kernel's backlog and make every client hang), request headers must
//! arrive within
//! `HEADER_READ_TIMEOUT` (idle keep-alive connections too), and every connection is
//! closed gracefully when the agent stops. `axum::serve` has none of these knobs, so the
//! router is served with hyper-util's connection builder directly.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Most API connections served at once.
pub const MAX_API_CONNECTIONS: usize = 1024;
/// Time allowed for a request's headers (and for an idle keep-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection gets to finish once the agent stops.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, router: axum::Router, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_API_CONNECTIONS));
    let conns = TaskTracker::new();
    loop {
        let sock = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok((sock, _)) => sock,
                Err(e) => {
                    warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("API connection limit reached; connection closed");
            drop(sock);
            continue;
        };
        let svc = TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(64 * 1024);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(32)
                .keep_alive_interval(Some(Duration::from_secs(20)))
                .keep_alive_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(sock), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
            }
        });
    }
    conns.close();
    let _ = tokio::time::timeout(CLOSE_GRACE, conns.wait()).await;
}
