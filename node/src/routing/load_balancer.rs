//! Load balancing across the instances of a service: same zone first, then power of two
//! choices over peak-EWMA latency (`balancer`, pure), behind one short lock.

use std::sync::Mutex;
use std::time::Instant;

use super::balancer::Balancer;
use crate::catalog::Instance;

/// Now, from tokio's clock: the real monotonic clock in the agent, but one that
/// `#[tokio::test(start_paused = true)]` tests can pause and advance (`Balancer` keeps
/// taking `std::time::Instant`).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

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
            .filter(|i| exclude.is_empty() || !exclude.contains(&endpoint_key(i)))
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
        let idx = b.pick(&key_refs, now(), |n| rand::random_range(0..n))?;
        Some(pool[idx])
    }

    /// Marks a request to `key` started.
    pub fn start(&self, key: &str) {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start(key, now());
    }

    /// Marks it failed (no latency sample).
    pub fn fail(&self, key: &str) {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel(key, now());
    }

    /// Marks it finished after `rtt`.
    pub fn finish(&self, key: &str, rtt: std::time::Duration) {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(key, rtt, now());
    }
}

#[cfg(test)]
mod tests {
    //! Latency records fading with time, through `LoadBalancer` on tokio's paused clock.

    use std::time::Duration;

    use weft_ca::ServiceName;
    use weft_gossip::{MemberStatus, Protocol};

    use super::*;

    fn instance(node: &str) -> Instance {
        Instance {
            service: ServiceName::new("api").expect("valid service name"),
            node: node.into(),
            node_addr: "127.0.0.1:7443".parse().expect("valid address"),
            node_generation: 1,
            zone: String::new(),
            port: 80,
            protocol: Protocol::Http,
            version: "v1".into(),
            tags: Vec::new(),
            healthy: true,
            node_status: MemberStatus::Alive,
            revoked: false,
            is_local: false,
            local_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_record_fades_and_the_instance_is_tried_again() {
        let lb = LoadBalancer::default();
        let (slow, busy) = (instance("slow"), instance("busy"));
        lb.start(&endpoint_key(&slow));
        lb.finish(&endpoint_key(&slow), Duration::from_millis(50));
        // One request in flight doubles the (default, 1 ms) cost of the other.
        lb.start(&endpoint_key(&busy));
        let both = [&slow, &busy];
        // With two instances both are always drawn: the choice is deterministic.
        let picked = lb.pick(&both, "", &[]).expect("an instance");
        assert_eq!(
            picked.node, "busy",
            "2 ms of pending load beats a 50 ms record"
        );

        tokio::time::advance(Duration::from_secs(60)).await;
        let picked = lb.pick(&both, "", &[]).expect("an instance");
        assert_eq!(
            picked.node, "slow",
            "a minute on, the 50 ms record has faded"
        );
    }
}
