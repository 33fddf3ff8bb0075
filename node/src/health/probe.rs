//! The probes: TCP connect, HTTP or HTTPS GET (2xx and 3xx pass; HTTP/2 for services that
//! speak it: h2c, or h2 over TLS) and the gRPC health protocol
//! (`grpc.health.v1.Health/Check`: SERVING passes). HTTPS trusts the check's CA file or,
//! when the operator said so, any certificate.
//! All only ever target this host (enforced when the check is defined) and never run
//! commands.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::catalog::spec::{CheckTarget, CheckTls};

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
    /// The TLS handshake of an HTTPS check failed (certificate not trusted, wrong name…).
    #[error("TLS: {0}")]
    Tls(String),
}

/// A connection to the checked service: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to `addr`, with TLS when the check is HTTPS (ALPN h2 for HTTP/2 services).
async fn connect(
    addr: std::net::SocketAddr,
    tls: Option<&CheckTls>,
    h2: bool,
) -> Result<Box<dyn Stream>, ProbeFailure> {
    let tcp = TcpStream::connect(addr).await?;
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(tls, h2)?));
    let stream = connector
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|e| ProbeFailure::Tls(e.to_string()))?;
    Ok(Box::new(stream))
}

fn client_config(tls: &CheckTls, h2: bool) -> Result<rustls::ClientConfig, ProbeFailure> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeFailure::Tls(e.to_string()))?;
    let mut config = match &tls.roots {
        Some(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots
                    .add(c.clone())
                    .map_err(|e| ProbeFailure::Tls(format!("ca_file: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(config)
}

/// `tls_skip_verify`: any certificate is accepted, but the handshake's signatures are
/// still checked (the peer holds the key of the certificate it showed).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Largest answer a probe reads.
const MAX_ANSWER: usize = 4096;

/// Sends `req` over HTTP/2 on `stream` and reads the whole answer (at most `MAX_ANSWER`).
async fn h2_exchange(
    stream: Box<dyn Stream>,
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
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
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
            let (parts, body) = h2_exchange(connect(*addr, None, true).await?, req).await?;
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
            tls,
        } => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let req = hyper::Request::get(format!("{scheme}://{host}{path}"))
                .header("user-agent", "weft-health-check")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .map_err(|e| ProbeFailure::H2(e.to_string()))?;
            let stream = connect(*addr, tls.as_ref(), true).await?;
            let (parts, _) = h2_exchange(stream, req).await?;
            let code = parts.status.as_u16();
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(ProbeFailure::Status(code))
            }
        }
        CheckTarget::Http {
            addr,
            host,
            path,
            tls,
            ..
        } => {
            let mut s = connect(*addr, tls.as_ref(), false).await?;
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
