//! Agents as separate hosts: one network namespace per agent, each with a veth into a
//! bridge that lives in a hub namespace, and one more veth from the test's own namespace
//! into that bridge (address `.254`) so the test can reach every agent's API. Faults are
//! nftables rules on a host's input hook: cut a link one way or both, isolate a host, or
//! drop a share of its packets at random (this kernel has no netem, so there is loss but
//! no added delay). Everything is deleted when the lab drops, even after a failed test.
//!
//! Needs root and iproute2 + nftables (tests/install-deps.sh).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _};

/// Runs a command and fails with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip ARGS` for cleanup, ignoring the outcome and its output (the thing to delete
/// is usually already gone).
fn quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A set of namespaced hosts on `10.B.C.0/24`.
pub struct Lab {
    b: u8,
    c: u8,
    hub: String,
    hosts: Vec<u8>,
}

impl Lab {
    /// Creates the hub (bridge) and the test's own link into it. `b`, `c` come from a
    /// leased loopback subnet, so parallel tests never share a lab.
    pub fn new(b: u8, c: u8) -> anyhow::Result<Self> {
        let hub = format!("wf{b}x{c}hub");
        quiet(&["netns", "del", &hub]);
        run("ip", &["netns", "add", &hub])
            .context("fault tests need root and iproute2 (tests/install-deps.sh)")?;
        let lab = Self {
            b,
            c,
            hub: hub.clone(),
            hosts: Vec::new(),
        };
        let ns = |args: &[&str]| {
            let mut full = vec!["netns", "exec", hub.as_str()];
            full.extend_from_slice(args);
            run("ip", &full)
        };
        ns(&["ip", "link", "add", "br0", "type", "bridge"])?;
        ns(&["ip", "link", "set", "br0", "up"])?;
        ns(&["ip", "link", "set", "lo", "up"])?;
        // The test's own leg: root end `wfBxCt` with .254, hub end on the bridge.
        let (root_if, hub_if) = (format!("wf{b}x{c}t"), format!("wf{b}x{c}tp"));
        quiet(&["link", "del", &root_if]);
        run(
            "ip",
            &[
                "link", "add", &root_if, "type", "veth", "peer", "name", &hub_if, "netns", &hub,
            ],
        )?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", lab.ip(254)),
                "dev",
                &root_if,
            ],
        )?;
        run("ip", &["link", "set", &root_if, "up"])?;
        ns(&["ip", "link", "set", &hub_if, "master", "br0"])?;
        ns(&["ip", "link", "set", &hub_if, "up"])?;
        Ok(lab)
    }

    /// Address `.host` of the lab.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.b, self.c, host)
    }

    /// The namespace of host `.host`.
    pub fn netns(&self, host: u8) -> String {
        format!("wf{}x{}h{host}", self.b, self.c)
    }

    /// Creates host `.host` (idempotent): namespace, veth into the bridge, address, an
    /// empty nftables input chain for faults.
    pub fn add_host(&mut self, host: u8) -> anyhow::Result<String> {
        let ns = self.netns(host);
        if self.hosts.contains(&host) {
            return Ok(ns);
        }
        quiet(&["netns", "del", &ns]);
        run("ip", &["netns", "add", &ns])?;
        self.hosts.push(host);
        let (inner, outer) = (
            format!("wf{}x{}e{host}", self.b, self.c),
            format!("wf{}x{}p{host}", self.b, self.c),
        );
        run(
            "ip",
            &[
                "-n", &ns, "link", "add", &inner, "type", "veth", "peer", "name", &outer, "netns",
                &self.hub,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(host)),
                "dev",
                &inner,
            ],
        )?;
        run("ip", &["-n", &ns, "link", "set", &inner, "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", &self.hub, "link", "set", &outer, "master", "br0"],
        )?;
        run("ip", &["-n", &self.hub, "link", "set", &outer, "up"])?;
        self.nft(
            host,
            "add table inet weftfault; add chain inet weftfault in { type filter hook input priority 0; policy accept; }",
        )?;
        Ok(ns)
    }

    /// Runs an nftables script inside host `.host`.
    fn nft(&self, host: u8, script: &str) -> anyhow::Result<()> {
        run("ip", &["netns", "exec", &self.netns(host), "nft", script])
    }

    /// `.host` stops hearing `.from` (one way: `.from` still hears `.host`).
    pub fn cut_one_way(&self, host: u8, from: u8) -> anyhow::Result<()> {
        self.nft(
            host,
            &format!("add rule inet weftfault in ip saddr {} drop", self.ip(from)),
        )
    }

    /// `.a` and `.b` stop hearing each other's gossip (UDP 7946) only; QUIC still flows.
    pub fn cut_gossip(&self, a: u8, b: u8) -> anyhow::Result<()> {
        for (host, from) in [(a, b), (b, a)] {
            self.nft(
                host,
                &format!(
                    "add rule inet weftfault in ip saddr {} udp dport 7946 drop",
                    self.ip(from)
                ),
            )?;
        }
        Ok(())
    }

    /// `.a` and `.b` stop hearing each other.
    pub fn cut(&self, a: u8, b: u8) -> anyhow::Result<()> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// `.host` hears no other host (the test's own leg, `.254`, still works) and no other
    /// host hears it.
    pub fn isolate(&self, host: u8) -> anyhow::Result<()> {
        let lab = format!("10.{}.{}.0/24", self.b, self.c);
        self.nft(
            host,
            &format!(
                "add rule inet weftfault in ip saddr != {} ip saddr {lab} drop",
                self.ip(254)
            ),
        )?;
        for other in self.hosts.iter().filter(|h| **h != host) {
            self.cut_one_way(*other, host)?;
        }
        Ok(())
    }

    /// `.host` drops `percent` % of the packets other hosts send it, at random.
    pub fn loss(&self, host: u8, percent: u8) -> anyhow::Result<()> {
        let lab = format!("10.{}.{}.0/24", self.b, self.c);
        self.nft(
            host,
            &format!(
                "add rule inet weftfault in ip saddr != {} ip saddr {lab} numgen random mod 100 < {percent} drop",
                self.ip(254)
            ),
        )
    }

    /// Removes every fault rule on every host.
    pub fn heal(&self) -> anyhow::Result<()> {
        for h in &self.hosts {
            self.nft(*h, "flush chain inet weftfault in")?;
        }
        Ok(())
    }

    /// Starts `program ARGS` inside host `.host`, output to `log`.
    pub fn spawn(
        &self,
        host: u8,
        program: &std::path::Path,
        args: &[&str],
        log: &std::path::Path,
    ) -> anyhow::Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.netns(host)])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            quiet(&["netns", "del", &self.netns(*h)]);
        }
        quiet(&["netns", "del", &self.hub]);
        quiet(&["link", "del", &format!("wf{}x{}t", self.b, self.c)]);
    }
}
