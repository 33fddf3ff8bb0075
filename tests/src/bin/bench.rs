//! Benchmarks that compare weft with a baseline measured in the same run (never an
//! absolute number baked into a test). First scenarios of the benchmark harness:
//!
//! * `latency`: HTTP/1.1 keep-alive, 1 KiB responses, a fixed request rate over 4
//!   connections, latency measured from each request's *intended* send time (no
//!   coordinated omission): direct to the backend vs through two weft agents.
//! * `startup`: agent start → `/readyz` answers.
//!
//! Usage: `cargo build --release -p weft-node && cargo run --release -p weft-tests --bin bench -- [latency|startup|all] [--quick]`

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_tests::{eventually, http_get, Cluster};

/// A keep-alive HTTP backend answering every request with 1 KiB.
fn backend() -> anyhow::Result<(SocketAddr, Arc<AtomicBool>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let body = vec![b'x'; 1024];
        for conn in listener.incoming() {
            if s.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let mut buf = [0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                        if conn
                            .write_all(head.as_bytes())
                            .and_then(|_| conn.write_all(&body))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok((addr, stop))
}

fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            anyhow::ensure!(head.starts_with("http/1.1 200"), "bad response: {head}");
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk)?;
                anyhow::ensure!(n > 0, "connection closed");
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(());
        }
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Fixed-rate load over `conns` keep-alive connections; latencies from intended send time.
fn load(
    addr: &str,
    host: &str,
    rate: u32,
    conns: u32,
    duration: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let per_conn = Duration::from_secs_f64(f64::from(conns) / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(200);
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, host) = (addr.to_owned(), host.to_owned());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut s = TcpStream::connect(&addr)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let req = format!("GET /bench HTTP/1.1\r\nHost: {host}\r\n\r\n");
                let mut buf = Vec::new();
                let mut out = Vec::new();
                let offset = per_conn.mul_f64(f64::from(c) / f64::from(conns));
                let mut i = 0u32;
                loop {
                    let intended = start + offset + per_conn * i;
                    if intended > start + duration {
                        break;
                    }
                    if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    s.write_all(req.as_bytes())?;
                    read_response(&mut s, &mut buf)?;
                    out.push(intended.elapsed());
                    i += 1;
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??,
        );
    }
    all.sort();
    Ok(all)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn latency(quick: bool) -> anyhow::Result<()> {
    let (rate, secs) = if quick { (200, 2) } else { (1000, 20) };
    let (backend_addr, stop) = backend()?;
    let mut c = Cluster::new("bench-latency");
    c.bootstrap("a", &["--access-log", "off"])?;
    c.join("b", "a", &["--access-log", "off"])?;
    c.register(
        "b",
        &[
            "--name",
            "api",
            "--port",
            &backend_addr.port().to_string(),
            "--protocol",
            "http",
        ],
    )?;
    let up = format!("{}:19001", c.agent("a").ip);
    c.register(
        "a",
        &[
            "--name",
            "client",
            "--port",
            "1",
            "--upstream",
            &format!("api={up}"),
        ],
    )?;
    eventually("mesh path ready", Duration::from_secs(20), || {
        Ok(weft_tests::backends::http_get_host(&up, "api", "/")
            .ok()
            .filter(|r| r.0 == 200))
    })?;
    // Warm both paths, then measure.
    load(
        &backend_addr.to_string(),
        "api",
        200,
        4,
        Duration::from_secs(1),
    )?;
    load(&up, "api", 200, 4, Duration::from_secs(1))?;
    let duration = Duration::from_secs(secs);
    println!("\nscenario latency: HTTP/1.1 keep-alive, 1 KiB responses, {rate} req/s over 4 connections for {secs} s");
    println!("latency from intended send time (no coordinated omission), milliseconds\n");
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "arrangement", "p50", "p90", "p99", "max", "count"
    );
    let direct = load(&backend_addr.to_string(), "api", rate, 4, duration)?;
    let mesh = load(&up, "api", rate, 4, duration)?;
    for (name, l) in [("direct", &direct), ("weft (2 agents, QUIC mTLS)", &mesh)] {
        println!(
            "{:<28} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8}",
            name,
            pct(l, 0.5),
            pct(l, 0.9),
            pct(l, 0.99),
            pct(l, 1.0),
            l.len()
        );
    }
    println!(
        "\nweft adds: p50 +{:.3} ms, p90 +{:.3} ms, p99 +{:.3} ms over direct (same run)",
        pct(&mesh, 0.5) - pct(&direct, 0.5),
        pct(&mesh, 0.9) - pct(&direct, 0.9),
        pct(&mesh, 0.99) - pct(&direct, 0.99)
    );
    stop.store(true, Ordering::SeqCst);
    Ok(())
}

fn startup(quick: bool) -> anyhow::Result<()> {
    let runs = if quick { 2 } else { 5 };
    let mut times = Vec::new();
    for i in 0..runs {
        let mut c = Cluster::new(&format!("bench-startup-{i}"));
        let t = Instant::now();
        c.spawn("a", &["--bootstrap", "--access-log", "off"]);
        let api = c.agent("a").api();
        eventually("ready", Duration::from_secs(20), || {
            Ok(http_get(&api, "/readyz").ok())
        })?;
        times.push(t.elapsed());
    }
    times.sort();
    println!("\nscenario startup: agent start (bootstrap, new CA) → /readyz, {runs} runs");
    println!(
        "median {:.1} ms, max {:.1} ms",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let scenario = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
        .unwrap_or("all");
    match scenario {
        "latency" => latency(quick),
        "startup" => startup(quick),
        "all" => {
            latency(quick)?;
            startup(quick)
        }
        other => anyhow::bail!("unknown scenario {other:?}: latency, startup or all"),
    }
}
