//! Routes of the API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::{html, ApiError, Caller, NodeApi, TokenRequest, OPERATOR_HEADER};

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// The API and dashboard router over `node`.
pub fn router<N: NodeApi>(node: Arc<N>) -> Router {
    Router::new()
        .route("/", get(overview::<N>))
        .route("/graph", get(graph_page::<N>))
        .route("/rollouts", get(rollouts_page::<N>))
        .route("/members", get(members_page::<N>))
        .route("/services", get(services_page::<N>))
        .route("/service/{name}", get(service_page::<N>))
        .route("/v1/services/{name}/series", get(service_series::<N>))
        .route("/config", get(config_page::<N>))
        .route("/logs", get(logs_page::<N>))
        .route("/v1/logs", get(logs_json::<N>))
        .route("/v1/graph", get(graph_json::<N>))
        .route("/v1/rollouts", get(rollouts_json::<N>))
        .route(
            "/assets/style.css",
            get(|| async {
                asset(
                    "text/css; charset=utf-8",
                    include_str!("../assets/style.css"),
                )
            }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../assets/app.js"),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<N>))
        .route("/metrics", get(metrics::<N>))
        .route("/v1/self", get(self_status::<N>))
        .route("/v1/doctor", get(doctor::<N>))
        .route("/v1/members", get(members::<N>))
        .route("/v1/tokens", post(create_token::<N>))
        .route("/v1/services", get(services::<N>))
        .route("/v1/config", get(config_list_all::<N>))
        .route("/v1/config/{kind}", get(config_list_kind::<N>))
        .route(
            "/v1/config/{kind}/{name}",
            get(config_get::<N>)
                .put(config_put::<N>)
                .delete(config_delete::<N>),
        )
        .route("/v1/config/{kind}/{name}/history", get(config_history::<N>))
        .route("/v1/config/{kind}/{name}/stamp", get(config_stamp::<N>))
        .route("/v1/operators", post(operators::<N>))
        .route("/v1/audit", get(audit::<N>))
        .route("/v1/ca/backup", post(ca_backup::<N>))
        .route("/v1/ca", get(ca_status::<N>))
        .route("/v1/ca/rotate", post(ca_rotate::<N>))
        .route(
            "/v1/ca/replicas/{node}",
            post(ca_replica_add::<N>).delete(ca_replica_remove::<N>),
        )
        .route("/v1/policy/explain", get(policy_explain::<N>))
        .route(
            "/v1/services/{name}",
            put(register_service::<N>).delete(deregister_service::<N>),
        )
        .route("/v1/nodes/{name}/revoke", post(revoke::<N>))
        .route(
            "/v1/gossip/keys",
            get(gossip_keys::<N>).post(gossip_key_op::<N>),
        )
        .route("/v1/leave", post(leave::<N>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(check_host))
        .with_state(node)
}

/// Whether a `Host` header names this API the way only a local client would: an IP
/// address or `localhost`. A web page that rebinds its own DNS name to 127.0.0.1 sends its
/// name, and is refused (DNS rebinding).
pub fn host_allowed(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
}

async fn check_host(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}").to_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if !host_allowed(&h) => (
            StatusCode::MISDIRECTED_REQUEST,
            axum::Json(serde_json::json!({
                "error": format!("Host {:?} is not this API's address; use its IP address (DNS-rebinding protection)", h.chars().take(80).collect::<String>())
            })),
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn require_admin<N: NodeApi>(node: &N, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    if node.is_admin(token.trim()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Who asks: the operator's signed request, and whether the admin token came along.
fn caller<N: NodeApi>(node: &N, headers: &HeaderMap) -> Caller {
    Caller {
        signed: headers
            .get(OPERATOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        local_admin: require_admin(node, headers).is_ok(),
    }
}

async fn overview<N: NodeApi>(State(node): State<Arc<N>>) -> Html<String> {
    Html(html::overview(&node.status().await, &node.members().await))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn members_page<N: NodeApi>(State(node): State<Arc<N>>) -> Html<String> {
    Html(html::members(&node.status().await, &node.members().await))
}

async fn services_page<N: NodeApi>(State(node): State<Arc<N>>) -> Html<String> {
    Html(html::services(&node.status().await, &node.services().await))
}

/// Optional explain query of the config page.
#[derive(Debug, serde::Deserialize)]
struct ConfigPageQuery {
    source: Option<String>,
    destination: Option<String>,
    path: Option<String>,
    method: Option<String>,
}

async fn config_page<N: NodeApi>(
    State(node): State<Arc<N>>,
    axum::extract::Query(q): axum::extract::Query<ConfigPageQuery>,
) -> Result<Html<String>, ApiError> {
    let entries = node.config_list(None).await?;
    let status = node.status().await;
    let explain = match (q.source, q.destination) {
        (Some(source), Some(destination)) if !source.is_empty() && !destination.is_empty() => {
            let query = crate::ExplainQuery {
                source,
                destination,
                path: q.path.filter(|p| !p.is_empty()),
                method: q.method.filter(|m| !m.is_empty()),
            };
            let d = node.policy_explain(query.clone()).await?;
            Some((query, d))
        }
        _ => None,
    };
    Ok(Html(html::config(
        &status,
        &entries,
        explain.as_ref().map(|(q, d)| (q, d)),
    )))
}

async fn logs_page<N: NodeApi>(State(node): State<Arc<N>>) -> Html<String> {
    Html(html::logs(&node.status().await))
}

#[derive(Debug, serde::Deserialize)]
struct LogsQuery {
    filter: Option<String>,
}

async fn logs_json<N: NodeApi>(
    State(node): State<Arc<N>>,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Response {
    Json(node.logs(q.filter.filter(|f| !f.is_empty())).await).into_response()
}

async fn service_page<N: NodeApi>(
    State(node): State<Arc<N>>,
    Path(name): Path<String>,
) -> Html<String> {
    Html(html::service(&node.status().await, &name))
}

async fn service_series<N: NodeApi>(
    State(node): State<Arc<N>>,
    Path(name): Path<String>,
) -> Response {
    Json(node.service_series(name).await).into_response()
}

async fn graph_page<N: NodeApi>(State(node): State<Arc<N>>) -> Html<String> {
    Html(html::graph(&node.status().await))
}

async fn rollouts_page<N: NodeApi>(State(node): State<Arc<N>>) -> Html<String> {
    Html(html::rollouts(&node.status().await))
}

async fn graph_json<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    Json(node.graph().await).into_response()
}

async fn rollouts_json<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    Json(node.rollouts().await).into_response()
}

async fn readyz<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    let status = node.status().await;
    if status.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let reason = status
            .not_ready_reason
            .unwrap_or_else(|| "not ready".into());
        (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response()
    }
}

async fn metrics<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.metrics().await,
    )
        .into_response()
}

async fn self_status<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    Json(node.status().await).into_response()
}

async fn doctor<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    Json(node.doctor().await).into_response()
}

async fn members<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    Json(node.members().await).into_response()
}

async fn config_list_all<N: NodeApi>(State(node): State<Arc<N>>) -> Result<Response, ApiError> {
    Ok(Json(node.config_list(None).await?).into_response())
}

async fn config_list_kind<N: NodeApi>(
    State(node): State<Arc<N>>,
    Path(kind): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(node.config_list(Some(kind)).await?).into_response())
}

async fn config_get<N: NodeApi>(
    State(node): State<Arc<N>>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(node.config_get(kind, name).await?).into_response())
}

async fn config_history<N: NodeApi>(
    State(node): State<Arc<N>>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(node.config_history(kind, name).await?).into_response())
}

async fn config_put<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    Path((kind, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    Ok(Json(node.config_put(kind, name, body.to_vec(), caller).await?).into_response())
}

async fn ca_status<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    Json(node.ca_status().await).into_response()
}

async fn ca_rotate<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    Ok(Json(node.ca_rotate(caller).await?).into_response())
}

async fn ca_replica_add<N: NodeApi>(
    State(node): State<Arc<N>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    Ok(Json(node.ca_replica(name, true, caller).await?).into_response())
}

async fn ca_replica_remove<N: NodeApi>(
    State(node): State<Arc<N>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    Ok(Json(node.ca_replica(name, false, caller).await?).into_response())
}

async fn ca_backup<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    Ok(Json(node.ca_backup(body.to_vec(), caller).await?).into_response())
}

/// Query of `GET /v1/audit`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit<N: NodeApi>(
    State(node): State<Arc<N>>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Response {
    Json(node.audit(q.limit.unwrap_or(100).min(10_000)).await).into_response()
}

async fn config_stamp<N: NodeApi>(
    State(node): State<Arc<N>>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(node.config_stamp(kind, name).await?).into_response())
}

async fn operators<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    Ok(Json(node.operators(body.to_vec(), caller).await?).into_response())
}

async fn config_delete<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    node.config_delete(kind, name, caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn policy_explain<N: NodeApi>(
    State(node): State<Arc<N>>,
    axum::extract::Query(q): axum::extract::Query<crate::ExplainQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(node.policy_explain(q).await?).into_response())
}

async fn services<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    Json(node.services().await).into_response()
}

async fn register_service<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&*node, &headers)?;
    node.register_service(name, body.to_vec()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deregister_service<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&*node, &headers)?;
    node.deregister_service(name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_token<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest { ttl_secs: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?
    };
    let ttl = Duration::from_secs(req.ttl_secs.unwrap_or(3600));
    let token = node.create_token(ttl, caller).await?;
    Ok((StatusCode::CREATED, Json(token)).into_response())
}

async fn revoke<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    Ok(Json(node.revoke(name, caller).await?).into_response())
}

async fn gossip_keys<N: NodeApi>(State(node): State<Arc<N>>) -> Response {
    Json(node.gossip_keys().await).into_response()
}

async fn gossip_key_op<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&*node, &headers);
    Ok(Json(node.gossip_key_op(body.to_vec(), caller).await?).into_response())
}

async fn leave<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&*node, &headers)?;
    node.leave().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"leaving": true})),
    )
        .into_response())
}

#[cfg(test)]
mod tests;
