//! The access log: one JSON line per request or TCP stream, written by one task through a
//! bounded queue (lines are dropped and counted when the writer falls behind, never
//! blocking the data path).

use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::metrics::Metrics;
pub use crate::config::access_log::{AccessLogTarget, EmptyTarget};

/// One access log entry.
#[derive(Debug, Clone, Serialize)]
pub struct AccessEntry {
    /// RFC 3339 time the request or stream started.
    pub time: String,
    /// "outbound" (from a local app) or "inbound" (to a local instance).
    pub direction: &'static str,
    /// "http" or "tcp".
    pub protocol: &'static str,
    /// Source service or "-".
    pub source: String,
    /// Destination service.
    pub destination: String,
    /// Node that served it.
    pub upstream_node: String,
    /// HTTP method (HTTP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path (HTTP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP status or TCP outcome.
    pub status: String,
    /// Duration in milliseconds.
    pub duration_ms: f64,
    /// Bytes from the app.
    pub bytes_out: u64,
    /// Bytes to the app.
    pub bytes_in: u64,
    /// W3C trace id (HTTP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// Handle for writing entries.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<String>>,
    metrics: Arc<Metrics>,
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<Arc<str>>>>,
}

/// Entries kept in memory for the dashboard's request log, whatever the target.
pub const RECENT: usize = 500;

const QUEUE: usize = 4096;

impl AccessLog {
    /// Starts the writer task (if not `Off`); it stops at `shutdown` after draining.
    pub async fn start(
        target: AccessLogTarget,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let mut sink: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match &target {
            AccessLogTarget::Off => {
                return Ok(Self {
                    tx: None,
                    metrics,
                    recent: Arc::default(),
                })
            }
            AccessLogTarget::Stdout => Box::new(tokio::io::stdout()),
            AccessLogTarget::File(p) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .await?,
            ),
        };
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            loop {
                let line = tokio::select! {
                    l = rx.recv() => match l { Some(l) => l, None => break },
                    _ = shutdown.cancelled() => {
                        while let Ok(l) = rx.try_recv() {
                            let _ = sink.write_all(l.as_bytes()).await;
                        }
                        break;
                    }
                };
                if let Err(e) = sink.write_all(line.as_bytes()).await {
                    warn!(error = %e, "access log write failed");
                }
                if rx.is_empty() {
                    let _ = sink.flush().await;
                }
            }
            let _ = sink.flush().await;
        });
        Ok(Self {
            tx: Some(tx),
            metrics,
            recent: Arc::default(),
        })
    }

    /// Queues an entry; drops (and counts) it if the writer is behind.
    pub fn write(&self, entry: &AccessEntry) {
        let mut line = serde_json::to_string(entry).unwrap_or_default();
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(Arc::from(line.as_str()));
        }
        let Some(tx) = &self.tx else { return };
        line.push('\n');
        if tx.try_send(line).is_err() {
            self.metrics.access_log_dropped.inc();
        }
    }
}

impl AccessLog {
    /// The newest entries (newest first), optionally only those containing `filter`.
    pub fn recent(&self, filter: Option<&str>, limit: usize) -> Vec<Arc<str>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .filter(|l| filter.is_none_or(|f| l.contains(f)))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// The current time as RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
