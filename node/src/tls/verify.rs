//! Certificate verifiers: node-to-node (chain to the cluster root, expected SPIFFE node
//! ID, not revoked) and the joiner's pinned-root check.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};
use tracing::warn;
use weft_ca::{LeafInfo, TrustRoot};

use super::{provider, Revocations};

/// The signature methods every verifier here shares: TLS 1.3 only, the provider's
/// algorithms.
macro_rules! tls13_only {
    () => {
        fn verify_tls12_signature(
            &self,
            _m: &[u8],
            _c: &CertificateDer<'_>,
            _d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Err(general("TLS 1.2 is not used".into()))
        }

        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &provider().signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

fn to_system(now: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs())
}

fn general(msg: String) -> Error {
    Error::General(msg)
}

/// The intermediates a peer presented: everything after the leaf but the root itself
/// (which every node sends last).
pub fn presented_intermediates(trust: &TrustRoot, rest: &[CertificateDer<'_>]) -> Vec<Vec<u8>> {
    rest.iter()
        .filter(|c| !trust.is_root(c.as_ref()))
        .map(|c| c.as_ref().to_vec())
        .collect()
}

fn check_node(
    trust: &TrustRoot,
    revoked: &Revocations,
    der: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<LeafInfo, Error> {
    let chain = presented_intermediates(trust, intermediates);
    let info = trust
        .verify_node_chain(der, &chain, to_system(now))
        .map_err(|e| {
            warn!(error = %e, "refused a peer certificate");
            general(e.to_string())
        })?;
    let list = revoked.read().unwrap_or_else(|e| e.into_inner());
    if list.is_revoked(&info.serial) {
        warn!(node = %info.id, serial = %info.serial, "refused a revoked certificate");
        return Err(general(format!("certificate of {} is revoked", info.id)));
    }
    if let Some(issuer) = info.issuer.as_ref().filter(|i| list.is_revoked(&i.serial)) {
        warn!(node = %info.id, replica = %issuer.node, "refused a certificate from a removed CA replica");
        return Err(general(format!(
            "certificate of {} was issued by CA replica {}, whose intermediate is revoked",
            info.id, issuer.node
        )));
    }
    Ok(info)
}

/// Verifies the server of a node-to-node connection: the server name given to
/// `connect` is the node name it must prove.
#[derive(Debug)]
pub struct PeerVerifier {
    trust: Arc<TrustRoot>,
    revoked: Revocations,
}

impl PeerVerifier {
    /// A verifier over the cluster root and revocation list.
    pub fn new(trust: Arc<TrustRoot>, revoked: Revocations) -> Self {
        Self { trust, revoked }
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let info = check_node(&self.trust, &self.revoked, end_entity, intermediates, now)?;
        let expected = match server_name {
            ServerName::DnsName(n) => n.as_ref().to_owned(),
            other => return Err(general(format!("unexpected server name {other:?}"))),
        };
        if info.id.node_name().as_str() != expected {
            warn!(expected = %expected, found = %info.id, "peer presented another node's certificate");
            return Err(general(format!(
                "expected node {expected}, peer is {}",
                info.id
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    tls13_only!();
}

/// Verifies client certificates when one is offered. Whether one is required depends on
/// the ALPN, so it is checked per connection after the handshake.
#[derive(Debug)]
pub struct ClientVerifier {
    trust: Arc<TrustRoot>,
    revoked: Revocations,
}

impl ClientVerifier {
    /// A verifier over the cluster root and revocation list.
    pub fn new(trust: Arc<TrustRoot>, revoked: Revocations) -> Self {
        Self { trust, revoked }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        check_node(&self.trust, &self.revoked, end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_only!();
}

/// The joiner's verifier: the chain must end in a root whose SHA-256 is the token's pin,
/// and the leaf must be a valid node certificate under that root. No trust on first use.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: [u8; 32],
}

impl PinnedCaVerifier {
    /// Pins the root with this SHA-256.
    pub fn new(pin: [u8; 32]) -> Self {
        Self { pin }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let root = intermediates
            .iter()
            .find(|c| <[u8; 32]>::from(Sha256::digest(c.as_ref())) == self.pin)
            .ok_or_else(|| {
                general(
                    "the seed's CA does not match the token (wrong cluster or tampered token)"
                        .into(),
                )
            })?;
        let leaf = LeafInfo::parse(end_entity).map_err(|e| general(e.to_string()))?;
        let trust = TrustRoot::new(leaf.id.cluster().clone(), root.to_vec())
            .map_err(|e| general(e.to_string()))?;
        trust
            .verify_node_chain(
                end_entity,
                &presented_intermediates(&trust, intermediates),
                to_system(now),
            )
            .map_err(|e| general(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }

    tls13_only!();
}
