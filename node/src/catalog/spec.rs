//! A local service as validated from the config file or the API: typed fields only, each
//! refusal naming the field.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use weft_ca::ServiceName;
use weft_gossip::{Protocol, MAX_SERVICES_PER_NODE};

use crate::config::file::{CheckConfig, ServiceConfig};

/// TLS for an `https://` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTls {
    /// The name the certificate must carry (the URL's host).
    pub server_name: rustls_pki_types::ServerName<'static>,
    /// The CAs trusted (`check.ca_file`); None: any certificate (`check.tls_skip_verify`).
    pub roots: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    /// GET this URL; 2xx and 3xx pass.
    Http {
        /// host:port to connect to.
        addr: SocketAddr,
        /// Host header value.
        host: String,
        /// Path and query.
        path: String,
        /// HTTP/2 (the service speaks `http2` or `grpc`: h2c, or h2 over TLS), else
        /// HTTP/1.1.
        h2: bool,
        /// HTTPS: how the service's certificate is checked.
        tls: Option<CheckTls>,
    },
    /// Connect to this address.
    Tcp(SocketAddr),
    /// `grpc.health.v1.Health/Check` over h2c: SERVING passes.
    Grpc {
        /// host:port to connect to.
        addr: SocketAddr,
        /// The service asked about ("" for the server as a whole).
        service: String,
    },
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// What to probe.
    pub target: CheckTarget,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Failures in a row before unhealthy.
    pub unhealthy_threshold: u32,
    /// Passes in a row before healthy.
    pub healthy_threshold: u32,
}

/// A local listener that reaches another service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Destination service.
    pub service: ServiceName,
    /// Local listen address.
    pub listen: SocketAddr,
}

/// A validated local service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Name.
    pub name: ServiceName,
    /// Local port.
    pub port: u16,
    /// tcp or http.
    pub protocol: Protocol,
    /// Version label.
    pub version: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Health check.
    pub check: Option<CheckSpec>,
    /// Upstream listeners (this service is their source).
    pub upstreams: Vec<UpstreamSpec>,
    /// The uid its processes run as (`user`): local connections from it are this service.
    pub user: Option<u32>,
    /// The systemd unit its processes run in (`unit`): local connections from a process
    /// in that unit's cgroup are this service.
    pub unit: Option<String>,
    /// Where the instance listens on this host (`address`, default 127.0.0.1, and `port`).
    pub local_addr: SocketAddr,
}

/// A refused service definition: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service}: invalid `{field}`: {message}")]
pub struct SpecError {
    /// The service (as given).
    pub service: String,
    /// The field.
    pub field: &'static str,
    /// Why.
    pub message: String,
}

fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Whether `ip` is on one of this host's interfaces.
fn is_interface_ip(ip: IpAddr) -> bool {
    if_addrs::get_if_addrs().is_ok_and(|list| list.iter().any(|i| i.ip() == ip))
}

/// Whether a probe target is this host (checks never leave the host: no SSRF).
pub fn is_local_ip(ip: IpAddr, own: &[IpAddr]) -> bool {
    ip.is_loopback() || own.contains(&ip)
}

impl ServiceSpec {
    /// Validates a definition; `own` are this node's addresses (bind, advertise) that
    /// checks may also target.
    pub fn from_config(c: &ServiceConfig, own: &[IpAddr]) -> Result<Self, SpecError> {
        let err = |field: &'static str, message: String| SpecError {
            service: c.name.chars().take(64).collect(),
            field,
            message,
        };
        let name = ServiceName::new(c.name.clone()).map_err(|e| err("name", e.to_string()))?;
        if c.port == 0 {
            return Err(err("port", "must be 1-65535".into()));
        }
        let protocol = match c.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            other => {
                return Err(err(
                    "protocol",
                    format!("{other:?}: expected http, http2 (h2c), grpc or tcp"),
                ))
            }
        };
        let version = c.version.clone().unwrap_or_else(|| "v1".into());
        if !label_ok(&version) {
            return Err(err(
                "version",
                format!("{version:?}: up to 63 of [A-Za-z0-9._-]"),
            ));
        }
        if c.tags.len() > 16 || c.tags.iter().any(|t| !label_ok(t)) {
            return Err(err(
                "tags",
                "at most 16 tags of up to 63 [A-Za-z0-9._-]".into(),
            ));
        }
        let check = c
            .check
            .as_ref()
            .map(|k| check_spec(k, own, protocol.is_h2()))
            .transpose()
            .map_err(|FieldError(f, m)| err(f, m))?;
        let mut upstreams = Vec::new();
        for u in &c.upstream {
            let service = ServiceName::new(u.service.clone())
                .map_err(|e| err("upstream.service", e.to_string()))?;
            let listen: SocketAddr = u
                .listen
                .parse()
                .map_err(|e| err("upstream.listen", format!("{:?}: {e}", u.listen)))?;
            if !listen.ip().is_loopback() {
                return Err(err(
                    "upstream.listen",
                    format!("{listen}: upstream listeners bind loopback only"),
                ));
            }
            upstreams.push(UpstreamSpec { service, listen });
        }
        let user = match &c.user {
            None => None,
            Some(u) => {
                let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
                Some(crate::proxy::local_source::uid_of(u, &passwd).ok_or_else(|| {
                    err(
                        "user",
                        format!("{u:?}: no such user on this host (give a user name from /etc/passwd or a uid)"),
                    )
                })?)
            }
        };
        if let Some(u) = &c.unit {
            let ok = !u.is_empty()
                && u.len() <= 256
                && u.contains('.')
                && u.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ":_.@-\\".contains(ch));
            if !ok {
                return Err(err(
                    "unit",
                    format!("{u:?}: a systemd unit name like reviews.service"),
                ));
            }
        }
        let ip = match &c.address {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(text) => {
                let ip: IpAddr = text.parse().map_err(|e| {
                    err(
                        "address",
                        format!("{text:?}: {e} (an IP address of this host)"),
                    )
                })?;
                if !is_local_ip(ip, own) && !is_interface_ip(ip) {
                    return Err(err(
                        "address",
                        format!("{ip} is not an address of this host: the agent reaches its own instances only"),
                    ));
                }
                ip
            }
        };
        Ok(Self {
            local_addr: SocketAddr::new(ip, c.port),
            name,
            port: c.port,
            protocol,
            version,
            tags: c.tags.clone(),
            check,
            upstreams,
            user,
            unit: c.unit.clone(),
        })
    }
}

/// One field of a check that is refused (wrapped into a `SpecError` with the service).
struct FieldError(&'static str, String);

fn duration(
    v: Option<&str>,
    default: Duration,
    field: &'static str,
) -> Result<Duration, FieldError> {
    match v {
        None => Ok(default),
        Some(s) => {
            humantime::parse_duration(s).map_err(|e| FieldError(field, format!("{s:?}: {e}")))
        }
    }
}

fn check_spec(k: &CheckConfig, own: &[IpAddr], h2: bool) -> Result<CheckSpec, FieldError> {
    let interval = duration(
        k.interval.as_deref(),
        Duration::from_secs(5),
        "check.interval",
    )?;
    let timeout = duration(
        k.timeout.as_deref(),
        Duration::from_secs(1),
        "check.timeout",
    )?;
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
        return Err(FieldError(
            "check.interval",
            "must be between 100ms and 1h".into(),
        ));
    }
    if timeout.is_zero() || timeout > interval {
        return Err(FieldError(
            "check.timeout",
            "must be positive and at most the interval".into(),
        ));
    }
    let local = |field: &'static str, addr: &str| -> Result<SocketAddr, FieldError> {
        let a: SocketAddr = addr
            .parse()
            .map_err(|e| FieldError(field, format!("{addr:?}: {e}")))?;
        if !is_local_ip(a.ip(), own) {
            return Err(FieldError(
                field,
                format!("{a}: checks may only target this host"),
            ));
        }
        Ok(a)
    };
    let target = match (&k.http, &k.tcp, &k.grpc) {
        (Some(url), None, None) => http_target(url, own, h2, k)?,
        (None, Some(addr), None) => CheckTarget::Tcp(local("check.tcp", addr)?),
        (None, None, Some(addr)) => {
            let service = k.grpc_service.clone().unwrap_or_default();
            if service.len() > 200 || service.chars().any(|c| c.is_control()) {
                return Err(FieldError(
                    "check.grpc_service",
                    "at most 200 characters, no control characters".into(),
                ));
            }
            CheckTarget::Grpc {
                addr: local("check.grpc", addr)?,
                service,
            }
        }
        _ => {
            return Err(FieldError(
                "check",
                "set exactly one of `http`, `tcp` or `grpc`".into(),
            ))
        }
    };
    let threshold = |v: Option<u32>, f| match v.unwrap_or(2) {
        n @ 1..=10 => Ok(n),
        _ => Err(FieldError(f, "must be 1-10".to_owned())),
    };
    Ok(CheckSpec {
        target,
        interval,
        timeout,
        unhealthy_threshold: threshold(k.unhealthy_threshold, "check.unhealthy_threshold")?,
        healthy_threshold: threshold(k.healthy_threshold, "check.healthy_threshold")?,
    })
}

fn http_target(
    url: &str,
    own: &[IpAddr],
    h2: bool,
    k: &CheckConfig,
) -> Result<CheckTarget, FieldError> {
    let bad = |m: String| FieldError("check.http", m);
    let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (None, Some(r)) => (r, true),
        _ => return Err(bad(format!("{url:?}: only http:// and https:// URLs"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if path.len() > 1024 || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!("{url:?}: bad path")));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad(format!("{url:?}: bad port")))?,
        ),
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host_ip = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host_ip == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host_ip.parse().map_err(|_| {
            bad(format!(
                "{url:?}: the host must be an IP address of this host or localhost"
            ))
        })?
    };
    if !is_local_ip(ip, own) {
        return Err(bad(format!("{url:?}: checks may only target this host")));
    }
    let tls = if https {
        Some(check_tls(host_ip, k)?)
    } else {
        if k.ca_file.is_some() || k.tls_skip_verify.is_some() {
            return Err(FieldError(
                "check.ca_file",
                "`ca_file` and `tls_skip_verify` apply to https:// checks only".into(),
            ));
        }
        None
    };
    Ok(CheckTarget::Http {
        addr: SocketAddr::new(ip, port),
        host: authority.to_owned(),
        path: path.to_owned(),
        h2,
        tls,
    })
}

/// How an `https://` check trusts the service: the CA file, read now, or nothing.
fn check_tls(host: &str, k: &CheckConfig) -> Result<CheckTls, FieldError> {
    use rustls_pki_types::pem::PemObject as _;
    let server_name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| FieldError("check.http", format!("{host:?}: {e}")))?;
    let roots = match (&k.ca_file, k.tls_skip_verify.unwrap_or(false)) {
        (Some(_), true) => {
            return Err(FieldError(
                "check.ca_file",
                "set `ca_file` or `tls_skip_verify`, not both".into(),
            ))
        }
        (Some(path), false) => {
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| FieldError("check.ca_file", format!("{path}: {e}")))?;
            if certs.is_empty() {
                return Err(FieldError(
                    "check.ca_file",
                    format!("{path}: no PEM certificate in it"),
                ));
            }
            Some(certs)
        }
        (None, true) => None,
        (None, false) => {
            return Err(FieldError(
                "check.http",
                "an https:// check needs `ca_file` (the PEM of the CA that signed the service's certificate; --check-ca-file) or `tls_skip_verify = true` (--check-tls-skip-verify)".into(),
            ))
        }
    };
    Ok(CheckTls { server_name, roots })
}

/// Local services that cannot coexist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// More than a node may publish.
    #[error("at most {MAX_SERVICES_PER_NODE} services per node")]
    TooMany,
    /// Two definitions of one name.
    #[error("service {0} is defined twice")]
    DuplicateName(ServiceName),
    /// Two upstreams on one listener.
    #[error("upstream listener {0} is used twice")]
    DuplicateListener(SocketAddr),
    /// Defined in the config file, so the API may not change it.
    #[error("service {0} is defined in the config file; change it there")]
    InConfigFile(ServiceName),
}

/// Checks a whole set of local services (unique names, unique upstream listeners, count).
pub fn check_set(specs: &[ServiceSpec]) -> Result<(), Conflict> {
    if specs.len() > MAX_SERVICES_PER_NODE {
        return Err(Conflict::TooMany);
    }
    let mut names = std::collections::HashSet::new();
    let mut listens = std::collections::HashSet::new();
    for s in specs {
        if !names.insert(&s.name) {
            return Err(Conflict::DuplicateName(s.name.clone()));
        }
        for u in &s.upstreams {
            if !listens.insert(u.listen) {
                return Err(Conflict::DuplicateListener(u.listen));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn parse(text: &str) -> Result<ServiceSpec, SpecError> {
        let c = FileConfig::parse(text, "t").expect("toml");
        ServiceSpec::from_config(&c.service[0], &["10.0.0.5".parse().expect("ip")])
    }

    #[test]
    fn design_example_validates() {
        let s = parse(
            r#"
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
"#,
        )
        .expect("valid");
        assert_eq!(s.protocol, Protocol::Http);
        assert!(
            matches!(s.check.as_ref().map(|c| &c.target), Some(CheckTarget::Http { path, .. }) if path == "/health")
        );
    }

    #[test]
    fn refusals_name_the_field() {
        for (text, field) in [
            ("[[service]]\nname = \"<script>alert(1)</script>\"\nport = 1\n", "name"),
            ("[[service]]\nname = \"a\"\nport = 0\n", "port"),
            ("[[service]]\nname = \"a\"\nport = 1\nprotocol = \"udp\"\n", "protocol"),
            ("[[service]]\nname = \"a\"\nport = 1\ncheck = { http = \"http://169.254.169.254/latest\" }\n", "check.http"),
            ("[[service]]\nname = \"a\"\nport = 1\ncheck = { http = \"http://evil.example/\" }\n", "check.http"),
            ("[[service]]\nname = \"a\"\nport = 1\ncheck = { tcp = \"8.8.8.8:53\" }\n", "check.tcp"),
            ("[[service]]\nname = \"a\"\nport = 1\ncheck = { tcp = \"127.0.0.1:1\", http = \"http://127.0.0.1/\" }\n", "check"),
            ("[[service]]\nname = \"a\"\nport = 1\n[[service.upstream]]\nservice = \"b\"\nlisten = \"0.0.0.0:1\"\n", "upstream.listen"),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn https_checks_say_how_to_trust_the_service() {
        let e = parse("[[service]]\nname = \"a\"\nport = 1\ncheck = { http = \"https://127.0.0.1:8443/h\" }\n")
            .expect_err("neither ca_file nor tls_skip_verify");
        assert_eq!(e.field, "check.http");
        assert!(
            e.to_string().contains("ca_file") && e.to_string().contains("tls_skip_verify"),
            "{e}"
        );
        let s = parse("[[service]]\nname = \"a\"\nport = 1\ncheck = { http = \"https://localhost/h\", tls_skip_verify = true }\n")
            .expect("skip verify");
        match s.check.map(|c| c.target) {
            Some(CheckTarget::Http {
                addr,
                tls: Some(tls),
                ..
            }) => {
                assert_eq!(addr.port(), 443);
                assert!(tls.roots.is_none());
                assert_eq!(tls.server_name.to_str(), "localhost");
            }
            other => panic!("{other:?}"),
        }
        for (text, field) in [
            ("check = { http = \"https://127.0.0.1/\", ca_file = \"/nonexistent/ca.pem\" }", "check.ca_file"),
            ("check = { http = \"https://127.0.0.1/\", ca_file = \"/etc/hostname\" }", "check.ca_file"),
            ("check = { http = \"https://127.0.0.1/\", ca_file = \"/x\", tls_skip_verify = true }", "check.ca_file"),
            ("check = { http = \"http://127.0.0.1/\", tls_skip_verify = true }", "check.ca_file"),
        ] {
            let e = parse(&format!("[[service]]\nname = \"a\"\nport = 1\n{text}\n")).expect_err(text);
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn own_address_is_local() {
        parse("[[service]]\nname = \"a\"\nport = 1\ncheck = { tcp = \"10.0.0.5:80\" }\n")
            .expect("own IP allowed");
    }
}
