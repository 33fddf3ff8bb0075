//! The one enforcement point: every L4 stream and every HTTP request is authorised here,
//! on the receiving node, or on the sending node when the instance is local (no inbound
//! hop). Denials, and would-be denials in dry-run, are counted and logged the same way
//! wherever the check happens.

use tracing::{info, warn};

use super::rules::{decide, Action, Decision, PolicySet};
use crate::telemetry::metrics::{Metrics, ModeLabels};

/// Authorises `src → dst` (`http`: normalised path and method) under `policy`.
pub fn enforce(
    policy: &PolicySet,
    metrics: &Metrics,
    src: &str,
    dst: &str,
    http: Option<(&str, &str)>,
) -> Decision {
    let d = decide(
        &policy.default,
        policy.rules.iter().map(|(n, r)| (n.as_str(), r)),
        src,
        dst,
        http,
    );
    if d.verdict == Action::Deny {
        let mode = if d.dry_run { "dry_run" } else { "enforce" };
        metrics
            .policy_denied
            .get_or_create(&ModeLabels { mode: mode.into() })
            .inc();
        if d.dry_run {
            info!(source = src, destination = dst, rule = %d.rule, "policy would deny (dry run)");
        } else {
            warn!(source = src, destination = dst, rule = %d.rule, "denied by policy");
        }
    }
    d
}
