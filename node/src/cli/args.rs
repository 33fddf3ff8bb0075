//! Command-line arguments of the `weft` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::config::AgentArgs;

/// weft: a service mesh for plain VMs and bare-metal hosts.
#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version = crate::BUILD_VERSION,
    about = "A service mesh for plain VMs and bare-metal hosts"
)]
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
    /// List the cluster's nodes as this agent sees them (--prune: forget every failed or
    /// departed one, as `force-leave` does).
    Members(MembersArgs),
    /// Forget a failed or departed member cluster-wide (admin): every node stops listing
    /// it; it reappears if its agent starts again.
    ForceLeave {
        /// The node.
        node: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// This agent at a glance: ready or why not, certificate and CA expiry, members,
    /// config agreement, listeners (exit status 1 when not ready).
    Status(ClientArgs),
    /// Check this host and agent for common problems and print the fix for each: clock
    /// skew against peers, listeners, the data directory, DNS, nftables.
    Doctor(ClientArgs),
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
    Demo {
        /// Then walk through a split, a deny and a progressive rollout, printing each
        /// command and what it did.
        #[arg(long)]
        tour: bool,
    },
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
    /// Resolve `*.weft` on this host through the agent (systemd-resolved drop-in).
    Dns {
        /// DNS action.
        #[command(subcommand)]
        action: super::dns_cmd::DnsAction,
    },
    /// Progressive rollouts: move traffic to a new version step by step, promoted or
    /// rolled back on the figures.
    Rollout {
        /// Rollout action.
        #[command(subcommand)]
        action: super::rollout_cmd::RolloutAction,
    },
    /// Authorization policies.
    Policy {
        /// Policy action.
        #[command(subcommand)]
        action: super::config_cmd::PolicyAction,
    },
    /// What operators changed, as this node saw it: acts it executed, config it applied.
    Audit {
        /// Most records shown (newest first).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The cluster CA: backup and restore of the root key and the CA's records.
    Ca {
        /// CA action.
        #[command(subcommand)]
        action: CaAction,
    },
    /// Operator credentials: who may change the cluster (admin).
    Operator {
        /// Operator action.
        #[command(subcommand)]
        action: OperatorAction,
    },
    /// Check an agent config file (or cluster config entries) without changing anything.
    Validate(super::validate_cmd::ValidateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell: `weft completions bash > /usr/share/bash-completion/completions/weft`.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `weft man | man -l -`.
    Man,
    /// Register or deregister a service on the local agent.
    Service {
        /// Service action.
        #[command(subcommand)]
        action: ServiceAction,
    },
}

/// `weft members`
#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Forget every failed or departed member cluster-wide (admin).
    #[arg(long)]
    pub prune: bool,
    /// Common client options.
    #[command(flatten)]
    pub client: ClientArgs,
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
    /// tcp, http (HTTP/1.1 to the instance), http2 (h2c to the instance) or grpc.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Version label.
    #[arg(long)]
    pub version: Option<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// HTTP or HTTPS health check URL on this host (HTTP/2 for http2 and grpc services).
    #[arg(long, conflicts_with_all = ["check_tcp", "check_grpc"])]
    pub check_http: Option<String>,
    /// For an https:// check: the PEM file of the CA that signed the service's certificate.
    #[arg(
        long,
        requires = "check_http",
        conflicts_with = "check_tls_skip_verify"
    )]
    pub check_ca_file: Option<String>,
    /// For an https:// check: accept any certificate.
    #[arg(long, requires = "check_http")]
    pub check_tls_skip_verify: bool,
    /// TCP health check address on this host.
    #[arg(long, conflicts_with = "check_grpc")]
    pub check_tcp: Option<String>,
    /// gRPC health check (grpc.health.v1) address on this host.
    #[arg(long)]
    pub check_grpc: Option<String>,
    /// The service the gRPC health check asks about (default: the whole server).
    #[arg(long, requires = "check_grpc")]
    pub check_grpc_service: Option<String>,
    /// Check interval (e.g. 5s).
    #[arg(long)]
    pub check_interval: Option<String>,
    /// Check timeout (e.g. 1s).
    #[arg(long)]
    pub check_timeout: Option<String>,
    /// Upstream listener SERVICE=ADDR (repeatable), e.g. reviews=127.0.0.1:19001.
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// The user this service's processes run as (name or uid): local connections from
    /// that user act as this service, from any other user as someone else.
    #[arg(long)]
    pub user: Option<String>,
    /// The address the instance listens on, when not 127.0.0.1 (e.g. the VM's own).
    #[arg(long, value_name = "IP")]
    pub address: Option<String>,
    /// The systemd unit this service's processes run in (reviews.service): local
    /// connections from that unit's processes act as this service.
    #[arg(long)]
    pub unit: Option<String>,
    /// Common client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `weft ca …`
#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// The root (fingerprint, expiry), the replicas and their intermediates, the
    /// revocation set's size.
    Status(ClientArgs),
    /// Make NODE a CA replica: it makes a key, the root holder signs its intermediate;
    /// it then issues certificates, consumes its tokens and signs revocations (admin).
    AddReplica {
        /// The member to make a replica.
        node: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a new root: every node trusts both until every certificate chains to the
    /// new one, then the old one is retired and its key deleted (admin; on the root holder).
    Rotate(ClientArgs),
    /// Stop NODE being a CA replica (its key and intermediate are removed there; the
    /// certificates it issued stay valid until they expire) (admin).
    RemoveReplica {
        /// The replica to stop.
        node: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write the root key and the CA's records, encrypted with WEFT_CA_PASSPHRASE, to FILE
    /// (admin; run against the node that holds the root key).
    Backup {
        /// Where to write the backup (created 0600; an existing file is not replaced).
        #[arg(long)]
        out: PathBuf,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make this node the root holder from a backup (WEFT_CA_PASSPHRASE). Run it with the
    /// agent stopped, on a member of the same cluster whose root holder is gone for good;
    /// then start the agent.
    Restore {
        /// The backup file.
        #[arg(long = "in")]
        input: PathBuf,
        /// The node's data directory.
        #[arg(long, env = "WEFT_DATA_DIR", default_value = "/var/lib/weft")]
        data_dir: PathBuf,
    },
}

/// `weft operator …`
#[derive(Debug, Subcommand)]
pub enum OperatorAction {
    /// Issue a credential and print it once (admin). The key is made here and never
    /// leaves this host but in what is printed.
    Create {
        /// Operator name (a person or an automation).
        name: String,
        /// viewer (reads), operator (config entries) or admin (everything).
        #[arg(long, default_value = "operator")]
        role: String,
        /// Lifetime (e.g. 90d, 12h).
        #[arg(long, default_value = "90d")]
        ttl: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List operators (any role).
    List(ClientArgs),
    /// Revoke an operator's credentials everywhere (admin).
    Revoke {
        /// Operator name.
        name: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
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
    /// Revoke a node's certificate everywhere, then rotate the gossip key out of its
    /// reach (admin).
    Revoke {
        /// The node to revoke.
        name: String,
        /// Keep the gossip key (the revoked node can still read and send gossip).
        #[arg(long)]
        no_rotate: bool,
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
    /// Data directory holding `admin-credential` and `admin-token` (when neither
    /// WEFT_TOKEN nor --credential is given).
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "/var/lib/weft")]
    pub data_dir: PathBuf,
    /// File holding an operator credential (from `weft operator create`).
    #[arg(long, env = "WEFT_CREDENTIAL")]
    pub credential: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
