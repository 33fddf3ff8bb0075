//! Load balancing across the instances of a service: same zone first, then power of two
//! choices over peak-EWMA latency (`balancer`, pure), behind one short lock.

use std::sync::Mutex;
use std::time::Instant;

use super::balancer::Balancer;
use crate::catalog::Instance;

/// Picks instances: same zone first, then power of two choices over peak-EWMA.
#[derive(Debug, Default)]
pub struct LoadBalancer {
    balancer: Mutex<Balancer>,
}

/// The balancer key of an instance.
pub fn endpoint_key(i: &Instance) -> String {
    // The node's gossip generation is part of the key: a restarted agent starts with a
    // clean latency and outlier record (a slow drain of its previous life must not keep
    // it shunned).
    format!("{}/{}/{}", i.node, i.service, i.node_generation)
}

impl LoadBalancer {
    /// Chooses among routable `instances`, skipping those in `exclude` (already failed).
    pub fn pick<'a>(
        &self,
        instances: &[&'a Instance],
        zone: &str,
        exclude: &[String],
    ) -> Option<&'a Instance> {
        let usable: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| !exclude.contains(&endpoint_key(i)))
            .collect();
        let same_zone: Vec<&Instance> = usable
            .iter()
            .copied()
            .filter(|i| !zone.is_empty() && i.zone == zone)
            .collect();
        let pool = if same_zone.is_empty() {
            usable
        } else {
            same_zone
        };
        let keys: Vec<String> = pool.iter().map(|i| endpoint_key(i)).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let b = self.balancer.lock().unwrap_or_else(|e| e.into_inner());
        let idx = b.pick(&key_refs, Instant::now(), |n| rand::random_range(0..n))?;
        Some(pool[idx])
    }

    /// Marks a request to `key` started.
    pub fn start(&self, key: &str) {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start(key, Instant::now());
    }

    /// Marks it failed (no latency sample).
    pub fn fail(&self, key: &str) {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel(key, Instant::now());
    }

    /// Marks it finished after `rtt`.
    pub fn finish(&self, key: &str, rtt: std::time::Duration) {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(key, rtt, Instant::now());
    }
}
