//! The `weft` command line: argument definitions and client commands.

pub mod args;
pub mod client;

pub use args::{
    AgentArgs, Cli, ClientArgs, Command, NodeAction, RegisterArgs, ServiceAction, TokenAction,
};
