//! An operator credential as the CLI holds it: the operator's private key and the
//! certificate the CA issued for it, and the intermediate of the replica that issued it,
//! in one string (`weftop1.<key>.<cert>[.<intermediate>]`) that fits in `WEFT_TOKEN` or a
//! 0600 file. The key signs payloads here, on the operator's side; no
//! node ever sees it.

use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use weft_ca::{ClusterName, NodeKey};

use super::signed::{Act, Payload, Signed, SIGNING_CONTEXT};

/// The prefix that marks a credential (an old admin token never starts with it).
pub const PREFIX: &str = "weftop1.";

/// A credential that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Not `weftop1.<key>.<cert>`.
    #[error("not an operator credential (expected weftop1.<key>.<cert>, as `weft operator create` prints it)")]
    Format,
    /// The key part does not load.
    #[error("the credential's key is unusable: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A loaded credential.
pub struct Credential {
    key: NodeKey,
    cert_der: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl Credential {
    /// A credential from its parts: the key, its certificate and the intermediate it
    /// chains through (empty: issued by the root).
    pub fn new(key: NodeKey, cert_der: Vec<u8>, chain: Vec<Vec<u8>>) -> Self {
        Self {
            key,
            cert_der,
            chain,
        }
    }

    /// The intermediates the certificate chains through.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Whether `s` looks like a credential rather than an old admin token.
    pub fn looks_like(s: &str) -> bool {
        s.trim().starts_with(PREFIX)
    }

    /// Parses the one-string form.
    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        let rest = s
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(CredentialError::Format)?;
        let mut parts = rest.split('.');
        let decode = |p: Option<&str>| {
            p.and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
                .ok_or(CredentialError::Format)
        };
        let key = decode(parts.next())?;
        let cert_der = decode(parts.next())?;
        let chain = match parts.next() {
            Some(p) => vec![decode(Some(p))?],
            None => Vec::new(),
        };
        if parts.next().is_some() {
            return Err(CredentialError::Format);
        }
        let pem = String::from_utf8(key).map_err(|_| CredentialError::Format)?;
        let key = NodeKey::from_pem(&pem).map_err(|e| CredentialError::Key(e.to_string()))?;
        Ok(Self {
            key,
            cert_der,
            chain,
        })
    }

    /// The one-string form (secret: it holds the private key).
    pub fn encode(&self) -> String {
        let mut out = format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(self.key.to_pem()),
            URL_SAFE_NO_PAD.encode(&self.cert_der)
        );
        for c in &self.chain {
            out.push('.');
            out.push_str(&URL_SAFE_NO_PAD.encode(c));
        }
        out
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Signs `act` for `cluster`, received by node `via`, at `now`.
    pub fn sign(
        &self,
        cluster: ClusterName,
        via: &str,
        act: Act,
        now: SystemTime,
    ) -> Result<Signed, CredentialError> {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            cluster,
            issued_at_ms: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            nonce: hex::encode(nonce),
            via: via.to_owned(),
            act,
        };
        let payload =
            serde_json::to_string(&payload).map_err(|e| CredentialError::Sign(e.to_string()))?;
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(payload.as_bytes());
        let sig = self
            .key
            .sign(&msg)
            .map_err(|e| CredentialError::Sign(e.to_string()))?;
        Ok(Signed {
            payload,
            cert: URL_SAFE_NO_PAD.encode(&self.cert_der),
            sig: URL_SAFE_NO_PAD.encode(sig),
            chain: self
                .chain
                .iter()
                .map(|c| URL_SAFE_NO_PAD.encode(c))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_string_round_trip() {
        let key = NodeKey::generate().expect("key");
        let c = Credential::new(key, vec![1, 2, 3], Vec::new());
        let s = c.encode();
        assert!(Credential::looks_like(&s));
        let back = Credential::parse(&s).expect("parses");
        assert_eq!(back.cert_der(), &[1, 2, 3]);
        assert!(back.chain().is_empty());
        let key = NodeKey::generate().expect("key");
        let chained = Credential::new(key, vec![1, 2, 3], vec![vec![4, 5]]).encode();
        let back = Credential::parse(&chained).expect("parses");
        assert_eq!(back.chain(), &[vec![4, 5]]);
        assert!(Credential::parse(&format!("{chained}.AQID")).is_err());
        for bad in [
            "",
            "weftop1.",
            "weftop1.x",
            "weftop1.###.AQID",
            "admin-token-hex",
        ] {
            assert!(Credential::parse(bad).is_err(), "{bad}");
        }
    }
}
