//! The weft agent and the `weft` command. `ARCHITECTURE.md` at the repository root maps
//! every folder; in short:
//!
//! * `main.rs` only wires: it parses the command line (`cli`), resolves `config`, sets up
//!   logging and runs the `agent` or a client command.
//! * `agent` wires the components below and runs their loops; nothing below imports it.
//! * The data plane: `proxy` (listeners, L4/L7, dialling, inbound streams), reading only
//!   `proxy::ProxyInputs`; `routing` (route rules, load balancing), `policy` (rules, path
//!   normalisation, the one enforcement point), `resilience` (retries, timeouts, breakers,
//!   outliers, faults, rate limits), `catalog` (services), `health` (probes), `names`
//!   (virtual IPs and the `.weft` DNS), `interception` (the nftables lock-down).
//! * The control side: `rpc` (QUIC servers and clients: join, control, the CA client),
//!   `ca_role` (the CA node's duties), `identity` (files, the live certificate and
//!   revocation list, renewal timing, keyring changes), `tls`, `store` (sled),
//!   `cluster_config` (replication only), `rollout` (progressive delivery: plans, the
//!   driver), `telemetry` (metrics, access log, graph, per-version totals),
//!   `clock` (time helpers).

/// What `weft --version` prints after the name: the crate version, the commit it was
/// built from and that commit's date (stamped by `build.rs`).
pub const BUILD_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WEFT_COMMIT"),
    ", ",
    env!("WEFT_COMMIT_DATE"),
    ")"
);

pub mod agent;
pub mod authority;
pub mod ca_role;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod cluster_config;
pub mod config;
pub mod demo;
pub mod health;
pub mod identity;
pub mod interception;
pub mod names;
pub mod policy;
pub mod proxy;
pub mod resilience;
pub mod rollout;
pub mod routing;
pub mod rpc;
pub mod store;
pub mod telemetry;
pub mod tls;
