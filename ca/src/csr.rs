//! What a node may ask for in a CSR. The CA grants only a key binding for the node's own
//! name; every other request is refused with a reason (see Consul CVE-2022-40716).

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509CertificationRequest};

use crate::names::SpiffeId;

/// Largest CSR the CA looks at.
pub const MAX_CSR_BYTES: usize = 4096;

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrRefusal {
    /// More than `MAX_CSR_BYTES`.
    #[error("CSR is too large ({0} bytes)")]
    TooLarge(usize),
    /// Not DER, trailing bytes, or an unusable structure.
    #[error("CSR is malformed: {0}")]
    Malformed(String),
    /// The self-signature does not verify.
    #[error("CSR signature does not verify")]
    BadSignature,
    /// Only ECDSA P-256 keys are accepted.
    #[error("CSR key must be ECDSA P-256")]
    KeyAlgorithm,
    /// The CSR asks for a CA certificate.
    #[error("CSR asks for a CA certificate")]
    AsksForCa,
    /// The CSR asks for SANs other than the node's own SPIFFE ID.
    #[error("CSR asks for a subject alternative name that is not {expected}: {found}")]
    ExtraSan {
        /// The one URI SAN that may be asked for.
        expected: String,
        /// What was asked for.
        found: String,
    },
    /// The CSR names another node in its subject.
    #[error("CSR subject names {found:?}, but the requester is {expected:?}")]
    OtherName {
        /// The requesting node.
        expected: String,
        /// The name in the CSR.
        found: String,
    },
    /// The CSR carries an extension the CA does not grant.
    #[error("CSR carries an unsupported extension: {0}")]
    Extension(String),
    /// The system clock is unusable.
    #[error("system clock is before 1970 or too far ahead")]
    Clock,
}

/// Checks a CSR from `expected`'s node; `Ok` means it asks for nothing the CA would not
/// write itself.
pub fn inspect_csr(der: &[u8], expected: &SpiffeId) -> Result<(), CsrRefusal> {
    inspect_csr_for(der, expected.node_name().as_str(), &expected.uri())
}

/// Checks a CSR that may name only `expected_cn` (common name) and `expected_uri` (the one
/// URI SAN); used for node and operator certificates alike.
pub fn inspect_csr_for(
    der: &[u8],
    expected_cn: &str,
    expected_uri: &str,
) -> Result<(), CsrRefusal> {
    if der.len() > MAX_CSR_BYTES {
        return Err(CsrRefusal::TooLarge(der.len()));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| CsrRefusal::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrRefusal::Malformed("trailing bytes".into()));
    }
    csr.verify_signature()
        .map_err(|_| CsrRefusal::BadSignature)?;

    let expected_uri = expected_uri.to_owned();
    for cn in csr.certification_request_info.subject.iter_common_name() {
        let found = cn.as_str().unwrap_or("<non-text>");
        if found != expected_cn {
            return Err(CsrRefusal::OtherName {
                expected: expected_cn.to_owned(),
                found: found.chars().take(80).collect(),
            });
        }
    }
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(uri) if *uri == expected_uri => {}
                            other => {
                                return Err(CsrRefusal::ExtraSan {
                                    expected: expected_uri,
                                    found: format!("{other}").chars().take(120).collect(),
                                })
                            }
                        }
                    }
                    if san.general_names.len() > 1 {
                        return Err(CsrRefusal::ExtraSan {
                            expected: expected_uri,
                            found: format!("{} names", san.general_names.len()),
                        });
                    }
                }
                ParsedExtension::BasicConstraints(bc) if bc.ca => {
                    return Err(CsrRefusal::AsksForCa)
                }
                ParsedExtension::BasicConstraints(_)
                | ParsedExtension::KeyUsage(_)
                | ParsedExtension::ExtendedKeyUsage(_) => {}
                other => {
                    return Err(CsrRefusal::Extension(
                        format!("{other:?}").chars().take(80).collect(),
                    ))
                }
            }
        }
    }
    Ok(())
}
