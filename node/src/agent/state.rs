//! The running agent's state: wiring only. Each field is a component that owns one
//! concern (identity, gossip, the CA role, the config replica, the data plane's inputs);
//! the agent's methods here are the few that need several of them at once.

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;
use weft_gossip::{Gossip, Member};

use super::records::RecordSigner;
use crate::ca_role::slot::CaSlot;
use crate::cluster_config::ConfigReplica;
use crate::config::Settings;
use crate::identity::NodeIdentity;
use crate::proxy::ProxyInputs;
use crate::rpc::{CaClient, CtlClient};
use crate::store::Store;

/// Agent version published by gossip.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A running agent.
pub struct Agent {
    /// Effective settings (replaced on reload).
    pub settings: RwLock<Settings>,
    /// Who this node is, and whom it still trusts.
    pub identity: Arc<NodeIdentity>,
    /// The store.
    pub store: Store,
    /// Gossip.
    pub gossip: Arc<Gossip>,
    /// Signs what this node publishes in gossip.
    pub records: RecordSigner,
    /// The CA role, while this node is a CA replica.
    pub ca: CaSlot,
    /// Control requests to members.
    pub ctl: CtlClient,
    /// Requests to the CA node.
    pub ca_client: CaClient,
    /// The replicated cluster config.
    pub config: Arc<ConfigReplica>,
    /// Everything the data plane reads.
    pub data: Arc<ProxyInputs>,
    /// The admin token: node-local actions, and on a node that holds an admin
    /// credential, that credential.
    pub admin_token: String,
    /// Verifies what operators signed.
    pub authority: Arc<crate::authority::Authority>,
    /// `<data-dir>/admin-credential`, when this node holds one (the bootstrap node).
    pub admin_credential: RwLock<Option<Arc<crate::authority::Credential>>>,
    /// The cluster's per-version totals over the last minutes (sampled by the rollout
    /// loop; `/v1/graph` and `/v1/rollouts` read windows of it).
    pub recent_figures: std::sync::Mutex<crate::telemetry::versions::Recent>,
    /// Services' virtual IPs (None: `vip_range = "off"`), rebuilt with the catalog.
    pub names: Option<Arc<crate::names::Names>>,
    /// Cancelled when the agent must stop.
    pub shutdown: CancellationToken,
}

impl Agent {
    /// This node's admin credential, if it holds one (the root holder).
    pub fn admin_credential(&self) -> Option<Arc<crate::authority::Credential>> {
        self.admin_credential
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Issues the admin credential again where it is due (or at once, `reissue`: a new
    /// root) and uses it from now on.
    pub fn refresh_admin_credential(&self, reissue: bool) {
        match super::setup::admin_credential(
            &self.settings().data_dir,
            &self.identity.trust,
            self.ca.get().as_deref(),
            reissue,
        ) {
            Ok(cred) => {
                *self
                    .admin_credential
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = cred;
            }
            Err(e) => tracing::warn!(error = %e, "cannot issue the admin credential; will retry"),
        }
    }

    /// A copy of the current settings.
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Verified members. Adopts a newer revocation list seen with them at once, so TLS
    /// refuses a revoked peer as soon as any view shows it revoked.
    pub async fn members(&self) -> Vec<Member> {
        let mut members = self.gossip.members().await;
        self.identity.adopt_revocations(self.gossip.revocations());
        // Failed and departed members an admin forgot (`weft force-leave`), until they
        // come back with a newer generation.
        members.retain(|m| {
            m.status == weft_gossip::MemberStatus::Alive
                || self
                    .config
                    .get(crate::cluster_config::Kind::Forget, &m.name)
                    .and_then(|e| e.value)
                    .and_then(|v| {
                        serde_json::from_value::<crate::cluster_config::Forgotten>(v).ok()
                    })
                    .is_none_or(|f| f.generation < m.generation)
        });
        members
    }

    /// Adopts the replicas' revocations from gossip, and on a replica publishes its own.
    pub async fn sync_revocations(&self) {
        if let Some(ca) = self.ca.get() {
            ca.publish_revocations(&self.identity, &self.gossip).await;
        }
        self.identity.adopt_revocations(self.gossip.revocations());
    }

    /// Rebuilds the catalog from the verified members and drops pooled connections to
    /// nodes that left, were revoked, or have just been marked failed.
    pub async fn refresh_catalog(&self) {
        let members = self.members().await;
        self.data.pool.prune(&members);
        let mut catalog = crate::catalog::Catalog::build(&members);
        let local: Vec<_> = self
            .data
            .services
            .all()
            .into_iter()
            .map(|s| (s.name, s.local_addr))
            .collect();
        catalog.set_local_addrs(&local);
        if let Some(names) = &self.names {
            names.rebuild(&catalog);
        }
        self.data.catalog.set(catalog);
    }

    /// Why this node is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some(problem) = self.identity.problem() {
            return Some(problem.to_owned());
        }
        if self.shutdown.is_cancelled() {
            return Some("shutting down".into());
        }
        self.data.listener_faults.first()
    }
}
