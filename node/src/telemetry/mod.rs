//! Metrics and the access log.

pub mod access_log;
pub mod edges;
pub mod metrics;

pub use access_log::{AccessEntry, AccessLog, AccessLogTarget};
pub use metrics::Metrics;
