//! The cluster-wide catalog: every instance of every service, built from the verified
//! member list. Refreshed every gossip round; readers take a cheap snapshot.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use weft_ca::ServiceName;
use weft_gossip::{Member, MemberStatus, Protocol};

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Service.
    pub service: ServiceName,
    /// Node running it.
    pub node: String,
    /// That node's QUIC address.
    pub node_addr: SocketAddr,
    /// That node's process generation (changes on restart).
    pub node_generation: u64,
    /// Its node's zone.
    pub zone: String,
    /// Local port on its node.
    pub port: u16,
    /// tcp or http.
    pub protocol: Protocol,
    /// Version label.
    pub version: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Health check passing.
    pub healthy: bool,
    /// Its node's status.
    pub node_status: MemberStatus,
    /// Its node's certificate is revoked.
    pub revoked: bool,
    /// Runs on this node.
    pub is_local: bool,
    /// Where this node reaches the instance when it is its own (`address`:`port`).
    pub local_addr: SocketAddr,
}

impl Instance {
    /// Whether it may receive traffic.
    pub fn routable(&self) -> bool {
        self.healthy && self.node_status == MemberStatus::Alive && !self.revoked
    }
}

/// A snapshot of all instances.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Instances, sorted by service then node.
    pub instances: Vec<Instance>,
}

impl Catalog {
    /// Points this node's own instances at the addresses their definitions give
    /// (`address`): gossip carries only ports.
    pub fn set_local_addrs(&mut self, local: &[(ServiceName, SocketAddr)]) {
        for i in self.instances.iter_mut().filter(|i| i.is_local) {
            if let Some((_, a)) = local.iter().find(|(n, _)| n == &i.service) {
                i.local_addr = *a;
            }
        }
    }

    /// Builds the catalog from verified members.
    pub fn build(members: &[Member]) -> Self {
        let mut instances: Vec<Instance> = members
            .iter()
            .filter(|m| m.status != MemberStatus::Left)
            .flat_map(|m| {
                m.services.iter().map(move |s| Instance {
                    service: s.name.clone(),
                    node: m.name.clone(),
                    node_addr: m.address,
                    node_generation: m.generation,
                    zone: m.zone.clone(),
                    port: s.port,
                    protocol: s.protocol,
                    version: s.version.clone(),
                    tags: s.tags.clone(),
                    healthy: s.healthy,
                    node_status: m.status,
                    revoked: m.revoked,
                    is_local: m.is_self,
                    local_addr: SocketAddr::from(([127, 0, 0, 1], s.port)),
                })
            })
            .collect();
        instances.sort_by(|a, b| (a.service.as_str(), &a.node).cmp(&(b.service.as_str(), &b.node)));
        Self { instances }
    }

    /// Instances of `service` that may receive traffic. When none is on an alive node,
    /// the last known good ones (healthy when last heard of, on nodes that failed rather
    /// than left, not revoked) are used instead: a node cut off from gossip keeps routing
    /// on what it knew, as Envoy keeps its last config (the peers' certificates and the
    /// dial still decide whether a stream gets through).
    pub fn routable(&self, service: &ServiceName) -> Vec<&Instance> {
        let live: Vec<&Instance> = self
            .instances
            .iter()
            .filter(|i| &i.service == service && i.routable())
            .collect();
        if !live.is_empty() {
            return live;
        }
        self.last_known(service)
    }

    /// Healthy, unrevoked instances of `service` on failed nodes.
    pub fn last_known(&self, service: &ServiceName) -> Vec<&Instance> {
        self.instances
            .iter()
            .filter(|i| {
                &i.service == service
                    && i.healthy
                    && !i.revoked
                    && i.node_status == MemberStatus::Failed
            })
            .collect()
    }

    /// Whether node `node` runs `service` (any health): the check for asserted sources.
    pub fn node_runs(&self, node: &str, service: &ServiceName) -> bool {
        self.instances
            .iter()
            .any(|i| i.node == node && &i.service == service)
    }

    /// Whether any node runs `service`.
    pub fn knows(&self, service: &ServiceName) -> bool {
        self.protocol_of(service).is_some()
    }

    /// How `service` speaks (None: no node runs it).
    pub fn protocol_of(&self, service: &ServiceName) -> Option<Protocol> {
        self.instances
            .iter()
            .find(|i| &i.service == service)
            .map(|i| i.protocol)
    }
}

/// The shared, periodically refreshed catalog, with a signal on every refresh.
#[derive(Debug, Clone)]
pub struct SharedCatalog {
    current: Arc<RwLock<Arc<Catalog>>>,
    refreshed: watch::Sender<u64>,
}

impl Default for SharedCatalog {
    fn default() -> Self {
        Self {
            current: Arc::default(),
            refreshed: watch::channel(0).0,
        }
    }
}

impl SharedCatalog {
    /// The current snapshot.
    pub fn get(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the snapshot and signals subscribers.
    pub fn set(&self, c: Catalog) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
        self.refreshed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Resolves at each refresh after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.refreshed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(node: &str, status: MemberStatus, healthy: bool, revoked: bool) -> Instance {
        Instance {
            service: ServiceName::new("api").expect("name"),
            node: node.into(),
            node_addr: "127.0.0.1:7443".parse().expect("addr"),
            node_generation: 1,
            zone: String::new(),
            port: 80,
            protocol: Protocol::Http,
            version: "v1".into(),
            tags: Vec::new(),
            healthy,
            node_status: status,
            revoked,
            is_local: false,
            local_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    fn nodes(c: &Catalog) -> Vec<&str> {
        let api = ServiceName::new("api").expect("name");
        c.routable(&api).iter().map(|i| i.node.as_str()).collect()
    }

    #[test]
    fn alive_instances_win_and_failed_ones_are_the_last_resort() {
        let mut c = Catalog {
            instances: vec![
                inst("a", MemberStatus::Alive, true, false),
                inst("b", MemberStatus::Failed, true, false),
            ],
        };
        assert_eq!(nodes(&c), ["a"]);
        c.instances[0].node_status = MemberStatus::Failed;
        assert_eq!(
            nodes(&c),
            ["a", "b"],
            "every node failed: keep the last known"
        );
        c.instances[0].healthy = false;
        c.instances[1].revoked = true;
        assert!(nodes(&c).is_empty(), "never unhealthy or revoked instances");
        c.instances[0] = inst("a", MemberStatus::Left, true, false);
        assert!(nodes(&c).is_empty(), "never nodes that left");
    }
}
