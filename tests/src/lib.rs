//! Harness for tests that run real `weft` agents: each agent is a separate process on its
//! own 127.x.y.z address, with its own data dir and log file; a guard kills every agent
//! when the test ends, even on failure, and fails the test if an agent logged an ERROR
//! the test did not expect.
//!
//! The binary is the workspace's `target/<profile>/weft`, built by `cargo test
//! --workspace` (weft-node's own integration tests make cargo build it).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

pub mod backends;
pub mod netlab;

/// Path of the `weft` binary next to the running test executable.
pub fn weft_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WEFT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> (tests) or target/<profile>/<bin> (bench) -> target/<profile>/weft
    let mut profile_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
    }
    let bin = profile_dir.join("weft");
    assert!(
        bin.exists(),
        "{} not found: run the suite with `cargo test --workspace`, build it with `cargo build --release -p weft-node` for benchmarks, or set WEFT_BIN",
        bin.display()
    );
    bin
}

/// The trimmed stdout of a command that must have succeeded (its stderr otherwise).
pub fn stdout_ok(out: &Output) -> anyhow::Result<String> {
    anyhow::ensure!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout.clone())?.trim().to_owned())
}

/// Polls `check` every 100 ms until it returns `Ok(Some(v))` or `timeout` passes.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

static NEXT_SUBNET: AtomicU32 = AtomicU32::new(0);

/// A /24 on loopback reserved for one test: holds a TCP listener on `.254` so that no
/// other test (in this process or another) picks the same one.
pub struct Subnet {
    base: [u8; 3],
    _lease: TcpListener,
}

impl Subnet {
    /// Reserves a free subnet `127.B.C.0/24`.
    pub fn reserve() -> Self {
        let start = std::process::id().wrapping_mul(7919);
        loop {
            let n = start.wrapping_add(NEXT_SUBNET.fetch_add(1, Ordering::SeqCst));
            let b = 100 + (n / 250 % 150) as u8;
            let c = 1 + (n % 250) as u8;
            let lease = SocketAddr::from((Ipv4Addr::new(127, b, c, 254), 47_999));
            if let Ok(l) = TcpListener::bind(lease) {
                return Self {
                    base: [127, b, c],
                    _lease: l,
                };
            }
        }
    }

    /// The two middle octets (`127.B.C.0/24`), also used for a fault lab's `10.B.C.0/24`.
    pub fn octets(&self) -> (u8, u8) {
        (self.base[1], self.base[2])
    }

    /// Address `.host` in this subnet.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.base[0], self.base[1], self.base[2], host)
    }
}

/// A running agent process.
pub struct Agent {
    /// Node name.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
    child: Option<Child>,
    /// The operator credential `cli` passes (`--credential`), when set.
    pub credential: Option<PathBuf>,
}

impl Agent {
    /// The API address.
    pub fn api(&self) -> String {
        format!("{}:7070", self.ip)
    }

    /// The HTTP proxy address.
    pub fn proxy(&self) -> String {
        format!("{}:15001", self.ip)
    }

    /// The gossip address.
    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, 7946))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs a `weft` client command against this agent, as the cluster's operator (the
    /// bootstrap node's admin credential) with this node's data dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(weft_bin());
        cmd.args(args)
            .env("WEFT_API", self.api())
            .env("WEFT_DATA_DIR", &self.data_dir)
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_CREDENTIAL");
        if let Some(c) = self.credential.as_ref().filter(|c| c.exists()) {
            cmd.env("WEFT_CREDENTIAL", c);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run weft: {e}"))
    }

    /// Runs a `weft` client command with only what this node's data dir holds (no
    /// operator credential from elsewhere): what root on this VM alone can do.
    pub fn cli_as_node(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(weft_bin())
            .args(args)
            .env("WEFT_API", self.api())
            .env("WEFT_DATA_DIR", &self.data_dir)
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_CREDENTIAL")
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("cannot run weft: {e}"))
    }

    /// `weft members --json` on this agent.
    pub fn members(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = self.cli(&["members", "--json"]);
        if !out.status.success() {
            bail!(
                "weft members failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Status of `name` as this agent sees it.
    pub fn status_of(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .members()?
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["status"].as_str().map(str::to_owned)))
    }

    /// A metric value from `/metrics` (first line starting with `prefix`).
    pub fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        let body = http_get(&self.api(), "/metrics")?;
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().parse()?);
            }
        }
        bail!("metric {prefix} not found")
    }

    /// Creates a join token with `weft token create`.
    pub fn token(&self, ttl: &str) -> anyhow::Result<String> {
        let out = self.cli(&["token", "create", "--ttl", ttl]);
        if !out.status.success() {
            bail!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status();
        }
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.name);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Minimal HTTP/1.1 GET over a plain TCP socket (tests avoid an HTTP client dependency).
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// Waits up to `timeout` until a GET for `target` with `Host: host`, sent to `addr`, is
/// answered with `status` (with any status for `None`); returns that response.
pub fn eventually_http(
    what: &str,
    timeout: Duration,
    addr: &str,
    host: &str,
    target: &str,
    status: Option<u16>,
) -> anyhow::Result<(u16, String)> {
    eventually(what, timeout, || {
        Ok(backends::http_get_host(addr, host, target)
            .ok()
            .filter(|r| status.is_none_or(|s| r.0 == s)))
    })
}

/// The identity kept in agent data dir `dir`, and a trust root for its cluster's CA.
pub fn trust_of(
    dir: &Path,
) -> anyhow::Result<(Arc<weft_ca::TrustRoot>, weft_node::identity::Identity)> {
    let id = weft_node::identity::IdentityFiles::new(dir).load()?;
    let trust = Arc::new(weft_ca::TrustRoot::new(
        id.info.cluster.clone(),
        id.ca_der.clone(),
    )?);
    Ok((trust, id))
}

/// A QUIC client config for the data plane that checks the server against `trust` but
/// presents no client certificate (what an outsider can do).
pub fn no_cert_data_config(trust: Arc<weft_ca::TrustRoot>) -> anyhow::Result<quinn::ClientConfig> {
    use weft_node::tls::{self, PeerVerifier, ALPN_DATA};
    let mut no_cert = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(trust, Arc::default())))
        .with_no_client_auth();
    no_cert.alpn_protocols = vec![ALPN_DATA.to_vec()];
    Ok(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(no_cert)?,
    )))
}

/// A test's agents, addresses, and temp dirs. Dropping it kills every agent and checks
/// their logs for unexpected ERROR lines.
pub struct Cluster {
    /// The reserved subnet.
    pub subnet: Subnet,
    /// Agents by name.
    pub agents: HashMap<String, Agent>,
    dir: tempfile::TempDir,
    logs: PathBuf,
    allowed_errors: Vec<String>,
    next_host: u8,
    /// Set for clusters whose agents are separate hosts in network namespaces.
    lab: Option<netlab::Lab>,
    /// Helper processes (lab backends), killed on drop.
    helpers: Vec<Child>,
    /// Extra environment for particular agents.
    envs: HashMap<String, Vec<(String, String)>>,
    /// The operator credential every agent's `cli` uses: the first bootstrap node's
    /// `admin-credential`, as an operator would carry it to another host.
    operator_credential: Option<PathBuf>,
}

impl Cluster {
    /// A new empty cluster for test `test_name`; logs go to `target/test-logs/<test_name>`.
    pub fn new(test_name: &str) -> Self {
        let logs = weft_bin()
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("target"))
            .join("test-logs")
            .join(test_name);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", logs.display()));
        Self {
            subnet: Subnet::reserve(),
            agents: HashMap::new(),
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            logs,
            // A node a test revokes says so at ERROR, with how to recover: expected.
            allowed_errors: vec!["certificate is revoked (weft node revoke)".to_owned()],
            operator_credential: None,
            next_host: 1,
            lab: None,
            helpers: Vec::new(),
            envs: HashMap::new(),
        }
    }

    /// A cluster whose agents each run in their own network namespace on `10.B.C.0/24`
    /// (see `netlab`), so links between them can be cut or made lossy.
    pub fn new_lab(test_name: &str) -> anyhow::Result<Self> {
        let mut c = Self::new(test_name);
        let (b, cc) = c.subnet.octets();
        c.lab = Some(netlab::Lab::new(b, cc)?);
        Ok(c)
    }

    /// The fault lab (panics for a loopback cluster).
    pub fn lab(&self) -> &netlab::Lab {
        self.lab
            .as_ref()
            .unwrap_or_else(|| panic!("not a lab cluster: use Cluster::new_lab"))
    }

    /// Sets an environment variable for agent `name`'s future starts.
    pub fn set_env(&mut self, name: &str, key: &str, value: &str) {
        self.envs
            .entry(name.to_owned())
            .or_default()
            .push((key.to_owned(), value.to_owned()));
    }

    /// The lab host number (last octet) of agent `name`.
    pub fn host(&self, name: &str) -> u8 {
        self.agent(name).ip.octets()[3]
    }

    /// Starts `program ARGS` in agent `name`'s namespace (a backend on its 127.0.0.1);
    /// killed when the cluster drops.
    pub fn spawn_in(&mut self, name: &str, program: &Path, args: &[&str]) -> anyhow::Result<()> {
        let host = self.host(name);
        let log = self.logs.join(format!("{name}-backend.log"));
        let child = self.lab().spawn(host, program, args, &log)?;
        self.helpers.push(child);
        Ok(())
    }

    /// Lets log lines containing `needle` at ERROR level pass.
    pub fn allow_error(&mut self, needle: &str) {
        self.allowed_errors.push(needle.to_owned());
    }

    /// The data dir a node named `name` uses.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn host_for(&mut self, name: &str) -> Ipv4Addr {
        if let Some(a) = self.agents.get(name) {
            return a.ip;
        }
        let ip = match &self.lab {
            Some(lab) => lab.ip(self.next_host),
            None => self.subnet.ip(self.next_host),
        };
        self.next_host += 1;
        ip
    }

    /// Starts `weft agent --name NAME --bind IP --api IP:7070 --data-dir D EXTRA...`.
    /// Restarting a name reuses its address and data dir.
    pub fn spawn(&mut self, name: &str, extra: &[&str]) -> &mut Agent {
        self.spawn_as(name, name, extra)
    }

    /// Like `spawn`, but the agent known to the test as `label` (its address, data dir
    /// and log) asks for node name `node_name` (e.g. an impostor of another node).
    pub fn spawn_as(&mut self, label: &str, node_name: &str, extra: &[&str]) -> &mut Agent {
        let name = label;
        let ip = self.host_for(name);
        let data_dir = self.data_dir(name);
        let log = self.logs.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let err_file = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = match self.lab.as_mut() {
            Some(lab) => {
                let ns = lab
                    .add_host(ip.octets()[3])
                    .unwrap_or_else(|e| panic!("lab host for {name}: {e:#}"));
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns]).arg(weft_bin());
                // Each lab host is its own VM: its API is on the lab address, which only
                // the test reaches.
                cmd.arg("agent").arg("--dangerous-public-api");
                cmd
            }
            None => {
                let mut cmd = Command::new(weft_bin());
                cmd.arg("agent");
                cmd
            }
        };
        // Each agent its own DNS address; virtual IPs only where a test asks for a range
        // of its own (agents on one host would otherwise share addresses).
        let dns = format!("{ip}:8600");
        if !extra.contains(&"--dns") {
            cmd.args(["--dns", &dns]);
        }
        if !extra.contains(&"--vip-range") {
            cmd.args(["--vip-range", "off"]);
        }
        let child = cmd
            .args(["--name", node_name, "--bind", &ip.to_string()])
            .args([
                "--api",
                &format!("{ip}:7070"),
                "--proxy",
                &format!("{ip}:15001"),
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("WEFT_LOG", "info,weft_gossip=debug")
            .envs(self.envs.get(name).cloned().unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start weft: {e}"));
        let agent = Agent {
            name: name.to_owned(),
            ip,
            data_dir,
            log,
            child: Some(child),
            credential: self.operator_credential.clone(),
        };
        self.agents.insert(name.to_owned(), agent);
        self.agents.get_mut(name).unwrap_or_else(|| unreachable!())
    }

    /// The agent named `name`.
    pub fn agent(&self, name: &str) -> &Agent {
        self.agents
            .get(name)
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// Mutable access to an agent.
    pub fn agent_mut(&mut self, name: &str) -> &mut Agent {
        self.agents
            .get_mut(name)
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// Runs a `weft` client command on `node`'s agent; fails with its stderr if it fails.
    pub fn cli_ok(&self, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.agent(node).cli(args);
        if !out.status.success() {
            bail!(
                "weft {args:?} on {node}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Registers a service on `node` (`weft service register ARGS`).
    pub fn register(&self, node: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["service", "register"];
        full.extend_from_slice(args);
        self.cli_ok(node, &full).map(|_| ())
    }

    /// Registers an HTTP service `name` on `node`, listening on the node's 127.0.0.1:`port`.
    pub fn register_http(&self, node: &str, name: &str, port: u16) -> anyhow::Result<()> {
        self.register_http_with(node, name, port, &[])
    }

    /// Like `register_http`, with more `weft service register` flags after the protocol
    /// (a version, a health check, …).
    pub fn register_http_with(
        &self,
        node: &str,
        name: &str,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let port = port.to_string();
        let mut args = vec!["--name", name, "--port", &port, "--protocol", "http"];
        args.extend_from_slice(extra);
        self.register(node, &args)
    }

    /// Registers service `source` on `node` (port 1) with an upstream listener for each
    /// `(service, address)` in `upstreams`.
    pub fn register_upstreams(
        &self,
        node: &str,
        source: &str,
        upstreams: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let specs: Vec<String> = upstreams
            .iter()
            .map(|(service, addr)| format!("{service}={addr}"))
            .collect();
        let mut args = vec!["--name", source, "--port", "1"];
        for spec in &specs {
            args.extend(["--upstream", spec.as_str()]);
        }
        self.register(node, &args)
    }

    /// Registers service `source` on `node` with an upstream listener for `service` on
    /// the node's address and `port`; returns that address.
    pub fn upstream_for(
        &self,
        node: &str,
        source: &str,
        service: &str,
        port: u16,
    ) -> anyhow::Result<String> {
        let up = format!("{}:{port}", self.agent(node).ip);
        self.register_upstreams(node, source, &[(service, &up)])?;
        Ok(up)
    }

    /// Registers service `client` on `node` with an upstream listener for `service` on
    /// the node's address and `port`; returns that address.
    pub fn client_upstream(&self, node: &str, service: &str, port: u16) -> anyhow::Result<String> {
        self.upstream_for(node, "client", service, port)
    }

    /// Registers HTTP service `service` on `node` (its 127.0.0.1:`port`) and gives vm-1 a
    /// `client` with an upstream for it on port 19001; returns the upstream address.
    pub fn http_upstream(&self, node: &str, service: &str, port: u16) -> anyhow::Result<String> {
        self.register_http(node, service, port)?;
        self.client_upstream("vm-1", service, 19001)
    }

    /// `http_upstream`, then waits up to 20 s until a GET through the upstream answers 200.
    pub fn reachable_http(&self, node: &str, service: &str, port: u16) -> anyhow::Result<String> {
        let up = self.http_upstream(node, service, port)?;
        eventually_http(
            &format!("{service} reachable"),
            Duration::from_secs(20),
            &up,
            service,
            "/",
            Some(200),
        )?;
        Ok(up)
    }

    /// Waits until `name`'s API answers `/readyz`.
    pub fn wait_ready(&self, name: &str) -> anyhow::Result<()> {
        let api = self.agent(name).api();
        eventually(&format!("{name} ready"), Duration::from_secs(20), || {
            Ok(http_get(&api, "/readyz").ok().map(|_| ()))
        })
    }

    /// Waits up to `timeout` until `name`'s API no longer answers `/readyz` with 200.
    pub fn wait_not_ready(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let api = self.agent(name).api();
        eventually(&format!("{name} not ready"), timeout, || {
            Ok(http_get(&api, "/readyz").is_err().then_some(()))
        })
    }

    /// Starts a bootstrap node and waits until it is ready.
    pub fn bootstrap(&mut self, name: &str, extra: &[&str]) -> anyhow::Result<()> {
        if self.operator_credential.is_none() {
            self.operator_credential = Some(self.data_dir(name).join("admin-credential"));
        }
        let mut args = vec!["--bootstrap"];
        args.extend_from_slice(extra);
        self.spawn(name, &args);
        self.wait_ready(name)
    }

    /// Starts `name` joining through `seed` with a fresh token from the seed.
    pub fn join(&mut self, name: &str, seed: &str, extra: &[&str]) -> anyhow::Result<()> {
        let token = self.agent(seed).token("10m")?;
        let seed_ip = self.agent(seed).ip.to_string();
        let mut args = vec!["--join", &seed_ip, "--token", &token];
        args.extend_from_slice(extra);
        self.spawn(name, &args);
        self.wait_ready(name)
    }

    /// Starts `name` joining through `seed_ip` with a given token and waits until ready.
    pub fn join_with_token(
        &mut self,
        name: &str,
        seed_ip: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        self.spawn(name, &["--join", seed_ip, "--token", token]);
        self.wait_ready(name)
    }

    /// Bootstraps `vm-1` (with `bootstrap_extra`), then joins `vm-2` … `vm-N` through it,
    /// each one ready; membership may still be converging (see `formed`).
    pub fn start_nodes(&mut self, n: usize, bootstrap_extra: &[&str]) -> anyhow::Result<()> {
        self.bootstrap("vm-1", bootstrap_extra)?;
        for i in 2..=n {
            self.join(&format!("vm-{i}"), "vm-1", &[])?;
        }
        Ok(())
    }

    /// Bootstraps `vm-1`, joins `vm-2` … `vm-N` through it and waits until all of them
    /// see all of them alive.
    pub fn formed(&mut self, n: usize) -> anyhow::Result<()> {
        self.formed_with(n, &[])
    }

    /// Like `formed`, with `bootstrap_extra` on vm-1's command line (e.g. `--leaf-ttl`).
    pub fn formed_with(&mut self, n: usize, bootstrap_extra: &[&str]) -> anyhow::Result<()> {
        self.start_nodes(n, bootstrap_extra)?;
        let names: Vec<String> = (1..=n).map(|i| format!("vm-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.wait_all_see_all(&refs, Duration::from_secs(15))
    }

    /// Waits until every agent in `names` lists exactly `names` as alive.
    pub fn wait_all_see_all(&self, names: &[&str], timeout: Duration) -> anyhow::Result<()> {
        self.wait_all_alive(names, names, timeout)
    }

    /// Waits until `observer` reports `node` with status `status` (`failed`, `left`, …).
    pub fn wait_status(
        &self,
        observer: &str,
        node: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let agent = self.agent(observer);
        eventually(&format!("{node} {status} on {observer}"), timeout, || {
            Ok((agent.status_of(node)?.as_deref() == Some(status)).then_some(()))
        })
    }

    /// Waits until `observer` marks `node` revoked in its member list.
    pub fn wait_revoked(
        &self,
        observer: &str,
        node: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let agent = self.agent(observer);
        eventually(&format!("{node} revoked on {observer}"), timeout, || {
            Ok(agent
                .members()?
                .iter()
                .any(|m| m["name"] == node && m["revoked"] == true)
                .then_some(()))
        })
    }

    /// Waits until every agent in `on` lists exactly `names` as alive.
    pub fn wait_all_alive(
        &self,
        on: &[&str],
        names: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        for observer in on {
            let agent = self.agent(observer);
            eventually(&format!("{names:?} alive on {observer}"), timeout, || {
                let members = agent.members()?;
                let alive: Vec<&str> = members
                    .iter()
                    .filter(|m| m["status"] == "alive")
                    .filter_map(|m| m["name"].as_str())
                    .collect();
                Ok(
                    (alive.len() == names.len() && names.iter().all(|n| alive.contains(n)))
                        .then_some(()),
                )
            })?;
        }
        Ok(())
    }

    fn unexpected_errors(&self) -> Vec<String> {
        let mut found = Vec::new();
        for agent in self.agents.values() {
            for line in agent.log_text().lines() {
                if line.contains(" ERROR ") && !self.allowed_errors.iter().any(|a| line.contains(a))
                {
                    found.push(format!("{}: {line}", agent.name));
                }
            }
        }
        found
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in self.agents.values_mut() {
            a.kill();
        }
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        let errors = self.unexpected_errors();
        if !errors.is_empty() && !std::thread::panicking() {
            panic!(
                "agents logged unexpected errors (logs in {}):\n{}",
                self.logs.display(),
                errors.join("\n")
            );
        }
    }
}
