//! The data plane. It reads only its inputs (`inputs::ProxyInputs`) and never the agent.
//! Local listeners (`listeners`) hand app connections to L7 HTTP (`http`, whose policies
//! are the layers of `pipeline`) or L4 splicing
//! (`tcp`); both reach an instance through `dial` over pooled QUIC connections (`pool`)
//! with a stream header (`header`, `io`); HTTP reuses those streams (`streams`); streams
//! from other nodes arrive in `inbound`.
//! `framing` refuses ambiguous HTTP/1 framing before hyper sees it. All of it runs on its
//! own thread (`runtime`).

pub mod dial;
pub mod framing;
pub mod grpc;
pub mod header;
pub mod http;
pub mod inbound;
pub mod inputs;
pub mod io;
pub mod listeners;
pub mod local_source;
pub mod pipeline;
pub mod pool;
pub mod runtime;
pub mod streams;
pub mod tcp;
pub mod upgrade;

pub use inputs::{ProxyInputs, ProxyParts};
pub use pool::ConnPool;
