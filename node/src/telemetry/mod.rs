//! What the node tells operators: `/metrics` (`metrics`, one prometheus-client registry),
//! the access log (`access_log`), per-edge statistics for the dashboard (`edges`) and the
//! service graph built from every member's gossiped edges (`graph`), and per-version
//! totals that rollouts are judged on (`versions`).

pub mod access_log;
pub mod edges;
pub mod graph;
pub mod metrics;
pub mod spans;
pub mod versions;

pub use access_log::{AccessEntry, AccessLog, AccessLogTarget};
pub use metrics::Metrics;
