//! Operator credentials: the certificates that carry the authority to change the cluster.
//!
//! A node's certificate lets it speak for itself only. Cluster-wide changes are signed by
//! an operator, whose certificate the CA issues with the identity
//! `spiffe://<cluster>/operator/<name>` and a role (`viewer`, `operator`, `admin`) in the
//! subject's organisational unit. Every node verifies such a certificate against the root
//! (`TrustRoot::verify_operator`) before it applies what the operator signed. Operator
//! certificates are client-auth only and their SPIFFE path is not `node/`, so they can
//! never pass as a node on the mesh's QUIC connections.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::ExtendedKeyUsagePurpose;
use serde::{Deserialize, Serialize};

use crate::authority::{CertificateAuthority, IssuedCert, LeafSpec};
use crate::csr::{inspect_csr_for, CsrRefusal};
use crate::leaf::{TrustRoot, VerifyError};
use crate::names::{ClusterName, OperatorName};

/// The prefix of the role in the subject's organisational unit.
const ROLE_PREFIX: &str = "weft-role=";

/// What an operator may do. Ordered: each role can do what the ones below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads what is not public.
    Viewer,
    /// Writes route, policy, resilience, fault, ratelimit and rollout entries.
    Operator,
    /// Everything: tokens, revocations, gossip keys, the CA and operators.
    Admin,
}

impl Role {
    /// Whether this role includes `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected viewer, operator or admin)")]
pub struct RoleError(pub String);

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, RoleError> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(RoleError(other.chars().take(40).collect())),
        }
    }
}

/// The SPIFFE URI of operator `name` in `cluster`.
pub fn operator_uri(cluster: &ClusterName, name: &OperatorName) -> String {
    format!("spiffe://{cluster}/operator/{name}")
}

/// A verified operator certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorInfo {
    /// Who.
    pub name: OperatorName,
    /// What they may do.
    pub role: Role,
    /// Hex serial (what revocation lists).
    pub serial: String,
    /// Expiry, Unix seconds.
    pub not_after_unix: u64,
}

impl CertificateAuthority {
    /// Signs an operator certificate for `name` with `role` from `csr_der` (which may name
    /// only the operator), valid for `ttl` from `now`.
    pub fn sign_operator_csr(
        &self,
        csr_der: &[u8],
        name: &OperatorName,
        role: Role,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CsrRefusal> {
        let uri = operator_uri(self.cluster(), name);
        inspect_csr_for(csr_der, name.as_str(), &uri)?;
        self.issue_leaf(
            csr_der,
            LeafSpec {
                common_name: name.as_str(),
                unit: Some(format!("{ROLE_PREFIX}{role}")),
                uri,
                usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            },
            ttl,
            now,
        )
    }
}

impl TrustRoot {
    /// Verifies that `der` is a valid operator certificate of this cluster at `now` and
    /// reads its name and role. Revocation is the caller's check (it holds the list).
    pub fn verify_operator(
        &self,
        der: &[u8],
        now: SystemTime,
    ) -> Result<OperatorInfo, VerifyError> {
        self.verify_operator_chain(der, &[], now)
    }

    /// Like `verify_operator`, for a certificate a CA replica issued through
    /// `intermediates` (at most one).
    pub fn verify_operator_chain(
        &self,
        der: &[u8],
        intermediates: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<OperatorInfo, VerifyError> {
        self.verify_client_chain(der, intermediates, now)?;
        let (cert, uri) = crate::leaf::parse_with_one_uri(der)?;
        let prefix = format!("spiffe://{}/operator/", self.cluster());
        let name = uri
            .strip_prefix(&prefix)
            .and_then(|n| OperatorName::new(n).ok())
            .ok_or(VerifyError::Identity)?;
        let mut roles = cert
            .subject()
            .iter_organizational_unit()
            .filter_map(|ou| ou.as_str().ok())
            .filter_map(|ou| ou.strip_prefix(ROLE_PREFIX));
        let (Some(role), None) = (roles.next(), roles.next()) else {
            return Err(VerifyError::Identity);
        };
        let role = role.parse().map_err(|_| VerifyError::Identity)?;
        Ok(OperatorInfo {
            name,
            role,
            serial: hex::encode(cert.raw_serial()),
            not_after_unix: cert.validity().not_after.timestamp().max(0) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NodeKey;
    use crate::names::NodeName;

    fn ca() -> (CertificateAuthority, TrustRoot) {
        let cluster = ClusterName::new("weft").expect("valid");
        let (ca, _) = CertificateAuthority::create(
            cluster.clone(),
            SystemTime::now(),
            Duration::from_secs(86400),
        )
        .expect("ca");
        let trust = TrustRoot::new(cluster, ca.cert_der().to_vec()).expect("trust");
        (ca, trust)
    }

    #[test]
    fn operator_certificate_round_trip_and_is_not_a_node() {
        let (ca, trust) = ca();
        let key = NodeKey::generate().expect("key");
        let name = OperatorName::new("alice").expect("valid");
        let now = SystemTime::now();
        let csr = key.named_csr_der("alice").expect("csr");
        let cert = ca
            .sign_operator_csr(&csr, &name, Role::Operator, Duration::from_secs(3600), now)
            .expect("signed");
        let info = trust.verify_operator(&cert.der, now).expect("verifies");
        assert_eq!(info.name, name);
        assert_eq!(info.role, Role::Operator);
        assert_eq!(info.serial, cert.serial);
        assert!(
            trust.verify_node(&cert.der, now).is_err(),
            "an operator certificate is not a node certificate"
        );
        assert!(
            trust
                .verify_operator(&cert.der, now + Duration::from_secs(7200))
                .is_err(),
            "expired"
        );
    }

    #[test]
    fn node_certificates_are_not_operators_and_csrs_cannot_ask_for_more() {
        let (ca, trust) = ca();
        let key = NodeKey::generate().expect("key");
        let now = SystemTime::now();
        let node = NodeName::new("vm-1").expect("valid");
        let csr = key.join_csr_der(&node).expect("csr");
        let cert = ca
            .sign_node_csr(
                &key.csr_der(&crate::names::SpiffeId::node(
                    trust.cluster().clone(),
                    node.clone(),
                ))
                .expect("csr"),
                &node,
                Duration::from_secs(3600),
                now,
            )
            .expect("node cert");
        assert_eq!(
            trust.verify_operator(&cert.der, now),
            Err(VerifyError::Identity)
        );
        let bob = OperatorName::new("bob").expect("valid");
        assert!(
            ca.sign_operator_csr(&csr, &bob, Role::Admin, Duration::from_secs(60), now)
                .is_err(),
            "a CSR naming vm-1 cannot become bob"
        );
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }
}
