//! Cluster config without servers, and only its replication: entries replicated by gossip
//! digests and pulled over mTLS QUIC (`sync`), last writer wins by hybrid logical clock
//! (`hlc`, `state`), persisted and applied by this node's `replica`, which hands the data
//! plane a typed view (`applied`). The kinds themselves live with what they configure:
//! `routing::route`, `policy::rules`, `resilience::{settings, fault, ratelimit}`,
//! `rollout::{plan, progress}`.

pub mod applied;
pub mod hlc;
pub mod replica;
pub mod riding;
pub mod state;
pub mod sync;

pub use applied::{Applied, AppliedView};
pub use replica::{ConfigReplica, EntryCheck, WriteError};
pub use state::{ConfigState, Entry, Kind, KindError};

use crate::config::ValueError;
use crate::policy::{PolicyDefault, PolicyRule};
use crate::resilience::{Fault, RateLimit, Resilience};
use crate::routing::Route;

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
        Kind::Route
            | Kind::Resilience
            | Kind::Fault
            | Kind::Ratelimit
            | Kind::Rollout
            | Kind::RolloutProgress
    ) {
        weft_ca::ServiceName::new(name).map_err(|e| ValueError::new("name", e.to_string()))?;
    }
    if kind == Kind::Forget {
        weft_ca::NodeName::new(name).map_err(|e| ValueError::new("name", e.to_string()))?;
    }
    Ok(())
}

/// Checks a value of `kind` named `name` from the API or a peer. Nothing is applied
/// unless this passes.
pub fn validate(kind: Kind, name: &str, value: &serde_json::Value) -> Result<(), ValueError> {
    validate_name(kind, name)?;
    let parse_err = |e: serde_json::Error| ValueError::new("value", e.to_string());
    match kind {
        Kind::Route => serde_json::from_value::<Route>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::Policy if name == "default" => {
            serde_json::from_value::<PolicyDefault>(value.clone()).map_err(parse_err)?;
            Ok(())
        }
        Kind::Policy => serde_json::from_value::<PolicyRule>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::Resilience => serde_json::from_value::<Resilience>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::Fault => serde_json::from_value::<Fault>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::Ratelimit => serde_json::from_value::<RateLimit>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::Rollout => serde_json::from_value::<crate::rollout::Plan>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::RolloutProgress => serde_json::from_value::<crate::rollout::Progress>(value.clone())
            .map_err(parse_err)?
            .validate(),
        Kind::Forget => serde_json::from_value::<Forgotten>(value.clone())
            .map(|_| ())
            .map_err(parse_err),
    }
}

/// The value of a `forget` entry: the member's generation (its agent's start) it was
/// forgotten at; a restart of the node (a newer generation) brings it back.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forgotten {
    /// The generation forgotten, and every older one.
    pub generation: u64,
}
