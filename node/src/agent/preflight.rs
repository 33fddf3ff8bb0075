//! Everything wrong with an agent's settings, found before anything acts on them. The same
//! checks run in three places: `weft validate` (by hand, and as the unit's `ExecReload`, so
//! a bad file fails `systemctl reload` and the running config stays), and the agent's own
//! start, before it bootstraps a CA or spends a one-time join token.
//!
//! Every finding is one line naming the key or service and the fix. Errors stop the start
//! or the reload; warnings (a service nothing listens on yet) are only printed.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use crate::catalog::spec::{check_set, ServiceSpec};
use crate::config::Settings;

/// What is wrong (errors) and what looks wrong (warnings).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Problems that stop a start or a reload.
    pub errors: Vec<String>,
    /// Things worth knowing that stop nothing.
    pub warnings: Vec<String>,
}

/// Whether listening addresses are tried (bound and released at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Try each: a port another program holds is an error.
    Probe,
    /// Do not: an agent on this config already holds them (a reload), or the node already
    /// has an identity and its listeners report for themselves.
    Skip,
}

/// One listening socket the settings ask for.
#[derive(Debug, Clone)]
struct Listen {
    addr: SocketAddr,
    udp: bool,
    what: String,
}

/// Checks resolved settings: the services (every one, not only the first bad one), the
/// listening addresses for collisions and, with `Ports::Probe`, whether each is free.
pub fn check(settings: &Settings, ports: Ports) -> Findings {
    let mut out = Findings::default();
    let own = [settings.bind, settings.advertise];
    let mut specs = Vec::new();
    for c in &settings.services {
        match ServiceSpec::from_config(c, &own) {
            Ok(s) => specs.push(s),
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    if let Err(e) = check_set(&specs) {
        out.errors.push(e.to_string());
    }

    let mut listens = vec![
        Listen {
            addr: settings.gossip_listen(),
            udp: true,
            what: "gossip (`gossip_port`)".into(),
        },
        Listen {
            addr: settings.quic_listen(),
            udp: true,
            what: "QUIC (`quic_port`)".into(),
        },
        Listen {
            addr: settings.api,
            udp: false,
            what: "the API and dashboard (`api`)".into(),
        },
        Listen {
            addr: settings.proxy,
            udp: false,
            what: "the HTTP proxy (`proxy`)".into(),
        },
    ];
    if let Some(dns) = settings.dns {
        for udp in [true, false] {
            listens.push(Listen {
                addr: dns,
                udp,
                what: "the .weft DNS (`dns`)".into(),
            });
        }
    }
    for s in &specs {
        for u in &s.upstreams {
            listens.push(Listen {
                addr: u.listen,
                udp: false,
                what: format!("service {}'s upstream to {}", s.name, u.service),
            });
        }
    }
    let mut seen: BTreeMap<(bool, SocketAddr), &str> = BTreeMap::new();
    for l in &listens {
        let clash = seen
            .iter()
            .find(|((udp, a), _)| *udp == l.udp && overlaps(*a, l.addr))
            .map(|(_, w)| *w);
        match clash {
            Some(other) => out.errors.push(format!(
                "{} and {} both listen on {}/{}; give one of them another port",
                other,
                l.what,
                l.addr,
                if l.udp { "udp" } else { "tcp" }
            )),
            None => {
                seen.insert((l.udp, l.addr), &l.what);
            }
        }
    }

    if ports == Ports::Probe && out.errors.is_empty() {
        for l in &listens {
            let bound = if l.udp {
                UdpSocket::bind(l.addr).map(drop)
            } else {
                TcpListener::bind(l.addr).map(drop)
            };
            if let Err(e) = bound {
                out.errors.push(format!(
                    "{} cannot listen on {}/{}: {e}{}",
                    l.what,
                    l.addr,
                    if l.udp { "udp" } else { "tcp" },
                    crate::proxy::listeners::bind_hint(l.addr, &e)
                ));
            }
        }
    }

    for s in &specs {
        let target = s.local_addr;
        if std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_millis(200))
            .is_err()
        {
            out.warnings.push(format!(
                "service {}: nothing listens on {target} yet; it is registered, and marked failing until it does if it has a check",
                s.name
            ));
        }
    }
    out
}

/// Whether two listening addresses would collide: same port, and the same IP or either
/// one the wildcard.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentArgs, FileConfig};

    fn settings(text: &str) -> Settings {
        let file = FileConfig::parse(text, "t.toml").expect("toml");
        let args = AgentArgs {
            name: Some("vm-1".into()),
            bind: Some("127.0.0.1".into()),
            dns: Some("off".into()),
            ..Default::default()
        };
        Settings::from_parts(&args, file, "t.toml").expect("settings")
    }

    #[test]
    fn every_bad_service_is_named() {
        let s = settings(
            r#"
[[service]]
name = "a"
port = 0
[[service]]
name = "b"
port = 80
protocol = "ftp"
"#,
        );
        let f = check(&s, Ports::Skip);
        assert_eq!(f.errors.len(), 2, "{f:?}");
        assert!(f.errors[0].contains("service a") && f.errors[0].contains("port"));
        assert!(f.errors[1].contains("service b") && f.errors[1].contains("protocol"));
    }

    #[test]
    fn an_upstream_on_the_proxy_port_collides() {
        let s = settings(
            r#"
[[service]]
name = "a"
port = 8080
[[service.upstream]]
service = "b"
listen = "127.0.0.1:15001"
"#,
        );
        let f = check(&s, Ports::Skip);
        assert!(
            f.errors
                .iter()
                .any(|e| e.contains("HTTP proxy") && e.contains("15001")),
            "{f:?}"
        );
    }

    #[test]
    fn gossip_and_quic_on_one_port_collide() {
        let s = settings("gossip_port = 7000\nquic_port = 7000\n");
        let f = check(&s, Ports::Skip);
        assert_eq!(f.errors.len(), 1, "{f:?}");
    }

    #[test]
    fn a_taken_port_is_found_by_the_probe() {
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port()
        };
        let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
        let held = holder.local_addr().expect("addr").port();
        let text = format!(
            "gossip_port = {}\nquic_port = {}\napi = \"127.0.0.1:{}\"\nproxy = \"127.0.0.1:{}\"\n\
             [[service]]\nname = \"a\"\nport = {held}\n\
             [[service.upstream]]\nservice = \"b\"\nlisten = \"127.0.0.1:{held}\"\n",
            free(),
            free(),
            free(),
            free()
        );
        let f = check(&settings(&text), Ports::Probe);
        assert_eq!(f.errors.len(), 1, "{f:?}");
        assert!(
            f.errors[0].contains("upstream to b") && f.errors[0].contains("ss -lntup"),
            "{f:?}"
        );
        // Something listens on the service's port (the holder): no warning.
        assert!(f.warnings.is_empty(), "{f:?}");
    }
}
