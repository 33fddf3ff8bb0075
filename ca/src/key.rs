//! A node's private key: generated on the node, never sent anywhere. It signs the
//! node's CSR and what the node publishes by gossip.

use rcgen::{CertificateParams, DnType, KeyPair, SanType, SigningKey as _, PKCS_ECDSA_P256_SHA256};
use sha2::{Digest as _, Sha256};

use crate::names::SpiffeId;
use crate::CaError;

/// An ECDSA P-256 key pair.
pub struct NodeKey {
    pair: KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(<private>)")
    }
}

impl NodeKey {
    /// Generates a fresh key.
    pub fn generate() -> Result<Self, CaError> {
        Ok(Self {
            pair: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
        })
    }

    /// Loads a key from PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, CaError> {
        let pair = KeyPair::from_pem(pem)?;
        if pair.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::KeyAlgorithm);
        }
        Ok(Self { pair })
    }

    /// PKCS#8 PEM, for the key file (mode 0600).
    pub fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// PKCS#8 DER, for rustls.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.pair.serialize_der()
    }

    /// SHA-256 of the raw public key: identifies the key without revealing anything.
    pub fn public_key_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.pair.public_key_raw()).into()
    }

    /// A CSR for `id`. The CA ignores everything in it but the key and checks the rest.
    pub fn csr_der(&self, id: &SpiffeId) -> Result<Vec<u8>, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, id.node_name().as_str());
        params.subject_alt_names = vec![SanType::URI(id.uri().try_into()?)];
        Ok(params.serialize_request(&self.pair)?.der().to_vec())
    }

    /// Signs `msg` (ECDSA P-256 SHA-256, ASN.1 DER signature).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        Ok(self.pair.sign(msg)?)
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }

    pub(crate) fn into_pair(self) -> KeyPair {
        self.pair
    }
}

impl NodeKey {
    /// A CSR naming only the node (common name), for joining before the cluster name is
    /// known. The CA adds the SPIFFE ID itself.
    pub fn join_csr_der(&self, name: &crate::names::NodeName) -> Result<Vec<u8>, CaError> {
        self.named_csr_der(name.as_str())
    }

    /// A CSR naming only `common_name` (joins, operator credentials): the CA writes the
    /// rest.
    pub fn named_csr_der(&self, common_name: &str) -> Result<Vec<u8>, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        Ok(params.serialize_request(&self.pair)?.der().to_vec())
    }
}
