//! The header at the start of every data-plane QUIC stream. Pure codec.
//!
//! ```text
//! "WF" | version (1) | body length (u16 BE) | body
//! body = protocol (1) | dst len (1) | dst | src len (1) | src | trace len (1) | traceparent
//! ```
//!
//! `dst` is the destination service; `src` the source service the sending node asserts
//! (empty: the node itself, e.g. an app using the HTTP proxy without a service);
//! `traceparent` is a W3C trace context or empty. A receiver reads at most
//! `MAX_BODY` bytes of body; anything malformed closes the stream with `ERR_HEADER`.

use weft_ca::ServiceName;
use weft_gossip::Protocol;

const MAGIC: &[u8; 2] = b"WF";
/// The only version so far.
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const PREFIX_LEN: usize = 5;
/// Largest body accepted.
pub const MAX_BODY: usize = 512;
/// Longest traceparent carried.
pub const MAX_TRACE: usize = 128;

/// Stream reset code: malformed or oversized header.
pub const ERR_HEADER: u32 = 0x10;
/// Stream reset code: destination service unknown or not routable here.
pub const ERR_UNKNOWN_SERVICE: u32 = 0x11;
/// Stream reset code: source not allowed (not registered on the peer node, or policy).
pub const ERR_REFUSED: u32 = 0x12;
/// Stream reset code: local backend unavailable.
pub const ERR_BACKEND: u32 = 0x13;

/// The decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// tcp or http.
    pub protocol: Protocol,
    /// Destination service.
    pub destination: ServiceName,
    /// Asserted source service, if any.
    pub source: Option<ServiceName>,
    /// W3C traceparent, if any.
    pub traceparent: Option<String>,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Wrong magic bytes.
    #[error("not a weft stream (bad magic)")]
    Magic,
    /// A version this agent does not speak.
    #[error("unsupported stream header version {0}")]
    Version(u8),
    /// Body length over `MAX_BODY`.
    #[error("stream header too large ({0} bytes)")]
    TooLarge(usize),
    /// Structure or field invalid.
    #[error("malformed stream header: {0}")]
    Malformed(&'static str),
}

impl StreamHeader {
    /// Encodes prefix and body.
    pub fn encode(&self) -> Vec<u8> {
        let src = self.source.as_ref().map(|s| s.as_str()).unwrap_or("");
        let trace = self.traceparent.as_deref().unwrap_or("");
        let trace = if trace.len() <= MAX_TRACE { trace } else { "" };
        let mut body =
            Vec::with_capacity(4 + self.destination.as_str().len() + src.len() + trace.len());
        body.push(match self.protocol {
            Protocol::Tcp => 0,
            Protocol::Http => 1,
            Protocol::Http2 => 2,
            Protocol::Grpc => 3,
        });
        for field in [self.destination.as_str(), src, trace] {
            body.push(field.len() as u8);
            body.extend_from_slice(field.as_bytes());
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Checks the 5-byte prefix; returns the body length to read next.
    pub fn decode_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<usize, HeaderError> {
        if &prefix[..2] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if prefix[2] != VERSION {
            return Err(HeaderError::Version(prefix[2]));
        }
        let len = u16::from_be_bytes([prefix[3], prefix[4]]) as usize;
        if len > MAX_BODY {
            return Err(HeaderError::TooLarge(len));
        }
        Ok(len)
    }

    /// Decodes a body of the length the prefix announced.
    pub fn decode_body(body: &[u8]) -> Result<Self, HeaderError> {
        let (&proto, mut rest) = body.split_first().ok_or(HeaderError::Malformed("empty"))?;
        let protocol = match proto {
            0 => Protocol::Tcp,
            1 => Protocol::Http,
            2 => Protocol::Http2,
            3 => Protocol::Grpc,
            _ => return Err(HeaderError::Malformed("unknown protocol")),
        };
        let mut field = || -> Result<&str, HeaderError> {
            let (&len, tail) = rest
                .split_first()
                .ok_or(HeaderError::Malformed("truncated"))?;
            let len = len as usize;
            if tail.len() < len {
                return Err(HeaderError::Malformed("truncated"));
            }
            let (value, tail) = tail.split_at(len);
            rest = tail;
            std::str::from_utf8(value).map_err(|_| HeaderError::Malformed("not UTF-8"))
        };
        let destination = ServiceName::new(field()?)
            .map_err(|_| HeaderError::Malformed("invalid destination service"))?;
        let source = match field()? {
            "" => None,
            s => Some(
                ServiceName::new(s)
                    .map_err(|_| HeaderError::Malformed("invalid source service"))?,
            ),
        };
        let trace = field()?;
        if !rest.is_empty() {
            return Err(HeaderError::Malformed("trailing bytes"));
        }
        let traceparent = match trace {
            "" => None,
            t if valid_traceparent(t) => Some(t.to_owned()),
            _ => return Err(HeaderError::Malformed("invalid traceparent")),
        };
        Ok(Self {
            protocol,
            destination,
            source,
            traceparent,
        })
    }

    /// Decodes a whole encoded header (prefix and body).
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let prefix: &[u8; PREFIX_LEN] = bytes
            .get(..PREFIX_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(HeaderError::Malformed("truncated"))?;
        let len = Self::decode_prefix(prefix)?;
        if bytes.len() != PREFIX_LEN + len {
            return Err(HeaderError::Malformed("length mismatch"));
        }
        Self::decode_body(&bytes[PREFIX_LEN..])
    }
}

/// W3C trace context: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero.
pub fn valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).expect("valid")
    }

    #[test]
    fn every_protocol_round_trips() {
        for protocol in [
            Protocol::Tcp,
            Protocol::Http,
            Protocol::Http2,
            Protocol::Grpc,
        ] {
            let h = StreamHeader {
                protocol,
                destination: svc("echo"),
                source: None,
                traceparent: None,
            };
            let encoded = h.encode();
            let back = StreamHeader::decode_body(&encoded[PREFIX_LEN..]).expect("decodes");
            assert_eq!(back.protocol, protocol);
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let h = StreamHeader {
            protocol: Protocol::Http,
            destination: svc("reviews"),
            source: Some(svc("frontend")),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        assert_eq!(StreamHeader::decode(&h.encode()), Ok(h.clone()));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(StreamHeader::decode(&bad), Err(HeaderError::Magic));
        let mut v2 = h.encode();
        v2[2] = 2;
        assert_eq!(StreamHeader::decode(&v2), Err(HeaderError::Version(2)));
        assert_eq!(
            StreamHeader::decode_prefix(b"WF\x01\xff\xff"),
            Err(HeaderError::TooLarge(65535))
        );
        let mut trailing = h.encode();
        trailing.push(0);
        assert!(StreamHeader::decode(&trailing).is_err());
    }

    #[test]
    fn traceparents() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("garbage"));
    }

    fn name() -> impl Strategy<Value = ServiceName> {
        "[a-z0-9][a-z0-9.-]{0,62}"
            .prop_map(|s| ServiceName::new(s).expect("regex matches the rule"))
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(dst in name(), src in proptest::option::of(name()), http in any::<bool>()) {
            let h = StreamHeader {
                protocol: if http { Protocol::Http } else { Protocol::Tcp },
                destination: dst,
                source: src,
                traceparent: None,
            };
            prop_assert_eq!(StreamHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = StreamHeader::decode(&bytes);
        }
    }
}
