//! Typed names: a `NodeName`, `ClusterName` or `SpiffeId` cannot hold an invalid value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The node or cluster name does not match `[a-z0-9][a-z0-9.-]{0,62}`.
    #[error("invalid {kind} name {value:?}: must match [a-z0-9][a-z0-9.-]{{0,62}}")]
    Invalid {
        /// "node" or "cluster".
        kind: &'static str,
        /// The refused value (truncated to 80 characters).
        value: String,
    },
    /// The SPIFFE ID is not of the form `spiffe://<cluster>/node/<name>`.
    #[error("invalid SPIFFE ID {0:?}: expected spiffe://<cluster>/node/<name>")]
    Spiffe(String),
}

fn check(kind: &'static str, value: &str) -> Result<(), NameError> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid {
            kind,
            value: value.chars().take(80).collect(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check($kind, &value)?;
                Ok(Self(value))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A node's name, unique in the cluster: `[a-z0-9][a-z0-9.-]{0,62}`.
    NodeName,
    "node"
);
name_type!(
    /// A cluster's name, which is also its SPIFFE trust domain.
    ClusterName,
    "cluster"
);

name_type!(
    /// A service's name: `[a-z0-9][a-z0-9.-]{0,62}`, like node names. A name that could
    /// carry markup (`<script>`) or a path can never be built.
    ServiceName,
    "service"
);

name_type!(
    /// An operator's name (a person or an automation): `[a-z0-9][a-z0-9.-]{0,62}`.
    OperatorName,
    "operator"
);

/// A node's SPIFFE identity, `spiffe://<cluster>/node/<name>`: the one URI SAN of its
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    cluster: ClusterName,
    node: NodeName,
}

impl SpiffeId {
    /// The identity of `node` in `cluster`.
    pub fn node(cluster: ClusterName, node: NodeName) -> Self {
        Self { cluster, node }
    }

    /// The trust domain.
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// The node name.
    pub fn node_name(&self) -> &NodeName {
        &self.node
    }

    /// The URI form, as written in the certificate.
    pub fn uri(&self) -> String {
        format!("spiffe://{}/node/{}", self.cluster, self.node)
    }
}

impl FromStr for SpiffeId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NameError::Spiffe(s.chars().take(120).collect());
        let rest = s.strip_prefix("spiffe://").ok_or_else(err)?;
        let (cluster, rest) = rest.split_once('/').ok_or_else(err)?;
        let node = rest.strip_prefix("node/").ok_or_else(err)?;
        Ok(Self {
            cluster: ClusterName::new(cluster).map_err(|_| err())?,
            node: NodeName::new(node).map_err(|_| err())?,
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["a", "vm-1", "0", "db.eu-1", &"a".repeat(63)] {
            assert!(NodeName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "A",
            "vm_1",
            "vm 1",
            &"a".repeat(64),
            "é",
            "a/b",
        ] {
            assert!(NodeName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_names_refuse_markup() {
        assert!(ServiceName::new("reviews").is_ok());
        assert!(ServiceName::new("<script>alert(1)</script>").is_err());
    }

    #[test]
    fn spiffe_round_trip() {
        let id: SpiffeId = "spiffe://weft/node/vm-1".parse().expect("valid");
        assert_eq!(id.node_name().as_str(), "vm-1");
        assert_eq!(id.uri(), "spiffe://weft/node/vm-1");
        for bad in [
            "spiffe://weft/svc/x",
            "spiffe://weft/node/",
            "spiffe://weft/node/a/b",
            "http://weft/node/a",
            "spiffe://WEFT/node/a",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad}");
        }
    }
}
