//! Cluster config without servers: entries replicated by gossip digests and pulled over
//! mTLS QUIC, last writer wins by hybrid logical clock (`hlc`, `state`), with typed kinds
//! (`route`, `policy`) validated before they are stored or applied.

pub mod hlc;
pub mod policy;
pub mod replica;
pub mod route;
pub mod state;
pub mod traffic;

pub use replica::{Applied, ConfigReplica, WriteError};
pub use state::{ConfigState, Entry, Kind};

/// A config value that does not validate: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {message}")]
pub struct ValueError {
    /// The field (dotted path).
    pub field: &'static str,
    /// Why.
    pub message: String,
}

impl ValueError {
    /// A refusal of `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Checks an entry name (also for deletes).
pub fn validate_name(kind: Kind, name: &str) -> Result<(), ValueError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        return Err(ValueError::new(
            "name",
            format!("{name:?}: up to 128 of [A-Za-z0-9._-]"),
        ));
    }
    if matches!(
        kind,
        Kind::Route | Kind::Resilience | Kind::Fault | Kind::Ratelimit
    ) {
        weft_ca::ServiceName::new(name).map_err(|e| ValueError::new("name", e.to_string()))?;
    }
    Ok(())
}

/// Checks a value of `kind` named `name` from the API or a peer. Nothing is applied
/// unless this passes.
pub fn validate(kind: Kind, name: &str, value: &serde_json::Value) -> Result<(), ValueError> {
    validate_name(kind, name)?;
    let parse_err = |e: serde_json::Error| ValueError::new("value", e.to_string());
    match kind {
        Kind::Route => {
            let r: route::Route = serde_json::from_value(value.clone()).map_err(parse_err)?;
            r.validate()
        }
        Kind::Policy if name == "default" => {
            serde_json::from_value::<policy::PolicyDefault>(value.clone()).map_err(parse_err)?;
            Ok(())
        }
        Kind::Policy => {
            let r: policy::PolicyRule = serde_json::from_value(value.clone()).map_err(parse_err)?;
            r.validate()
        }
        Kind::Resilience => serde_json::from_value::<traffic::Resilience>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::Fault => serde_json::from_value::<traffic::Fault>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::Ratelimit => serde_json::from_value::<traffic::RateLimit>(value.clone())
            .map_err(parse_err)?
            .validate(),
    }
}
