//! The backends every arrangement forwards to, on std threads: an HTTP/1.1 server that
//! answers every request with 1 KiB (keep-alive, honours `Connection: close`), a source
//! that streams bytes until the client hangs up (bulk throughput), and a sink that holds
//! connections open and counts them (concurrent streams).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One running backend; stops accepting when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted and still open (sink) or requests served (HTTP).
    pub count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(handler: fn(TcpStream, &AtomicU64)) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (s, c) = (stop.clone(), count.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let c = c.clone();
                let _ = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || handler(conn, &c));
            }
        });
        Ok(Self { addr, count, stop })
    }

    /// HTTP/1.1, 1 KiB body per request.
    pub fn http() -> anyhow::Result<Self> {
        Self::start(serve_http)
    }

    /// Streams 64 KiB writes of zeros until the peer closes.
    pub fn source() -> anyhow::Result<Self> {
        Self::start(|mut conn, _| {
            let chunk = vec![0u8; 64 * 1024];
            while conn.write_all(&chunk).is_ok() {}
        })
    }

    /// Holds each connection open until the peer closes; `count` is the number open.
    pub fn sink() -> anyhow::Result<Self> {
        Self::start(|mut conn, open| {
            open.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 256];
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            open.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve_http(mut conn: TcpStream, served: &AtomicU64) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let body = [b'x'; 1024];
    let mut buf = [0u8; 4096];
    let mut pending = Vec::new();
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let close = String::from_utf8_lossy(&pending[..end])
                .to_ascii_lowercase()
                .contains("connection: close");
            pending.drain(..end + 4);
            served.fetch_add(1, Ordering::Relaxed);
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n",
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            )
            .into_bytes();
            resp.extend_from_slice(&body);
            if conn.write_all(&resp).is_err() || close {
                return;
            }
        }
    }
}
