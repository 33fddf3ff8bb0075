//! The four arrangements every scenario runs against, all in front of the same three
//! backends (HTTP 1 KiB, bulk source, connection sink):
//!
//! * `direct`: the client talks to the backend;
//! * `weft`: client → agent A's upstream listener → QUIC mTLS → agent B → backend;
//! * `stunnel` and `haproxy`: client → TLS client proxy → mutual TLS 1.3 over TCP → TLS
//!   server proxy → backend, two processes each, with ECDSA P-256 certificates from a
//!   CA made here (the same kind of CA and keys weft uses).
//!
//! Each proxy side has its own 127.x.y.z address, as two hosts would.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use weft_tests::{eventually, Cluster, Subnet};

use crate::servers::Server;

/// The backends shared by every arrangement.
pub struct Backends {
    /// HTTP/1.1, 1 KiB responses.
    pub http: Server,
    /// Endless byte source.
    pub source: Server,
    /// Connection sink.
    pub sink: Server,
}

impl Backends {
    /// Starts all three on 127.0.0.1.
    pub fn start() -> anyhow::Result<Self> {
        Ok(Self {
            http: Server::http()?,
            source: Server::source()?,
            sink: Server::sink()?,
        })
    }
}

/// One way of reaching the backends.
pub struct Arrangement {
    /// Shown in tables.
    pub name: &'static str,
    /// Where clients send HTTP (Host: api).
    pub http: String,
    /// Where a client connects to read the bulk source.
    pub source: String,
    /// Where a client connects to hold a connection to the sink.
    pub sink: String,
    /// The proxy processes (CPU and memory are read from these).
    pub pids: Vec<u32>,
    /// What must live as long as the arrangement (agents, proxy processes, temp dirs).
    _keep: Option<Box<dyn std::any::Any>>,
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Client-side and server-side ports of the three tunnels (api, source, sink).
const FRONT_PORTS: [u16; 3] = [20001, 20002, 20003];
const BACK_PORTS: [u16; 3] = [20101, 20102, 20103];

impl Arrangement {
    /// Straight to the backends.
    pub fn direct(b: &Backends) -> Self {
        Self {
            name: "direct",
            http: b.http.addr.to_string(),
            source: b.source.addr.to_string(),
            sink: b.sink.addr.to_string(),
            pids: Vec::new(),
            _keep: None,
        }
    }

    /// Two weft agents; the services are registered on B, the upstreams on A.
    pub fn weft(b: &Backends) -> anyhow::Result<Self> {
        let mut c = Cluster::new("bench-weft-pair");
        c.bootstrap("a", &["--access-log", "off"])?;
        c.join("b", "a", &["--access-log", "off"])?;
        for (name, server, protocol) in [
            ("api", &b.http, "http"),
            ("bulk", &b.source, "tcp"),
            ("hold", &b.sink, "tcp"),
        ] {
            let port = server.addr.port().to_string();
            c.register(
                "b",
                &["--name", name, "--port", &port, "--protocol", protocol],
            )?;
        }
        let ip = c.agent("a").ip;
        let [http, source, sink] = FRONT_PORTS.map(|p| format!("{ip}:{p}"));
        c.register(
            "a",
            &[
                "--name",
                "client",
                "--port",
                "1",
                "--upstream",
                &format!("api={http}"),
                "--upstream",
                &format!("bulk={source}"),
                "--upstream",
                &format!("hold={sink}"),
            ],
        )?;
        let pids = ["a", "b"].iter().filter_map(|n| c.agent(n).pid()).collect();
        let a = Self {
            name: "weft",
            http,
            source,
            sink,
            pids,
            _keep: Some(Box::new(c)),
        };
        a.wait_usable()?;
        Ok(a)
    }

    /// An stunnel client process and an stunnel server process.
    pub fn stunnel(b: &Backends) -> anyhow::Result<Self> {
        let (dir, subnet) = (tempfile::tempdir()?, Subnet::reserve());
        write_certs(dir.path())?;
        let (front, back) = (subnet.ip(1), subnet.ip(2));
        let d = dir.path().display();
        let mut client = format!(
            "foreground = yes\npid =\ndebug = 3\nsyslog = no\noutput = {d}/stunnel-client.log\n"
        );
        let mut server = format!(
            "foreground = yes\npid =\ndebug = 3\nsyslog = no\noutput = {d}/stunnel-server.log\n"
        );
        let backends = [&b.http, &b.source, &b.sink];
        for (i, backend) in backends.iter().enumerate() {
            client.push_str(&format!(
                "[t{i}]\nclient = yes\naccept = {front}:{}\nconnect = {back}:{}\ncert = {d}/client.pem\nkey = {d}/client.key\nCAfile = {d}/ca.pem\nverifyChain = yes\ncheckHost = server\n",
                FRONT_PORTS[i], BACK_PORTS[i]
            ));
            server.push_str(&format!(
                "[t{i}]\naccept = {back}:{}\nconnect = {}\ncert = {d}/server.pem\nkey = {d}/server.key\nCAfile = {d}/ca.pem\nverifyChain = yes\nrequireCert = yes\n",
                BACK_PORTS[i], backend.addr
            ));
        }
        let procs = vec![
            spawn(dir.path(), "stunnel-server.conf", &server, "stunnel", &[])?,
            spawn(dir.path(), "stunnel-client.conf", &client, "stunnel", &[])?,
        ];
        Self::proxied("stunnel", front, procs, dir, subnet)
    }

    /// An haproxy (TCP mode) client process and server process.
    pub fn haproxy(b: &Backends) -> anyhow::Result<Self> {
        let (dir, subnet) = (tempfile::tempdir()?, Subnet::reserve());
        write_certs(dir.path())?;
        let (front, back) = (subnet.ip(1), subnet.ip(2));
        let d = dir.path().display();
        let head = "global\n    maxconn 8000\n    nbthread 2\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n";
        let (mut client, mut server) = (head.to_owned(), head.to_owned());
        let backends = [&b.http, &b.source, &b.sink];
        for (i, backend) in backends.iter().enumerate() {
            client.push_str(&format!(
                "listen t{i}\n    bind {front}:{}\n    server s {back}:{} ssl crt {d}/client.combined ca-file {d}/ca.pem verify required sni str(server) verifyhost server\n",
                FRONT_PORTS[i], BACK_PORTS[i]
            ));
            server.push_str(&format!(
                "listen t{i}\n    bind {back}:{} ssl crt {d}/server.combined ca-file {d}/ca.pem verify required\n    server b {}\n",
                BACK_PORTS[i], backend.addr
            ));
        }
        let procs = vec![
            spawn(
                dir.path(),
                "haproxy-server.cfg",
                &server,
                "haproxy",
                &["-db", "-f"],
            )?,
            spawn(
                dir.path(),
                "haproxy-client.cfg",
                &client,
                "haproxy",
                &["-db", "-f"],
            )?,
        ];
        Self::proxied("haproxy", front, procs, dir, subnet)
    }

    fn proxied(
        name: &'static str,
        front: std::net::Ipv4Addr,
        procs: Vec<Proc>,
        dir: tempfile::TempDir,
        subnet: Subnet,
    ) -> anyhow::Result<Self> {
        let [http, source, sink] = FRONT_PORTS.map(|p| format!("{front}:{p}"));
        let logs = dir.path().to_owned();
        let a = Self {
            name,
            http,
            source,
            sink,
            pids: procs.iter().map(|p| p.0.id()).collect(),
            _keep: Some(Box::new((procs, dir, subnet))),
        };
        if let Err(e) = a.wait_usable() {
            let mut out = String::new();
            for entry in std::fs::read_dir(&logs)?.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|x| x == "out" || x == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    out.push_str(&format!("\n--- {}\n{text}", path.display()));
                }
            }
            anyhow::bail!("{e:#}{out}");
        }
        Ok(a)
    }

    /// Waits until an HTTP request and a bulk read go through.
    fn wait_usable(&self) -> anyhow::Result<()> {
        eventually(
            &format!("{} arrangement usable", self.name),
            Duration::from_secs(30),
            || {
                let ok = weft_tests::backends::http_get_host(&self.http, "api", "/")
                    .is_ok_and(|r| r.0 == 200)
                    && crate::load::bulk(&self.source, 1 << 20).is_ok();
                Ok(ok.then_some(()))
            },
        )
    }
}

fn spawn(
    dir: &Path,
    file: &str,
    config: &str,
    program: &str,
    args: &[&str],
) -> anyhow::Result<Proc> {
    let path = dir.join(file);
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join(format!("{file}.out")))?;
    let child = Command::new(program)
        .args(args)
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {program} (run tests/install-deps.sh): {e}"))?;
    Ok(Proc(child))
}

/// A P-256 CA and two leaves (`server`, `client`), as PEM files plus key+cert bundles.
fn write_certs(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    for name in ["server", "client"] {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::new(vec![name.to_owned()])?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())?;
        std::fs::write(
            dir.join(format!("{name}.combined")),
            format!("{}{}", cert.pem(), key.serialize_pem()),
        )?;
    }
    Ok(())
}
