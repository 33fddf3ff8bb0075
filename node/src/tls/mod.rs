//! rustls and quinn configuration: TLS 1.3 only, aws-lc-rs as the one crypto provider,
//! node certificates that can be swapped on renewal without a restart, and verifiers that
//! check the SPIFFE node identity and the revocation list.

pub mod datagrams;
mod verify;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use weft_ca::{NodeKey, TrustRoot};
use weft_gossip::RevocationList;

pub use verify::{ClientVerifier, PeerVerifier, PinnedCaVerifier};

/// ALPN of the join protocol (no client certificate).
pub const ALPN_JOIN: &[u8] = b"weft-join/1";
/// ALPN of node-to-node control requests (mTLS).
pub const ALPN_CTL: &[u8] = b"weft-ctl/1";
/// ALPN of data-plane streams (mTLS).
pub const ALPN_DATA: &[u8] = b"weft/1";

/// Setting up TLS failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("QUIC crypto configuration: {0}")]
    Quic(String),
}

/// The crypto provider used everywhere (aws-lc-rs; see ANCHORS.md for why).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The revocation list shared by every verifier.
pub type Revocations = Arc<RwLock<RevocationList>>;

/// The node's current certificate and key, swapped in place on renewal: new handshakes
/// use the new certificate, established connections keep theirs.
#[derive(Debug, Clone)]
pub struct CertStore {
    current: Arc<RwLock<Arc<CertifiedKey>>>,
}

impl CertStore {
    /// Builds the store from the node key, its certificate, the intermediates it chains
    /// through and the root.
    pub fn new(
        key: &NodeKey,
        cert_der: &[u8],
        chain: &[Vec<u8>],
        ca_der: &[u8],
    ) -> Result<Self, TlsError> {
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(certified(
                key, cert_der, chain, ca_der,
            )?))),
        })
    }

    /// Replaces the certificate (same or new key).
    pub fn replace(
        &self,
        key: &NodeKey,
        cert_der: &[u8],
        chain: &[Vec<u8>],
        ca_der: &[u8],
    ) -> Result<(), TlsError> {
        let ck = Arc::new(certified(key, cert_der, chain, ca_der)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = ck;
        Ok(())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn certified(
    key: &NodeKey,
    cert_der: &[u8],
    intermediates: &[Vec<u8>],
    ca_der: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der()));
    let mut chain = vec![CertificateDer::from(cert_der.to_vec())];
    chain.extend(
        intermediates
            .iter()
            .map(|c| CertificateDer::from(c.clone())),
    );
    chain.push(CertificateDer::from(ca_der.to_vec()));
    Ok(CertifiedKey::from_der(chain, key_der, &provider())?)
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Ack-eliciting packets a peer may receive before it must send an ACK of its own.
const ACK_ELICITING_THRESHOLD: u32 = 8;

/// Bytes a peer may have in flight to us on one connection (all streams) and on one
/// stream: quinn's connection window is unbounded by default.
const CONNECTION_WINDOW: u32 = 16 << 20;
const STREAM_WINDOW: u32 = 2 << 20;

/// Transport for the server side (peers open streams to us).
fn transport() -> Arc<quinn::TransportConfig> {
    Arc::new(transport_config(1024, datagrams::ETHERNET_PAYLOAD))
}

/// Transport for connections this node opens: the peer may not open streams on them.
fn client_transport() -> Arc<quinn::TransportConfig> {
    Arc::new(transport_config(0, datagrams::ETHERNET_PAYLOAD))
}

/// The transport of a node whose endpoint may send datagrams of up to `max_payload`
/// bytes (`datagrams::max_payload_for`): `server` for its server config (peers open
/// streams), else for connections it opens.
pub fn transport_for(server: bool, max_payload: u16) -> Arc<quinn::TransportConfig> {
    Arc::new(transport_config(if server { 1024 } else { 0 }, max_payload))
}

fn transport_config(peer_streams: u32, max_payload: u16) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Path MTU discovery up to what the interface carries (see `datagrams`).
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(max_payload);
    t.mtu_discovery_config(Some(mtu));
    t.receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW));
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    // A peer that vanished without closing (kill -9, power loss) is noticed within 10 s.
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(10)) {
        t.max_idle_timeout(Some(idle));
    }
    t.keep_alive_interval(Some(Duration::from_secs(3)));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(peer_streams));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // Request/response traffic carries its ACKs on the answers; acknowledging every other
    // packet on its own (the default) cost about one extra datagram per proxied request.
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    t.ack_frequency_config(Some(ack));
    t
}

/// UDP socket buffer size for QUIC: quinn does not size its socket, and the kernel's
/// default (208 KiB) drops packets under load (ANCHORS.md measured 17k drops per 2 GiB).
const UDP_BUFFER: usize = 4 << 20;

/// Binds the node's QUIC endpoint with large socket buffers (best effort: the kernel may
/// cap them at `net.core.rmem_max`).
pub fn bind_endpoint(
    config: quinn::ServerConfig,
    addr: std::net::SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    // Peers may send us datagrams as big as our interface carries (`datagrams`).
    let mut endpoint = quinn::EndpointConfig::default();
    endpoint
        .max_udp_payload_size(datagrams::max_payload_for(addr.ip()))
        .map_err(|e| std::io::Error::other(format!("QUIC datagram size: {e}")))?;
    quinn::Endpoint::new(endpoint, Some(config), socket.into(), runtime)
}

/// The QUIC server configuration of a node: its certificate, optional client
/// certificates (required later per ALPN), all weft ALPNs.
pub fn server_config(
    certs: &CertStore,
    trust: Arc<TrustRoot>,
    revoked: Revocations,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ClientVerifier::new(trust, revoked)))
        .with_cert_resolver(Arc::new(certs.clone()));
    tls.alpn_protocols = vec![ALPN_JOIN.to_vec(), ALPN_CTL.to_vec(), ALPN_DATA.to_vec()];
    // No session resumption: a resumed session skips the client certificate verifier and
    // carries the identity of the first handshake, so a node revoked (or renewed, or made
    // a CA replica) since would be seen as it was. Peers pool their connections, so full
    // handshakes are rare.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// Client configuration for mTLS control requests to another node; the server name
/// passed to `connect_with` must be the node name expected on the other side.
pub fn ctl_client_config(
    certs: &CertStore,
    trust: Arc<TrustRoot>,
    revoked: Revocations,
) -> Result<quinn::ClientConfig, TlsError> {
    mtls_client_config(certs, trust, revoked, ALPN_CTL)
}

/// Client configuration for data-plane connections (same checks as control requests).
pub fn data_client_config(
    certs: &CertStore,
    trust: Arc<TrustRoot>,
    revoked: Revocations,
) -> Result<quinn::ClientConfig, TlsError> {
    mtls_client_config(certs, trust, revoked, ALPN_DATA)
}

fn mtls_client_config(
    certs: &CertStore,
    trust: Arc<TrustRoot>,
    revoked: Revocations,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(trust, revoked)))
        .with_client_cert_resolver(Arc::new(certs.clone()));
    tls.alpn_protocols = vec![alpn.to_vec()];
    // Every connection verifies the server afresh (see `server_config`).
    tls.resumption = rustls::client::Resumption::disabled();
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(client_transport());
    Ok(cfg)
}

/// Client configuration of a joining node: no client certificate, and the server must
/// present a chain whose root hashes to `ca_sha256` (from the token).
pub fn join_client_config(ca_sha256: [u8; 32]) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(ca_sha256)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(client_transport());
    Ok(cfg)
}
