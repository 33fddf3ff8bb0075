//! The trust bundle: which roots the cluster trusts, published by the root holder during
//! and after a root rotation and signed by every root it holds, so that a node that
//! trusts any one of them can verify it. A node adopts a bundle with a higher version
//! whose signature verifies with a root it already trusts; nothing else changes trust.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use weft_ca::TrustRoot;

use crate::record::{RecordError, MAX_SIGNED_VALUE};

/// chitchat key under which the root holder publishes the signed trust bundle.
pub const ROOTS_KEY: &str = "weft.roots";

/// Most roots (trusted and retired) a bundle may carry.
pub const MAX_ROOTS: usize = 4;

/// The roots a cluster trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBundle {
    /// Increases with every change; nodes keep the highest they verified.
    pub version: u64,
    /// Trusted roots, base64url DER; the first is the current one.
    pub roots: Vec<String>,
    /// Roots retired by a finished rotation (base64url DER, retired at Unix seconds):
    /// trusted only for signatures made before then.
    #[serde(default)]
    pub retired: Vec<(String, u64)>,
}

impl TrustBundle {
    /// A bundle of DER roots.
    pub fn new(version: u64, roots: &[Vec<u8>], retired: &[(Vec<u8>, u64)]) -> Self {
        Self {
            version,
            roots: roots.iter().map(|r| URL_SAFE_NO_PAD.encode(r)).collect(),
            retired: retired
                .iter()
                .map(|(r, at)| (URL_SAFE_NO_PAD.encode(r), *at))
                .collect(),
        }
    }

    /// The trusted roots, DER (current first).
    pub fn roots_der(&self) -> Result<Vec<Vec<u8>>, RecordError> {
        self.roots
            .iter()
            .map(|r| {
                URL_SAFE_NO_PAD
                    .decode(r)
                    .map_err(|_| RecordError::Malformed("root is not base64url"))
            })
            .collect()
    }

    /// The retired roots, DER, with when each retired.
    pub fn retired_der(&self) -> Result<Vec<(Vec<u8>, u64)>, RecordError> {
        self.retired
            .iter()
            .map(|(r, at)| {
                URL_SAFE_NO_PAD
                    .decode(r)
                    .map(|d| (d, *at))
                    .map_err(|_| RecordError::Malformed("retired root is not base64url"))
            })
            .collect()
    }

    /// Encodes the bundle with the signatures `sign` makes over it (one per root key the
    /// holder has): `body.sig1[.sig2…]`.
    pub fn encode_signed(&self, sign: impl FnOnce(&[u8]) -> Vec<Vec<u8>>) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = URL_SAFE_NO_PAD.encode(&json);
        for sig in sign(&json) {
            out.push('.');
            out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        }
        out
    }
}

/// Verifies a signed bundle: one of its signatures must verify with a root `trust`
/// already trusts, and it must name 1 to `MAX_ROOTS` roots that parse.
pub fn verify_bundle(value: &str, trust: &TrustRoot) -> Result<TrustBundle, RecordError> {
    if value.len() > MAX_SIGNED_VALUE {
        return Err(RecordError::Malformed("value too large"));
    }
    let mut parts = value.split('.');
    let body = parts
        .next()
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .ok_or(RecordError::Malformed("body is not base64url"))?;
    let signed = parts.take(MAX_ROOTS).any(|sig| {
        URL_SAFE_NO_PAD
            .decode(sig)
            .is_ok_and(|sig| trust.verify_ca_signature(&body, &sig).is_ok())
    });
    if !signed {
        return Err(RecordError::Malformed(
            "trust bundle not signed by a trusted root",
        ));
    }
    let bundle: TrustBundle = serde_json::from_slice(&body)
        .map_err(|_| RecordError::Malformed("trust bundle is not valid JSON"))?;
    if bundle.roots.is_empty() || bundle.roots.len() + bundle.retired.len() > MAX_ROOTS {
        return Err(RecordError::Malformed(
            "trust bundle has too many or no roots",
        ));
    }
    let roots = bundle.roots_der()?;
    let retired = bundle.retired_der()?;
    // Every root must parse as a trust anchor of this cluster's kind.
    TrustRoot::with_roots(trust.cluster().clone(), roots, retired)?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};
    use weft_ca::{CertificateAuthority, ClusterName};

    fn root() -> CertificateAuthority {
        CertificateAuthority::create(
            ClusterName::new("weft").expect("valid"),
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .expect("root")
        .0
    }

    #[test]
    fn a_bundle_is_adopted_only_when_a_trusted_root_signed_it() {
        let (r1, r2, stranger) = (root(), root(), root());
        let trust = TrustRoot::new(
            ClusterName::new("weft").expect("valid"),
            r1.cert_der().to_vec(),
        )
        .expect("trust");
        let bundle = TrustBundle::new(2, &[r2.cert_der().to_vec(), r1.cert_der().to_vec()], &[]);
        let by_both =
            bundle.encode_signed(|m| vec![r2.sign(m).expect("sign"), r1.sign(m).expect("sign")]);
        assert_eq!(verify_bundle(&by_both, &trust).expect("verifies"), bundle);
        let by_new_only = bundle.encode_signed(|m| vec![r2.sign(m).expect("sign")]);
        assert!(verify_bundle(&by_new_only, &trust).is_err());
        let by_stranger = bundle.encode_signed(|m| vec![stranger.sign(m).expect("sign")]);
        assert!(verify_bundle(&by_stranger, &trust).is_err());
        let tampered = by_both.replacen('e', "f", 1);
        assert!(verify_bundle(&tampered, &trust).is_err());
    }
}
