//! The probes: TCP connect, and HTTP GET (2xx and 3xx pass). Both only ever target this
//! host (enforced when the check is defined) and never run commands.

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
}

/// Probes once; Ok(()) when the check passes, Err with the reason otherwise.
pub async fn probe(target: &CheckTarget, timeout: Duration) -> Result<(), ProbeFailure> {
    tokio::time::timeout(timeout, probe_inner(target))
        .await
        .map_err(|_| ProbeFailure::Timeout(timeout))?
}

async fn probe_inner(target: &CheckTarget) -> Result<(), ProbeFailure> {
    match target {
        CheckTarget::Tcp(addr) => Ok(TcpStream::connect(addr).await.map(|_| ())?),
        CheckTarget::Http { addr, host, path } => {
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
