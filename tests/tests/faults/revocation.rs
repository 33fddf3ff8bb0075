//! Revocation of a node that is in the middle of talking (scenario 6): a tunnel through
//! the node is open when it is revoked. Asserts that the open connection is closed within
//! 5 s of the revoke — about a gossip round after the revocation reaches the peer — and
//! not merely that new handshakes are refused.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use weft_tests::backends::Backend;
use weft_tests::{eventually, Cluster};

use crate::common::report;

/// Scenario 6: a node revoked while it holds an open tunnel: the connection carrying it
/// is closed within about a gossip round of the revocation reaching the peer, not only
/// new handshakes refused.
#[test]
fn revocation_closes_open_connections() -> anyhow::Result<()> {
    let mut c = Cluster::new("revocation_closes_open_connections");
    c.formed(3)?;
    let echo = Backend::echo();
    c.register(
        "vm-2",
        &["--name", "echo", "--port", &echo.port().to_string()],
    )?;
    let up = c.client_upstream("vm-3", "echo", 19002)?;
    let mut tunnel = eventually(
        "tunnel through vm-3 to vm-2",
        Duration::from_secs(20),
        || {
            let Ok(mut s) = std::net::TcpStream::connect(&up) else {
                return Ok(None);
            };
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            Ok(s.read_exact(&mut buf)
                .ok()
                .filter(|_| &buf == b"ping")
                .map(|_| s))
        },
    )?;
    tunnel.set_read_timeout(Some(Duration::from_secs(15)))?;
    let t = Instant::now();
    c.cli_ok("vm-1", &["node", "revoke", "vm-3"])?;
    c.wait_revoked("vm-2", "vm-3", Duration::from_secs(10))?;
    let seen = t.elapsed();
    // The tunnel ends: EOF or reset, well before QUIC's 10 s idle timeout (keep-alives
    // would hold a live connection open for ever).
    let mut buf = [0u8; 16];
    let end = tunnel.read(&mut buf);
    let closed = t.elapsed();
    let ok = matches!(end, Ok(0) | Err(_)) && closed < Duration::from_secs(5);
    report(
        "6 revoked node's open connections",
        if ok { "pass" } else { "FAIL" },
        &format!("revocation seen on the peer after {seen:.2?}; open tunnel closed {closed:.2?} after the revoke ({end:?})"),
    );
    assert!(
        ok,
        "tunnel still open {closed:?} after the revocation: {end:?}"
    );
    c.allow_error("revoked");
    Ok(())
}
