//! weft's built-in certificate authority, without I/O.
//!
//! The bootstrap node creates a root (`CertificateAuthority::create`), which signs CA
//! replicas their intermediates (`replica`); every node makes
//! its own key (`NodeKey`) and sends only a CSR; the CA checks the CSR (`csr`) and writes
//! every field of the node certificate itself. `TrustRoot` verifies certificates and
//! signatures on every node; `token` is the one-time join token format; `operator` issues
//! and verifies the credentials that carry authority over the cluster. Storage, network
//! and clocks belong to the caller: every function that needs the time takes `now`.

pub mod authority;
pub mod csr;
pub mod key;
pub mod leaf;
pub mod names;
pub mod operator;
pub mod replica;
pub mod token;

pub use authority::{CertificateAuthority, IssuedCert};
pub use csr::CsrRefusal;
pub use key::NodeKey;
pub use leaf::{not_after_unix, unix, verify_signature, LeafInfo, TrustRoot, VerifyError};
pub use names::{ClusterName, NameError, NodeName, OperatorName, ServiceName, SpiffeId};
pub use operator::{operator_uri, OperatorInfo, Role, RoleError};
pub use replica::{parse_replica, replica_uri, IssuerInfo};
pub use token::{JoinToken, TokenId, TokenParseError, TokenRecord, TokenRefusal};

/// Failures of key and certificate generation (not refusals of a request).
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A key that is not ECDSA P-256.
    #[error("key is not ECDSA P-256")]
    KeyAlgorithm,
    /// The system clock is unusable.
    #[error("system clock is before 1970 or too far ahead")]
    Clock,
}

#[cfg(test)]
mod tests;
