//! Load generators: fixed-rate HTTP (latency from the intended send time, so a stall
//! cannot hide the requests it delayed), new connections per second, one bulk stream,
//! many idle streams, and wrk for closed-loop maximum throughput.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Reads one HTTP/1.1 response (Content-Length framed) into `buf`; fails on non-200.
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

/// Fixed-rate load over `conns` keep-alive connections; returns sorted latencies, each
/// measured from the request's intended send time.
pub fn fixed_rate(
    addr: &str,
    rate: u32,
    conns: u32,
    duration: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let per_conn = Duration::from_secs_f64(f64::from(conns) / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(200);
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let addr = addr.to_owned();
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut s = TcpStream::connect(&addr)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let req = b"GET /bench HTTP/1.1\r\nHost: api\r\n\r\n";
                let mut buf = Vec::new();
                let mut out = Vec::new();
                let offset = per_conn.mul_f64(f64::from(c) / f64::from(conns));
                for i in 0.. {
                    let intended = start + offset + per_conn * i;
                    if intended > start + duration {
                        break;
                    }
                    if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    s.write_all(req)?;
                    read_response(&mut s, &mut buf)?;
                    out.push(intended.elapsed());
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

/// The `p` quantile (0..=1) of sorted latencies, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Closed-loop maximum req/s with wrk (2 threads, `conns` keep-alive connections).
pub fn wrk(addr: &str, conns: u32, duration: Duration) -> anyhow::Result<f64> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{conns}")])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["-H", "Host: api"])
        .arg(format!("http://{addr}/bench"))
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run wrk (run tests/install-deps.sh): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors against {addr}:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk output:\n{text}"))
}

/// Reads `bytes` from one connection to `addr`; returns Gbit/s.
pub fn bulk(addr: &str, bytes: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf)?;
        anyhow::ensure!(n > 0, "bulk stream closed after {got} bytes");
        got += n as u64;
    }
    Ok(got as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9)
}

/// New connections per second: `threads` loops of connect → one request with
/// `Connection: close` → read to EOF → close. Returns (connections/s, failures).
pub fn conn_rate(addr: &str, threads: u32, duration: Duration) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let addr = addr.to_owned();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                let req = b"GET /c HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n";
                let mut buf = Vec::with_capacity(2048);
                while start.elapsed() < duration {
                    let mut one = || -> anyhow::Result<()> {
                        let mut s = TcpStream::connect(&addr)?;
                        s.set_nodelay(true)?;
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        s.write_all(req)?;
                        buf.clear();
                        s.read_to_end(&mut buf)?;
                        anyhow::ensure!(buf.starts_with(b"HTTP/1.1 200"), "bad response");
                        Ok(())
                    };
                    match one() {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for h in handles {
        let (o, f) = h
            .join()
            .map_err(|_| anyhow::anyhow!("conn thread panicked"))?;
        ok += o;
        failed += f;
    }
    Ok((ok as f64 / start.elapsed().as_secs_f64(), failed))
}

/// Opens `n` connections to `addr` and keeps them open until the returned value drops.
pub fn hold(addr: &str, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(b".")?;
            Ok(s)
        })
        .collect()
}
