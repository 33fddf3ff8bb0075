//! Small real backends for data-plane tests: an HTTP/1.1 server that names itself in
//! every response and counts requests, and a TCP echo server that echoes until EOF (so
//! half-close is observable). Each runs on std threads and stops on `stop()` or drop.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running backend.
pub struct Backend {
    /// Where it listens (127.0.0.1, ephemeral port).
    pub addr: SocketAddr,
    /// Requests (HTTP) or connections (TCP) served.
    pub hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests or connections served so far.
    pub fn count(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops like a crashed process: closes the listening socket (new connections are
    /// refused) and every open connection.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn start(
        handler: impl Fn(TcpStream, &AtomicU64, &AtomicBool) + Send + Sync + 'static,
        port: u16,
    ) -> Self {
        Self::start_on(handler, "127.0.0.1", port)
    }

    fn start_on(
        handler: impl Fn(TcpStream, &AtomicU64, &AtomicBool) + Send + Sync + 'static,
        ip: &str,
        port: u16,
    ) -> Self {
        let listener =
            TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("backend bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("backend addr: {e}"));
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (h, s, open) = (hits.clone(), stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    open.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                }
                let (h, s, handler) = (h.clone(), s.clone(), handler.clone());
                std::thread::spawn(move || handler(conn, &h, &s));
            }
        });
        Self {
            addr,
            hits,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    /// An HTTP/1.1 server answering `200 hello from NAME <path>` (keep-alive aware).
    pub fn http(name: &str) -> Self {
        Self::http_on(name, 0)
    }

    /// The same on a given port (0: any).
    pub fn http_on(name: &str, port: u16) -> Self {
        Self::http_failing(name, port, 500, Arc::new(AtomicU64::new(0)))
    }

    /// An HTTP server that answers `fail_status` to `fail_percent` of requests (exactly:
    /// `fail_percent` of every 100 consecutive requests, never two in a row below 50 %;
    /// changeable live).
    pub fn http_failing(
        name: &str,
        port: u16,
        fail_status: u16,
        fail_percent: Arc<AtomicU64>,
    ) -> Self {
        Self::http_behaving(name, port, fail_status, fail_percent, Arc::default())
    }

    /// Like `http_failing`, and every answer (but `/health`) waits `delay_ms` first
    /// (changeable live).
    pub fn http_behaving(
        name: &str,
        port: u16,
        fail_status: u16,
        fail_percent: Arc<AtomicU64>,
        delay_ms: Arc<AtomicU64>,
    ) -> Self {
        let name = name.to_owned();
        Self::start(
            move |conn, hits, stop| {
                serve_http(
                    conn,
                    &name,
                    hits,
                    stop,
                    fail_status,
                    &fail_percent,
                    &delay_ms,
                )
            },
            port,
        )
    }

    /// An HTTP server like `http`, on `ip:port` (e.g. 0.0.0.0: reachable from other hosts
    /// too, as an app bound to every address is).
    pub fn http_on_ip(name: &str, ip: &str, port: u16) -> Self {
        let name = name.to_owned();
        let fail = Arc::new(AtomicU64::new(0));
        let delay = Arc::new(AtomicU64::new(0));
        Self::start_on(
            move |conn, hits, stop| serve_http(conn, &name, hits, stop, 500, &fail, &delay),
            ip,
            port,
        )
    }

    /// A TCP echo server: echoes everything, then half-closes when the client does.
    pub fn echo() -> Self {
        Self::start(
            |mut conn, hits, _| {
                hits.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 8192];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            },
            0,
        )
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_http(
    conn: TcpStream,
    name: &str,
    hits: &AtomicU64,
    stop: &AtomicBool,
    fail_status: u16,
    fail_percent: &AtomicU64,
    delay_ms: &AtomicU64,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if l == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut status = "200 OK".to_owned();
        if path != "/health" {
            let delay = delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
            let n = hits.fetch_add(1, Ordering::SeqCst);
            // Spread failures over each block of 100 (37 is coprime with 100).
            if (n * 37) % 100 < fail_percent.load(Ordering::SeqCst) {
                status = format!("{fail_status} Failing");
            }
        }
        let text = format!("hello from {name} {path} {}\n", body.len());
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(resp.as_bytes()).is_err() || close || stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Sends one raw HTTP/1.1 request to `addr` and returns (status, headers+body text).
pub fn http_raw(addr: &str, request: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status in {out:?}"))?;
    Ok((status, out))
}

/// GET `path` on `addr` with `Host: host` (Connection: close).
pub fn http_get_host(addr: &str, host: &str, target: &str) -> anyhow::Result<(u16, String)> {
    http_raw(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// An HTTP/2 GET with prior knowledge (h2c) of `http://{authority}{path}` on `addr`;
/// returns the status and the body.
pub async fn h2c_request(addr: &str, authority: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt as _;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(format!("http://{authority}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
