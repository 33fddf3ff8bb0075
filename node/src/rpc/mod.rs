//! The node-to-node request protocols carried over QUIC: joining and control requests.

pub mod messages;
pub mod stream;

pub use messages::*;
pub use stream::{call, read_request, respond, RpcError};
