//! The node-to-node protocols carried over QUIC, beside their messages: the server that
//! dispatches by ALPN (`server`), joining (`join_client` on the joining node,
//! `join_server` on members), control requests (`control`) and their callers (`client`:
//! any member, or the CA node). One request and one response per stream (`stream`).

pub mod client;
pub mod control;
pub mod join_client;
pub mod join_server;
pub mod messages;
pub mod server;
pub mod stream;

pub use client::{clock_offset, CaCallError, CaClient, CtlClient};
pub use messages::*;
pub use server::ServerInputs;
pub use stream::{call, read_request, respond, RpcError};
