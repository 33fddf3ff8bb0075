//! The access log: one JSON line per request or TCP stream, written by one task through a
//! bounded queue (entries are dropped and counted when the writer falls behind, never
//! blocking the data path). The data path only moves the entry: the JSON is made by the
//! writer (on the control runtime) and, for the dashboard's recent entries, when asked.

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
    /// When the request or stream was logged (RFC 3339 in the JSON).
    #[serde(serialize_with = "rfc3339")]
    pub time: std::time::SystemTime,
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
    tx: Option<mpsc::Sender<Arc<AccessEntry>>>,
    metrics: Arc<Metrics>,
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<Arc<AccessEntry>>>>,
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
        let (tx, mut rx) = mpsc::channel::<Arc<AccessEntry>>(QUEUE);
        tokio::spawn(async move {
            let mut line = Vec::with_capacity(512);
            loop {
                let entry = tokio::select! {
                    e = rx.recv() => match e { Some(e) => e, None => break },
                    _ = shutdown.cancelled() => {
                        while let Ok(e) = rx.try_recv() {
                            let _ = sink.write_all(json_line(&e, &mut line)).await;
                        }
                        break;
                    }
                };
                if let Err(e) = sink.write_all(json_line(&entry, &mut line)).await {
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
    pub fn write(&self, entry: AccessEntry) {
        let entry = Arc::new(entry);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(entry.clone());
        }
        let Some(tx) = &self.tx else { return };
        if tx.try_send(entry).is_err() {
            self.metrics.access_log_dropped.inc();
        }
    }
}

impl AccessLog {
    /// The newest entries as JSON lines (newest first), optionally only those whose line
    /// contains `filter`.
    pub fn recent(&self, filter: Option<&str>, limit: usize) -> Vec<String> {
        let entries: Vec<Arc<AccessEntry>> = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect();
        entries
            .iter()
            .filter_map(|e| serde_json::to_string(&**e).ok())
            .filter(|l| filter.is_none_or(|f| l.contains(f)))
            .take(limit)
            .collect()
    }
}

fn rfc3339<S: serde::Serializer>(t: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// `entry` as one JSON line in `buf` (reused between entries).
fn json_line<'a>(entry: &AccessEntry, buf: &'a mut Vec<u8>) -> &'a [u8] {
    buf.clear();
    if serde_json::to_writer(&mut *buf, entry).is_ok() {
        buf.push(b'\n');
    } else {
        buf.clear();
    }
    buf
}
