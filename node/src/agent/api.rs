//! The node's side of the web API (`weft_web::NodeApi`).

use std::time::{Duration, SystemTime};

use crate::cluster_config::{Kind, WriteError};
use crate::identity::keyring;
use crate::policy::{decide, normalize_path};
use tracing::info;
use weft_ca::NodeName;
use weft_web::{
    ApiError, Caller, ExplainQuery, GossipKeysView, InstanceView, KeyringNodeResult, MemberView,
    NodeApi, NodeStatus, RevokeView, ServiceView, StampView, TokenView,
};

use super::state::Agent;
use crate::authority::execute::execute;
use crate::authority::{Act, Signed, Verified};
use crate::cluster_config::Entry;
use crate::rpc::{CaCallError, CtlRequest, CtlResponse, RefusalKind};

fn unexpected(answer: CtlResponse) -> ApiError {
    match answer {
        CtlResponse::Error { kind, message } => api_error(kind, message),
        _ => ApiError::Unavailable("unexpected answer from the CA node".into()),
    }
}

fn api_error(kind: RefusalKind, message: String) -> ApiError {
    match kind {
        RefusalKind::BadRequest
        | RefusalKind::BadCsr
        | RefusalKind::BadToken
        | RefusalKind::NameTaken => ApiError::BadRequest(message),
        RefusalKind::Revoked => ApiError::Forbidden(message),
        RefusalKind::Forbidden => ApiError::NotAllowed(message),
        RefusalKind::RateLimited | RefusalKind::Unavailable => ApiError::Unavailable(message),
    }
}

fn ca_unavailable(e: CaCallError) -> ApiError {
    api_error(RefusalKind::Unavailable, e.to_string())
}

fn config_error(e: WriteError) -> ApiError {
    match &e {
        WriteError::Invalid(v) => ApiError::BadRequest(v.to_string()),
        WriteError::Refused(m) => ApiError::NotAllowed(m.clone()),
        WriteError::Stale { .. } => ApiError::BadRequest(e.to_string()),
        WriteError::Store(s) => ApiError::Unavailable(format!("config not stored: {s}")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Peers `weft doctor` compares clocks with, at most (each is one QUIC handshake).
const MAX_CLOCK_PEERS: usize = 32;

impl NodeApi for Agent {
    async fn members(&self) -> Vec<MemberView> {
        Agent::members(self)
            .await
            .into_iter()
            .map(|m| MemberView {
                name: m.name,
                address: m.address.to_string(),
                gossip_address: m.gossip_addr.to_string(),
                status: m.status.to_string(),
                zone: m.zone,
                version: m.version,
                ca: m.ca,
                cert_expiry_unix: m.cert_expiry_unix,
                cert_serial: m.cert_serial,
                cert_fingerprint: m.cert_fingerprint,
                cert_root: m.cert_root,
                root_holder: m.root,
                intermediate_expiry_unix: m.ca_expiry_unix,
                revoked: m.revoked,
                is_self: m.is_self,
                config_digest: m.config_digest,
                generation: m.generation,
            })
            .collect()
    }

    async fn status(&self) -> NodeStatus {
        let leaf = self.identity.leaf();
        let remaining = leaf.remaining(crate::clock::now());
        let reason = self.not_ready_reason();
        let mut warnings = Vec::new();
        let members = Agent::members(self).await;
        let replicas_alive = members
            .iter()
            .filter(|m| m.ca && m.status == weft_gossip::MemberStatus::Alive)
            .count();
        if replicas_alive == 0 {
            warnings.push(
                "no CA replica is alive: renewals, joins and tokens fail until one is back; if they are gone for good, restore a backup on a member (weft ca restore)".into(),
            );
        } else if replicas_alive < 2 {
            warnings.push(
                "only one CA replica is alive: losing it stops renewals and joins; add another (weft ca add-replica NODE)".into(),
            );
        }
        let soon = weft_ca::unix(crate::clock::now()) + 30 * 86400;
        for m in members
            .iter()
            .filter(|m| m.ca && m.ca_expiry_unix != 0 && m.ca_expiry_unix < soon)
        {
            warnings.push(format!(
                "the intermediate of CA replica {} expires within 30 days (unix {}); it renews from the root holder, which must be reachable",
                m.name, m.ca_expiry_unix
            ));
        }
        let failures = self.data.metrics.cert_renewal_failures.get();
        if failures > 0 {
            warnings.push(format!(
                "certificate renewal failed {failures} time(s) in a row; {}s of validity left",
                remaining.as_secs()
            ));
        }
        NodeStatus {
            name: self.identity.info.name.to_string(),
            cluster: self.identity.info.cluster.to_string(),
            version: crate::BUILD_VERSION.to_owned(),
            ready: reason.is_none(),
            not_ready_reason: reason,
            cert_expiry_unix: leaf.not_after_unix,
            cert_remaining_secs: remaining.as_secs(),
            ca: self.ca.is_some(),
            warnings,
            ca_expiry_unix: weft_ca::not_after_unix(&self.identity.trust.ca_der()).unwrap_or(0),
            gossip_address: self.settings().gossip_advertise().to_string(),
            quic_address: self.settings().quic_advertise().to_string(),
            gossip_dropped: self
                .gossip
                .stats()
                .dropped_by_reason()
                .iter()
                .map(|r| r.1)
                .sum(),
            listener_faults: self.data.listener_faults.all(),
            config_digest: self.config.digest(),
            dns: self.settings().dns.map(|a| a.to_string()),
            data_dir: self.settings().data_dir.display().to_string(),
            proxy: self.settings().proxy.to_string(),
        }
    }

    async fn service_series(&self, service: String) -> serde_json::Value {
        let series = self
            .data
            .metrics
            .version_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .series(&service, crate::clock::unix_secs());
        serde_json::json!({
            "service": service,
            "bucket_secs": crate::telemetry::edges::BUCKET_SECS,
            "versions": series
                .into_iter()
                .map(|(version, points)| serde_json::json!({ "version": version, "points": points }))
                .collect::<Vec<_>>(),
        })
    }

    async fn doctor(&self) -> serde_json::Value {
        let peers: Vec<_> = Agent::members(self)
            .await
            .into_iter()
            .filter(|m| !m.is_self && m.status == weft_gossip::MemberStatus::Alive)
            .take(MAX_CLOCK_PEERS)
            .collect();
        let samples = peers.iter().map(|m| async move {
            match crate::rpc::clock_offset(&self.ctl, &m.name, m.address).await {
                Ok((offset_ms, rtt_ms)) => serde_json::json!({
                    "node": m.name, "offset_ms": offset_ms, "rtt_ms": rtt_ms,
                }),
                Err(e) => serde_json::json!({ "node": m.name, "error": e.to_string() }),
            }
        });
        let clock = futures_util::future::join_all(samples).await;
        serde_json::json!({ "clock": clock })
    }

    async fn create_token(&self, ttl: Duration, caller: Caller) -> Result<TokenView, ApiError> {
        let act = Act::CreateToken {
            ttl_secs: ttl.as_secs(),
        };
        match self.run_on_ca(&caller, act).await? {
            CtlResponse::Token {
                token,
                id,
                expires_at_unix,
            } => Ok(TokenView {
                token,
                id,
                expires_at_unix,
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn gossip_keys(&self) -> GossipKeysView {
        keys_view(&self.gossip.keyring().get())
    }

    async fn gossip_key_op(
        &self,
        body: Vec<u8>,
        caller: Caller,
    ) -> Result<Vec<KeyringNodeResult>, ApiError> {
        let op: keyring::KeyringOp = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "keyring change: {e} (expected {{\"op\":\"install\",\"key\":B64}}, {{\"op\":\"use\",\"id\":HEX}} or {{\"op\":\"remove\",\"id\":HEX}})"
            ))
        })?;
        let (verified, signed) = self.authorize(&caller, &Act::Keyring { change: op }, true)?;
        // Here first: a change this node refuses is refused for the cluster.
        let ring = match execute(&verified, None, &self.gossip, &self.identity).await {
            CtlResponse::Keyring { primary, keys } => GossipKeysView {
                primary: format!("{primary:08x}"),
                keys: keys.iter().map(|k| format!("{k:08x}")).collect(),
            },
            CtlResponse::Error { kind, message } => return Err(api_error(kind, message)),
            other => return Err(unexpected(other)),
        };
        let mut results = vec![KeyringNodeResult {
            node: self.identity.info.name.to_string(),
            keyring: Some(ring),
            error: None,
        }];
        let peers: Vec<_> = self
            .members()
            .await
            .into_iter()
            .filter(|m| !m.is_self && m.status == weft_gossip::MemberStatus::Alive && !m.revoked)
            .collect();
        let request = CtlRequest::Operator { signed };
        let calls = peers.iter().map(|m| {
            let request = request.clone();
            async move {
                let answer = self.ctl.call(&m.name, m.address, &request).await;
                let (keyring, error) = match answer {
                    Ok(CtlResponse::Keyring { primary, keys }) => (
                        Some(GossipKeysView {
                            primary: format!("{primary:08x}"),
                            keys: keys.iter().map(|k| format!("{k:08x}")).collect(),
                        }),
                        None,
                    ),
                    Ok(CtlResponse::Error { message, .. }) => (None, Some(message)),
                    Ok(_) => (None, Some("unexpected answer".into())),
                    Err(e) => (None, Some(e.to_string())),
                };
                KeyringNodeResult {
                    node: m.name.clone(),
                    keyring,
                    error,
                }
            }
        });
        results.extend(futures_util::future::join_all(calls).await);
        Ok(results)
    }

    async fn revoke(&self, node: String, caller: Caller) -> Result<RevokeView, ApiError> {
        let name = NodeName::new(node).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let act = Act::Revoke { node: name.clone() };
        match self.run_on_ca(&caller, act).await? {
            CtlResponse::Revoked { serials } => {
                self.sync_revocations().await;
                Ok(RevokeView {
                    node: name.to_string(),
                    serials,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    async fn operators(
        &self,
        body: Vec<u8>,
        caller: Caller,
    ) -> Result<serde_json::Value, ApiError> {
        let act: Act = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("operator request: {e}")))?;
        if !matches!(
            act,
            Act::OperatorCreate { .. } | Act::OperatorRevoke { .. } | Act::OperatorList
        ) {
            return Err(ApiError::BadRequest(
                "only operator_create, operator_revoke and operator_list are accepted here".into(),
            ));
        }
        let revoking = matches!(act, Act::OperatorRevoke { .. });
        let root_alive = Agent::members(self)
            .await
            .iter()
            .any(|m| m.root && m.status == weft_gossip::MemberStatus::Alive);
        if !root_alive && !matches!(act, Act::OperatorCreate { .. }) {
            // The root kept offline: each replica knows the operators it issued.
            let value = self.on_every_replica(&caller, act).await?;
            if revoking {
                self.sync_revocations().await;
            }
            return Ok(value);
        }
        match self.run_on_ca(&caller, act).await? {
            CtlResponse::Answer { value } => {
                if revoking {
                    self.sync_revocations().await;
                }
                Ok(value)
            }
            other => Err(unexpected(other)),
        }
    }

    async fn leave(&self) -> Result<(), ApiError> {
        info!("leave requested through the API");
        self.records.set_leaving();
        self.shutdown.cancel();
        Ok(())
    }

    async fn services(&self) -> Vec<ServiceView> {
        let catalog = self.data.catalog.get();
        let mut out: Vec<ServiceView> = Vec::new();
        for i in &catalog.instances {
            let health = if i.revoked {
                "revoked"
            } else if i.node_status != weft_gossip::MemberStatus::Alive {
                "node-failed"
            } else if i.healthy {
                "passing"
            } else {
                "failing"
            };
            let view = InstanceView {
                node: i.node.clone(),
                address: i.node_addr.to_string(),
                port: i.port,
                protocol: i.protocol.to_string(),
                version: i.version.clone(),
                tags: i.tags.clone(),
                health: health.into(),
                zone: i.zone.clone(),
            };
            match out.last_mut() {
                Some(s) if s.service == i.service.as_str() => s.instances.push(view),
                _ => out.push(ServiceView {
                    vip: self
                        .names
                        .as_ref()
                        .and_then(|n| n.vip_of(i.service.as_str()))
                        .map(|ip| ip.to_string()),
                    service: i.service.to_string(),
                    instances: vec![view],
                }),
            }
        }
        out
    }

    async fn register_service(&self, name: String, body: Vec<u8>) -> Result<(), ApiError> {
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        let Some(obj) = value.as_object_mut() else {
            return Err(ApiError::BadRequest("body must be a JSON object".into()));
        };
        if obj
            .get("name")
            .is_some_and(|n| n.as_str() != Some(name.as_str()))
        {
            return Err(ApiError::BadRequest(
                "`name` in the body differs from the path".into(),
            ));
        }
        obj.insert("name".into(), serde_json::Value::String(name));
        let config: crate::config::ServiceConfig = serde_json::from_value(value)
            .map_err(|e| ApiError::BadRequest(format!("invalid service: {e}")))?;
        let spec = self
            .data
            .services
            .register(&config)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        info!(service = %spec.name, port = spec.port, "service registered");
        Ok(())
    }

    async fn deregister_service(&self, name: String) -> Result<(), ApiError> {
        let name =
            weft_ca::ServiceName::new(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        match self.data.services.deregister(&name) {
            Ok(true) => {
                info!(service = %name, "service deregistered");
                Ok(())
            }
            Ok(false) => Err(ApiError::NotFound(format!(
                "no service {name} registered through the API on this node"
            ))),
            Err(e) => Err(ApiError::BadRequest(e.to_string())),
        }
    }

    async fn config_list(&self, kind: Option<String>) -> Result<serde_json::Value, ApiError> {
        let kind = kind
            .map(|k| {
                k.parse::<Kind>()
                    .map_err(|e| ApiError::BadRequest(e.to_string()))
            })
            .transpose()?;
        Ok(serde_json::to_value(self.config.list(kind)).unwrap_or_default())
    }

    async fn config_get(&self, kind: String, name: String) -> Result<serde_json::Value, ApiError> {
        let kind: Kind = kind
            .parse()
            .map_err(|e: crate::cluster_config::KindError| ApiError::BadRequest(e.to_string()))?;
        self.config
            .get(kind, &name)
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .ok_or_else(|| ApiError::NotFound(format!("no {kind} {name}")))
    }

    async fn config_put(
        &self,
        kind: String,
        name: String,
        body: Vec<u8>,
        caller: Caller,
    ) -> Result<serde_json::Value, ApiError> {
        let kind: Kind = kind
            .parse()
            .map_err(|e: crate::cluster_config::KindError| ApiError::BadRequest(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        let entry = self.signed_entry(&caller, kind, &name, Some(value))?;
        let entry = self.config.apply_signed(entry).map_err(config_error)?;
        Ok(serde_json::to_value(entry).unwrap_or_default())
    }

    async fn ca_backup(
        &self,
        body: Vec<u8>,
        caller: Caller,
    ) -> Result<serde_json::Value, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Req {
            passphrase: String,
        }
        let req: Req = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"passphrase\": …}}: {e}")))?;
        let (verified, _) = self.authorize(&caller, &Act::CaBackup, true)?;
        let key = self
            .identity
            .files
            .ca_key_pem()
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let Some(root_key_pem) = key else {
            return Err(ApiError::BadRequest(format!(
                "{} does not hold the root key: run the backup on the CA node",
                self.identity.info.name
            )));
        };
        let backup = crate::ca_role::backup::CaBackup {
            version: 1,
            cluster: self.identity.info.cluster.clone(),
            root_cert: self.identity.trust.ca_der().to_vec(),
            root_key_pem,
            state: self
                .store
                .export_ca_state()
                .map_err(|e| ApiError::Unavailable(e.to_string()))?,
            made_at_unix: crate::clock::unix_secs(),
        };
        let sealed = crate::ca_role::backup::seal(&backup, &req.passphrase)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        crate::authority::execute::audit(
            &verified,
            self.identity.info.name.as_str(),
            "applied",
            &self.store,
        );
        Ok(serde_json::json!({ "backup": crate::rpc::messages::b64(&sealed) }))
    }

    async fn ca_replica(
        &self,
        node: String,
        add: bool,
        caller: Caller,
    ) -> Result<serde_json::Value, ApiError> {
        let name = NodeName::new(node).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let act = if add {
            Act::AddReplica { node: name.clone() }
        } else {
            Act::RemoveReplica { node: name.clone() }
        };
        let here = name == self.identity.info.name;
        let (v, signed) = self.authorize(&caller, &act, here)?;
        let answer = if here {
            super::replica::apply(self, &v, &signed).await
        } else {
            let member = Agent::members(self)
                .await
                .into_iter()
                .find(|m| m.name == name.as_str())
                .ok_or_else(|| ApiError::NotFound(format!("no member named {name}")))?;
            self.ctl
                .call(
                    &member.name,
                    member.address,
                    &CtlRequest::Operator { signed },
                )
                .await
                .map_err(|e| ApiError::Unavailable(format!("{name} cannot be asked: {e}")))?
        };
        match answer {
            CtlResponse::Answer { value } => Ok(value),
            CtlResponse::Error { kind, message } => Err(api_error(kind, message)),
            other => Err(unexpected(other)),
        }
    }

    async fn ca_rotate(&self, caller: Caller) -> Result<serde_json::Value, ApiError> {
        let act = Act::RotateRoot;
        let here = self.ca.get().is_some_and(|c| c.holds_root());
        let (v, signed) = self.authorize(&caller, &act, here)?;
        let answer = if here {
            super::replica::apply(self, &v, &signed).await
        } else {
            self.ca_client
                .call_root(&CtlRequest::Operator { signed })
                .await
                .map_err(ca_unavailable)?
        };
        match answer {
            CtlResponse::Answer { value } => Ok(value),
            CtlResponse::Error { kind, message } => Err(api_error(kind, message)),
            other => Err(unexpected(other)),
        }
    }

    async fn ca_status(&self) -> serde_json::Value {
        let members = Agent::members(self).await;
        let holders: Vec<serde_json::Value> = members
            .iter()
            .filter(|m| m.ca)
            .map(|m| {
                serde_json::json!({
                    "node": m.name,
                    "status": m.status.to_string(),
                    "root": m.root,
                    "intermediate_expiry_unix": m.ca_expiry_unix,
                })
            })
            .collect();
        let crl = self.gossip.revocations();
        let root = self.identity.trust.ca_der();
        serde_json::json!({
            "cluster": self.identity.info.cluster.to_string(),
            "root_sha256": hex::encode(self.identity.trust.ca_sha256()),
            "root_expiry_unix": weft_ca::not_after_unix(&root).unwrap_or(0),
            "holders": holders,
            "this_node_holds_root": self.ca.get().is_some_and(|c| c.holds_root()),
            "this_node_is_replica": self.ca.is_some(),
            "roots": self.identity.trust.roots().iter().map(|r| hex::encode(<[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(r)))).collect::<Vec<_>>(),
            "retired_roots": self.identity.trust.retired().len(),
            "trust_version": self.identity.trust_version(),
            "rotation": self.store.rotation::<super::rotation::Rotation>().ok().flatten(),
            "this_replica": self.ca.get().map(|c| serde_json::json!({
                "intermediate": c.intermediate(),
                "issued": c.issued_count(),
                "last_issue_unix": c.last_issue_unix(),
            })),
            "revocations": { "version": crl.version, "entries": crl.revoked.len() },
        })
    }

    async fn config_stamp(&self, kind: String, name: String) -> Result<StampView, ApiError> {
        let kind: Kind = kind
            .parse()
            .map_err(|e: crate::cluster_config::KindError| ApiError::BadRequest(e.to_string()))?;
        crate::cluster_config::validate_name(kind, &name)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(StampView {
            cluster: self.identity.info.cluster.to_string(),
            node: self.identity.info.name.to_string(),
            version: serde_json::to_value(self.config.stamp(kind, &name)).unwrap_or_default(),
        })
    }

    async fn config_history(
        &self,
        kind: String,
        name: String,
    ) -> Result<serde_json::Value, ApiError> {
        let kind: Kind = kind
            .parse()
            .map_err(|e: crate::cluster_config::KindError| ApiError::BadRequest(e.to_string()))?;
        let h = self
            .config
            .history(kind, &name)
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if h.is_empty() {
            return Err(ApiError::NotFound(format!("no history for {kind} {name}")));
        }
        let with_operator: Vec<serde_json::Value> = h
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.remove("auth");
                    let signer = self.authority.signer(e);
                    obj.insert(
                        "operator".into(),
                        signer
                            .as_ref()
                            .map(|o| o.name.to_string())
                            .unwrap_or_else(|| "-".into())
                            .into(),
                    );
                    obj.insert(
                        "role".into(),
                        signer
                            .map(|o| o.role.to_string())
                            .unwrap_or_else(|| "-".into())
                            .into(),
                    );
                }
                v
            })
            .collect();
        Ok(serde_json::Value::Array(with_operator))
    }

    async fn config_delete(
        &self,
        kind: String,
        name: String,
        caller: Caller,
    ) -> Result<(), ApiError> {
        let kind: Kind = kind
            .parse()
            .map_err(|e: crate::cluster_config::KindError| ApiError::BadRequest(e.to_string()))?;
        if self.config.get(kind, &name).is_none() {
            return Err(ApiError::NotFound(format!("no {kind} {name}")));
        }
        let entry = self.signed_entry(&caller, kind, &name, None)?;
        self.config.apply_signed(entry).map_err(config_error)?;
        Ok(())
    }

    async fn policy_explain(&self, q: ExplainQuery) -> Result<serde_json::Value, ApiError> {
        let http = match (&q.path, &q.method) {
            (None, None) => None,
            (p, m) => {
                let path = normalize_path(p.as_deref().unwrap_or("/"))
                    .map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
                Some((path, m.clone().unwrap_or_else(|| "GET".into())))
            }
        };
        let applied = self.config.applied();
        let d = decide(
            &applied.policy.default,
            applied.policy.rules.iter().map(|(n, r)| (n.as_str(), r)),
            &q.source,
            &q.destination,
            http.as_ref().map(|(p, m)| (p.as_str(), m.as_str())),
        );
        Ok(serde_json::to_value(d).unwrap_or_default())
    }

    async fn logs(&self, filter: Option<String>) -> Vec<serde_json::Value> {
        self.data
            .access_log
            .recent(filter.as_deref(), 200)
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    async fn graph(&self) -> serde_json::Value {
        let members = Agent::members(self).await;
        let versions = self
            .recent_figures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .window(60);
        crate::telemetry::graph::graph(&members, &self.data.catalog.get(), &versions)
    }

    async fn rollouts(&self) -> serde_json::Value {
        let applied = self.config.applied();
        let members = Agent::members(self).await;
        let alive: Vec<String> = members
            .iter()
            .filter(|m| m.status == weft_gossip::MemberStatus::Alive && !m.revoked)
            .map(|m| m.name.clone())
            .collect();
        let recent = self
            .recent_figures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<serde_json::Value> = applied
            .rollouts
            .iter()
            .map(|(service, view)| {
                let window = recent.window((view.plan.interval_ms / 1000).clamp(10, 60));
                let figures = |v: &str| {
                    window
                        .get(&(service.clone(), v.to_owned()))
                        .cloned()
                        .unwrap_or_default()
                };
                serde_json::json!({
                    "service": service,
                    "state": view.state.as_str(),
                    "weight": view.weight,
                    "in_force": view.in_force,
                    "plan": view.plan,
                    "progress": view.progress,
                    "driven_by": view.progress_by,
                    "driver": crate::rollout::driver::owner(service, &alive),
                    "now": { "old": figures(&view.plan.from), "new": figures(&view.plan.to) },
                })
            })
            .collect();
        out.sort_by(|a, b| a["service"].as_str().cmp(&b["service"].as_str()));
        serde_json::json!({ "rollouts": out })
    }

    async fn audit(&self, limit: usize) -> Vec<serde_json::Value> {
        self.store.audit(limit).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the audit records");
            Vec::new()
        })
    }

    async fn metrics(&self) -> String {
        self.refresh_gauges().await;
        self.data.metrics.render()
    }

    fn is_admin(&self, token: &str) -> bool {
        constant_time_eq(token.as_bytes(), self.admin_token.as_bytes())
    }
}

fn keys_view(ring: &weft_gossip::Keyring) -> GossipKeysView {
    GossipKeysView {
        primary: format!("{:08x}", ring.primary),
        keys: ring.ids().iter().map(|k| format!("{k:08x}")).collect(),
    }
}

impl Agent {
    /// The signed envelope a caller brings: their `Weft-Operator` header, or, with this
    /// node's admin token on a node that holds an admin credential, `act` signed here.
    fn envelope(&self, caller: &Caller, act: &Act) -> Result<Option<Signed>, ApiError> {
        if let Some(h) = &caller.signed {
            return Signed::from_header(h)
                .map(Some)
                .map_err(ApiError::BadRequest);
        }
        match self.admin_credential() {
            Some(cred) if caller.local_admin => cred
                .sign(
                    self.identity.info.cluster.clone(),
                    self.identity.info.name.as_str(),
                    act.clone(),
                    SystemTime::now(),
                )
                .map(Some)
                .map_err(|e| ApiError::Unavailable(e.to_string())),
            _ => Ok(None),
        }
    }

    /// Verifies that the caller may do `act`; `consume` when it executes here.
    fn authorize(
        &self,
        caller: &Caller,
        act: &Act,
        consume: bool,
    ) -> Result<(Verified, Signed), ApiError> {
        let signed = self.envelope(caller, act)?;
        let v = self
            .authority
            .command(signed.as_ref(), act, SystemTime::now(), consume)
            .map_err(|e| ApiError::NotAllowed(e.to_string()))?;
        let signed = signed.ok_or_else(|| ApiError::NotAllowed("unsigned".into()))?;
        Ok((v, signed))
    }

    /// Runs an operator list or revoke on every alive replica (each knows the operators it
    /// issued while the root is offline) and merges the answers: the newest record per
    /// operator; the serials every replica revoked. Fails only if every replica refused.
    async fn on_every_replica(
        &self,
        caller: &Caller,
        act: Act,
    ) -> Result<serde_json::Value, ApiError> {
        let ca = self.ca.get();
        let (v, signed) = self.authorize(caller, &act, ca.is_some())?;
        let mut answers = Vec::new();
        if ca.is_some() {
            answers.push(execute(&v, ca.as_deref(), &self.gossip, &self.identity).await);
        }
        let others: Vec<_> = Agent::members(self)
            .await
            .into_iter()
            .filter(|m| m.ca && !m.is_self && m.status == weft_gossip::MemberStatus::Alive)
            .collect();
        let request = CtlRequest::Operator { signed };
        let calls = others
            .iter()
            .map(|m| self.ctl.call(&m.name, m.address, &request));
        for r in futures_util::future::join_all(calls).await {
            answers.push(r.unwrap_or_else(|e| CtlResponse::Error {
                kind: RefusalKind::Unavailable,
                message: e.to_string(),
            }));
        }
        let mut records: Vec<serde_json::Value> = Vec::new();
        let mut serials: Vec<serde_json::Value> = Vec::new();
        let mut first_error = None;
        let mut answered = 0;
        for a in answers {
            match a {
                CtlResponse::Answer { value } => {
                    answered += 1;
                    match value {
                        serde_json::Value::Array(list) => records.extend(list),
                        other => {
                            serials.extend(other["serials"].as_array().cloned().unwrap_or_default())
                        }
                    }
                }
                CtlResponse::Error { kind, message } => {
                    first_error.get_or_insert(api_error(kind, message));
                }
                other => {
                    first_error.get_or_insert(unexpected(other));
                }
            }
        }
        if answered == 0 {
            return Err(first_error
                .unwrap_or_else(|| ApiError::Unavailable("no CA replica is alive".into())));
        }
        Ok(match &act {
            Act::OperatorRevoke { name } => serde_json::json!({ "name": name, "serials": serials }),
            _ => {
                records.sort_by_key(|r| std::cmp::Reverse(r["issued_at_unix"].as_u64()));
                let mut seen = std::collections::HashSet::new();
                records.retain(|r| seen.insert(r["name"].as_str().unwrap_or_default().to_owned()));
                records.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                serde_json::Value::Array(records)
            }
        })
    }

    /// Runs a CA act: here on the CA node, otherwise verified here (for a clear answer)
    /// and forwarded to the CA node, which verifies it again and executes it.
    async fn run_on_ca(&self, caller: &Caller, act: Act) -> Result<CtlResponse, ApiError> {
        // Operator credentials and their records live with the root holder while one is
        // alive; with the root kept offline, any replica issues and records them.
        let root_alive = Agent::members(self)
            .await
            .iter()
            .any(|m| m.root && m.status == weft_gossip::MemberStatus::Alive);
        let needs_root = root_alive
            && matches!(
                act,
                Act::OperatorCreate { .. } | Act::OperatorRevoke { .. } | Act::OperatorList
            );
        let ca = self.ca.get();
        let here = ca.as_ref().is_some_and(|c| !needs_root || c.holds_root());
        let (v, signed) = self.authorize(caller, &act, here)?;
        let answer = if here {
            execute(&v, ca.as_deref(), &self.gossip, &self.identity).await
        } else if needs_root {
            self.ca_client
                .call_root(&CtlRequest::Operator { signed })
                .await
                .map_err(ca_unavailable)?
        } else {
            self.ca_client
                .call(&CtlRequest::Operator { signed })
                .await
                .map_err(ca_unavailable)?
        };
        match answer {
            CtlResponse::Error { kind, message } => Err(api_error(kind, message)),
            other => Ok(other),
        }
    }

    /// The entry a config write makes: the version and signature from the caller's
    /// envelope, or stamped and signed here with the node's admin credential.
    fn signed_entry(
        &self,
        caller: &Caller,
        kind: Kind,
        name: &str,
        value: Option<serde_json::Value>,
    ) -> Result<Entry, ApiError> {
        let (version, auth) = match &caller.signed {
            Some(h) => {
                let signed = Signed::from_header(h).map_err(ApiError::BadRequest)?;
                let payload: crate::authority::Payload = serde_json::from_str(&signed.payload)
                    .map_err(|e| ApiError::BadRequest(format!("signed payload: {e}")))?;
                let Act::ConfigWrite { version, .. } = payload.act else {
                    return Err(ApiError::NotAllowed(format!(
                        "the signature is for {}, not a config write",
                        payload.act.label()
                    )));
                };
                (version, Some(signed))
            }
            None => {
                let version = self.config.stamp(kind, name);
                let act = Act::ConfigWrite {
                    kind,
                    name: name.to_owned(),
                    version: version.clone(),
                    value: value.clone(),
                };
                (version, self.envelope(caller, &act)?)
            }
        };
        Ok(Entry {
            kind,
            name: name.to_owned(),
            version,
            value,
            auth,
        })
    }

    /// On the node that holds an admin credential: signs again (as new versions) the
    /// config entries written before signatures existed, so that every node, including
    /// ones that join later, accepts them.
    pub fn sign_legacy_config(&self) {
        let Some(cred) = self.admin_credential() else {
            return;
        };
        for old in self.config.unsigned() {
            let version = self.config.stamp(old.kind, &old.name);
            let act = Act::ConfigWrite {
                kind: old.kind,
                name: old.name.clone(),
                version: version.clone(),
                value: old.value.clone(),
            };
            let signed = match cred.sign(
                self.identity.info.cluster.clone(),
                self.identity.info.name.as_str(),
                act,
                SystemTime::now(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sign a config entry written before signatures");
                    return;
                }
            };
            let entry = Entry {
                version,
                auth: Some(signed),
                ..old
            };
            match self.config.apply_signed(entry) {
                Ok(e) => {
                    info!(kind = %e.kind, name = %e.name, "config entry written before signatures signed with the admin credential")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sign a config entry written before signatures")
                }
            }
        }
    }

    /// Sets the gauges that describe this node's state, just before a scrape.
    async fn refresh_gauges(&self) {
        let m = &self.data.metrics;
        let members = Agent::members(self).await;
        for status in [
            weft_gossip::MemberStatus::Alive,
            weft_gossip::MemberStatus::Failed,
            weft_gossip::MemberStatus::Left,
        ] {
            let n = members.iter().filter(|x| x.status == status).count();
            m.members
                .get_or_create(&crate::telemetry::metrics::StatusLabels {
                    status: status.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let leaf = self.identity.leaf();
        let now = weft_ca::unix(crate::clock::now());
        m.cert_expiry_seconds.set(
            i64::try_from(leaf.not_after_unix).unwrap_or(i64::MAX)
                - i64::try_from(now).unwrap_or(i64::MAX),
        );
        m.config_entries
            .set(i64::try_from(self.config.live_count()).unwrap_or(i64::MAX));
        let age_ms = crate::clock::unix_ms().saturating_sub(self.config.synced_at_ms());
        m.config_digest_age_seconds.set(age_ms as f64 / 1000.0);
        let holders = members
            .iter()
            .filter(|x| x.ca && x.status == weft_gossip::MemberStatus::Alive)
            .count();
        m.ca_holders_alive
            .set(i64::try_from(holders).unwrap_or(i64::MAX));
        m.ca_replicas_alive
            .set(i64::try_from(holders).unwrap_or(i64::MAX));
        if let Some(soonest) = members
            .iter()
            .filter(|x| {
                x.ca && x.status == weft_gossip::MemberStatus::Alive && x.ca_expiry_unix > 0
            })
            .map(|x| x.ca_expiry_unix)
            .min()
        {
            m.ca_intermediate_expiry_seconds.set(
                i64::try_from(soonest).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX),
            );
        }
        m.ca_trusted_roots
            .set(i64::try_from(self.identity.trust.roots().len()).unwrap_or(i64::MAX));
        m.revocation_list_entries
            .set(i64::try_from(self.gossip.revocations().revoked.len()).unwrap_or(i64::MAX));
    }
}
