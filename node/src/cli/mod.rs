//! The `weft` command line: argument definitions and client commands.

pub mod args;
pub mod ca_cmd;
pub mod client;
pub mod config_cmd;
pub mod dns_cmd;
pub mod rollout_cmd;
pub mod status_cmd;
pub mod validate_cmd;

pub use args::{
    AgentArgs, Cli, ClientArgs, Command, GossipKeyAction, NodeAction, RegisterArgs, ServiceAction,
    TokenAction,
};
