//! Verifying node certificates: chain to the cluster root, SPIFFE identity, expiry,
//! and signatures made with a certificate's key.

use std::sync::{Arc, RwLock};
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
    /// SHA-256 (hex) of the root its chain ended in (None: not verified).
    pub root: Option<String>,
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
            root: None,
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

/// The roots a node trusts: the current one first, during a rotation also the one being
/// replaced; and roots retired by a finished rotation, trusted only at times before they
/// were retired (for signatures made while they were in force, e.g. config entries).
#[derive(Debug)]
struct Roots {
    current: Vec<(CertificateDer<'static>, TrustAnchor<'static>)>,
    retired: Vec<(CertificateDer<'static>, TrustAnchor<'static>, u64)>,
}

/// The cluster's trusted roots, used to verify node certificates and signatures. Clones
/// share the roots: a new trust bundle (`set_roots`) applies to every holder at once.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    cluster: ClusterName,
    roots: Arc<RwLock<Arc<Roots>>>,
}

fn anchor_of(der: Vec<u8>) -> Result<(CertificateDer<'static>, TrustAnchor<'static>), VerifyError> {
    let der = CertificateDer::from(der);
    let anchor = webpki::anchor_from_trusted_cert(&der)
        .map_err(|e| VerifyError::Malformed(format!("{e:?}")))?
        .to_owned();
    Ok((der, anchor))
}

impl TrustRoot {
    /// Trusts the root certificate `ca_der` for `cluster`.
    pub fn new(cluster: ClusterName, ca_der: Vec<u8>) -> Result<Self, VerifyError> {
        Self::with_roots(cluster, vec![ca_der], Vec::new())
    }

    /// Trusts `roots` (the first is the current one, which nodes present and tokens pin)
    /// and `retired` roots (DER, retired at Unix seconds) for times before they retired.
    pub fn with_roots(
        cluster: ClusterName,
        roots: Vec<Vec<u8>>,
        retired: Vec<(Vec<u8>, u64)>,
    ) -> Result<Self, VerifyError> {
        let roots = Self::build(roots, retired)?;
        Ok(Self {
            cluster,
            roots: Arc::new(RwLock::new(Arc::new(roots))),
        })
    }

    fn build(roots: Vec<Vec<u8>>, retired: Vec<(Vec<u8>, u64)>) -> Result<Roots, VerifyError> {
        if roots.is_empty() {
            return Err(VerifyError::Malformed("no root to trust".into()));
        }
        Ok(Roots {
            current: roots.into_iter().map(anchor_of).collect::<Result<_, _>>()?,
            retired: retired
                .into_iter()
                .map(|(der, at)| anchor_of(der).map(|(d, a)| (d, a, at)))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Replaces the trusted roots (a verified trust bundle) for every clone.
    pub fn set_roots(
        &self,
        roots: Vec<Vec<u8>>,
        retired: Vec<(Vec<u8>, u64)>,
    ) -> Result<(), VerifyError> {
        let built = Arc::new(Self::build(roots, retired)?);
        *self.roots.write().unwrap_or_else(|e| e.into_inner()) = built;
        Ok(())
    }

    fn snapshot(&self) -> Arc<Roots> {
        self.roots.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The trusted roots, DER, the current one first.
    pub fn roots(&self) -> Vec<Vec<u8>> {
        self.snapshot()
            .current
            .iter()
            .map(|(d, _)| d.to_vec())
            .collect()
    }

    /// The retired roots (DER) and when each retired.
    pub fn retired(&self) -> Vec<(Vec<u8>, u64)> {
        self.snapshot()
            .retired
            .iter()
            .map(|(d, _, at)| (d.to_vec(), *at))
            .collect()
    }

    /// Whether `der` is one of the trusted roots.
    pub fn is_root(&self, der: &[u8]) -> bool {
        self.snapshot()
            .current
            .iter()
            .any(|(d, _)| d.as_ref() == der)
    }

    /// The cluster name.
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// Checks that `der` chains to a root trusted at `now` for client authentication,
    /// directly or through one intermediate of this cluster (node and operator
    /// certificates alike; what the certificate names is the caller's check). Returns the
    /// issuing replica and the SHA-256 of the root the path ended in.
    pub(crate) fn verify_client_chain(
        &self,
        der: &[u8],
        intermediates: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<(Option<crate::replica::IssuerInfo>, [u8; 32]), VerifyError> {
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
        let now_unix = unix(now);
        let time = UnixTime::since_unix_epoch(Duration::from_secs(now_unix));
        let chain: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|i| CertificateDer::from(i.as_slice()))
            .collect();
        let roots = self.snapshot();
        let trusted: Vec<(&CertificateDer<'static>, &TrustAnchor<'static>)> = roots
            .current
            .iter()
            .map(|(d, a)| (d, a))
            .chain(
                roots
                    .retired
                    .iter()
                    .filter(|(_, _, at)| now_unix < *at)
                    .map(|(d, a, _)| (d, a)),
            )
            .collect();
        let anchors: Vec<TrustAnchor<'static>> =
            trusted.iter().map(|(_, a)| (*a).clone()).collect();
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
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
        let anchor = path.anchor();
        let root = trusted
            .iter()
            .find(|(_, a)| {
                a.subject_public_key_info == anchor.subject_public_key_info
                    && a.subject == anchor.subject
            })
            .map(|(d, _)| Sha256::digest(d.as_ref()).into())
            .unwrap_or([0; 32]);
        Ok((issuer, root))
    }

    /// The current root certificate, DER (what nodes present and tokens pin).
    pub fn ca_der(&self) -> Vec<u8> {
        self.snapshot()
            .current
            .first()
            .map(|(d, _)| d.to_vec())
            .unwrap_or_default()
    }

    /// SHA-256 of the current root certificate.
    pub fn ca_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.ca_der()).into()
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
        let (issuer, root) = self.verify_client_chain(der, intermediates, now)?;
        let mut info = LeafInfo::parse(der)?;
        info.issuer = issuer;
        info.root = Some(hex::encode(root));
        if info.id.cluster() != &self.cluster {
            return Err(VerifyError::ForeignCluster {
                expected: self.cluster.to_string(),
                found: info.id.cluster().to_string(),
            });
        }
        Ok(info)
    }

    /// Verifies a signature made with the key of one of the trusted roots.
    pub fn verify_ca_signature(&self, msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        let roots = self.snapshot();
        if roots
            .current
            .iter()
            .any(|(d, _)| verify_signature(d, msg, sig).is_ok())
        {
            Ok(())
        } else {
            Err(VerifyError::Signature)
        }
    }
}

/// Verifies an ECDSA P-256 SHA-256 signature made with `cert_der`'s key.
pub fn verify_signature(cert_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    let der = CertificateDer::from(cert_der);
    let ee = EndEntityCert::try_from(&der).map_err(|e| VerifyError::Malformed(format!("{e:?}")))?;
    ee.verify_signature(webpki::aws_lc_rs::ECDSA_P256_SHA256, msg, sig)
        .map_err(|_| VerifyError::Signature)
}
