//! weft's HTTP API and dashboard. `router` serves what the node hands it through the
//! narrow `NodeApi` trait: this crate knows nothing of gossip, QUIC or certificates.
//! Errors become HTTP responses in one place (`ApiError`).

mod html;
mod routes;

use std::future::Future;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub use routes::router;

/// A member as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberView {
    /// Node name.
    pub name: String,
    /// QUIC address.
    pub address: String,
    /// Gossip address.
    pub gossip_address: String,
    /// alive, failed or left.
    pub status: String,
    /// Zone label.
    pub zone: String,
    /// Agent version.
    pub version: String,
    /// Holds the cluster CA.
    pub ca: bool,
    /// Certificate expiry, Unix seconds.
    pub cert_expiry_unix: u64,
    /// Certificate serial, hex.
    pub cert_serial: String,
    /// SHA-256 of the certificate, hex.
    pub cert_fingerprint: String,
    /// SHA-256 (hex) of the root its certificate chains to.
    #[serde(default)]
    pub cert_root: String,
    /// Whether it proved it holds the root key.
    #[serde(default)]
    pub root_holder: bool,
    /// Expiry of its CA replica intermediate (Unix seconds; 0: not a replica).
    #[serde(default)]
    pub intermediate_expiry_unix: u64,
    /// Certificate revoked.
    pub revoked: bool,
    /// The node serving this API.
    pub is_self: bool,
    /// The digest of the cluster config it has applied (empty: not published yet).
    #[serde(default)]
    pub config_digest: String,
    /// Its agent's generation (start time): a restart makes a new one.
    #[serde(default)]
    pub generation: u64,
}

/// This node's state, for `/v1/self`, `/readyz` and the overview page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// Agent version.
    pub version: String,
    /// Joined, with a valid certificate.
    pub ready: bool,
    /// Why not ready.
    pub not_ready_reason: Option<String>,
    /// Certificate expiry, Unix seconds.
    pub cert_expiry_unix: u64,
    /// Certificate lifetime left, seconds.
    pub cert_remaining_secs: u64,
    /// Holds the CA.
    pub ca: bool,
    /// Warnings worth showing an operator.
    pub warnings: Vec<String>,
    /// Cluster root certificate expiry, Unix seconds.
    #[serde(default)]
    pub ca_expiry_unix: u64,
    /// Gossip address this node advertises.
    #[serde(default)]
    pub gossip_address: String,
    /// QUIC address this node advertises.
    #[serde(default)]
    pub quic_address: String,
    /// Gossip datagrams dropped since start (forged, stale, replayed, malformed).
    #[serde(default)]
    pub gossip_dropped: u64,
    /// Listeners the config asks for that could not be opened, each with the fix.
    #[serde(default)]
    pub listener_faults: Vec<String>,
    /// The digest of the cluster config this node has applied.
    #[serde(default)]
    pub config_digest: String,
    /// The `.weft` DNS address, when on.
    #[serde(default)]
    pub dns: Option<String>,
    /// The data directory.
    #[serde(default)]
    pub data_dir: String,
    /// The HTTP proxy address.
    #[serde(default)]
    pub proxy: String,
}

/// One instance of a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceView {
    /// Node running it.
    pub node: String,
    /// The node's QUIC address.
    pub address: String,
    /// Local port on its node.
    pub port: u16,
    /// tcp or http.
    pub protocol: String,
    /// Version label.
    pub version: String,
    /// Tags.
    pub tags: Vec<String>,
    /// passing, failing (check) or node-failed / node-left / revoked.
    pub health: String,
    /// Its node's zone.
    pub zone: String,
}

/// A service and its instances.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceView {
    /// Service name.
    pub service: String,
    /// Its virtual IP (`<service>.weft`), when the agent hands them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// Instances.
    pub instances: Vec<InstanceView>,
}

/// A created join token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenView {
    /// The token to pass to `--token`.
    pub token: String,
    /// Its id (appears in logs).
    pub id: String,
    /// Expiry, Unix seconds.
    pub expires_at_unix: u64,
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Lifetime in seconds (default 3600).
    pub ttl_secs: Option<u64>,
}

/// Query of `GET /v1/policy/explain`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// Source service (`-` for none).
    pub source: String,
    /// Destination service.
    pub destination: String,
    /// HTTP path.
    pub path: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
}

/// Result of a revocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RevokeView {
    /// The node.
    pub node: String,
    /// Serials newly revoked.
    pub serials: Vec<String>,
}

/// A node's gossip keyring, by key id (the keys themselves never leave the node but in
/// a sealed join answer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GossipKeysView {
    /// Id (8 hex digits) of the key used for sealing.
    pub primary: String,
    /// Ids of every accepted key.
    pub keys: Vec<String>,
}

/// Outcome of a cluster-wide keyring change on one node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyringNodeResult {
    /// The node.
    pub node: String,
    /// Its keyring afterwards, when it applied the change.
    pub keyring: Option<GossipKeysView>,
    /// Why it did not, otherwise.
    pub error: Option<String>,
}

/// API failures, mapped to HTTP once, here.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong admin token.
    #[error("admin token required (Authorization: Bearer …)")]
    Unauthorized,
    /// A cluster-wide change without a credential that allows it; the message names
    /// what is missing.
    #[error("{0}")]
    NotAllowed(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// Something this node depends on is unavailable (e.g. the CA node).
    #[error("{0}")]
    Unavailable(String),
    /// Refused by policy (e.g. revoked).
    #[error("{0}")]
    Forbidden(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotAllowed(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
        };
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Who is asking for a cluster-wide change: the operator's signed request (header
/// `Weft-Operator`, made by the CLI from a credential), and whether the caller also holds
/// this node's admin token (on the node that holds an admin credential, the token stands
/// for that credential, so scripts written before credentials keep working there).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The `Weft-Operator` header, when sent.
    pub signed: Option<String>,
    /// The request carried this node's admin token.
    pub local_admin: bool,
}

/// The header that carries an operator's signed request.
pub const OPERATOR_HEADER: &str = "weft-operator";

/// A node's answer to `GET /v1/config/{kind}/{name}/stamp`: what a CLI needs to sign a
/// write of that entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StampView {
    /// The cluster.
    pub cluster: String,
    /// The node (the audit trail's "received by").
    pub node: String,
    /// The version to sign (`{"wall":…,"logical":…,"node":…}`).
    pub version: serde_json::Value,
}

/// What the node provides to the API. Implemented by the agent; faked in tests.
pub trait NodeApi: Send + Sync + 'static {
    /// Cluster members.
    fn members(&self) -> impl Future<Output = Vec<MemberView>> + Send;
    /// This node's state.
    fn status(&self) -> impl Future<Output = NodeStatus> + Send;
    /// Creates a join token (role admin).
    fn create_token(
        &self,
        ttl: Duration,
        caller: Caller,
    ) -> impl Future<Output = Result<TokenView, ApiError>> + Send;
    /// Revokes a node (role admin).
    fn revoke(
        &self,
        node: String,
        caller: Caller,
    ) -> impl Future<Output = Result<RevokeView, ApiError>> + Send;
    /// This node's gossip keyring (ids only).
    fn gossip_keys(&self) -> impl Future<Output = GossipKeysView> + Send;
    /// Applies a keyring change (`{"op":"install","key":B64}`, `{"op":"use","id":HEX}`,
    /// `{"op":"remove","id":HEX}`) here and on every alive member (role admin).
    fn gossip_key_op(
        &self,
        body: Vec<u8>,
        caller: Caller,
    ) -> impl Future<Output = Result<Vec<KeyringNodeResult>, ApiError>> + Send;
    /// Leaves the cluster and stops the agent (admin).
    fn leave(&self) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Services and their instances, cluster-wide.
    fn services(&self) -> impl Future<Output = Vec<ServiceView>> + Send;
    /// Registers (or replaces) a local service from a JSON body (admin).
    fn register_service(
        &self,
        name: String,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Removes a local service registered through the API (admin).
    fn deregister_service(&self, name: String)
        -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Live cluster-config entries, optionally of one kind.
    fn config_list(
        &self,
        kind: Option<String>,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// One entry.
    fn config_get(
        &self,
        kind: String,
        name: String,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// Writes an entry from a JSON value (role operator); returns the stored entry.
    fn config_put(
        &self,
        kind: String,
        name: String,
        body: Vec<u8>,
        caller: Caller,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// An encrypted backup of the CA (`{"passphrase": …}`), on the node that holds the
    /// root key (role admin); answers `{"backup": base64}`.
    fn ca_backup(
        &self,
        body: Vec<u8>,
        caller: Caller,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// Makes `node` a CA replica (`add`) or stops it being one (role admin), carried out
    /// on that member.
    fn ca_replica(
        &self,
        node: String,
        add: bool,
        caller: Caller,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// Starts a root rotation on the root holder (role admin).
    fn ca_rotate(
        &self,
        caller: Caller,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// The CA as this node sees it: root fingerprint and expiry, which nodes hold it,
    /// the revocation list's size.
    fn ca_status(&self) -> impl Future<Output = serde_json::Value> + Send;
    /// The version a new write of an entry gets, for the CLI to sign.
    fn config_stamp(
        &self,
        kind: String,
        name: String,
    ) -> impl Future<Output = Result<StampView, ApiError>> + Send;
    /// Operator credentials: create (`{"signed": …}` carries the CSR), list, revoke. The
    /// act itself travels in the `Weft-Operator` header; `body` is the act's JSON.
    fn operators(
        &self,
        body: Vec<u8>,
        caller: Caller,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// The versions of an entry this node remembers, oldest first.
    fn config_history(
        &self,
        kind: String,
        name: String,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// Deletes an entry (role operator).
    fn config_delete(
        &self,
        kind: String,
        name: String,
        caller: Caller,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Which policy rule decides `source → destination` (HTTP: path and method), and why.
    fn policy_explain(
        &self,
        query: ExplainQuery,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
    /// The newest access-log entries of this node (newest first), optionally only those
    /// whose JSON contains `filter`.
    fn logs(&self, filter: Option<String>) -> impl Future<Output = Vec<serde_json::Value>> + Send;
    /// The service graph with live rates (`{services, edges, versions}`).
    fn graph(&self) -> impl Future<Output = serde_json::Value> + Send;
    /// Every rollout: plan, state, weight, history, who drives it, and both versions'
    /// figures now (`{rollouts: [...]}`).
    fn rollouts(&self) -> impl Future<Output = serde_json::Value> + Send;
    /// The last 15 minutes of `service` per version, in 5-second buckets, as this node
    /// routed it (`{service, bucket_secs, versions: [{version, points: [...]}]}`).
    fn service_series(&self, service: String) -> impl Future<Output = serde_json::Value> + Send;
    /// Checks for `weft doctor` that only the agent can make (its clock against each
    /// alive peer's), as JSON.
    fn doctor(&self) -> impl Future<Output = serde_json::Value> + Send;
    /// The newest `limit` audit records of this node (operator acts it executed, config
    /// changes it applied), newest first.
    fn audit(&self, limit: usize) -> impl Future<Output = Vec<serde_json::Value>> + Send;
    /// Prometheus text exposition.
    fn metrics(&self) -> impl Future<Output = String> + Send;
    /// Whether `token` is this node's admin token.
    fn is_admin(&self, token: &str) -> bool;
}
