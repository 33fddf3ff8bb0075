//! Who is calling, for a connection from a process on this host: the socket's owner (its
//! uid, from the kernel's socket table in `/proc/net/tcp` and `tcp6`, and, for services
//! that name a systemd unit, the process holding the socket and its cgroup) matched
//! against the local services that name their processes with `unit = "…"` or
//! `user = "…"` (a unit is the more specific, so it is tried first). So two services on one VM
//! each act as themselves, and a process of neither is anonymous (`-`), whichever local
//! listener it connects to (an upstream listener, a virtual IP, the HTTP proxy). Nothing
//! is looked up while no local service names a user (the lookup reads the socket table).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use weft_ca::ServiceName;

use super::inputs::ProxyInputs;

/// What a local connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSource {
    /// No local service names its processes: identity is what the listener declares.
    NotConfigured,
    /// The connecting process belongs to this service.
    Service(ServiceName),
    /// A process of no service (or not found in the socket table).
    Anonymous,
}

impl LocalSource {
    /// The source to assert for a listener that declares `declared` (upstream
    /// listeners; None for virtual IPs and the HTTP proxy).
    pub fn or_declared(self, declared: Option<ServiceName>) -> Option<ServiceName> {
        match self {
            Self::NotConfigured => declared,
            Self::Service(s) => Some(s),
            Self::Anonymous => None,
        }
    }
}

/// The source of the app connection `sock` (accepted by a local listener).
pub fn identify(inputs: &ProxyInputs, sock: &tokio::net::TcpStream) -> LocalSource {
    identify_as(inputs, sock, false)
}

/// The same for a connection nftables redirected to the agent: the app's socket still
/// names the address it meant, so it is found by its own end alone.
pub fn identify_redirected(inputs: &ProxyInputs, sock: &tokio::net::TcpStream) -> LocalSource {
    identify_as(inputs, sock, true)
}

fn identify_as(
    inputs: &ProxyInputs,
    sock: &tokio::net::TcpStream,
    redirected: bool,
) -> LocalSource {
    let services = inputs.services.all();
    if services
        .iter()
        .all(|s| s.user.is_none() && s.unit.is_none())
    {
        return LocalSource::NotConfigured;
    }
    let (Ok(peer), Ok(local)) = (sock.peer_addr(), sock.local_addr()) else {
        return LocalSource::Anonymous;
    };
    let Some((uid, inode)) = owner(peer, (!redirected).then_some(local)) else {
        return LocalSource::Anonymous;
    };
    if services.iter().any(|s| s.unit.is_some()) {
        if let Some(cgroups) = pid_of_socket(inode)
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
        {
            if let Some(s) = services
                .iter()
                .find(|s| s.unit.as_deref().is_some_and(|u| in_unit(&cgroups, u)))
            {
                return LocalSource::Service(s.name.clone());
            }
        }
    }
    services
        .into_iter()
        .find(|s| s.user == Some(uid))
        .map_or(LocalSource::Anonymous, |s| LocalSource::Service(s.name))
}

/// Whether a process whose `/proc/PID/cgroup` reads `cgroups` runs in `unit` (a path
/// component of any of its cgroups, v1 or v2, is the unit's name).
pub fn in_unit(cgroups: &str, unit: &str) -> bool {
    cgroups.lines().any(|l| {
        l.splitn(3, ':')
            .nth(2)
            .is_some_and(|path| path.split('/').any(|c| c == unit))
    })
}

/// Most `/proc/*/fd` entries looked at to find a socket's process.
const MAX_FDS_SCANNED: usize = 200_000;

/// The process holding socket `inode` (a scan of `/proc/*/fd`, bounded).
fn pid_of_socket(inode: u64) -> Option<u32> {
    let want = format!("socket:[{inode}]");
    let mut seen = 0;
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            seen += 1;
            if seen > MAX_FDS_SCANNED {
                return None;
            }
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == want.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The uid and inode of the socket whose local end is `app` and remote end `ours` (any
/// remote end when `ours` is None).
fn owner(app: SocketAddr, ours: Option<SocketAddr>) -> Option<(u32, u64)> {
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = std::fs::read_to_string(path) else {
            continue;
        };
        if let Some(found) = find_owner(&table, app, ours) {
            return Some(found);
        }
    }
    None
}

/// Finds the line of `table` (the text of /proc/net/tcp or tcp6) with local address
/// `app` and remote `ours` (any remote, when None, if only one line has that local
/// address and is connected); returns its uid.
pub fn find_uid(table: &str, app: SocketAddr, ours: Option<SocketAddr>) -> Option<u32> {
    find_owner(table, app, ours).map(|(uid, _)| uid)
}

/// Like `find_uid`, with the socket's inode.
fn find_owner(table: &str, app: SocketAddr, ours: Option<SocketAddr>) -> Option<(u32, u64)> {
    let mut found = table.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            return None;
        }
        let (local, remote) = (parse_addr(f[1])?, parse_addr(f[2])?);
        let matches = same(local, app)
            && match ours {
                Some(ours) => same(remote, ours),
                None => remote.port() != 0,
            };
        if !matches {
            return None;
        }
        Some((f[7].parse::<u32>().ok()?, f[9].parse::<u64>().ok()?))
    });
    let first = found.next()?;
    match (ours, found.next()) {
        (None, Some(_)) => None, // ambiguous
        _ => Some(first),
    }
}

/// Equal, treating an IPv4-mapped IPv6 address as its IPv4 address.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canon(a.ip()) == canon(b.ip())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word as the
/// kernel prints it, in the host's byte order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A user name or number as a uid, from `/etc/passwd` (`passwd` is its text).
pub fn uid_of(user: &str, passwd: &str) -> Option<u32> {
    if let Ok(n) = user.parse() {
        return Some(n);
    }
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user)
            .then(|| f.nth(1)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 2B26E87F:2382 01 00000000:00000000 00:00000000 00000000 65534        0 5678 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn the_owner_of_a_connection_is_found_in_the_socket_table() {
        let app: SocketAddr = "127.0.0.1:54321".parse().expect("addr");
        let ours: SocketAddr = "127.232.38.43:9090".parse().expect("addr");
        if cfg!(target_endian = "little") {
            assert_eq!(find_uid(TABLE, app, Some(ours)), Some(65534));
            assert_eq!(
                find_uid(TABLE, app, None),
                Some(65534),
                "found by its own end"
            );
        }
        assert_eq!(
            find_uid(TABLE, ours, Some(app)),
            None,
            "the agent's own end is not the app"
        );
        let v6 = "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0000000000000000FFFF00000100007F:D431 0000000000000000FFFF00002B26E87F:2382 01 00000000:00000000 00:00000000 00000000  1001        0 9 1\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                find_uid(v6, app, Some(ours)),
                Some(1001),
                "IPv4-mapped sockets match"
            );
        }
    }

    #[test]
    fn units_are_found_in_v1_and_v2_cgroups() {
        let v2 = "0::/system.slice/reviews.service\n";
        let v1 = "9:name=systemd:/system.slice/batch.service\n8:pids:/\n";
        assert!(in_unit(v2, "reviews.service"));
        assert!(!in_unit(v2, "batch.service"));
        assert!(in_unit(v1, "batch.service"));
        assert!(!in_unit(
            "0::/system.slice/reviews.service.d\n",
            "reviews.service"
        ));
    }

    #[test]
    fn users_by_name_or_number() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(uid_of("nobody", passwd), Some(65534));
        assert_eq!(uid_of("1001", passwd), Some(1001));
        assert_eq!(uid_of("ghost", passwd), None);
    }

    proptest::proptest! {
        #[test]
        fn the_table_parser_never_panics(s in ".{0,300}") {
            let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
            let _ = find_uid(&s, a, Some(a));
            let _ = find_uid(&s, a, None);
            let _ = parse_addr(&s);
        }
    }
}
