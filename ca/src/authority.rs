//! The cluster's root CA: created by `--bootstrap`, it signs node certificates from CSRs
//! and chooses every field of them itself.

use std::time::{Duration, SystemTime};

use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::csr::{inspect_csr, CsrRefusal};
use crate::key::NodeKey;
use crate::names::{ClusterName, NodeName, SpiffeId};
use crate::CaError;

/// How far back `not_before` is set, to tolerate clock skew between nodes.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// A certificate authority of one cluster with its private key: the root (on the node
/// that holds it) or a replica's intermediate (`replica`); both issue the same leaves.
pub struct CertificateAuthority {
    cluster: ClusterName,
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// DER of the leaf.
    pub der: Vec<u8>,
    /// Hex serial number.
    pub serial: String,
    /// Expiry, Unix seconds.
    pub not_after_unix: u64,
}

fn to_offset(t: SystemTime) -> Result<OffsetDateTime, CaError> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| CaError::Clock)?
        .as_secs();
    OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|_| CaError::Clock)
}

/// A random positive 128-bit serial.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

impl CertificateAuthority {
    /// Creates a new root (ECDSA P-256) for `cluster`, valid from `now` for `validity`.
    /// Returns the authority and its private key, which the caller stores (mode 0600).
    pub fn create(
        cluster: ClusterName,
        now: SystemTime,
        validity: Duration,
    ) -> Result<(Self, NodeKey), CaError> {
        let key = NodeKey::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("weft root CA ({cluster})"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster.as_str());
        // Path length 1: the root signs replicas' intermediates, which sign leaves only.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset(now - BACKDATE)?;
        params.not_after = to_offset(now + validity)?;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(key.pair())?;
        let cert_der = cert.der().to_vec();
        let reloaded = NodeKey::from_pem(&key.to_pem())?;
        Ok((
            Self {
                cluster,
                issuer: Issuer::new(params, reloaded.into_pair()),
                cert_der,
            },
            key,
        ))
    }

    /// Loads an existing root or intermediate from its certificate (DER) and private key.
    pub fn load(cluster: ClusterName, cert_der: &[u8], key: NodeKey) -> Result<Self, CaError> {
        let der = CertificateDer::from(cert_der.to_vec());
        let issuer = Issuer::from_ca_cert_der(&der, key.into_pair())?;
        Ok(Self {
            cluster,
            issuer,
            cert_der: cert_der.to_vec(),
        })
    }

    /// This authority's certificate (the root's, or a replica's intermediate), DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of this authority's certificate (for the root: what join tokens pin).
    pub fn cert_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.cert_der).into()
    }

    /// The cluster this CA serves.
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// Signs `msg` with this authority's key (revocation lists, the root's CA proofs).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        use rcgen::SigningKey as _;
        Ok(self.issuer.key().sign(msg)?)
    }

    /// Signs a node certificate for `node` from `csr_der`, valid for `ttl` from `now`.
    ///
    /// The CSR contributes only its public key: the CA refuses a CSR that asks for
    /// anything it would not grant (another name, extra SANs, a CA bit) and then writes
    /// every field itself: one URI SAN `spiffe://<cluster>/node/<name>`, not a CA,
    /// server and client auth, a random 128-bit serial.
    pub fn sign_node_csr(
        &self,
        csr_der: &[u8],
        node: &NodeName,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CsrRefusal> {
        let id = SpiffeId::node(self.cluster.clone(), node.clone());
        inspect_csr(csr_der, &id)?;
        self.issue_leaf(
            csr_der,
            LeafSpec {
                common_name: node.as_str(),
                unit: None,
                uri: id.uri(),
                usages: vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            },
            ttl,
            now,
        )
    }

    /// Signs a leaf for the key of an already-inspected `csr_der`: every field is the
    /// CA's (`spec`), not a CA, digital signature only, a random 128-bit serial,
    /// backdated by `BACKDATE`.
    pub(crate) fn issue_leaf(
        &self,
        csr_der: &[u8],
        spec: LeafSpec<'_>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CsrRefusal> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name);
        if let Some(unit) = spec.unit {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, unit);
        }
        params.subject_alt_names =
            vec![SanType::URI(spec.uri.try_into().map_err(|_| {
                CsrRefusal::Malformed("SPIFFE URI not IA5".into())
            })?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = spec.usages;
        self.sign_for_csr(csr_der, params, ttl, now)
    }

    /// Signs `params` for the key of `csr_der` (ECDSA P-256 only): valid from `now`
    /// less `BACKDATE` for `ttl`, a random 128-bit serial, the authority key identifier.
    pub(crate) fn sign_for_csr(
        &self,
        csr_der: &[u8],
        mut params: CertificateParams,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CsrRefusal> {
        let parsed =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| CsrRefusal::Malformed(e.to_string()))?;
        if parsed.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CsrRefusal::KeyAlgorithm);
        }
        params.use_authority_key_identifier_extension = true;
        let not_after = now + ttl;
        params.not_before = to_offset(now - BACKDATE).map_err(|_| CsrRefusal::Clock)?;
        params.not_after = to_offset(not_after).map_err(|_| CsrRefusal::Clock)?;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let cert = params
            .signed_by(&parsed.public_key, &self.issuer)
            .map_err(|e| CsrRefusal::Malformed(e.to_string()))?;
        Ok(IssuedCert {
            der: cert.der().to_vec(),
            serial: serial_hex,
            not_after_unix: crate::leaf::unix(not_after),
        })
    }
}

/// The fields of a leaf the CA writes (`issue_leaf`).
pub(crate) struct LeafSpec<'a> {
    /// Subject common name.
    pub common_name: &'a str,
    /// Subject organisational unit, if any.
    pub unit: Option<String>,
    /// The one URI SAN.
    pub uri: String,
    /// Extended key usages.
    pub usages: Vec<ExtendedKeyUsagePurpose>,
}
