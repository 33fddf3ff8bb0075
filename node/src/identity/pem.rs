//! Minimal PEM encoding for certificates stored on disk.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Encodes DER as a PEM block with `label` (e.g. "CERTIFICATE").
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes the first PEM block labelled `label`.
pub fn decode(label: &str, text: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

/// Decodes every PEM block labelled `label`, in order (a certificate and its chain);
/// stops at the first block that does not decode.
pub fn decode_all(label: &str, text: &str) -> Vec<Vec<u8>> {
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(der) = decode(label, rest) {
        out.push(der);
        match rest.find(&end) {
            Some(i) => rest = &rest[i + end.len()..],
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = super::encode("CERTIFICATE", &der);
        assert_eq!(super::decode("CERTIFICATE", &pem), Some(der.clone()));
        assert_eq!(super::decode("KEY", &pem), None);
        let two = format!("{pem}{}", super::encode("CERTIFICATE", b"second"));
        assert_eq!(
            super::decode_all("CERTIFICATE", &two),
            vec![der, b"second".to_vec()]
        );
    }
}
