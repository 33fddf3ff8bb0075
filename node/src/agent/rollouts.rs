//! The rollout loop on every node, once a second: publish this node's per-version totals
//! in gossip, run the rollout driver (`rollout::driver`) with what this node sees, sign
//! and apply what it decides in this node's own name, log each decision as a JSON line,
//! and set the rollout gauges from the config every node routes by.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use weft_gossip::MemberStatus;

use super::state::Agent;
use crate::cluster_config::{Entry, Kind};
use crate::rollout::driver::Driver;
use crate::telemetry::metrics::{RolloutLabels, ServiceLabels};
use crate::telemetry::versions::{ClusterTotals, Published};

/// A node drives no rollout in its first seconds (it may not see every member or hold
/// the latest progress yet).
pub const SETTLE_AFTER_START: Duration = Duration::from_secs(5);
/// … nor while its config differs from an alive peer's for longer than this.
pub const SYNCED_WITHIN: Duration = Duration::from_secs(2);

/// Runs until shutdown.
pub async fn rollout_loop(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut driver = Driver::default();
    let started = tokio::time::Instant::now();
    let mut last_published = String::new();
    loop {
        tokio::select! {
            _ = agent.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let published = agent
            .data
            .metrics
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .published();
        if !published.f.is_empty() {
            let text = serde_json::to_string(&published).unwrap_or_default();
            if text != last_published {
                agent.gossip.publish_figures(text.clone()).await;
                last_published = text;
            }
        }
        let applied = agent.config.applied();
        set_gauges(&agent, &applied.rollouts);
        let members = agent.members().await;
        let mut alive = Vec::new();
        let mut totals = ClusterTotals::default();
        for m in &members {
            if m.status != MemberStatus::Alive || m.revoked {
                continue;
            }
            alive.push(m.name.clone());
            totals.add_member(&m.name, m.generation, Published::parse(&m.figures));
        }
        let now_ms = crate::clock::unix_ms();
        agent
            .recent_figures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now_ms, totals.clone());
        if applied.rollouts.is_empty() {
            continue;
        }
        let me = agent.identity.info.name.to_string();
        // Drive only with a view worth trusting: up long enough to see the members and
        // pull the config, and the config digest equal to every alive peer's just now.
        let settled = started.elapsed() >= SETTLE_AFTER_START
            && now_ms.saturating_sub(agent.config.synced_at_ms())
                <= SYNCED_WITHIN.as_millis() as u64;
        let writes = driver.tick(&applied.rollouts, &totals, &alive, &me, now_ms, settled);
        for (service, progress) in writes {
            write(&agent, &service, &progress);
        }
    }
}

/// Signs `progress` in this node's name and applies it (peers pull it like any entry).
fn write(agent: &Agent, service: &str, progress: &crate::rollout::Progress) {
    let Ok(value) = serde_json::to_value(progress) else {
        return;
    };
    let entry = Entry {
        kind: Kind::RolloutProgress,
        name: service.to_owned(),
        version: agent.config.stamp(Kind::RolloutProgress, service),
        value: Some(value),
        auth: None,
    };
    let (cert, _) = agent.identity.cert();
    let Some(entry) = crate::authority::node_signed::sign_entry(
        entry,
        agent.identity.info.cluster.clone(),
        agent.identity.info.name.as_str(),
        &cert,
        &agent.identity.chain(),
        |m| agent.identity.key.sign(m).ok(),
    ) else {
        warn!(service, "cannot sign rollout progress");
        return;
    };
    match agent.config.apply_signed(entry) {
        Ok(_) => {
            if let Some(d) = progress.history.last() {
                let line = serde_json::json!({
                    "service": service,
                    "rollout": progress.plan,
                    "state": progress.state.as_str(),
                    "decision": d,
                });
                info!(target: "weft::rollout", decision = %line, "rollout {service}: {} to {}% ({})", d.action, d.weight, d.reason);
            }
        }
        Err(e) => warn!(service, error = %e, "rollout progress not applied"),
    }
}

fn set_gauges(
    agent: &Agent,
    rollouts: &std::collections::HashMap<String, crate::rollout::RolloutView>,
) {
    let m = &agent.data.metrics;
    for (service, view) in rollouts {
        for (version, w) in [
            (&view.plan.from, 100 - view.weight),
            (&view.plan.to, view.weight),
        ] {
            m.rollout_weight
                .get_or_create(&RolloutLabels {
                    service: service.clone(),
                    version: version.clone(),
                })
                .set(i64::from(w));
        }
        m.rollout_state
            .get_or_create(&ServiceLabels {
                service: service.clone(),
            })
            .set(view.state.code());
    }
}
