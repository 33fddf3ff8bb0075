//! Every HTTP a microservice speaks, through the mesh, with clients and servers nobody
//! here wrote: an nginx that speaks only h2c (`protocol = "http2"`) driven by h2load and
//! by a plain HTTP/1.1 client, a Python grpcio server and client (`protocol = "grpc"`)
//! with unary and server-streaming calls, trailers and an error status, and a Python
//! `websockets` echo (an `http` service, `Upgrade` through the mesh) with 1 000 messages.
//! Also 1 GiB uploaded and downloaded through two agents (curl and a Python server), with
//! the agents' memory growth bounded: bodies stream. Needs `tests/install-deps.sh`
//! (nginx-light, nghttp2-client, python3-grpcio, python3-websockets, curl). HTTPS health
//! checks against an nginx serving TLS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_tests::{eventually, Cluster};

/// A process this test started, killed when the test ends (even when it fails).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One of the scripts in `tests/clients/`.
fn client_script(name: &str) -> String {
    format!("{}/clients/{name}.py", env!("CARGO_MANIFEST_DIR"))
}

/// Starts a Python server script (Debian's python3, which has the packages the install
/// script adds).
fn python_server(script: &str, args: &[&str]) -> anyhow::Result<Proc> {
    let child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

/// Waits until vm-1 sees `service`'s instance on vm-2 passing its health check.
fn wait_passing(c: &Cluster, service: &str) -> anyhow::Result<()> {
    let api = c.agent("vm-1").api();
    eventually(
        &format!("{service} passing"),
        Duration::from_secs(20),
        || {
            let v: Vec<serde_json::Value> =
                serde_json::from_str(&weft_tests::http_get(&api, "/v1/services")?)?;
            Ok(v.iter()
                .filter(|s| s["service"] == service)
                .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
                .any(|i| i["node"] == "vm-2" && i["health"] == "passing")
                .then_some(()))
        },
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// nginx (one worker, files in `dir`) with `http` directives and one `server` block.
fn nginx(dir: &Path, http: &str, server: &str) -> anyhow::Result<Proc> {
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  {http}\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n{server}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .args(["-p", &dir.to_string_lossy(), "-c", &path.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

/// nginx on 127.0.0.1:`port` answering every request over HTTP/2 only (h2c, prior
/// knowledge: an HTTP/1.1 request gets no HTTP/1.1 answer).
fn nginx_h2c(dir: &Path, port: u16) -> anyhow::Result<Proc> {
    // nginx ends a connection after 1 000 requests (GOAWAY), which the mesh must handle;
    // a measurement run lifts that so that h2load (which does not reconnect) can go on.
    let keepalive = if std::env::var_os("WEFT_H2LOAD_REQUESTS").is_some() {
        "keepalive_requests 1000000;"
    } else {
        ""
    };
    nginx(
        dir,
        keepalive,
        &format!(
            "    listen 127.0.0.1:{port} http2;\n    location / {{ return 200 \"h2c only\\n\"; }}"
        ),
    )
}

#[test]
fn an_h2c_only_nginx_behind_the_mesh() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let _nginx = nginx_h2c(dir.path(), port)?;
    let mut c = Cluster::new("an_h2c_only_nginx_behind_the_mesh");
    c.formed(2)?;
    let p = port.to_string();
    let check = format!("http://127.0.0.1:{port}/");
    c.register(
        "vm-2",
        &[
            "--name",
            "web",
            "--port",
            &p,
            "--protocol",
            "http2",
            "--check-http",
            &check,
            "--check-interval",
            "1s",
        ],
    )?;
    // The HTTP check speaks h2c to this server (HTTP/1.1 would fail it).
    wait_passing(&c, "web")?;
    let up = c.client_upstream("vm-1", "web", 19001)?;
    // An HTTP/1.1 client: the mesh speaks h2c to nginx for it.
    let (status, body) = eventually(
        "web answers through the mesh",
        Duration::from_secs(20),
        || {
            Ok(weft_tests::backends::http_get_host(&up, "web", "/")
                .ok()
                .filter(|r| r.0 == 200))
        },
    )?;
    assert_eq!(status, 200);
    assert!(body.contains("h2c only"), "{body}");
    // h2load: h2c prior knowledge from the client, 2 000 requests on 4 connections
    // (WEFT_H2LOAD_REQUESTS=N for a measurement, which also runs it against nginx direct;
    // BENCHMARKS.md has the figures).
    let n: u32 = std::env::var("WEFT_H2LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let h2load = |target: &str| {
        Command::new("h2load")
            .args(["-n", &n.to_string(), "-c", "4", "-m", "10", target])
            .output()
    };
    if n != 2000 {
        let direct = h2load(&format!("http://127.0.0.1:{port}/"))?;
        println!("direct:\n{}", String::from_utf8_lossy(&direct.stdout));
    }
    let out = h2load(&format!("http://{up}/"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("through the mesh:\n{text}");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{n} succeeded, 0 failed"))
            && text.contains(&format!("status codes: {n} 2xx")),
        "{text}"
    );
    Ok(())
}

#[test]
fn grpc_through_the_mesh_keeps_trailers_and_status() -> anyhow::Result<()> {
    let script = client_script("grpc_echo");
    let port = free_port()?;
    let _server = python_server(&script, &["server", &port.to_string()])?;
    let mut c = Cluster::new("grpc_through_the_mesh_keeps_trailers_and_status");
    c.formed(2)?;
    let p = port.to_string();
    let check = format!("127.0.0.1:{port}");
    c.register(
        "vm-2",
        &[
            "--name",
            "echo",
            "--port",
            &p,
            "--protocol",
            "grpc",
            "--check-grpc",
            &check,
            "--check-interval",
            "1s",
        ],
    )?;
    // The gRPC health check (grpc.health.v1) passes.
    wait_passing(&c, "echo")?;
    let up = c.client_upstream("vm-1", "echo", 19001)?;
    let out = eventually("the gRPC client's checks", Duration::from_secs(30), || {
        let out = Command::new("/usr/bin/python3")
            .args([script.as_str(), "client", &up])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok((out.status.success() && text.lines().count() == 4).then_some(text))
    })?;
    println!("{out}");
    assert!(out.contains("unary hello trailer=kept"), "{out}");
    assert!(out.contains("stream 5 tick-4"), "{out}");
    assert!(
        out.contains("fail NOT_FOUND no such thing: x trailer=kept"),
        "{out}"
    );
    // UNAVAILABLE (the server did not take the call) was retried by the mesh.
    assert!(out.contains("flaky retried"), "{out}");
    // The outcome in metrics is grpc-status, not the HTTP 200 every call has.
    let metrics = weft_tests::http_get(&c.agent("vm-1").api(), "/metrics")?;
    for code in ["grpc-ok", "grpc-not_found"] {
        assert!(
            metrics.contains(&format!("code=\"{code}\"")),
            "no {code} in /metrics"
        );
    }
    assert!(metrics.contains("weft_retries_total"), "no retry counted");
    // WEFT_PROTO_BENCH=N: N unary calls direct and through the mesh (BENCHMARKS.md).
    if let Some(n) = bench_count() {
        for (label, addr) in [
            ("direct", check.as_str()),
            ("through the mesh", up.as_str()),
        ] {
            let out = Command::new("/usr/bin/python3")
                .args([script.as_str(), "bench", addr, &n.to_string()])
                .output()?;
            println!(
                "grpc {label}: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
    }
    Ok(())
}

/// `WEFT_PROTO_BENCH=N` asks the gRPC and WebSocket tests to measure N calls or messages
/// direct and through the mesh, and print both.
fn bench_count() -> Option<u32> {
    std::env::var("WEFT_PROTO_BENCH").ok()?.parse().ok()
}

#[test]
fn a_websocket_through_the_mesh() -> anyhow::Result<()> {
    let script = client_script("ws_echo");
    let port = free_port()?;
    let _server = python_server(&script, &["server", &port.to_string()])?;
    let mut c = Cluster::new("a_websocket_through_the_mesh");
    c.formed(2)?;
    c.register_http("vm-2", "chat", port)?;
    let up = c.client_upstream("vm-1", "chat", 19001)?;
    let out = eventually("1 000 messages echoed", Duration::from_secs(30), || {
        let out = Command::new("/usr/bin/python3")
            .args([script.as_str(), "client", &up, "1000"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(out.status.success().then_some(text))
    })?;
    println!("{out}");
    assert!(out.contains("echoed 1000 of 1000"), "{out}");
    if let Some(n) = bench_count() {
        let direct = format!("127.0.0.1:{port}");
        for (label, addr) in [
            ("direct", direct.as_str()),
            ("through the mesh", up.as_str()),
        ] {
            let out = Command::new("/usr/bin/python3")
                .args([script.as_str(), "client", addr, &n.to_string()])
                .output()?;
            println!(
                "websocket {label}: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
    }
    Ok(())
}

/// Resident set size of process `pid`, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

#[test]
fn a_gigabyte_up_and_down_streams_through_the_mesh() -> anyhow::Result<()> {
    let script = client_script("bulk_http");
    let port = free_port()?;
    let _server = python_server(&script, &[&port.to_string()])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("upload");
    let size: u64 = 1 << 30;
    std::fs::File::create(&file)?.set_len(size)?;
    let mut c = Cluster::new("a_gigabyte_up_and_down_streams_through_the_mesh");
    c.formed(2)?;
    c.register_http("vm-2", "bulk", port)?;
    let up = c.client_upstream("vm-1", "bulk", 19001)?;
    eventually("bulk answers", Duration::from_secs(20), || {
        Ok(weft_tests::backends::http_get_host(&up, "bulk", "/bytes/1")
            .ok()
            .filter(|r| r.0 == 200))
    })?;
    let pids: Vec<u32> = ["vm-1", "vm-2"]
        .iter()
        .filter_map(|n| c.agent(n).pid())
        .collect();
    let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect::<Result<_, _>>()?;
    let peak = std::sync::Arc::new(std::sync::Mutex::new(before.clone()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pids) = (peak.clone(), stop.clone(), pids.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (i, p) in pids.iter().enumerate() {
                    if let Ok(r) = rss_kib(*p) {
                        let mut peak = peak.lock().unwrap_or_else(|e| e.into_inner());
                        peak[i] = peak[i].max(r);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = std::time::Instant::now();
    let upload = Command::new("curl")
        .args(["-sS", "-T", &file.to_string_lossy(), "-H", "Host: bulk"])
        .arg(format!("http://{up}/upload"))
        .output()?;
    let up_secs = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let download = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-H",
            "Host: bulk",
        ])
        .arg(format!("http://{up}/bytes/{size}"))
        .output()?;
    let down_secs = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = sampler.join();
    let peak = peak.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let growth_mib: Vec<u64> = peak
        .iter()
        .zip(&before)
        .map(|(p, b)| (p - b) / 1024)
        .collect();
    let uploaded = String::from_utf8_lossy(&upload.stdout).trim().to_owned();
    let downloaded = String::from_utf8_lossy(&download.stdout).trim().to_owned();
    println!(
        "1 GiB up in {up_secs:.1} s ({uploaded} bytes at the server), down in {down_secs:.1} s ({downloaded} bytes); agent RSS growth {growth_mib:?} MiB"
    );
    assert_eq!(
        uploaded,
        size.to_string(),
        "{}",
        String::from_utf8_lossy(&upload.stderr)
    );
    assert_eq!(
        downloaded,
        size.to_string(),
        "{}",
        String::from_utf8_lossy(&download.stderr)
    );
    assert!(
        growth_mib.iter().all(|g| *g < 32),
        "agent RSS grew {growth_mib:?} MiB moving 1 GiB each way"
    );
    Ok(())
}

#[test]
fn a_silent_instance_is_answered_504_after_the_default_request_timeout() -> anyhow::Result<()> {
    // An instance that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = silent.local_addr()?.port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in silent.incoming().flatten() {
            keep.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        }
    });
    let mut c = Cluster::new("a_silent_instance_is_answered_504_after_the_default_request_timeout");
    c.formed_with(2, &["--request-timeout", "2s"])?;
    c.register_http("vm-2", "slow", port)?;
    let up = c.client_upstream("vm-1", "slow", 19001)?;
    let (status, body) = eventually("slow routable", Duration::from_secs(20), || {
        let started = std::time::Instant::now();
        let r = weft_tests::backends::http_get_host(&up, "slow", "/")?;
        Ok((r.0 == 504 && started.elapsed() < Duration::from_secs(6)).then_some(r))
    })?;
    assert_eq!(status, 504);
    assert!(body.contains("timed out after 2s"), "{body}");
    Ok(())
}

/// A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`
/// (`{prefix}ca.pem`, `{prefix}server.pem`, `{prefix}server.key`).
fn write_tls_files(dir: &Path, prefix: &str) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{prefix}test CA"));
    let ca_cert = ca.self_signed(&ca_key)?;
    std::fs::write(dir.join(format!("{prefix}ca.pem")), ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let cert = p.signed_by(&key, &issuer)?;
    std::fs::write(dir.join(format!("{prefix}server.pem")), cert.pem())?;
    std::fs::write(dir.join(format!("{prefix}server.key")), key.serialize_pem())?;
    Ok(())
}

/// nginx serving HTTPS (HTTP/1.1) on 127.0.0.1:`port` with `server.pem`.
fn nginx_https(dir: &Path, port: u16) -> anyhow::Result<Proc> {
    let d = dir.display();
    nginx(
        dir,
        "",
        &format!(
            "    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/server.pem;\n\
             ssl_certificate_key {d}/server.key;\n    location / {{ return 200 \"tls\\n\"; }}"
        ),
    )
}

/// The health of `service`'s instance on vm-2 as vm-1 sees it.
fn health_of(c: &Cluster, service: &str) -> anyhow::Result<Option<String>> {
    let v: Vec<serde_json::Value> = serde_json::from_str(&weft_tests::http_get(
        &c.agent("vm-1").api(),
        "/v1/services",
    )?)?;
    Ok(v.iter()
        .filter(|s| s["service"] == service)
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .find(|i| i["node"] == "vm-2")
        .and_then(|i| i["health"].as_str().map(str::to_owned)))
}

/// HTTPS health checks against a real nginx: trusted through the CA file, refused with
/// another CA's file, accepted with `tls_skip_verify`; an https:// check with neither is
/// refused at registration with the fix named.
#[test]
fn https_health_checks_trust_what_they_are_told_to() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_tls_files(dir.path(), "")?;
    write_tls_files(dir.path(), "other-")?;
    let port = free_port()?;
    let _nginx = nginx_https(dir.path(), port)?;
    let mut c = Cluster::new("https_health_checks_trust_what_they_are_told_to");
    c.formed(2)?;
    let url = format!("https://127.0.0.1:{port}/");
    let p = port.to_string();
    let ca = dir.path().join("ca.pem").display().to_string();
    let other = dir.path().join("other-ca.pem").display().to_string();
    let base = |name: &'static str| {
        vec![
            "--name",
            name,
            "--port",
            &p,
            "--protocol",
            "http",
            "--check-http",
            &url,
            "--check-interval",
            "500ms",
            "--check-timeout",
            "400ms",
        ]
    };
    let mut trusted = base("secure");
    trusted.extend(["--check-ca-file", &ca]);
    c.register("vm-2", &trusted)?;
    let mut wrong = base("wrongca");
    wrong.extend(["--check-ca-file", &other]);
    c.register("vm-2", &wrong)?;
    let mut skip = base("skipverify");
    skip.push("--check-tls-skip-verify");
    c.register("vm-2", &skip)?;

    wait_passing(&c, "secure")?;
    wait_passing(&c, "skipverify")?;
    // The same server, checked against a CA that did not sign it, never passes.
    std::thread::sleep(Duration::from_secs(3));
    let wrong_health = health_of(&c, "wrongca")?;
    assert!(
        wrong_health.as_deref().is_some_and(|h| h != "passing"),
        "a certificate from another CA passed: {wrong_health:?}"
    );
    assert_eq!(health_of(&c, "secure")?.as_deref(), Some("passing"));

    let out = c.agent("vm-2").cli(&[
        "service",
        "register",
        "--name",
        "bare",
        "--port",
        &p,
        "--check-http",
        &url,
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "registered without a trust setting");
    assert!(
        text.contains("ca_file") && text.contains("tls_skip_verify"),
        "the refusal names the fix: {text}"
    );
    Ok(())
}
