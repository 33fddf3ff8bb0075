//! The typed view of the cluster config that the data plane reads: every entry parsed
//! once, when the replica changes, into the types of `routing`, `policy` and
//! `resilience`. Requests read an `Arc` of it and never parse text.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::state::{ConfigState, Kind};
use crate::policy::PolicySet;
use crate::resilience::{Fault, RateLimit, Resilience};
use crate::routing::Route;

/// The typed config the data plane uses.
#[derive(Debug, Default)]
pub struct Applied {
    /// Routes by destination service.
    pub routes: HashMap<String, Route>,
    /// The policy default and rules.
    pub policy: PolicySet,
    /// Resilience settings by destination service.
    pub resilience: HashMap<String, Resilience>,
    /// Faults by destination service.
    pub faults: HashMap<String, Fault>,
    /// Rate limits by destination service.
    pub ratelimits: HashMap<String, RateLimit>,
    /// Rollouts by service, with the weight each puts on its new version (already
    /// folded into `routes`).
    pub rollouts: HashMap<String, crate::rollout::RolloutView>,
}

fn typed<T: serde::de::DeserializeOwned>(state: &ConfigState, kind: Kind) -> HashMap<String, T> {
    state
        .live(kind)
        .filter_map(|e| {
            Some((
                e.name.clone(),
                serde_json::from_value(e.value.clone()?).ok()?,
            ))
        })
        .collect()
}

impl Applied {
    /// Builds the view from the live entries (each validated before it was merged).
    pub fn build(state: &ConfigState) -> Self {
        let mut a = Self {
            routes: typed(state, Kind::Route),
            resilience: typed(state, Kind::Resilience),
            faults: typed(state, Kind::Fault),
            ratelimits: typed(state, Kind::Ratelimit),
            ..Self::default()
        };
        for e in state.live(Kind::Rollout) {
            let Some(plan) = e
                .value
                .clone()
                .and_then(|v| serde_json::from_value::<crate::rollout::Plan>(v).ok())
            else {
                continue;
            };
            let progress_entry = state
                .get(Kind::RolloutProgress, &e.name)
                .filter(|p| p.value.is_some());
            let progress =
                progress_entry.and_then(|p| serde_json::from_value(p.value.clone()?).ok());
            let mut view = crate::rollout::RolloutView::new(
                plan,
                progress,
                progress_entry.map(|p| p.version.node.clone()),
            );
            // The operator's latest word wins: a route written after the rollout started
            // replaces what the rollout had put in force.
            view.in_force = state
                .get(Kind::Route, &e.name)
                .is_none_or(|r| r.value.is_none() || r.version < e.version);
            if view.in_force {
                view.overlay(a.routes.entry(e.name.clone()));
            }
            a.rollouts.insert(e.name.clone(), view);
        }
        for e in state.live(Kind::Policy) {
            let Some(v) = e.value.clone() else { continue };
            if e.name == "default" {
                if let Ok(d) = serde_json::from_value(v) {
                    a.policy.default = d;
                }
            } else if let Ok(r) = serde_json::from_value(v) {
                a.policy.rules.push((e.name.clone(), r));
            }
        }
        a
    }
}

/// A shared, read-mostly handle on the current `Applied` (the replica swaps it).
#[derive(Debug, Clone, Default)]
pub struct AppliedView(Arc<RwLock<Arc<Applied>>>);

impl AppliedView {
    /// A view holding `a`.
    pub fn new(a: Applied) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(a))))
    }

    /// The current config.
    pub fn get(&self) -> Arc<Applied> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces it.
    pub fn set(&self, a: Applied) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(a);
    }
}
