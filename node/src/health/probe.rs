//! The probes: TCP connect, and HTTP GET (2xx and 3xx pass). Both only ever target this
//! host (enforced when the check is defined) and never run commands.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::catalog::spec::CheckTarget;

/// Probes once; Ok(()) when the check passes, Err with the reason otherwise.
pub async fn probe(target: &CheckTarget, timeout: Duration) -> Result<(), String> {
    tokio::time::timeout(timeout, probe_inner(target))
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))?
}

async fn probe_inner(target: &CheckTarget) -> Result<(), String> {
    match target {
        CheckTarget::Tcp(addr) => TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        CheckTarget::Http { addr, host, path } => {
            let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: weft-health-check\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let read = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
                if read == 0 {
                    break;
                }
                n += read;
            }
            let line =
                std::str::from_utf8(&buf[..n]).map_err(|_| "response is not HTTP".to_owned())?;
            let code: u16 = line
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| "response is not HTTP".to_owned())?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP {code}"))
            }
        }
    }
}
