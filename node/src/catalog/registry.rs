//! This node's own services: from the config file and from the API (persisted in the
//! store), with their health. Every change bumps a watch so the publisher, the health
//! checker and the upstream listeners reconcile.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;

use tokio::sync::watch;
use weft_ca::ServiceName;
use weft_gossip::{ServiceRecord, ServiceSet};

use super::health::HealthState;
use super::spec::{check_set, Conflict, ServiceSpec, SpecError};
use crate::config::file::ServiceConfig;
use crate::store::{Store, StoreError};

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The definition is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// It conflicts with other services.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The local services and their health.
#[derive(Debug)]
pub struct LocalServices {
    own_ips: Vec<IpAddr>,
    from_file: RwLock<Vec<ServiceSpec>>,
    from_api: RwLock<Vec<ServiceSpec>>,
    health: RwLock<HashMap<ServiceName, HealthState>>,
    version: watch::Sender<u64>,
    store: Store,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|e| e.into_inner()).clone()
}

impl LocalServices {
    /// Loads the API-registered services from the store and takes the file's.
    pub fn new(
        store: Store,
        own_ips: Vec<IpAddr>,
        file: &[ServiceConfig],
    ) -> Result<Self, RegistryError> {
        let from_file = file
            .iter()
            .map(|c| ServiceSpec::from_config(c, &own_ips))
            .collect::<Result<Vec<_>, _>>()?;
        let mut from_api = Vec::new();
        for c in store.services::<ServiceConfig>()? {
            match ServiceSpec::from_config(&c, &own_ips) {
                Ok(s) if !from_file.iter().any(|f| f.name == s.name) => from_api.push(s),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a stored service that no longer validates")
                }
            }
        }
        let all: Vec<ServiceSpec> = from_file.iter().chain(&from_api).cloned().collect();
        check_set(&all)?;
        Ok(Self {
            own_ips,
            from_file: RwLock::new(from_file),
            from_api: RwLock::new(from_api),
            health: RwLock::new(HashMap::new()),
            version: watch::channel(0).0,
            store,
        })
    }

    /// Every local service.
    pub fn all(&self) -> Vec<ServiceSpec> {
        let mut v = read(&self.from_file);
        v.extend(read(&self.from_api));
        v
    }

    /// The local service named `name`.
    pub fn get(&self, name: &ServiceName) -> Option<ServiceSpec> {
        self.all().into_iter().find(|s| &s.name == name)
    }

    /// Subscribes to changes (registrations and health verdicts).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Registers (or replaces) a service through the API; persisted.
    pub fn register(&self, c: &ServiceConfig) -> Result<ServiceSpec, RegistryError> {
        let spec = ServiceSpec::from_config(c, &self.own_ips)?;
        if read(&self.from_file).iter().any(|f| f.name == spec.name) {
            return Err(Conflict::InConfigFile(spec.name.clone()).into());
        }
        let mut api = read(&self.from_api);
        api.retain(|s| s.name != spec.name);
        api.push(spec.clone());
        let all: Vec<ServiceSpec> = read(&self.from_file)
            .into_iter()
            .chain(api.iter().cloned())
            .collect();
        check_set(&all)?;
        self.store.put_service(&c.name, c)?;
        *self.from_api.write().unwrap_or_else(|e| e.into_inner()) = api;
        self.bump();
        Ok(spec)
    }

    /// Removes an API-registered service; Ok(false) if there was none.
    pub fn deregister(&self, name: &ServiceName) -> Result<bool, RegistryError> {
        if read(&self.from_file).iter().any(|f| &f.name == name) {
            return Err(Conflict::InConfigFile(name.clone()).into());
        }
        let mut api = read(&self.from_api);
        let before = api.len();
        api.retain(|s| &s.name != name);
        if api.len() == before {
            return Ok(false);
        }
        self.store.delete_service(name.as_str())?;
        *self.from_api.write().unwrap_or_else(|e| e.into_inner()) = api;
        self.health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.bump();
        Ok(true)
    }

    /// Replaces the file's services (SIGHUP).
    pub fn set_file(&self, file: &[ServiceConfig]) -> Result<(), RegistryError> {
        let specs = file
            .iter()
            .map(|c| ServiceSpec::from_config(c, &self.own_ips))
            .collect::<Result<Vec<_>, _>>()?;
        let api: Vec<ServiceSpec> = read(&self.from_api)
            .into_iter()
            .filter(|a| !specs.iter().any(|f| f.name == a.name))
            .collect();
        let all: Vec<ServiceSpec> = specs.iter().chain(&api).cloned().collect();
        check_set(&all)?;
        *self.from_file.write().unwrap_or_else(|e| e.into_inner()) = specs;
        *self.from_api.write().unwrap_or_else(|e| e.into_inner()) = api;
        self.bump();
        Ok(())
    }

    /// Whether `name` may receive traffic: no check, or its check passes.
    pub fn is_healthy(&self, spec: &ServiceSpec) -> bool {
        spec.check.is_none()
            || self
                .health
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&spec.name)
                .is_some_and(HealthState::healthy)
    }

    /// Records a probe result; publishes when the verdict changed.
    pub fn record_probe(
        &self,
        name: &ServiceName,
        passed: bool,
        unhealthy_threshold: u32,
        healthy_threshold: u32,
    ) -> bool {
        let changed = self
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_default()
            .record(passed, unhealthy_threshold, healthy_threshold);
        if changed {
            self.bump();
        }
        changed
    }

    /// The set to publish by gossip.
    pub fn service_set(&self, signed_at_ms: u64) -> ServiceSet {
        ServiceSet {
            services: self
                .all()
                .into_iter()
                .map(|s| ServiceRecord {
                    healthy: self.is_healthy(&s),
                    name: s.name,
                    port: s.port,
                    protocol: s.protocol,
                    version: s.version,
                    tags: s.tags,
                })
                .collect(),
            signed_at_ms,
        }
    }
}
