//! The TOML config file, parsed once into typed structs. Unknown keys are an error that
//! names the key and the file.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Everything `weft.toml` may hold. Every agent flag has a key of the same name
/// (dashes become underscores).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Node name.
    pub name: Option<String>,
    /// Cluster (trust domain) name.
    pub cluster: Option<String>,
    /// Directory for the store, keys and certificates.
    pub data_dir: Option<String>,
    /// Address to listen on for gossip and QUIC.
    pub bind: Option<String>,
    /// Address other nodes use to reach this one.
    pub advertise: Option<String>,
    /// UDP port for gossip.
    pub gossip_port: Option<u16>,
    /// UDP port for QUIC.
    pub quic_port: Option<u16>,
    /// Address of the HTTP API and dashboard.
    pub api: Option<String>,
    /// Address of the HTTP forward proxy.
    pub proxy: Option<String>,
    /// Address of the `.weft` DNS server (UDP and TCP), or "off".
    pub dns: Option<String>,
    /// The range virtual IPs are taken from (inside 127.0.0.0/8), or "off".
    pub vip_range: Option<String>,
    /// Lock registered services' ports down to the mesh (an nftables table of weft's).
    pub intercept: Option<bool>,
    /// Seed nodes, `HOST[:PORT]` of their QUIC port.
    #[serde(default)]
    pub join: Vec<String>,
    /// One-time join token.
    pub token: Option<String>,
    /// A file holding the join token (kept out of `ps` and the environment).
    pub token_file: Option<String>,
    /// Create a new cluster on this node.
    pub bootstrap: Option<bool>,
    /// Single-node development mode.
    pub dev: Option<bool>,
    /// Allow `api` and `proxy` on non-loopback addresses.
    pub dangerous_public_api: Option<bool>,
    /// Failure-domain label used for same-zone routing.
    pub zone: Option<String>,
    /// `human` or `json`.
    pub log_format: Option<String>,
    /// Lifetime of node certificates issued by this node's CA (e.g. "24h").
    pub leaf_ttl: Option<String>,
    /// Interval between gossip rounds (default "200ms").
    pub gossip_interval: Option<String>,
    /// Default time an HTTP request may wait for its response head ("0s": none).
    pub request_timeout: Option<String>,
    /// OTLP/HTTP collector spans are exported to (e.g. "http://127.0.0.1:4318").
    pub otlp_endpoint: Option<String>,
    /// Access log: a file path, "stdout" or "off".
    pub access_log: Option<String>,
    /// Services this host runs.
    #[serde(default)]
    pub service: Vec<ServiceConfig>,
}

/// A `[[service]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name.
    pub name: String,
    /// Local port the service listens on.
    pub port: u16,
    /// `http` or `tcp`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Version label used by routes.
    pub version: Option<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Health check.
    pub check: Option<CheckConfig>,
    /// Services this one calls through a local listener.
    #[serde(default)]
    pub upstream: Vec<UpstreamConfig>,
    /// The user this service's processes run as (name or uid): a local connection from
    /// that user is this service, whichever local listener it reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The systemd unit its processes run in (`reviews.service`): a local connection from
    /// a process in that unit's cgroup is this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The address the instance listens on, when not 127.0.0.1: this host's own address
    /// (an app bound to the VM's address), loopback or another address of this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn default_protocol() -> String {
    "tcp".to_owned()
}

/// A service's health check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// URL for an HTTP GET check.
    pub http: Option<String>,
    /// For an `https://` check: trust the certificates in this PEM file (the CA that
    /// signed the service's certificate).
    pub ca_file: Option<String>,
    /// For an `https://` check: accept any certificate (Consul's name for the same).
    pub tls_skip_verify: Option<bool>,
    /// Address for a TCP connect check.
    pub tcp: Option<String>,
    /// Address for a gRPC health check (`grpc.health.v1.Health/Check`, h2c).
    pub grpc: Option<String>,
    /// The service name the gRPC health check asks about (default: the server as a whole).
    pub grpc_service: Option<String>,
    /// Time between checks.
    pub interval: Option<String>,
    /// Time a check may take.
    pub timeout: Option<String>,
    /// Consecutive failures before the instance is unhealthy (default 2).
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive passes before it is healthy again (default 2).
    pub healthy_threshold: Option<u32>,
}

/// A `[[service.upstream]]` entry: a local listener that reaches another service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Destination service.
    pub service: String,
    /// Local listen address.
    pub listen: String,
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file failed.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{origin}: invalid value for `{key}`: {message}")]
    Invalid {
        /// The file, or "command line".
        origin: String,
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// Largest config file accepted.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let read_err = |source| ConfigError::Read {
            path: shown.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::Parse {
                path: shown,
                message: format!("file is {len} bytes, the limit is {MAX_CONFIG_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text, &shown)
    }

    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example_parses() {
        let text = r#"
name = "vm-2"
data_dir = "/var/lib/weft"
join = ["10.0.0.1"]
zone = "eu-1a"

[[service]]
name = "frontend"
port = 8080
protocol = "http"
version = "v1"
tags = ["web"]
check = { http = "http://127.0.0.1:8080/health", interval = "5s", timeout = "1s" }

[[service.upstream]]
service = "reviews"
listen = "127.0.0.1:19001"
"#;
        let c = FileConfig::parse(text, "weft.toml").expect("parses");
        assert_eq!(c.name.as_deref(), Some("vm-2"));
        assert_eq!(c.service[0].upstream[0].service, "reviews");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = FileConfig::parse("nmae = \"x\"\n", "/etc/weft/weft.toml").expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("nmae") && msg.contains("/etc/weft/weft.toml"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let err = FileConfig::parse("gossip_port = \"x\"\n", "f.toml").expect_err("refused");
        assert!(err.to_string().contains("gossip_port"), "{err}");
    }
}
