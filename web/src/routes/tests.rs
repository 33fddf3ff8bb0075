//! Router tests with `oneshot`, no socket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::*;

struct Fake {
    ready: bool,
}

fn member(name: &str) -> MemberView {
    MemberView {
        name: name.into(),
        address: "127.0.0.1:7443".into(),
        gossip_address: "127.0.0.1:7946".into(),
        status: "alive".into(),
        zone: String::new(),
        version: "0".into(),
        ca: false,
        cert_expiry_unix: 0,
        cert_serial: "01".into(),
        cert_fingerprint: "ff".into(),
        cert_root: "ee".into(),
        root_holder: false,
        intermediate_expiry_unix: 0,
        revoked: false,
        is_self: false,
        config_digest: String::new(),
        generation: 1,
    }
}

/// The fake's stand-in for verification: a signed request or the admin token.
fn allowed(caller: &Caller) -> Result<(), ApiError> {
    if caller.local_admin || caller.signed.as_deref() == Some("signed-by-alice") {
        Ok(())
    } else {
        Err(ApiError::NotAllowed(
            "writing route entries needs an operator credential".into(),
        ))
    }
}

impl NodeApi for Fake {
    async fn members(&self) -> Vec<MemberView> {
        vec![member("vm-1"), member("<script>alert(1)</script>")]
    }
    async fn status(&self) -> NodeStatus {
        NodeStatus {
            name: "vm-1".into(),
            cluster: "weft".into(),
            version: "0".into(),
            ready: self.ready,
            not_ready_reason: (!self.ready).then(|| "certificate expired".into()),
            cert_expiry_unix: 0,
            cert_remaining_secs: 10,
            ca: true,
            warnings: vec![],
            ca_expiry_unix: 0,
            gossip_address: "127.0.0.1:7946".into(),
            quic_address: "127.0.0.1:7443".into(),
            gossip_dropped: 0,
            listener_faults: vec![],
            config_digest: String::new(),
            dns: None,
            data_dir: "/var/lib/weft".into(),
            proxy: "127.0.0.1:15001".into(),
        }
    }
    async fn service_series(&self, service: String) -> serde_json::Value {
        serde_json::json!({ "service": service, "versions": [] })
    }
    async fn doctor(&self) -> serde_json::Value {
        serde_json::json!({ "clock": [] })
    }
    async fn create_token(&self, ttl: Duration, caller: Caller) -> Result<TokenView, ApiError> {
        allowed(&caller)?;
        Ok(TokenView {
            token: "weft1.x".into(),
            id: "x".into(),
            expires_at_unix: ttl.as_secs(),
        })
    }
    async fn revoke(&self, node: String, caller: Caller) -> Result<RevokeView, ApiError> {
        allowed(&caller)?;
        Err(ApiError::NotFound(format!(
            "no certificate was issued to {node}"
        )))
    }
    async fn leave(&self) -> Result<(), ApiError> {
        Ok(())
    }
    async fn gossip_keys(&self) -> GossipKeysView {
        GossipKeysView {
            primary: "0000abcd".into(),
            keys: vec!["0000abcd".into()],
        }
    }
    async fn gossip_key_op(
        &self,
        _body: Vec<u8>,
        caller: Caller,
    ) -> Result<Vec<KeyringNodeResult>, ApiError> {
        allowed(&caller)?;
        Ok(Vec::new())
    }
    async fn services(&self) -> Vec<ServiceView> {
        vec![ServiceView {
            vip: Some("127.240.1.2".into()),
            service: "reviews".into(),
            instances: vec![],
        }]
    }
    async fn register_service(&self, name: String, body: Vec<u8>) -> Result<(), ApiError> {
        if name.contains('<') {
            return Err(ApiError::BadRequest(format!(
                "invalid service name {name:?}"
            )));
        }
        serde_json::from_slice::<serde_json::Value>(&body)
            .map(|_| ())
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }
    async fn deregister_service(&self, name: String) -> Result<(), ApiError> {
        Err(ApiError::NotFound(format!("no service {name}")))
    }
    async fn config_list(&self, _kind: Option<String>) -> Result<serde_json::Value, ApiError> {
        Ok(serde_json::json!([]))
    }
    async fn config_get(&self, kind: String, name: String) -> Result<serde_json::Value, ApiError> {
        Err(ApiError::NotFound(format!("no {kind} {name}")))
    }
    async fn config_put(
        &self,
        _kind: String,
        _name: String,
        _body: Vec<u8>,
        caller: Caller,
    ) -> Result<serde_json::Value, ApiError> {
        allowed(&caller)?;
        Ok(serde_json::json!({}))
    }
    async fn ca_status(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    async fn ca_rotate(&self, caller: Caller) -> Result<serde_json::Value, ApiError> {
        allowed(&caller)?;
        Ok(serde_json::json!({}))
    }
    async fn ca_replica(
        &self,
        _node: String,
        _add: bool,
        caller: Caller,
    ) -> Result<serde_json::Value, ApiError> {
        allowed(&caller)?;
        Ok(serde_json::json!({}))
    }
    async fn ca_backup(
        &self,
        _body: Vec<u8>,
        caller: Caller,
    ) -> Result<serde_json::Value, ApiError> {
        allowed(&caller)?;
        Ok(serde_json::json!({}))
    }
    async fn config_stamp(&self, _kind: String, _name: String) -> Result<StampView, ApiError> {
        Ok(StampView {
            cluster: "weft".into(),
            node: "vm-1".into(),
            version: serde_json::json!({"wall": 1, "logical": 0, "node": "vm-1"}),
        })
    }
    async fn operators(
        &self,
        _body: Vec<u8>,
        caller: Caller,
    ) -> Result<serde_json::Value, ApiError> {
        allowed(&caller)?;
        Ok(serde_json::json!([]))
    }
    async fn config_history(
        &self,
        _kind: String,
        _name: String,
    ) -> Result<serde_json::Value, ApiError> {
        Ok(serde_json::json!([]))
    }
    async fn config_delete(
        &self,
        _kind: String,
        _name: String,
        caller: Caller,
    ) -> Result<(), ApiError> {
        allowed(&caller)?;
        Ok(())
    }
    async fn policy_explain(&self, q: ExplainQuery) -> Result<serde_json::Value, ApiError> {
        Ok(serde_json::json!({ "source": q.source }))
    }
    async fn logs(&self, filter: Option<String>) -> Vec<serde_json::Value> {
        let all = vec![serde_json::json!({"destination": "reviews", "status": "200"})];
        all.into_iter()
            .filter(|l| filter.as_deref().is_none_or(|f| l.to_string().contains(f)))
            .collect()
    }
    async fn graph(&self) -> serde_json::Value {
        serde_json::json!({
            "services": ["frontend", "reviews"],
            "edges": [{"source": "frontend", "destination": "reviews", "rps": 2.5, "error_rate": 0.0, "p50_ms": 1.0, "p99_ms": 4.0}]
        })
    }
    async fn rollouts(&self) -> serde_json::Value {
        serde_json::json!({ "rollouts": [{
            "service": "reviews", "state": "progressing", "weight": 50,
            "plan": { "from": "v1", "to": "v2", "steps": [10, 50, 100], "interval_ms": 5000,
                      "max_error_rate": 0.01, "max_p99_ms": 500.0, "min_requests": 20 },
            "progress": { "history": [
                { "at_ms": 1000, "node": "vm-1", "action": "start", "weight": 10, "reason": "v1 → v2" },
                { "at_ms": 6000, "node": "vm-1", "action": "advance", "weight": 50, "reason": "gates held",
                  "new": { "requests": 30, "errors": 0, "error_rate": 0.0, "p50_ms": 1.0, "p99_ms": 4.0 },
                  "old": { "requests": 270, "errors": 0, "error_rate": 0.0, "p50_ms": 1.0, "p99_ms": 2.0 } }
            ]},
            "driver": "vm-1", "driven_by": "vm-1",
            "now": { "old": { "requests": 100, "errors": 0, "error_rate": 0.0, "p50_ms": 1.0, "p99_ms": 2.0 },
                     "new": { "requests": 100, "errors": 1, "error_rate": 0.01, "p50_ms": 1.0, "p99_ms": 4.0 } }
        }]})
    }
    async fn audit(&self, limit: usize) -> Vec<serde_json::Value> {
        vec![serde_json::json!({ "limit": limit })]
    }
    async fn metrics(&self) -> String {
        "weft_members{status=\"alive\"} 2\n".into()
    }
    fn is_admin(&self, token: &str) -> bool {
        token == "secret"
    }
}

async fn call(ready: bool, req: Request<Body>) -> (StatusCode, String, axum::http::HeaderMap) {
    let resp = router(Arc::new(Fake { ready }))
        .oneshot(req)
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn health_and_ready() {
    assert_eq!(call(true, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(call(true, get("/readyz")).await.0, StatusCode::OK);
    let (status, body, _) = call(false, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("certificate expired"));
}

#[tokio::test]
async fn members_json_and_escaped_page() {
    let (status, body, _) = call(true, get("/v1/members")).await;
    assert_eq!(status, StatusCode::OK);
    let v: Vec<MemberView> = serde_json::from_str(&body).expect("json");
    assert_eq!(v.len(), 2);
    let (status, page, headers) = call(true, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("<script>alert(1)"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("default-src 'self'")));
    assert_eq!(
        headers.get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );
}

#[tokio::test]
async fn writes_need_the_admin_token() {
    let post = |auth: Option<&str>, uri: &str, body: &str| {
        let mut b = Request::post(uri);
        if let Some(a) = auth {
            b = b.header("authorization", format!("Bearer {a}"));
        }
        b.body(Body::from(body.to_owned())).expect("request")
    };
    assert_eq!(
        call(true, post(None, "/v1/tokens", "")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(true, post(Some("wrong"), "/v1/tokens", "")).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body, _) = call(
        true,
        post(Some("secret"), "/v1/tokens", r#"{"ttl_secs":600}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        serde_json::from_str::<TokenView>(&body)
            .expect("json")
            .expires_at_unix,
        600
    );
    let (status, body, _) = call(true, post(Some("secret"), "/v1/tokens", r#"{"ttl":600}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("ttl"), "{body}");
    assert_eq!(
        call(true, post(None, "/v1/leave", "")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(true, post(Some("secret"), "/v1/leave", "")).await.0,
        StatusCode::ACCEPTED
    );
    let (status, body, _) = call(true, post(Some("secret"), "/v1/nodes/vm-9/revoke", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("vm-9"));
}

#[tokio::test]
async fn metrics_are_text() {
    let (status, body, headers) = call(true, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("weft_members"));
    assert!(headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
}

#[tokio::test]
async fn service_registration_needs_admin_and_valid_input() {
    let put = |auth: bool, uri: &str, body: &str| {
        let mut b = Request::put(uri);
        if auth {
            b = b.header("authorization", "Bearer secret");
        }
        b.body(Body::from(body.to_owned())).expect("request")
    };
    assert_eq!(
        call(true, put(false, "/v1/services/web", "{}")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(true, put(true, "/v1/services/web", "{\"port\":1}"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (status, body, _) = call(
        true,
        put(
            true,
            "/v1/services/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "{}",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid service name"), "{body}");
    let (status, body, _) = call(true, get("/v1/services")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("reviews"));
}

#[tokio::test]
async fn config_writes_need_admin() {
    let put = |auth: bool| {
        let mut b = Request::put("/v1/config/route/reviews");
        if auth {
            b = b.header("authorization", "Bearer secret");
        }
        b.body(Body::from("{}")).expect("request")
    };
    let (status, body, _) = call(true, put(false)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("operator credential"), "{body}");
    assert_eq!(call(true, put(true)).await.0, StatusCode::OK);
    let signed = Request::put("/v1/config/route/reviews")
        .header(OPERATOR_HEADER, "signed-by-alice")
        .body(Body::from("{}"))
        .expect("request");
    assert_eq!(call(true, signed).await.0, StatusCode::OK);
    assert_eq!(
        call(true, get("/v1/config/route/nope")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body, _) = call(true, get("/v1/policy/explain?source=a&destination=b")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"a\""));
}

#[tokio::test]
async fn graph_page_assets_and_json() {
    let (status, page, headers) = call(true, get("/graph")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<script src=\"/assets/app.js\"></script>"));
    assert!(!page.contains("<style>"), "no inline style under the CSP");
    assert!(headers.get("content-security-policy").is_some());
    let (status, js, headers) = call(true, get("/assets/app.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(js.contains("/v1/graph") && js.contains("textContent"));
    assert!(headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/javascript")));
    assert_eq!(call(true, get("/assets/style.css")).await.0, StatusCode::OK);
    let (status, body, _) = call(true, get("/v1/graph")).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["edges"][0]["rps"], 2.5);
    let (_, overview, _) = call(true, get("/")).await;
    assert!(!overview.contains("<style>"));
}

#[tokio::test]
async fn rollouts_page_and_json() {
    let (status, page, _) = call(true, get("/rollouts")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"rollouts\"") && page.contains("/assets/app.js"));
    let (_, js, _) = call(true, get("/assets/app.js")).await;
    assert!(js.contains("/v1/rollouts"));
    let (status, body, _) = call(true, get("/v1/rollouts")).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["rollouts"][0]["weight"], 50);
}

#[tokio::test]
async fn every_page_renders_and_escapes() {
    for path in [
        "/",
        "/members",
        "/services",
        "/graph",
        "/rollouts",
        "/config",
        "/logs",
        "/config?source=a&destination=b&path=/x",
    ] {
        let (status, page, headers) = call(true, get(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(page.contains("<nav>"), "{path}");
        assert!(
            !page.contains("<script>alert(1)"),
            "{path}: unescaped markup"
        );
        assert!(headers.get("content-security-policy").is_some(), "{path}");
    }
    let (_, members, _) = call(true, get("/members")).await;
    assert!(members.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let (_, explained, _) = call(true, get("/config?source=a&destination=b")).await;
    assert!(
        explained.contains("a → b") || explained.contains("a \u{2192} b"),
        "{explained}"
    );
    let (status, body, _) = call(true, get("/v1/logs?filter=reviews")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("reviews"));
    let (_, none, _) = call(true, get("/v1/logs?filter=nomatch")).await;
    assert_eq!(none, "[]");
}

#[tokio::test]
async fn other_host_names_are_refused_against_dns_rebinding() {
    for ok in [
        "127.0.0.1:7070",
        "localhost:7070",
        "[::1]:7070",
        "10.0.0.5",
        "app.localhost",
    ] {
        assert!(crate::routes::host_allowed(ok), "{ok}");
    }
    for bad in [
        "evil.example:7070",
        "evil.example",
        "127.0.0.1.nip.io:7070",
        "[zz]:1",
    ] {
        assert!(!crate::routes::host_allowed(bad), "{bad}");
    }
    let req = Request::get("/v1/members")
        .header("host", "attacker.example:7070")
        .body(Body::empty())
        .expect("request");
    let (status, body, _) = call(true, req).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(body.contains("DNS-rebinding"), "{body}");
}
