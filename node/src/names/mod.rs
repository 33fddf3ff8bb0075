//! Services by name with no per-app configuration: every service in the catalog (and
//! every version of it) gets a stable virtual IP from the agent's `vip_range` (`vip`),
//! the agent answers `<service>.weft` and `<version>.<service>.weft` with it on its DNS
//! address (`dns`), and listens on each virtual IP for the service's ports
//! (`proxy::listeners::supervise_vips`), so `curl http://reviews.weft:9080/` reaches the
//! mesh without an upstream entry. `Names` is the table all three read; the agent rebuilds
//! it whenever the catalog changes.

pub mod dns;
pub mod vip;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use weft_ca::ServiceName;

use crate::catalog::Catalog;
pub use vip::{RangeError, VipRange};

/// What a virtual IP stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipTarget {
    /// The service.
    pub service: ServiceName,
    /// The version it pins (for `<version>.<service>`), if any.
    pub version: Option<String>,
}

/// The table of one catalog.
#[derive(Debug, Default)]
struct Table {
    /// `reviews`, `v2.reviews` → address.
    by_name: BTreeMap<String, Ipv4Addr>,
    /// Address → what it stands for.
    by_ip: HashMap<Ipv4Addr, VipTarget>,
    /// Service → the ports its instances listen on.
    ports: BTreeMap<String, BTreeSet<u16>>,
}

/// The virtual IPs of the current catalog.
#[derive(Debug)]
pub struct Names {
    range: VipRange,
    table: RwLock<Arc<Table>>,
    changed: watch::Sender<u64>,
}

impl Names {
    /// An empty table over `range`.
    pub fn new(range: VipRange) -> Self {
        Self {
            range,
            table: RwLock::default(),
            changed: watch::channel(0).0,
        }
    }

    /// The range.
    pub fn range(&self) -> VipRange {
        self.range
    }

    /// Rebuilds the table from `catalog` (every instance, healthy or not: a service whose
    /// instances all fail still resolves, and the mesh answers 503 with the reason).
    pub fn rebuild(&self, catalog: &Catalog) {
        let mut ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        let mut versions: BTreeSet<(String, String)> = BTreeSet::new();
        for i in &catalog.instances {
            ports
                .entry(i.service.to_string())
                .or_default()
                .insert(i.port);
            versions.insert((i.service.to_string(), i.version.clone()));
        }
        let names = vip::vip_names(versions.iter().map(|(s, v)| (s.as_str(), v.as_str())));
        let by_name = self.range.assign(names.iter().map(String::as_str));
        let mut by_ip = HashMap::new();
        for (name, ip) in &by_name {
            let (service, version) = match name.split_once('.') {
                Some((v, s)) => (s, Some(v.to_owned())),
                None => (name.as_str(), None),
            };
            if let Ok(service) = ServiceName::new(service) {
                by_ip.insert(*ip, VipTarget { service, version });
            }
        }
        let table = Table {
            by_name,
            by_ip,
            ports,
        };
        let mut cur = self.table.write().unwrap_or_else(|e| e.into_inner());
        if cur.by_name != table.by_name || cur.ports != table.ports {
            *cur = Arc::new(table);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// The address of `reviews` or `v2.reviews`.
    pub fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .get(name)
            .copied()
    }

    /// The address of a service (for `weft services` and the dashboard).
    pub fn vip_of(&self, service: &str) -> Option<Ipv4Addr> {
        self.lookup(service)
    }

    /// Every listener the table wants: each virtual IP on each port of its service.
    pub fn listeners(&self) -> Vec<(SocketAddr, VipTarget)> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = Vec::new();
        for (ip, target) in &t.by_ip {
            for port in t.ports.get(target.service.as_str()).into_iter().flatten() {
                out.push((SocketAddr::from((*ip, *port)), target.clone()));
            }
        }
        out.sort_by_key(|(a, _)| *a);
        out
    }

    /// Notified when the table changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl dns::Lookup for Names {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        Names::lookup(self, name)
    }
}
