//! One-time join tokens: format, parsing, and the decision whether a presented token is
//! accepted. Storage (and the atomic "mark used") belongs to the node's store.
//!
//! Wire form: `weft1.<id>.<secret>.<ca-hash>[.<replica>]`, where `id` is 8 random bytes
//! in hex (it appears in logs), `secret` is 32 random bytes and `ca-hash` the SHA-256 of
//! the root certificate's DER, both base64url without padding, and `replica` the node name
//! of the CA replica that made it and alone consumes it (absent in tokens made before
//! replicas: the root holder consumes those). Only `sha256(secret)` is stored.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "weft1";
/// Longest string `JoinToken::from_str` will look at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 256;

/// Why a token string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    /// Not of the form `weft1.<id>.<secret>.<ca-hash>`.
    #[error("malformed join token: {0}")]
    Malformed(&'static str),
}

/// A token as the joining node holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    id: TokenId,
    secret: [u8; 32],
    ca_hash: [u8; 32],
    replica: Option<crate::names::NodeName>,
}

/// The public id of a token: safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(String);

impl TokenId {
    /// The id as text (16 hex digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses an id as found in a token or a request.
    pub fn parse(s: &str) -> Result<Self, TokenParseError> {
        if s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(TokenParseError::Malformed("bad token id"))
        }
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JoinToken {
    /// Makes a fresh token that pins the root certificate whose DER hashes to `ca_hash`,
    /// to be consumed by replica `replica`.
    pub fn generate_at(ca_hash: [u8; 32], replica: crate::names::NodeName) -> Self {
        Self {
            replica: Some(replica),
            ..Self::generate(ca_hash)
        }
    }

    /// The replica that made this token and alone consumes it (None: the root holder).
    pub fn replica(&self) -> Option<&crate::names::NodeName> {
        self.replica.as_ref()
    }

    /// Makes a fresh token that pins the root certificate whose DER hashes to `ca_hash`.
    pub fn generate(ca_hash: [u8; 32]) -> Self {
        let mut rng = rand::rng();
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut id);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self {
            id: TokenId(hex::encode(id)),
            secret,
            ca_hash,
            replica: None,
        }
    }

    /// The token's public id.
    pub fn id(&self) -> &TokenId {
        &self.id
    }

    /// SHA-256 of the root certificate this token pins.
    pub fn ca_hash(&self) -> [u8; 32] {
        self.ca_hash
    }

    /// What the CA stores instead of the secret.
    pub fn secret_hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret).into()
    }

    /// The record the issuing CA keeps for this token.
    pub fn record(&self, expires_at_unix: u64) -> TokenRecord {
        TokenRecord {
            id: self.id.clone(),
            secret_sha256: hex::encode(self.secret_hash()),
            expires_at_unix,
            used: false,
        }
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret),
            URL_SAFE_NO_PAD.encode(self.ca_hash)
        )?;
        match &self.replica {
            Some(r) => write!(f, ".{r}"),
            None => Ok(()),
        }
    }
}

fn decode32(part: &str, what: &'static str) -> Result<[u8; 32], TokenParseError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenParseError::Malformed(what))?;
    bytes
        .try_into()
        .map_err(|_| TokenParseError::Malformed(what))
}

impl FromStr for JoinToken {
    type Err = TokenParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_TOKEN_LEN {
            return Err(TokenParseError::Malformed("too long"));
        }
        let mut parts = s.split('.');
        if parts.next() != Some(PREFIX) {
            return Err(TokenParseError::Malformed(
                "expected it to start with 'weft1.'",
            ));
        }
        let (Some(id), Some(secret), Some(ca)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenParseError::Malformed(
                "expected four or five dot-separated parts",
            ));
        };
        // Node names may contain dots: everything after the CA hash is the replica.
        let rest: Vec<&str> = parts.collect();
        let replica = if rest.is_empty() {
            None
        } else {
            Some(
                crate::names::NodeName::new(rest.join("."))
                    .map_err(|_| TokenParseError::Malformed("bad replica name"))?,
            )
        };
        Ok(Self {
            id: TokenId::parse(id)?,
            secret: decode32(secret, "bad secret")?,
            ca_hash: decode32(ca, "bad CA hash")?,
            replica,
        })
    }
}

/// What the CA stores about an issued token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's id.
    pub id: TokenId,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// Unix seconds after which the token is refused.
    pub expires_at_unix: u64,
    /// Set once, when a join consumed it.
    pub used: bool,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// No token with this id was ever issued by this CA.
    #[error("unknown join token {0}")]
    Unknown(TokenId),
    /// The token was already used by a join.
    #[error("join token {0} was already used")]
    Used(TokenId),
    /// The token's TTL ran out.
    #[error("join token {0} has expired")]
    Expired(TokenId),
    /// The id matched but the secret did not.
    #[error("join token {0} has a wrong secret")]
    BadSecret(TokenId),
}

impl TokenRecord {
    /// Decides whether `presented_secret_hash` may consume this record at `now_unix`.
    pub fn check(
        &self,
        presented_secret_hash: &[u8; 32],
        now_unix: u64,
    ) -> Result<(), TokenRefusal> {
        let expected = hex::decode(&self.secret_sha256).unwrap_or_default();
        if !constant_time_eq(&expected, presented_secret_hash) {
            return Err(TokenRefusal::BadSecret(self.id.clone()));
        }
        if self.used {
            return Err(TokenRefusal::Used(self.id.clone()));
        }
        if now_unix >= self.expires_at_unix {
            return Err(TokenRefusal::Expired(self.id.clone()));
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_check() {
        let at = JoinToken::generate_at(
            [7; 32],
            crate::names::NodeName::new("ca.eu-1").expect("valid"),
        );
        let back: JoinToken = at.to_string().parse().expect("parses");
        assert_eq!(back, at);
        assert_eq!(back.replica().map(|r| r.as_str()), Some("ca.eu-1"));
        let t = JoinToken::generate([7; 32]);
        let parsed: JoinToken = t.to_string().parse().expect("parses");
        assert_eq!(parsed, t);
        let rec = t.record(100);
        assert_eq!(rec.check(&parsed.secret_hash(), 99), Ok(()));
        assert_eq!(
            rec.check(&parsed.secret_hash(), 100),
            Err(TokenRefusal::Expired(t.id().clone()))
        );
        let used = TokenRecord {
            used: true,
            ..rec.clone()
        };
        assert_eq!(
            used.check(&parsed.secret_hash(), 1),
            Err(TokenRefusal::Used(t.id().clone()))
        );
        let other = JoinToken::generate([7; 32]);
        assert!(matches!(
            rec.check(&other.secret_hash(), 1),
            Err(TokenRefusal::BadSecret(_))
        ));
    }

    #[test]
    fn debug_hides_secret() {
        let t = JoinToken::generate([1; 32]);
        let secret = t
            .to_string()
            .split('.')
            .nth(2)
            .map(str::to_owned)
            .expect("part");
        assert!(!format!("{t:?}").contains(&secret));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "weft1",
            "weft2.0011223344556677.a.b",
            "weft1.zz.a.b",
            "weft1.0011223344556677.AAAA.AAAA",
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad}");
        }
        assert!("weft1.".repeat(100).parse::<JoinToken>().is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,300}") {
            let _ = s.parse::<JoinToken>();
        }
    }
}
