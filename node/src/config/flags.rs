//! The `weft agent` flags, parsed by clap at the binary's edge and resolved with the
//! config file into `Settings`; they live here so that settings do not depend on the
//! command-line module.

use std::path::PathBuf;

use clap::Args;

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
    /// DNS for `<service>.weft` (UDP and TCP; default 127.0.0.1:8600), or "off".
    #[arg(long, value_name = "ADDR|off")]
    pub dns: Option<String>,
    /// Range of the services' virtual IPs (default 127.240.0.0/12), or "off".
    #[arg(long, value_name = "CIDR|off")]
    pub vip_range: Option<String>,
    /// Drop connections to registered services' ports that do not come through the agent
    /// (an nftables table `inet weft`; needs nft and CAP_NET_ADMIN).
    #[arg(long)]
    pub intercept: bool,
    /// A seed node's QUIC address, HOST[:PORT] (port default 7443); repeatable.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub join: Vec<String>,
    /// One-time join token (needed on first start only). Prefer --token-file: a token
    /// on the command line is visible to every user in `ps`.
    #[arg(long, env = "WEFT_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the join token (under systemd the unit's `LoadCredential=join-token`
    /// is read when neither is given).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Create a new cluster and its CA on this node.
    #[arg(long)]
    pub bootstrap: bool,
    /// Single node, temporary data dir, bootstrap, verbose logs.
    #[arg(long)]
    pub dev: bool,
    /// Allow the API and the HTTP proxy on a non-loopback address (the API then answers
    /// reads to anyone who can reach it; writes still need a credential).
    #[arg(long)]
    pub dangerous_public_api: bool,
    /// Zone label for same-zone routing.
    #[arg(long)]
    pub zone: Option<String>,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Lifetime of node certificates this node's CA issues (default 24h).
    #[arg(long, value_name = "DURATION")]
    pub leaf_ttl: Option<String>,
    /// Interval between gossip rounds (default 200ms).
    #[arg(long, value_name = "DURATION")]
    pub gossip_interval: Option<String>,
    /// How long an app's HTTP request may wait for the response head when no resilience
    /// entry sets a timeout (default 30s; 0s: none).
    #[arg(long, value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// Export a span per hop by OTLP/HTTP to this collector (e.g. http://127.0.0.1:4318;
    /// default: no export).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Access log: FILE, stdout or off (default stdout).
    #[arg(long, value_name = "FILE|stdout|off")]
    pub access_log: Option<String>,
}
