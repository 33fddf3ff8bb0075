//! The weft agent and the `weft` command.
//!
//! `main.rs` only wires: it parses the command line (`cli`), resolves `config`, sets up
//! logging and runs the `agent` or a client command. The agent's parts: `identity` (files
//! on disk), `store` (sled), `authority` (the CA role), `tls` (rustls/quinn configs and
//! verifiers), `rpc` (join and control messages over QUIC), `net` (addresses, limits).

pub mod agent;
pub mod authority;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod cluster_config;
pub mod config;
pub mod demo;
pub mod health;
pub mod identity;
pub mod net;
pub mod proxy;
pub mod routing;
pub mod rpc;
pub mod store;
pub mod telemetry;
pub mod tls;
