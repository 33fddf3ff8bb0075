//! The node's side of the web API (`weft_web::NodeApi`).

use std::time::{Duration, SystemTime};

use crate::cluster_config::{Kind, WriteError};
use crate::identity::keyring;
use crate::policy::{decide, normalize_path};
use tracing::info;
use weft_ca::NodeName;
use weft_web::{
    ApiError, ExplainQuery, GossipKeysView, InstanceView, KeyringNodeResult, MemberView, NodeApi,
    NodeStatus, RevokeView, ServiceView, TokenView,
};

use super::state::{Agent, VERSION};
use crate::rpc::{CaCallError, CtlRequest, CtlResponse, RefusalKind};

fn api_error(kind: RefusalKind, message: String) -> ApiError {
    match kind {
        RefusalKind::BadRequest
        | RefusalKind::BadCsr
        | RefusalKind::BadToken
        | RefusalKind::NameTaken => ApiError::BadRequest(message),
        RefusalKind::Revoked => ApiError::Forbidden(message),
        RefusalKind::RateLimited | RefusalKind::Unavailable => ApiError::Unavailable(message),
    }
}

fn ca_unavailable(e: CaCallError) -> ApiError {
    api_error(RefusalKind::Unavailable, e.to_string())
}

fn config_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Invalid(v) => ApiError::BadRequest(v.to_string()),
        WriteError::Store(s) => ApiError::Unavailable(format!("config not stored: {s}")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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
                revoked: m.revoked,
                is_self: m.is_self,
            })
            .collect()
    }

    async fn status(&self) -> NodeStatus {
        let leaf = self.identity.leaf();
        let remaining = leaf.remaining(crate::clock::now());
        let reason = self.not_ready_reason();
        let mut warnings = Vec::new();
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
            version: VERSION.to_owned(),
            ready: reason.is_none(),
            not_ready_reason: reason,
            cert_expiry_unix: leaf.not_after_unix,
            cert_remaining_secs: remaining.as_secs(),
            ca: self.ca.is_some(),
            warnings,
            ca_expiry_unix: weft_ca::not_after_unix(self.identity.trust.ca_der()).unwrap_or(0),
            gossip_address: self.settings().gossip_advertise().to_string(),
            quic_address: self.settings().quic_advertise().to_string(),
            gossip_dropped: self
                .gossip
                .stats()
                .dropped_by_reason()
                .iter()
                .map(|r| r.1)
                .sum(),
        }
    }

    async fn create_token(&self, ttl: Duration) -> Result<TokenView, ApiError> {
        if let Some(a) = &self.ca {
            let (token, expires) = a
                .create_token(ttl, SystemTime::now())
                .map_err(|r| api_error(r.kind, r.message))?;
            return Ok(TokenView {
                token: token.to_string(),
                id: token.id().to_string(),
                expires_at_unix: expires,
            });
        }
        match self
            .ca_client
            .call(&CtlRequest::CreateToken {
                ttl_secs: ttl.as_secs(),
            })
            .await
            .map_err(ca_unavailable)?
        {
            CtlResponse::Token {
                token,
                id,
                expires_at_unix,
            } => Ok(TokenView {
                token,
                id,
                expires_at_unix,
            }),
            CtlResponse::Error { kind, message } => Err(api_error(kind, message)),
            _ => Err(ApiError::Unavailable(
                "unexpected answer from the CA node".into(),
            )),
        }
    }

    async fn gossip_keys(&self) -> GossipKeysView {
        keys_view(&self.gossip.keyring().get())
    }

    async fn gossip_key_op(&self, body: Vec<u8>) -> Result<Vec<KeyringNodeResult>, ApiError> {
        let op: keyring::KeyringOp = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "keyring change: {e} (expected {{\"op\":\"install\",\"key\":B64}}, {{\"op\":\"use\",\"id\":HEX}} or {{\"op\":\"remove\",\"id\":HEX}})"
            ))
        })?;
        // Here first: a change this node refuses is refused for the cluster.
        let ring = keyring::apply(&op, self.gossip.keyring(), &self.identity.files)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut results = vec![KeyringNodeResult {
            node: self.identity.info.name.to_string(),
            keyring: Some(keys_view(&ring)),
            error: None,
        }];
        let peers: Vec<_> = self
            .members()
            .await
            .into_iter()
            .filter(|m| !m.is_self && m.status == weft_gossip::MemberStatus::Alive && !m.revoked)
            .collect();
        let request = CtlRequest::Keyring { change: op };
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

    async fn revoke(&self, node: String) -> Result<RevokeView, ApiError> {
        let name = NodeName::new(node).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let serials = if let Some(a) = &self.ca {
            let s = a
                .revoke(&name, SystemTime::now())
                .map_err(|r| api_error(r.kind, r.message))?;
            self.sync_revocations().await;
            s
        } else {
            match self
                .ca_client
                .call(&CtlRequest::Revoke { node: name.clone() })
                .await
                .map_err(ca_unavailable)?
            {
                CtlResponse::Revoked { serials } => serials,
                CtlResponse::Error { kind, message } => return Err(api_error(kind, message)),
                _ => {
                    return Err(ApiError::Unavailable(
                        "unexpected answer from the CA node".into(),
                    ))
                }
            }
        };
        Ok(RevokeView {
            node: name.to_string(),
            serials,
        })
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
    ) -> Result<serde_json::Value, ApiError> {
        let kind: Kind = kind
            .parse()
            .map_err(|e: crate::cluster_config::KindError| ApiError::BadRequest(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        let entry = self
            .config
            .write(kind, &name, Some(value))
            .map_err(config_error)?;
        Ok(serde_json::to_value(entry).unwrap_or_default())
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
        Ok(serde_json::to_value(h).unwrap_or_default())
    }

    async fn config_delete(&self, kind: String, name: String) -> Result<(), ApiError> {
        let kind: Kind = kind
            .parse()
            .map_err(|e: crate::cluster_config::KindError| ApiError::BadRequest(e.to_string()))?;
        if self.config.get(kind, &name).is_none() {
            return Err(ApiError::NotFound(format!("no {kind} {name}")));
        }
        self.config.write(kind, &name, None).map_err(config_error)?;
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
        crate::telemetry::graph::graph(&members, &self.data.catalog.get())
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
    }
}
