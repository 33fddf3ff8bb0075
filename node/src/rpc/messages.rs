//! Messages of the join protocol (ALPN `weft-join/1`) and of node-to-node control
//! requests (ALPN `weft-ctl/1`). JSON, one request and one response per QUIC stream.

use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use weft_ca::{ClusterName, JoinToken, NodeName};

use crate::authority::Signed;
use crate::cluster_config::{Entry, Kind};
use weft_gossip::Keyring;

pub use crate::ca_role::{ParsedJoin, RefusalKind};
pub use crate::identity::keyring::KeyringOp;

/// Largest request a server reads.
pub const MAX_REQUEST: usize = 16 * 1024;
/// Largest response a client reads.
pub const MAX_RESPONSE: usize = 1024 * 1024;
/// Size of one page of a config pull (well under `MAX_RESPONSE`).
pub const CONFIG_PAGE_BYTES: usize = 512 * 1024;
/// Most pages one pull follows (10 000 entries of a few KiB fit comfortably).
pub const MAX_CONFIG_PAGES: usize = 256;

/// A request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than allowed.
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    /// Not the expected JSON.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Decodes a JSON message of at most `limit` bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::Malformed(e.to_string().chars().take(200).collect()))
}

/// Encodes a message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).unwrap_or_default()
}

/// Binary fields travel as base64url.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a base64url field.
pub fn unb64(s: &str, field: &str) -> Result<Vec<u8>, DecodeError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| DecodeError::Malformed(format!("{field} is not base64url")))
}

/// A joining node's request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The name it asks for.
    pub name: NodeName,
    /// Its CSR, base64url DER.
    pub csr: String,
    /// The one-time token.
    pub token: String,
}

impl JoinRequest {
    /// Decodes and checks every field of a join request from the network.
    pub fn parse(bytes: &[u8]) -> Result<ParsedJoin, DecodeError> {
        let req: JoinRequest = decode(bytes, MAX_REQUEST)?;
        req.into_parsed()
    }

    /// Checks the fields of an already-decoded request.
    pub fn into_parsed(self) -> Result<ParsedJoin, DecodeError> {
        let csr = unb64(&self.csr, "csr")?;
        let token = self
            .token
            .parse::<JoinToken>()
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        Ok(ParsedJoin {
            name: self.name,
            csr,
            token,
        })
    }
}

/// A member's addresses, handed to joining nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberAddr {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
    /// QUIC address.
    pub quic_addr: SocketAddr,
    /// Holds the cluster CA.
    #[serde(default)]
    pub ca: bool,
}

/// What an accepted joiner receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinGrant {
    /// Cluster name.
    pub cluster: ClusterName,
    /// Its certificate, base64url DER.
    pub cert: String,
    /// The intermediate it chains through (the issuing replica's), base64url DER.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The root certificate, base64url DER.
    pub ca: String,
    /// Every root the cluster trusts (more than `ca` during a root rotation).
    #[serde(default)]
    pub roots: Vec<String>,
    /// Gossip keys.
    pub keyring: Keyring,
    /// Current members.
    pub members: Vec<MemberAddr>,
}

/// The answer to a join request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum JoinResponse {
    /// Accepted.
    Granted(Box<JoinGrant>),
    /// Refused.
    Refused {
        /// Category.
        kind: RefusalKind,
        /// One-line reason.
        message: String,
    },
}

/// Requests between members (mTLS; the caller is identified by its certificate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CtlRequest {
    /// Renew the caller's certificate.
    Renew {
        /// CSR, base64url DER.
        csr: String,
    },
    /// A join request received by another member, forwarded to the CA node.
    Join(JoinRequest),
    /// Send one page of cluster-config entries (the caller's digest differs from ours):
    /// the first, or the one after `after`.
    ConfigPull {
        /// The last key of the previous page.
        #[serde(default)]
        after: Option<(Kind, String)>,
    },
    /// A cluster-wide change signed by an operator (join token, revocation, gossip key,
    /// operator credentials), forwarded by the member whose API received it. The
    /// receiver verifies the signature itself and executes it: the sender's certificate
    /// grants nothing here.
    Operator {
        /// The signed act.
        signed: Signed,
    },
    /// To the replica that owns a node name (`ca_role::names`): record a claim on it
    /// before a join is answered, or extend it at a renewal.
    ClaimName {
        /// The name.
        name: NodeName,
        /// `token:<id>` for a join.
        claimant: String,
        /// Expiry of the certificate the claim is for.
        until_unix: u64,
        /// A renewal of the name's holder.
        #[serde(default)]
        renewal: bool,
    },
    /// To the owner: drop the claim of a join that failed after claiming.
    ReleaseName {
        /// The name.
        name: NodeName,
        /// The join's claimant.
        claimant: String,
    },
    /// To the root holder: sign the caller an intermediate for `csr`. With the operator's
    /// act when it becomes a replica; without, only a current replica (renewal).
    ReplicaCert {
        /// `AddReplica` for the caller, signed by an admin.
        #[serde(default)]
        signed: Option<Signed>,
        /// The replica's CSR, base64url DER.
        csr: String,
    },
    /// The callee's wall clock (`weft doctor` measures skew between members: certificate
    /// validity and signed timestamps assume clocks within seconds of each other).
    Time,
}

/// Answers to `CtlRequest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum CtlResponse {
    /// A renewed certificate.
    Cert {
        /// base64url DER.
        cert: String,
        /// The intermediates it chains through, base64url DER.
        #[serde(default)]
        chain: Vec<String>,
    },
    /// Answer to a forwarded join.
    Join(JoinResponse),
    /// A created token.
    Token {
        /// The token.
        token: String,
        /// Its id.
        id: String,
        /// Expiry, Unix seconds.
        expires_at_unix: u64,
    },
    /// One page of the sender's cluster-config entries.
    Config {
        /// Entries, tombstones included.
        entries: Vec<Entry>,
        /// Where the next page starts, when there is one.
        #[serde(default)]
        next: Option<(Kind, String)>,
    },
    /// Serials revoked.
    Revoked {
        /// Hex serials.
        serials: Vec<String>,
    },
    /// The callee's wall clock, Unix milliseconds.
    Time {
        /// Unix milliseconds when the request was handled.
        unix_ms: u64,
    },
    /// Refused or failed.
    Error {
        /// Category.
        kind: RefusalKind,
        /// One-line reason.
        message: String,
    },
    /// The answer to an operator act that has no answer of its own (operators).
    Answer {
        /// JSON.
        value: serde_json::Value,
    },
    /// The keyring after a change: primary and accepted key ids.
    Keyring {
        /// Primary key id.
        primary: u32,
        /// Accepted key ids.
        keys: Vec<u32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn join_request_round_trip() {
        let token = JoinToken::generate([3; 32]);
        let req = JoinRequest {
            name: NodeName::new("vm-2").expect("valid"),
            csr: b64(b"csr"),
            token: token.to_string(),
        };
        let parsed = JoinRequest::parse(&encode(&req)).expect("parses");
        assert_eq!(parsed.csr, b"csr");
        assert_eq!(parsed.token, token);
    }

    #[test]
    fn refuses_bad_fields() {
        for bad in [
            r#"{"name":"VM","csr":"","token":""}"#,
            r#"{"name":"vm","csr":"***","token":"weft1.x"}"#,
            r#"{"name":"vm","csr":"","token":"weft1.x","extra":1}"#,
            "null",
        ] {
            assert!(JoinRequest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(matches!(
            JoinRequest::parse(&vec![b' '; MAX_REQUEST + 1]),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn ctl_responses_round_trip() {
        let join = CtlResponse::Join(JoinResponse::Refused {
            kind: RefusalKind::BadToken,
            message: "x".into(),
        });
        let back: CtlResponse = decode(&encode(&join), MAX_RESPONSE).expect("decodes");
        assert!(matches!(
            back,
            CtlResponse::Join(JoinResponse::Refused { .. })
        ));
    }

    proptest! {
        #[test]
        fn join_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = JoinRequest::parse(&bytes);
        }
    }
}
