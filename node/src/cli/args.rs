//! Command-line arguments of the `weft` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// weft: a service mesh for plain VMs and bare-metal hosts.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The `weft` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (usually under systemd).
    Agent(Box<AgentArgs>),
    /// List the cluster's nodes as this agent sees them.
    Members(ClientArgs),
    /// Manage one-time join tokens.
    Token {
        /// Token action.
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage nodes.
    Node {
        /// Node action.
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Rotate the gossip encryption key cluster-wide: install, use, remove.
    GossipKey {
        /// Keyring action.
        #[command(subcommand)]
        action: GossipKeyAction,
    },
    /// Ask the local agent to leave the cluster gracefully and stop.
    Leave(ClientArgs),
    /// List services and their instances, cluster-wide.
    Services(ClientArgs),
    /// Start a local 3-node mesh with sample services and traffic (Ctrl-C to stop).
    Demo,
    /// Cluster config entries of any kind.
    Config {
        /// Config action.
        #[command(subcommand)]
        action: super::config_cmd::ConfigAction,
    },
    /// HTTP routes (canaries, A/B).
    Route {
        /// Route action.
        #[command(subcommand)]
        action: super::config_cmd::RouteAction,
    },
    /// Authorization policies.
    Policy {
        /// Policy action.
        #[command(subcommand)]
        action: super::config_cmd::PolicyAction,
    },
    /// Register or deregister a service on the local agent.
    Service {
        /// Service action.
        #[command(subcommand)]
        action: ServiceAction,
    },
}

/// `weft service …`
#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Register (or replace) a service on this node (admin).
    Register(Box<RegisterArgs>),
    /// Remove a service registered with `weft service register` (admin).
    Deregister {
        /// Service name.
        name: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `weft service register` options.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Service name.
    #[arg(long)]
    pub name: String,
    /// Local port the service listens on (127.0.0.1).
    #[arg(long)]
    pub port: u16,
    /// http or tcp.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Version label.
    #[arg(long)]
    pub version: Option<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// HTTP health check URL on this host.
    #[arg(long, conflicts_with = "check_tcp")]
    pub check_http: Option<String>,
    /// TCP health check address on this host.
    #[arg(long)]
    pub check_tcp: Option<String>,
    /// Check interval (e.g. 5s).
    #[arg(long)]
    pub check_interval: Option<String>,
    /// Check timeout (e.g. 1s).
    #[arg(long)]
    pub check_timeout: Option<String>,
    /// Upstream listener SERVICE=ADDR (repeatable), e.g. reviews=127.0.0.1:19001.
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// Common client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `weft token …`
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a one-time join token (admin).
    Create {
        /// How long the token stays valid (e.g. 10m, 1h).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `weft gossip-key …`: each change applies on this node and every alive member.
#[derive(Debug, Subcommand)]
pub enum GossipKeyAction {
    /// Show this node's key ids and the one in use.
    List(ClientArgs),
    /// Accept a new key everywhere (a fresh random key unless --key is given) (admin).
    Install {
        /// The key, standard base64 of 32 bytes.
        #[arg(long)]
        key: Option<String>,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Seal with an installed key everywhere (admin).
    Use {
        /// Key id (8 hex digits, from `install` or `list`).
        id: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop accepting a key everywhere; not the one in use (admin).
    Remove {
        /// Key id.
        id: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `weft node …`
#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Revoke a node's certificate everywhere (admin).
    Revoke {
        /// The node to revoke.
        name: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Options shared by every command that talks to the local agent.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The agent's API address.
    #[arg(long, env = "WEFT_API", default_value = "127.0.0.1:7070")]
    pub api: String,
    /// Data directory holding `admin-token` (when WEFT_TOKEN is not set).
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "/var/lib/weft")]
    pub data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `weft agent` flags. Each has a config-file key of the same name (dashes become
/// underscores); a flag wins over the file.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentArgs {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node name, unique in the cluster (default: hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Cluster name and trust domain (default: "weft"; fixed by --bootstrap).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Directory for the store, keys and certificates (default: /var/lib/weft).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on for gossip and QUIC (default: 0.0.0.0).
    #[arg(long, value_name = "IP")]
    pub bind: Option<String>,
    /// Address other nodes use (default: --bind if specific, else the first non-loopback address).
    #[arg(long, value_name = "IP")]
    pub advertise: Option<String>,
    /// UDP port for gossip (default: 7946).
    #[arg(long, value_name = "N")]
    pub gossip_port: Option<u16>,
    /// UDP port for QUIC (default: 7443).
    #[arg(long, value_name = "N")]
    pub quic_port: Option<u16>,
    /// HTTP API and dashboard address (default: 127.0.0.1:7070).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// HTTP proxy address for local apps (default: 127.0.0.1:15001).
    #[arg(long, value_name = "ADDR")]
    pub proxy: Option<String>,
    /// A seed node's QUIC address, HOST[:PORT] (port default 7443); repeatable.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub join: Vec<String>,
    /// One-time join token (needed on first start only).
    #[arg(long, env = "WEFT_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Create a new cluster and its CA on this node.
    #[arg(long)]
    pub bootstrap: bool,
    /// Single node, temporary data dir, bootstrap, verbose logs.
    #[arg(long)]
    pub dev: bool,
    /// Zone label for same-zone routing.
    #[arg(long)]
    pub zone: Option<String>,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Lifetime of node certificates this node's CA issues (default 24h).
    #[arg(long, value_name = "DURATION")]
    pub leaf_ttl: Option<String>,
    /// Interval between gossip rounds (default 250ms).
    #[arg(long, value_name = "DURATION")]
    pub gossip_interval: Option<String>,
    /// Access log: FILE, stdout or off (default stdout).
    #[arg(long, value_name = "FILE|stdout|off")]
    pub access_log: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
