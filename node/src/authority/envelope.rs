//! The envelope of an operator signature: the payload's exact JSON text, the operator's
//! certificate and the signature. Kept apart from what payloads say (`signed`) so that
//! config entries can store it without depending on the acts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Domain separation: a signature over a payload can never be mistaken for another
/// signature the same key makes.
pub const SIGNING_CONTEXT: &[u8] = b"weft-operator-act-v1\0";

/// Largest envelope accepted (certificate, payload and signature, in base64).
pub const MAX_SIGNED: usize = 64 * 1024;

/// A signed payload as it travels and is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The payload's JSON text, exactly as signed.
    pub payload: String,
    /// The operator's certificate, base64url DER.
    pub cert: String,
    /// ECDSA P-256 SHA-256 signature over `SIGNING_CONTEXT` + `payload`, base64url DER.
    pub sig: String,
    /// The intermediate the certificate chains through when a CA replica issued it,
    /// base64url DER (empty: issued by the root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

impl Signed {
    /// The envelope in one header-safe string (base64url of its JSON).
    pub fn to_header(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses `to_header`'s form.
    pub fn from_header(s: &str) -> Result<Self, String> {
        if s.len() > MAX_SIGNED {
            return Err(format!("signed request too large ({} bytes)", s.len()));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| "signed request is not base64url".to_owned())?;
        serde_json::from_slice(&bytes).map_err(|e| {
            format!("signed request is malformed: {e}")
                .chars()
                .take(200)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn header_parser_never_panics(s in ".{0,300}") {
            let _ = Signed::from_header(&s);
        }
    }
}
