//! CA replicas: the intermediate CA certificates the root signs for members so that
//! several nodes can issue leaves, consume tokens and sign revocations, and what a chain
//! through one of them must look like.
//!
//! An intermediate names its replica with one URI SAN `spiffe://<cluster>/ca/<node>` and
//! has path length 0 (it signs leaves only). rcgen cannot write URI name constraints and
//! webpki does not check them, so the trust domain is enforced here instead: a chain is
//! accepted only through an intermediate of this cluster (`TrustRoot::verify_node_chain`),
//! and the leaf's own SPIFFE ID must be of this cluster too.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose, SanType};
use serde::{Deserialize, Serialize};
use x509_parser::extensions::ParsedExtension;

use crate::authority::{CertificateAuthority, IssuedCert};
use crate::csr::{inspect_csr_for, CsrRefusal};
use crate::leaf::{parse_with_one_uri, VerifyError};
use crate::names::{ClusterName, NodeName};

/// Most intermediates accepted between a leaf and the root (replicas are one level).
pub const MAX_CHAIN: usize = 1;

/// The URI SAN of the intermediate of replica `node`.
pub fn replica_uri(cluster: &ClusterName, node: &NodeName) -> String {
    format!("spiffe://{cluster}/ca/{node}")
}

/// What an intermediate says about its replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerInfo {
    /// The replica's node name.
    pub node: NodeName,
    /// Hex serial of the intermediate.
    pub serial: String,
    /// Expiry of the intermediate, Unix seconds.
    pub not_after_unix: u64,
}

/// Reads an intermediate of `cluster` (without verifying its signature: webpki does that
/// when it builds a leaf's chain): a CA certificate with path length 0 and one URI SAN
/// `spiffe://<cluster>/ca/<node>`.
pub fn parse_replica(der: &[u8], cluster: &ClusterName) -> Result<IssuerInfo, VerifyError> {
    let (cert, uri) = parse_with_one_uri(der)?;
    let mut ca_with_len_0 = false;
    for ext in cert.extensions() {
        if let ParsedExtension::BasicConstraints(bc) = ext.parsed_extension() {
            ca_with_len_0 = bc.ca && bc.path_len_constraint == Some(0);
        }
    }
    if !ca_with_len_0 {
        return Err(VerifyError::Malformed(
            "intermediate is not a CA with path length 0".into(),
        ));
    }
    let rest = uri.strip_prefix("spiffe://").ok_or(VerifyError::Identity)?;
    let (domain, node) = rest.split_once("/ca/").ok_or(VerifyError::Identity)?;
    if domain != cluster.as_str() {
        return Err(VerifyError::ForeignCluster {
            expected: cluster.to_string(),
            found: domain.chars().take(80).collect(),
        });
    }
    let node = NodeName::new(node).map_err(|_| VerifyError::Identity)?;
    Ok(IssuerInfo {
        node,
        serial: hex::encode(cert.raw_serial()),
        not_after_unix: cert.validity().not_after.timestamp().max(0) as u64,
    })
}

impl CertificateAuthority {
    /// Signs replica `node` an intermediate CA certificate for the key of `csr_der` (which
    /// may name only the node and its replica URI), valid for `ttl` from `now`: path length
    /// 0, certificate and CRL signing, one URI SAN `spiffe://<cluster>/ca/<node>`.
    pub fn sign_replica_csr(
        &self,
        csr_der: &[u8],
        node: &NodeName,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CsrRefusal> {
        let uri = replica_uri(self.cluster(), node);
        inspect_csr_for(csr_der, node.as_str(), &uri)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("weft CA replica {node} ({})", self.cluster()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, self.cluster().as_str());
        params.subject_alt_names =
            vec![SanType::URI(uri.try_into().map_err(|_| {
                CsrRefusal::Malformed("SPIFFE URI not IA5".into())
            })?)];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        self.sign_for_csr(csr_der, params, ttl, now)
    }
}

impl crate::key::NodeKey {
    /// The CSR a member sends to become replica `node` of `cluster`.
    pub fn replica_csr_der(
        &self,
        cluster: &ClusterName,
        node: &NodeName,
    ) -> Result<Vec<u8>, crate::CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        params.subject_alt_names = vec![SanType::URI(replica_uri(cluster, node).try_into()?)];
        Ok(params.serialize_request(self.pair())?.der().to_vec())
    }
}
