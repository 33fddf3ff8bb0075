//! The agent's effective settings: flags over the config file over defaults, validated.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_ca::{ClusterName, NodeName};

use super::file::{ConfigError, FileConfig, ServiceConfig};
use super::flags::AgentArgs;

/// Default gossip port.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Default QUIC port.
pub const DEFAULT_QUIC_PORT: u16 = 7443;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Validated settings for one agent run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node name.
    pub name: NodeName,
    /// Cluster name asked for on the command line or in the file.
    pub cluster: Option<ClusterName>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address for gossip and QUIC.
    pub bind: IpAddr,
    /// Address other nodes use.
    pub advertise: IpAddr,
    /// Gossip UDP port.
    pub gossip_port: u16,
    /// QUIC UDP port.
    pub quic_port: u16,
    /// HTTP API address.
    pub api: SocketAddr,
    /// HTTP proxy address.
    pub proxy: SocketAddr,
    /// The `.weft` DNS address (None: off).
    pub dns: Option<SocketAddr>,
    /// The virtual IP range (None: no virtual IPs).
    pub vip_range: Option<crate::names::VipRange>,
    /// Lock registered services down to the mesh (`interception`).
    pub intercept: bool,
    /// Seeds, `HOST[:PORT]`.
    pub join: Vec<String>,
    /// Join token.
    pub token: Option<String>,
    /// Create a new cluster.
    pub bootstrap: bool,
    /// Development mode.
    pub dev: bool,
    /// Zone label.
    pub zone: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Lifetime of issued leaf certificates.
    pub leaf_ttl: Duration,
    /// Gossip round interval.
    pub gossip_interval: Duration,
    /// How long an HTTP request may wait for its response head when no resilience entry
    /// says (None: no limit). WebSocket and gRPC streams are not limited once answered.
    pub request_timeout: Option<Duration>,
    /// Services from the file.
    pub services: Vec<ServiceConfig>,
    /// The config file, for SIGHUP reloads.
    pub config_path: Option<PathBuf>,
    /// `--dev` without `--data-dir`: the data dir is temporary and removed at exit.
    pub ephemeral: bool,
    /// Where the access log goes.
    pub access_log: super::access_log::AccessLogTarget,
    /// The OTLP/HTTP collector spans go to (None: no spans).
    pub otlp_endpoint: Option<String>,
}

impl Settings {
    /// Resolves flags and the config file into settings.
    pub fn resolve(args: &AgentArgs) -> Result<Self, ConfigError> {
        let (file, origin) = match &args.config {
            Some(path) => (FileConfig::load(path)?, path.display().to_string()),
            None => (FileConfig::default(), "command line".to_owned()),
        };
        Self::from_parts(args, file, &origin)
    }

    /// Resolves already-parsed parts; `origin` names the file in errors.
    pub fn from_parts(
        args: &AgentArgs,
        file: FileConfig,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        let dev = args.dev || file.dev.unwrap_or(false);

        let name = match args.name.clone().or(file.name) {
            Some(n) => n,
            None if dev => "dev".to_owned(),
            None => hostname().ok_or_else(|| {
                invalid(
                    "name",
                    "no --name given and the hostname is unusable".into(),
                )
            })?,
        };
        let name = NodeName::new(name).map_err(|e| invalid("name", e.to_string()))?;
        let cluster = args
            .cluster
            .clone()
            .or(file.cluster)
            .map(|c| ClusterName::new(c).map_err(|e| invalid("cluster", e.to_string())))
            .transpose()?;

        let explicit_dir = args.data_dir.clone().or(file.data_dir.map(PathBuf::from));
        let ephemeral = dev && explicit_dir.is_none();
        let data_dir = match explicit_dir {
            Some(d) => d,
            None if dev => std::env::temp_dir().join(format!("weft-dev-{}", std::process::id())),
            None => PathBuf::from("/var/lib/weft"),
        };

        let default_bind = if dev {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let bind = parse_opt(args.bind.as_deref().or(file.bind.as_deref()), default_bind)
            .map_err(|m| invalid("bind", m.to_string()))?;
        let advertise = match args.advertise.as_deref().or(file.advertise.as_deref()) {
            Some(a) => a
                .parse()
                .map_err(|e| invalid("advertise", format!("{a:?}: {e}")))?,
            None if !bind.is_unspecified() => bind,
            None => first_non_loopback().ok_or_else(|| {
                invalid(
                    "advertise",
                    "no non-loopback address found; set --advertise".into(),
                )
            })?,
        };
        if advertise.is_unspecified() {
            return Err(invalid("advertise", "must be a specific address".into()));
        }

        let gossip_port = args
            .gossip_port
            .or(file.gossip_port)
            .unwrap_or(DEFAULT_GOSSIP_PORT);
        let quic_port = args
            .quic_port
            .or(file.quic_port)
            .unwrap_or(DEFAULT_QUIC_PORT);
        if gossip_port == 0 || quic_port == 0 {
            return Err(invalid("gossip_port", "ports must be non-zero".into()));
        }
        let api = parse_opt(
            args.api.as_deref().or(file.api.as_deref()),
            SocketAddr::from(([127, 0, 0, 1], 7070)),
        )
        .map_err(|m| invalid("api", m.to_string()))?;
        let proxy = parse_opt(
            args.proxy.as_deref().or(file.proxy.as_deref()),
            SocketAddr::from(([127, 0, 0, 1], 15001)),
        )
        .map_err(|m| invalid("proxy", m.to_string()))?;
        let dns = match args.dns.as_deref().or(file.dns.as_deref()) {
            Some("off") => None,
            v => Some(
                parse_opt(v, SocketAddr::from(([127, 0, 0, 1], 8600))).map_err(|m| {
                    invalid(
                        "dns",
                        format!("{m} (an address like 127.0.0.1:8600, or \"off\")"),
                    )
                })?,
            ),
        };
        let vip_range = match args.vip_range.as_deref().or(file.vip_range.as_deref()) {
            Some("off") => None,
            v => Some(
                v.unwrap_or("127.240.0.0/12")
                    .parse::<crate::names::VipRange>()
                    .map_err(|e| invalid("vip_range", format!("{e} (or \"off\")")))?,
            ),
        };
        let public_ok = args.dangerous_public_api || file.dangerous_public_api.unwrap_or(false);
        if let Some(addr) = dns {
            if !addr.ip().is_loopback() && !public_ok {
                return Err(invalid(
                    "dns",
                    format!("{addr} is not a loopback address: anyone who can reach it could list the cluster's services; bind it to 127.0.0.1, or set dangerous_public_api = true if a firewall guards it"),
                ));
            }
        }
        for (key, addr) in [("api", api), ("proxy", proxy)] {
            if !addr.ip().is_loopback() && !public_ok {
                return Err(invalid(
                    key,
                    format!(
                        "{addr} is not a loopback address: anyone who can reach it could read the cluster's state{}; bind it to 127.0.0.1, or set dangerous_public_api = true (--dangerous-public-api) if a firewall guards it",
                        if key == "proxy" { " and send traffic as this node" } else { "" }
                    ),
                ));
            }
        }

        let join = if args.join.is_empty() {
            file.join
        } else {
            args.join.clone()
        };
        for seed in &join {
            super::seed::parse_seed(seed).map_err(|e| invalid("join", e.to_string()))?;
        }
        let token_file = args
            .token_file
            .clone()
            .or(file.token_file.map(PathBuf::from));
        let token = match (args.token.clone().or(file.token), token_file) {
            (Some(t), _) => Some(t),
            // A token file removed after the join (as the README says to) is no error:
            // the identity in the data dir is used, and without one setup says so.
            (None, Some(path)) if !path.exists() => None,
            (None, Some(path)) => Some(
                read_token_file(&path)
                    .map_err(|m| invalid("token_file", format!("{}: {m}", path.display())))?,
            ),
            // A systemd credential: the shipped unit's LoadCredential=weft:/etc/weft/credentials
            // makes /etc/weft/credentials/join-token `weft_join-token`; a unit of one's own
            // may say LoadCredential=join-token:FILE.
            (None, None) => std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(PathBuf::from)
                .and_then(|dir| {
                    ["weft_join-token", "join-token"]
                        .iter()
                        .map(|n| dir.join(n))
                        .find(|p| p.is_file())
                })
                .map(|p| {
                    read_token_file(&p).map_err(|m| {
                        invalid("token_file", format!("credential {}: {m}", p.display()))
                    })
                })
                .transpose()?,
        };
        let bootstrap = dev || args.bootstrap || file.bootstrap.unwrap_or(false);
        if bootstrap && !join.is_empty() {
            return Err(invalid(
                "join",
                "--bootstrap and --join exclude each other".into(),
            ));
        }

        let zone = args.zone.clone().or(file.zone).unwrap_or_default();
        if zone.len() > 64
            || !zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "zone",
                format!("{zone:?}: up to 64 of [A-Za-z0-9._-]"),
            ));
        }
        let log_format = match args.log_format.as_deref().or(file.log_format.as_deref()) {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("{other:?}: expected human or json"),
                ))
            }
        };
        let request_timeout = parse_duration(
            args.request_timeout
                .as_deref()
                .or(file.request_timeout.as_deref()),
            "30s",
        )
        .map_err(|m| invalid("request_timeout", m.to_string()))?;
        let request_timeout = (!request_timeout.is_zero()).then_some(request_timeout);
        let leaf_ttl = parse_duration(args.leaf_ttl.as_deref().or(file.leaf_ttl.as_deref()), "24h")
            .map_err(|m| invalid("leaf_ttl", m.to_string()))?;
        if leaf_ttl < Duration::from_secs(5) || leaf_ttl > Duration::from_secs(366 * 86400) {
            return Err(invalid(
                "leaf_ttl",
                "must be between 5s and 366 days".into(),
            ));
        }
        let gossip_interval = parse_duration(
            args.gossip_interval
                .as_deref()
                .or(file.gossip_interval.as_deref()),
            "200ms",
        )
        .map_err(|m| invalid("gossip_interval", m.to_string()))?;
        if gossip_interval < Duration::from_millis(50) || gossip_interval > Duration::from_secs(10)
        {
            return Err(invalid(
                "gossip_interval",
                "must be between 50ms and 10s".into(),
            ));
        }

        let access_log = args
            .access_log
            .as_deref()
            .or(file.access_log.as_deref())
            .unwrap_or("stdout")
            .parse()
            .map_err(|m: super::access_log::EmptyTarget| invalid("access_log", m.to_string()))?;
        let otlp_endpoint = args.otlp_endpoint.clone().or(file.otlp_endpoint);
        if let Some(e) = &otlp_endpoint {
            crate::telemetry::spans::check_endpoint(e)
                .map_err(|err| invalid("otlp_endpoint", err.to_string()))?;
        }
        Ok(Self {
            otlp_endpoint,
            access_log,
            name,
            cluster,
            data_dir,
            bind,
            advertise,
            gossip_port,
            quic_port,
            api,
            proxy,
            dns,
            vip_range,
            intercept: args.intercept || file.intercept.unwrap_or(false),
            join,
            token,
            bootstrap,
            dev,
            zone,
            log_format,
            leaf_ttl,
            gossip_interval,
            request_timeout,
            services: file.service,
            config_path: args.config.clone(),
            ephemeral,
        })
    }

    /// Where gossip listens.
    pub fn gossip_listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.gossip_port)
    }

    /// Where other nodes send gossip.
    pub fn gossip_advertise(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.gossip_port)
    }

    /// Where QUIC listens.
    pub fn quic_listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.quic_port)
    }

    /// Where other nodes reach this node's QUIC endpoint.
    pub fn quic_advertise(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.quic_port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// A flag or file value that did not parse: the text and the parser's reason.
#[derive(Debug, thiserror::Error)]
#[error("{text:?}: {reason}")]
struct BadText {
    text: String,
    reason: String,
}

fn parse_opt<T: std::str::FromStr>(value: Option<&str>, default: T) -> Result<T, BadText>
where
    T::Err: std::fmt::Display,
{
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e: T::Err| BadText {
            text: v.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Parses a duration such as `250ms`, `10s`, `24h`.
fn parse_duration(value: Option<&str>, default: &str) -> Result<Duration, BadText> {
    let v = value.unwrap_or(default);
    humantime::parse_duration(v).map_err(|e| BadText {
        text: v.to_owned(),
        reason: e.to_string(),
    })
}

/// Largest token file read (a token is ~100 bytes).
const MAX_TOKEN_FILE: u64 = 4096;

/// The token in a file: one line, surrounding whitespace ignored.
fn read_token_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    f.take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!(
            "longer than {MAX_TOKEN_FILE} bytes; it should hold one token (weft token create)"
        ));
    }
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err("should hold exactly one token, as `weft token create` prints it".into());
    }
    Ok(token.to_owned())
}

fn hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim().to_ascii_lowercase();
    NodeName::new(name.clone()).ok().map(|_| name)
}

fn first_non_loopback() -> Option<IpAddr> {
    let addrs = if_addrs::get_if_addrs().ok()?;
    addrs
        .iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .or_else(|| addrs.iter().map(|i| i.ip()).find(|ip| !ip.is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AgentArgs {
        AgentArgs {
            name: Some("vm-1".into()),
            bind: Some("127.0.0.9".into()),
            ..Default::default()
        }
    }

    #[test]
    fn flag_wins_over_file() {
        let file = FileConfig::parse("name = \"from-file\"\nzone = \"z1\"\n", "f").expect("ok");
        let s = Settings::from_parts(&args(), file, "f").expect("ok");
        assert_eq!(s.name.as_str(), "vm-1");
        assert_eq!(s.zone, "z1");
        assert_eq!(s.advertise, "127.0.0.9".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("leaf_ttl = \"forever\"\n", "leaf_ttl"),
            ("api = \"nope\"\n", "api"),
            ("log_format = \"xml\"\n", "log_format"),
            ("join = [\"a:b:c\"]\n", "join"),
            ("api = \"10.0.0.1:7070\"\n", "api"),
            ("proxy = \"0.0.0.0:15001\"\n", "proxy"),
        ] {
            let file = FileConfig::parse(text, "w.toml").expect("parses");
            let err = Settings::from_parts(&args(), file, "w.toml").expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains(key) && msg.contains("w.toml"), "{msg}");
        }
    }

    #[test]
    fn public_api_needs_the_dangerous_switch() {
        let text = "api = \"10.0.0.1:7070\"\ndangerous_public_api = true\n";
        let file = FileConfig::parse(text, "w.toml").expect("parses");
        let s = Settings::from_parts(&args(), file, "w.toml").expect("allowed when asked for");
        assert_eq!(s.api, "10.0.0.1:7070".parse::<SocketAddr>().expect("addr"));
        let file = FileConfig::parse("api = \"10.0.0.1:7070\"\n", "w.toml").expect("parses");
        let err = Settings::from_parts(&args(), file, "w.toml").expect_err("refused");
        assert!(err.to_string().contains("dangerous_public_api"), "{err}");
    }

    #[test]
    fn dev_needs_nothing() {
        let a = AgentArgs {
            dev: true,
            ..Default::default()
        };
        let s = Settings::from_parts(&a, FileConfig::default(), "command line").expect("ok");
        assert!(s.bootstrap);
        assert_eq!(s.name.as_str(), "dev");
    }
}
