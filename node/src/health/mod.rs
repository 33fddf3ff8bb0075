//! Health checks of local services: one probe loop per service with a check, reconciled
//! whenever the local services change. Verdicts go to `LocalServices`, which publishes.

pub mod probe;

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weft_ca::ServiceName;

use crate::catalog::spec::CheckSpec;
use crate::catalog::LocalServices;

/// Runs until `shutdown`: keeps one probe loop per checked service.
pub async fn supervise(services: Arc<LocalServices>, shutdown: CancellationToken) {
    let mut changes = services.subscribe();
    let mut running: HashMap<ServiceName, (CheckSpec, CancellationToken)> = HashMap::new();
    loop {
        let wanted: HashMap<ServiceName, CheckSpec> = services
            .all()
            .into_iter()
            .filter_map(|s| s.check.map(|c| (s.name, c)))
            .collect();
        running.retain(|name, (spec, stop)| {
            let keep = wanted.get(name) == Some(spec);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (name, spec) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let stop = shutdown.child_token();
            tokio::spawn(probe_loop(
                services.clone(),
                name.clone(),
                spec.clone(),
                stop.clone(),
            ));
            running.insert(name, (spec, stop));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

async fn probe_loop(
    services: Arc<LocalServices>,
    name: ServiceName,
    spec: CheckSpec,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = probe::probe(&spec.target, spec.timeout).await;
        let passed = result.is_ok();
        if services.record_probe(
            &name,
            passed,
            spec.unhealthy_threshold,
            spec.healthy_threshold,
        ) {
            match result {
                Ok(()) => info!(service = %name, "health check passing"),
                Err(e) => {
                    warn!(service = %name, reason = %e, "health check failing; instance leaves the load-balancing set")
                }
            }
        }
    }
}
