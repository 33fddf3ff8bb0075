//! The probes: TCP connect, HTTP GET (2xx and 3xx pass; over h2c for services that speak
//! HTTP/2) and the gRPC health protocol (`grpc.health.v1.Health/Check`: SERVING passes).
//! All only ever target this host (enforced when the check is defined) and never run
//! commands.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::catalog::spec::CheckTarget;

/// Why a probe failed (logged when the verdict changes).
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// No answer within the check's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connecting, writing or reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The answer is not an HTTP status line.
    #[error("response is not HTTP")]
    NotHttp,
    /// A status outside 2xx-3xx.
    #[error("HTTP {0}")]
    Status(u16),
    /// The HTTP/2 exchange failed.
    #[error("HTTP/2: {0}")]
    H2(String),
    /// The gRPC health service did not answer SERVING.
    #[error("gRPC health: {0}")]
    NotServing(String),
}

/// Largest answer a probe reads.
const MAX_ANSWER: usize = 4096;

/// Sends `req` over h2c to `addr` and reads the whole answer (at most `MAX_ANSWER`).
async fn h2_exchange(
    addr: std::net::SocketAddr,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<
    (
        hyper::http::response::Parts,
        http_body_util::Collected<bytes::Bytes>,
    ),
    ProbeFailure,
> {
    use http_body_util::BodyExt as _;
    let h2 = |e: hyper::Error| ProbeFailure::H2(e.to_string());
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .map_err(h2)?;
    // The connection task lives as long as this probe (aborted when it returns).
    let driver = AbortOnDrop(tokio::spawn(conn));
    let resp = sender.send_request(req).await.map_err(h2)?;
    let (parts, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| ProbeFailure::H2(e.to_string()))?;
    drop(driver);
    Ok((parts, body))
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `grpc.health.v1.HealthCheckRequest { service }` in a gRPC frame (protobuf field 1,
/// a length-delimited string: the whole message, written by hand for this one shape).
fn health_request(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

/// The answer a SERVING server gives: one uncompressed frame holding
/// `HealthCheckResponse { status: SERVING (1) }`.
const SERVING: [u8; 7] = [0, 0, 0, 0, 2, 0x08, 0x01];

/// Probes once; Ok(()) when the check passes, Err with the reason otherwise.
pub async fn probe(target: &CheckTarget, timeout: Duration) -> Result<(), ProbeFailure> {
    tokio::time::timeout(timeout, probe_inner(target))
        .await
        .map_err(|_| ProbeFailure::Timeout(timeout))?
}

async fn probe_inner(target: &CheckTarget) -> Result<(), ProbeFailure> {
    match target {
        CheckTarget::Tcp(addr) => Ok(TcpStream::connect(addr).await.map(|_| ())?),
        CheckTarget::Grpc { addr, service } => {
            let req = hyper::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("user-agent", "weft-health-check")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    health_request(service),
                )))
                .map_err(|e| ProbeFailure::H2(e.to_string()))?;
            let (parts, body) = h2_exchange(*addr, req).await?;
            let status = body
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .or_else(|| parts.headers.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let message = body.to_bytes();
            match status.as_deref() {
                Some("0") if message.as_ref() == SERVING => Ok(()),
                Some("0") => Err(ProbeFailure::NotServing("status other than SERVING".into())),
                Some(code) => Err(ProbeFailure::NotServing(format!("grpc-status {code}"))),
                None => Err(ProbeFailure::NotServing("no grpc-status".into())),
            }
        }
        CheckTarget::Http {
            addr,
            host,
            path,
            h2: true,
        } => {
            let req = hyper::Request::get(format!("http://{host}{path}"))
                .header("user-agent", "weft-health-check")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .map_err(|e| ProbeFailure::H2(e.to_string()))?;
            let (parts, _) = h2_exchange(*addr, req).await?;
            let code = parts.status.as_u16();
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(ProbeFailure::Status(code))
            }
        }
        CheckTarget::Http {
            addr, host, path, ..
        } => {
            let mut s = TcpStream::connect(addr).await?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: weft-health-check\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await?;
            let mut buf = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let read = s.read(&mut buf[n..]).await?;
                if read == 0 {
                    break;
                }
                n += read;
            }
            let line = std::str::from_utf8(&buf[..n]).map_err(|_| ProbeFailure::NotHttp)?;
            let code: u16 = line
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|c| c.parse().ok())
                .ok_or(ProbeFailure::NotHttp)?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(ProbeFailure::Status(code))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_requests_are_framed_protobuf() {
        assert_eq!(health_request(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            health_request("echo"),
            vec![0, 0, 0, 0, 6, 0x0a, 4, b'e', b'c', b'h', b'o']
        );
        let long = "x".repeat(200);
        let framed = health_request(&long);
        assert_eq!(&framed[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(framed.len(), 5 + 3 + 200);
    }
}
