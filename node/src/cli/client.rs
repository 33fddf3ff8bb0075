//! Client commands: talk to the local agent's API.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use weft_web::{
    GossipKeysView, KeyringNodeResult, MemberView, NodeStatus, RevokeView, ServiceView, StampView,
    TokenView, OPERATOR_HEADER,
};

use super::args::{ClientArgs, OperatorAction, RegisterArgs};
use crate::authority::{Act, Credential};

/// An HTTP client for the local agent.
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    data_dir: std::path::PathBuf,
    credential: Option<std::path::PathBuf>,
}

impl ApiClient {
    /// A client for the agent at `args.api`.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let base = if args.api.starts_with("http://") || args.api.starts_with("https://") {
            args.api.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", args.api)
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()?;
        Ok(Self {
            base,
            http,
            data_dir: args.data_dir.clone(),
            credential: args.credential.clone(),
        })
    }

    /// The operator credential: `--credential FILE`, `WEFT_TOKEN` holding one, or
    /// `<data-dir>/admin-credential` when readable.
    fn credential(&self) -> anyhow::Result<Option<Credential>> {
        if let Some(path) = &self.credential {
            let s = std::fs::read_to_string(path)
                .with_context(|| format!("--credential {}", path.display()))?;
            return Credential::parse(&s)
                .map(Some)
                .with_context(|| format!("--credential {}", path.display()));
        }
        if let Ok(t) = std::env::var("WEFT_TOKEN") {
            if Credential::looks_like(&t) {
                return Credential::parse(&t).map(Some).context("WEFT_TOKEN");
            }
        }
        let path = self.data_dir.join("admin-credential");
        match std::fs::read_to_string(&path) {
            Ok(s) => Credential::parse(&s)
                .map(Some)
                .with_context(|| path.display().to_string()),
            Err(_) => Ok(None),
        }
    }

    /// Sends `act`'s request signed with the operator credential (and the admin token
    /// too when readable: on the node holding an admin credential it stands for it).
    /// `signer`: the act, the credential, and the cluster and node names to sign for.
    async fn send_signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        signer: Option<(Act, &Credential, &str, &str)>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Ok(token) = self.admin_token() {
            req = req.bearer_auth(token);
        }
        if let Some((act, cred, cluster, node)) = signer {
            let cluster = weft_ca::ClusterName::new(cluster).context("the agent's cluster name")?;
            let signed = cred.sign(cluster, node, act, std::time::SystemTime::now())?;
            req = req.header(OPERATOR_HEADER, signed.to_header());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.map_err(|e| self.unreachable(e))
    }

    /// A cluster-wide act (not a config write), signed with the credential when there
    /// is one; parses the JSON answer.
    pub async fn act<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        act: Act,
    ) -> anyhow::Result<T> {
        let cred = self.credential()?;
        let me: Option<NodeStatus> = match &cred {
            Some(_) => Some(self.get("/v1/self").await?),
            None => None,
        };
        let signer = cred
            .as_ref()
            .zip(me.as_ref())
            .map(|(c, me)| (act, c, me.cluster.as_str(), me.name.as_str()));
        let resp = self.send_signed(method, path, body, signer).await?;
        Self::parse(resp).await
    }

    /// A config write (`value: None` deletes), stamped by the agent and signed here.
    pub async fn config_write(
        &self,
        kind: &str,
        name: &str,
        value: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let cred = self.credential()?;
        let parsed_kind: crate::cluster_config::Kind = kind.parse()?;
        let path = format!("/v1/config/{kind}/{name}");
        let (method, body) = match &value {
            Some(v) => (reqwest::Method::PUT, Some(v.clone())),
            None => (reqwest::Method::DELETE, None),
        };
        let resp = match &cred {
            Some(cred) => {
                let stamp: StampView = self.get(&format!("{path}/stamp")).await?;
                let version =
                    serde_json::from_value(stamp.version).context("the agent's version stamp")?;
                let act = Act::ConfigWrite {
                    kind: parsed_kind,
                    name: name.to_owned(),
                    version,
                    value,
                };
                self.send_signed(
                    method,
                    &path,
                    body,
                    Some((act, cred, &stamp.cluster, &stamp.node)),
                )
                .await?
            }
            None => self.send_signed(method, &path, body, None).await?,
        };
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(serde_json::Value::Null);
        }
        Self::parse(resp).await
    }

    fn admin_token(&self) -> anyhow::Result<String> {
        if let Ok(t) = std::env::var("WEFT_TOKEN") {
            if !t.trim().is_empty() && !Credential::looks_like(&t) {
                return Ok(t.trim().to_owned());
            }
        }
        let path = self.data_dir.join("admin-token");
        read_token(&path).with_context(|| {
            format!(
                "admin token needed: set WEFT_TOKEN or make {} readable (or pass --data-dir)",
                path.display()
            )
        })
    }

    async fn parse<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
        let status = resp.status();
        let body = resp.bytes().await.context("reading the agent's answer")?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
            bail!("{msg} (HTTP {status})");
        }
        serde_json::from_slice(&body).context("the agent's answer is not the expected JSON")
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the agent at {}: {e} (is it running? set --api or WEFT_API)",
            self.base
        )
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::parse(resp).await
    }

    /// POST with the admin token.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        let resp = self
            .send_admin(reqwest::Method::POST, path, Some(body))
            .await?;
        Self::parse(resp).await
    }

    /// PUT or DELETE with the admin token, expecting no body back.
    pub async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let resp = self.send_admin(method, path, body).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Self::parse::<serde_json::Value>(resp).await.map(|_| ())
    }

    async fn send_admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let token = self.admin_token()?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.map_err(|e| self.unreachable(e))
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::store::files::read_limited(path, 4096)?;
    let t = String::from_utf8(bytes)?.trim().to_owned();
    if t.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(t)
}

fn ago_or_in(unix: u64) -> String {
    let now = crate::clock::unix_secs();
    if unix >= now {
        format!(
            "in {}",
            humantime::format_duration(Duration::from_secs(unix - now))
        )
    } else {
        format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(now - unix))
        )
    }
}

/// `weft members`
pub async fn members(args: &ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    let members: Vec<MemberView> = client.get("/v1/members").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&members)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<22} {:<7} {:<10} {:<9} CERT EXPIRES",
        "NAME", "ADDRESS", "STATUS", "ZONE", "VERSION"
    );
    for m in members {
        let mut name = m.name.clone();
        if m.is_self {
            name.push('*');
        }
        let status = if m.revoked {
            "revoked".to_owned()
        } else {
            m.status.clone()
        };
        println!(
            "{:<24} {:<22} {:<7} {:<10} {:<9} {}",
            name,
            m.address,
            status,
            if m.zone.is_empty() { "-" } else { &m.zone },
            m.version,
            ago_or_in(m.cert_expiry_unix)
        );
    }
    Ok(())
}

/// `weft token create`
pub async fn token_create(args: &ClientArgs, ttl: &str) -> anyhow::Result<()> {
    let ttl = humantime::parse_duration(ttl)
        .with_context(|| format!("--ttl {ttl:?}: expected e.g. 10m or 1h"))?;
    let client = ApiClient::new(args)?;
    let token: TokenView = client
        .act(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(serde_json::json!({ "ttl_secs": ttl.as_secs() })),
            Act::CreateToken {
                ttl_secs: ttl.as_secs(),
            },
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&token)?);
    } else {
        println!("{}", token.token);
        eprintln!(
            "token {} expires {}; it can be used once",
            token.id,
            ago_or_in(token.expires_at_unix)
        );
    }
    Ok(())
}

/// `weft node revoke NAME`: the revocation, then (unless `rotate` is false) a gossip key
/// rotation that the revoked node takes no part in, once the revocation list has had a
/// few gossip rounds to reach it.
pub async fn node_revoke(args: &ClientArgs, name: &str, rotate: bool) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    let node = weft_ca::NodeName::new(name)?;
    let r: RevokeView = client
        .act(
            reqwest::Method::POST,
            &format!("/v1/nodes/{name}/revoke"),
            None,
            Act::Revoke { node },
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if r.serials.is_empty() {
        println!("{}: already revoked", r.node);
    } else {
        println!("{}: revoked {} certificate(s)", r.node, r.serials.len());
    }
    if rotate {
        tokio::time::sleep(ROTATE_AFTER).await;
        let id = rotate_gossip_key(&client).await.with_context(|| {
            format!("{name} is revoked, but the gossip key was not rotated (run `weft gossip-key install`, `use`, `remove` by hand)")
        })?;
        if !args.json {
            println!("gossip key rotated to {id}; {name} no longer holds it");
        }
    }
    Ok(())
}

/// Time the revocation list gets to reach the revoked node before the key changes.
const ROTATE_AFTER: Duration = Duration::from_secs(3);

/// One gossip-key step on every alive, unrevoked member; fails unless all applied it.
async fn gossip_key_step(
    client: &ApiClient,
    op: serde_json::Value,
) -> anyhow::Result<Vec<KeyringNodeResult>> {
    let change: crate::identity::keyring::KeyringOp = serde_json::from_value(op.clone())?;
    let results: Vec<KeyringNodeResult> = client
        .act(
            reqwest::Method::POST,
            "/v1/gossip/keys",
            Some(op),
            Act::Keyring { change },
        )
        .await?;
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.keyring.is_none())
        .map(|r| format!("{}: {}", r.node, r.error.as_deref().unwrap_or("no answer")))
        .collect();
    if !failed.is_empty() {
        bail!(
            "not applied on every member (repeat the command): {}",
            failed.join("; ")
        );
    }
    Ok(results)
}

/// Installs a fresh key everywhere, uses it, removes the old one; returns the new id.
async fn rotate_gossip_key(client: &ApiClient) -> anyhow::Result<String> {
    let before: GossipKeysView = client.get("/v1/gossip/keys").await?;
    let installed = gossip_key_step(
        client,
        serde_json::json!({"op": "install", "key": new_gossip_key()}),
    )
    .await?;
    let id = installed
        .first()
        .and_then(|r| r.keyring.as_ref())
        .and_then(|k| k.keys.iter().find(|k| !before.keys.contains(k)).cloned())
        .context("the new key's id was not reported")?;
    gossip_key_step(client, serde_json::json!({"op": "use", "id": id})).await?;
    gossip_key_step(
        client,
        serde_json::json!({"op": "remove", "id": before.primary}),
    )
    .await?;
    Ok(id)
}

/// `weft gossip-key list`
pub async fn gossip_keys(args: &ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    let v: GossipKeysView = client.get("/v1/gossip/keys").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for k in &v.keys {
            println!("{k}{}", if *k == v.primary { "  (in use)" } else { "" });
        }
    }
    Ok(())
}

/// `weft gossip-key install|use|remove`: one step of a rotation, applied cluster-wide.
/// Fails (non-zero) if any alive member did not apply it; every step can be repeated.
pub async fn gossip_key_op(args: &ClientArgs, op: serde_json::Value) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    let results = gossip_key_step(&client, op).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    for r in &results {
        if let Some(k) = &r.keyring {
            println!(
                "{}: in use {}, accepted {}",
                r.node,
                k.primary,
                k.keys.join(" ")
            );
        }
    }
    Ok(())
}

/// A fresh gossip key, standard base64.
pub fn new_gossip_key() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `weft leave`
pub async fn leave(args: &ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    let _: serde_json::Value = client.post("/v1/leave", serde_json::json!({})).await?;
    if args.json {
        println!("{{\"leaving\":true}}");
    } else {
        println!("leaving the cluster; the agent stops once peers have seen it");
    }
    Ok(())
}

/// `weft services`
pub async fn services(args: &ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    let services: Vec<ServiceView> = client.get("/v1/services").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&services)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<16} {:<16} {:<22} {:<6} {:<5} {:<8} HEALTH",
        "SERVICE", "VIRTUAL IP", "NODE", "ADDRESS", "PORT", "PROTO", "VERSION"
    );
    for s in services {
        let vip = s.vip.clone().unwrap_or_else(|| "-".into());
        for i in s.instances {
            println!(
                "{:<20} {:<16} {:<16} {:<22} {:<6} {:<5} {:<8} {}",
                s.service, vip, i.node, i.address, i.port, i.protocol, i.version, i.health
            );
        }
    }
    Ok(())
}

/// `weft service register`
pub async fn service_register(a: &RegisterArgs) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "port": a.port, "protocol": a.protocol, "tags": a.tags });
    if let Some(v) = &a.version {
        body["version"] = v.clone().into();
    }
    if let Some(u) = &a.user {
        body["user"] = u.clone().into();
    }
    if let Some(u) = &a.unit {
        body["unit"] = u.clone().into();
    }
    if let Some(ip) = &a.address {
        body["address"] = ip.clone().into();
    }
    if a.check_http.is_some() || a.check_tcp.is_some() || a.check_grpc.is_some() {
        let mut check = serde_json::json!({});
        if let Some(u) = &a.check_http {
            check["http"] = u.clone().into();
        }
        if let Some(f) = &a.check_ca_file {
            // The agent reads the file: make a relative path mean the caller's directory.
            let path =
                std::path::absolute(f).map_err(|e| anyhow::anyhow!("--check-ca-file {f}: {e}"))?;
            check["ca_file"] = path.display().to_string().into();
        }
        if a.check_tls_skip_verify {
            check["tls_skip_verify"] = true.into();
        }
        if let Some(t) = &a.check_tcp {
            check["tcp"] = t.clone().into();
        }
        if let Some(g) = &a.check_grpc {
            check["grpc"] = g.clone().into();
        }
        if let Some(s) = &a.check_grpc_service {
            check["grpc_service"] = s.clone().into();
        }
        if let Some(i) = &a.check_interval {
            check["interval"] = i.clone().into();
        }
        if let Some(t) = &a.check_timeout {
            check["timeout"] = t.clone().into();
        }
        body["check"] = check;
    }
    let mut upstreams = Vec::new();
    for u in &a.upstreams {
        let (service, listen) = u
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--upstream {u:?}: expected SERVICE=ADDR"))?;
        upstreams.push(serde_json::json!({ "service": service, "listen": listen }));
    }
    body["upstream"] = upstreams.into();
    let client = ApiClient::new(&a.client)?;
    client
        .write(
            reqwest::Method::PUT,
            &format!("/v1/services/{}", a.name),
            Some(body),
        )
        .await?;
    if !a.client.json {
        println!("registered {}", a.name);
    }
    Ok(())
}

/// `weft service deregister`
pub async fn service_deregister(args: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    client
        .write(
            reqwest::Method::DELETE,
            &format!("/v1/services/{name}"),
            None,
        )
        .await?;
    if !args.json {
        println!("deregistered {name}");
    }
    Ok(())
}

/// `weft operator create|list|revoke`
pub async fn operator(action: &OperatorAction) -> anyhow::Result<()> {
    match action {
        OperatorAction::Create {
            name,
            role,
            ttl,
            client: args,
        } => {
            let name = weft_ca::OperatorName::new(name.as_str())?;
            let role: weft_ca::Role = role.parse()?;
            let ttl = humantime::parse_duration(ttl)
                .with_context(|| format!("--ttl {ttl:?}: expected e.g. 90d or 12h"))?;
            let key = weft_ca::NodeKey::generate()?;
            let csr = key.named_csr_der(name.as_str())?;
            let act = Act::OperatorCreate {
                name: name.clone(),
                role,
                ttl_secs: ttl.as_secs(),
                csr: crate::rpc::messages::b64(&csr),
            };
            let client = ApiClient::new(args)?;
            let body = serde_json::to_value(&act)?;
            let answer: serde_json::Value = client
                .act(reqwest::Method::POST, "/v1/operators", Some(body), act)
                .await?;
            let cert = answer["cert"]
                .as_str()
                .and_then(|c| crate::rpc::messages::unb64(c, "cert").ok())
                .context("the CA's answer holds no certificate")?;
            let chain = answer["chain"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str())
                        .filter_map(|c| crate::rpc::messages::unb64(c, "chain").ok())
                        .collect()
                })
                .unwrap_or_default();
            let credential = Credential::new(key, cert, chain);
            println!("{}", credential.encode());
            eprintln!(
                "operator {name} ({role}) expires {}; this credential is shown once: keep it in a 0600 file (--credential FILE) or WEFT_TOKEN",
                ago_or_in(answer["not_after_unix"].as_u64().unwrap_or(0))
            );
            Ok(())
        }
        OperatorAction::List(args) => {
            let client = ApiClient::new(args)?;
            let act = Act::OperatorList;
            let body = serde_json::to_value(&act)?;
            let list: Vec<crate::ca_role::OperatorRecord> = client
                .act(reqwest::Method::POST, "/v1/operators", Some(body), act)
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<20} {:<9} {:<10} EXPIRES", "NAME", "ROLE", "STATE");
            for o in list {
                let state = if o.revoked { "revoked" } else { "active" };
                println!(
                    "{:<20} {:<9} {:<10} {}",
                    o.name,
                    o.role,
                    state,
                    ago_or_in(o.not_after_unix)
                );
            }
            Ok(())
        }
        OperatorAction::Revoke { name, client: args } => {
            let name = weft_ca::OperatorName::new(name.as_str())?;
            let client = ApiClient::new(args)?;
            let act = Act::OperatorRevoke { name: name.clone() };
            let body = serde_json::to_value(&act)?;
            let answer: serde_json::Value = client
                .act(reqwest::Method::POST, "/v1/operators", Some(body), act)
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("operator {name} revoked");
            }
            Ok(())
        }
    }
}

/// `weft audit`
pub async fn audit(args: &ClientArgs, limit: usize) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    let records: Vec<serde_json::Value> = client.get(&format!("/v1/audit?limit={limit}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    for r in records {
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(r["at_ms"].as_u64().unwrap_or(0)),
        );
        let role = r["role"]
            .as_str()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default();
        println!(
            "{when}  {}{role} via {}: {} [{}]",
            r["operator"].as_str().unwrap_or("-"),
            r["via"].as_str().unwrap_or("-"),
            r["change"].as_str().unwrap_or("-"),
            r["outcome"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}
