//! Verifying node certificates: chain to the cluster root, SPIFFE identity, expiry,
//! and signatures made with a certificate's key.

use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest as _, Sha256};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::names::{ClusterName, SpiffeId};

/// Why a certificate or signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The DER does not parse.
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    /// webpki refused the chain (expired, wrong issuer, CA used as leaf...).
    #[error("certificate does not verify against the cluster CA: {0}")]
    Chain(String),
    /// The certificate does not carry exactly one valid SPIFFE node ID.
    #[error("certificate does not carry exactly one SPIFFE node ID")]
    Identity,
    /// The SPIFFE trust domain is another cluster's.
    #[error("certificate belongs to cluster {found:?}, not {expected:?}")]
    ForeignCluster {
        /// Our cluster.
        expected: String,
        /// The certificate's.
        found: String,
    },
    /// A signature did not verify.
    #[error("signature does not verify")]
    Signature,
}

/// What weft needs to know about a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The node's identity.
    pub id: SpiffeId,
    /// Hex serial.
    pub serial: String,
    /// Expiry, Unix seconds.
    pub not_after_unix: u64,
    /// Start of validity, Unix seconds.
    pub not_before_unix: u64,
    /// SHA-256 of the certificate DER, hex.
    pub fingerprint: String,
    /// The replica whose intermediate issued it (None: issued by the root, or not verified).
    pub issuer: Option<crate::replica::IssuerInfo>,
}

impl LeafInfo {
    /// Reads the fields of a certificate without verifying it.
    pub fn parse(der: &[u8]) -> Result<Self, VerifyError> {
        let (cert, uri) = parse_with_one_uri(der)?;
        let id: SpiffeId = uri.parse().map_err(|_| VerifyError::Identity)?;
        let v = cert.validity();
        Ok(Self {
            id,
            serial: hex::encode(cert.raw_serial()),
            not_after_unix: v.not_after.timestamp().max(0) as u64,
            not_before_unix: v.not_before.timestamp().max(0) as u64,
            fingerprint: hex::encode(Sha256::digest(der)),
            issuer: None,
        })
    }

    /// Time left until expiry at `now` (zero when expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let now = unix(now);
        Duration::from_secs(self.not_after_unix.saturating_sub(now))
    }

    /// When the CA issued it: `not_before` is backdated by `BACKDATE` for clock skew.
    pub fn issued_at_unix(&self) -> u64 {
        self.not_before_unix + crate::authority::BACKDATE.as_secs()
    }

    /// Validity from issuance to expiry (what renewal schedules against).
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.not_after_unix.saturating_sub(self.issued_at_unix()))
    }
}

/// Parses `der` (no trailing bytes) and returns it with its one URI SAN; more or fewer
/// URIs is `VerifyError::Identity`.
pub(crate) fn parse_with_one_uri(der: &[u8]) -> Result<(X509Certificate<'_>, &str), VerifyError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(VerifyError::Malformed("trailing bytes".into()));
    }
    let uri = {
        let san = cert
            .subject_alternative_name()
            .map_err(|e| VerifyError::Malformed(e.to_string()))?
            .ok_or(VerifyError::Identity)?;
        let mut uris = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        });
        let (Some(uri), None) = (uris.next(), uris.next()) else {
            return Err(VerifyError::Identity);
        };
        uri
    };
    Ok((cert, uri))
}

/// The expiry (Unix seconds) of any certificate, e.g. the cluster root.
pub fn not_after_unix(der: &[u8]) -> Result<u64, VerifyError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp().max(0) as u64)
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The cluster's root, used to verify node certificates and signatures.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    cluster: ClusterName,
    ca_der: CertificateDer<'static>,
    anchor: TrustAnchor<'static>,
}

impl TrustRoot {
    /// Trusts the root certificate `ca_der` for `cluster`.
    pub fn new(cluster: ClusterName, ca_der: Vec<u8>) -> Result<Self, VerifyError> {
        let ca_der = CertificateDer::from(ca_der);
        let anchor = webpki::anchor_from_trusted_cert(&ca_der)
            .map_err(|e| VerifyError::Malformed(format!("{e:?}")))?
            .to_owned();
        Ok(Self {
            cluster,
            ca_der,
            anchor,
        })
    }

    /// The cluster name.
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// Checks that `der` chains to this root for client authentication at `now`, directly
    /// or through one intermediate of this cluster (node and operator certificates alike;
    /// what the certificate names is the caller's check). Returns the issuing replica.
    pub(crate) fn verify_client_chain(
        &self,
        der: &[u8],
        intermediates: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<Option<crate::replica::IssuerInfo>, VerifyError> {
        if intermediates.len() > crate::replica::MAX_CHAIN {
            return Err(VerifyError::Chain(format!(
                "{} intermediates; at most {} is accepted",
                intermediates.len(),
                crate::replica::MAX_CHAIN
            )));
        }
        let issuer = match intermediates.first() {
            Some(i) => Some(crate::replica::parse_replica(i, &self.cluster)?),
            None => None,
        };
        let cert_der = CertificateDer::from(der);
        let ee = EndEntityCert::try_from(&cert_der)
            .map_err(|e| VerifyError::Malformed(format!("{e:?}")))?;
        let time = UnixTime::since_unix_epoch(Duration::from_secs(unix(now)));
        let chain: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|i| CertificateDer::from(i.as_slice()))
            .collect();
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&self.anchor),
                &chain,
                time,
                KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| VerifyError::Chain(format!("{e:?}")))?;
        // The intermediate offered must be the one the path went through (an unused one
        // would otherwise name a replica that did not issue this certificate).
        if issuer.is_some() && path.intermediate_certificates().count() != intermediates.len() {
            return Err(VerifyError::Chain(
                "the intermediate offered did not issue the certificate".into(),
            ));
        }
        Ok(issuer)
    }

    /// The root certificate DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// SHA-256 of the root certificate.
    pub fn ca_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.ca_der).into()
    }

    /// Verifies that `der` is a valid node certificate of this cluster at `now`, issued by
    /// the root itself.
    pub fn verify_node(&self, der: &[u8], now: SystemTime) -> Result<LeafInfo, VerifyError> {
        self.verify_node_chain(der, &[], now)
    }

    /// Verifies that `der` is a valid node certificate of this cluster at `now`, issued by
    /// the root or by the replica whose intermediate is `intermediates` (at most one).
    pub fn verify_node_chain(
        &self,
        der: &[u8],
        intermediates: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<LeafInfo, VerifyError> {
        let issuer = self.verify_client_chain(der, intermediates, now)?;
        let mut info = LeafInfo::parse(der)?;
        info.issuer = issuer;
        if info.id.cluster() != &self.cluster {
            return Err(VerifyError::ForeignCluster {
                expected: self.cluster.to_string(),
                found: info.id.cluster().to_string(),
            });
        }
        Ok(info)
    }

    /// Verifies a signature made with the CA key.
    pub fn verify_ca_signature(&self, msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        verify_signature(&self.ca_der, msg, sig)
    }
}

/// Verifies an ECDSA P-256 SHA-256 signature made with `cert_der`'s key.
pub fn verify_signature(cert_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    let der = CertificateDer::from(cert_der);
    let ee = EndEntityCert::try_from(&der).map_err(|e| VerifyError::Malformed(format!("{e:?}")))?;
    ee.verify_signature(webpki::aws_lc_rs::ECDSA_P256_SHA256, msg, sig)
        .map_err(|_| VerifyError::Signature)
}
