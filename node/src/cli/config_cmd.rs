//! `weft config …`, `weft route …`, `weft policy …`: cluster-config commands. Writes go
//! to the local agent (admin token) and replicate from there.

use std::path::Path;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde::Deserialize;

use super::args::ClientArgs;
use super::client::ApiClient;
use crate::routing::route::{
    parse_split, HeaderMatch, PathMatch, Route, RouteMatch, RouteRule, WeightedVersion,
};

/// `weft config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// List live entries (all kinds, or one).
    List {
        /// route or policy.
        kind: Option<String>,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one entry.
    Get {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write one entry from a JSON value (admin), e.g.
    /// `weft config set ratelimit reviews '{"rps": 50}'`.
    Set {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// The value, as JSON.
        value: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the versions of one entry this node remembers (writer, time, value).
    History {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete one entry (admin).
    Delete {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Apply entries from a TOML or JSON file: `[[entry]] kind, name, value` (admin).
    Apply {
        /// The file (.toml or .json).
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `weft route …`
#[derive(Debug, Subcommand)]
pub enum RouteAction {
    /// Set the route of a service (replaces it): header/path matches first, then the split.
    Set(RouteSetArgs),
}

/// `weft route set` options.
#[derive(Debug, Args)]
pub struct RouteSetArgs {
    /// Destination service.
    pub service: String,
    /// Default split across versions, e.g. v1=90,v2=10.
    #[arg(long)]
    pub split: Option<String>,
    /// A match (repeatable, each followed by --to): header:NAME=VALUE, header:NAME, path:/prefix.
    #[arg(long = "match")]
    pub matches: Vec<String>,
    /// Version for the preceding --match.
    #[arg(long = "to")]
    pub to: Vec<String>,
    /// Sticky A/B: keep each value of this header on one version of the split.
    #[arg(long)]
    pub sticky_header: Option<String>,
    /// Sticky A/B: keep each value of this cookie on one version of the split.
    #[arg(long)]
    pub sticky_cookie: Option<String>,
    /// Mirror a share of requests to a version, fire-and-forget (answers discarded),
    /// e.g. v2=50 (percent).
    #[arg(long)]
    pub mirror: Option<String>,
    /// Write it even if the service or a version runs nowhere yet, or the split does not
    /// add up to 100 (staging ahead of a deployment); what is unknown is printed as a
    /// warning. `--force` is the same.
    #[arg(long = "allow-unknown", alias = "force")]
    pub force: bool,
    /// Common client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `weft policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Set the default for traffic no rule matches (admin).
    Default {
        /// allow or deny.
        action: String,
        /// Log and count would-be denials without enforcing them.
        #[arg(long)]
        dry_run: bool,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Allow SRC → DST (admin).
    Allow(PolicyRuleArgs),
    /// Deny SRC → DST (admin).
    Deny(PolicyRuleArgs),
    /// List the default and the rules.
    List(ClientArgs),
    /// Which rule decides SRC → DST, and why.
    Explain {
        /// Source service (- for none).
        source: String,
        /// Destination service.
        destination: String,
        /// HTTP path.
        #[arg(long)]
        path: Option<String>,
        /// HTTP method.
        #[arg(long)]
        method: Option<String>,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Options of `weft policy allow|deny`.
#[derive(Debug, Args)]
pub struct PolicyRuleArgs {
    /// Source service, - (no service) or *.
    pub source: String,
    /// Destination service or *.
    pub destination: String,
    /// HTTP path prefix.
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP method.
    #[arg(long)]
    pub method: Option<String>,
    /// Rule name (default: derived from the other fields).
    #[arg(long)]
    pub name: Option<String>,
    /// Write it even if a service it names runs nowhere yet (a warning is printed).
    /// `--force` is the same.
    #[arg(long = "allow-unknown", alias = "force")]
    pub force: bool,
    /// Common client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

fn print(args: &ClientArgs, v: &serde_json::Value) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else if let Some(list) = v.as_array() {
        for e in list {
            println!(
                "{:<8} {:<32} {}",
                e["kind"].as_str().unwrap_or(""),
                e["name"].as_str().unwrap_or(""),
                e["value"]
            );
        }
    } else {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    Ok(())
}

async fn put(
    client: &ApiClient,
    kind: &str,
    name: &str,
    value: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    client.config_write(kind, name, Some(value)).await
}

/// `weft force-leave NODE`: writes the admin-signed `forget` entry for a failed or
/// departed member at its current generation.
pub async fn force_leave(args: &ClientArgs, node: &str) -> anyhow::Result<()> {
    let c = ApiClient::new(args)?;
    let members: Vec<weft_web::MemberView> = c.get("/v1/members").await?;
    let Some(m) = members.iter().find(|m| m.name == node) else {
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        let hint = closest(node, names.iter())
            .map(|n| format!("; did you mean {n}?"))
            .unwrap_or_default();
        bail!("no member named {node:?} (`weft members` lists them){hint}");
    };
    forget(&c, m).await
}

async fn forget(c: &ApiClient, m: &weft_web::MemberView) -> anyhow::Result<()> {
    if m.status == "alive" {
        bail!(
            "{} is alive: stop its agent first (systemctl stop weft there, which leaves by itself), or shut it out with weft node revoke {}",
            m.name,
            m.name
        );
    }
    put(
        c,
        "forget",
        &m.name,
        serde_json::json!({ "generation": m.generation }),
    )
    .await?;
    println!(
        "{} ({}) forgotten cluster-wide; it is listed again if its agent starts",
        m.name, m.status
    );
    Ok(())
}

/// `weft members --prune`: forgets every failed or departed member.
pub async fn prune(args: &ClientArgs) -> anyhow::Result<()> {
    let c = ApiClient::new(args)?;
    let members: Vec<weft_web::MemberView> = c.get("/v1/members").await?;
    let gone: Vec<&weft_web::MemberView> = members.iter().filter(|m| m.status != "alive").collect();
    if gone.is_empty() {
        println!("no failed or departed member to forget");
    }
    for m in gone {
        forget(&c, m).await?;
    }
    Ok(())
}

/// Runs a `weft config` command.
pub async fn config(action: &ConfigAction) -> anyhow::Result<()> {
    match action {
        ConfigAction::List { kind, client } => {
            let c = ApiClient::new(client)?;
            let path = kind
                .as_ref()
                .map_or("/v1/config".to_owned(), |k| format!("/v1/config/{k}"));
            print(client, &c.get(&path).await?)
        }
        ConfigAction::Get { kind, name, client } => {
            let c = ApiClient::new(client)?;
            print(client, &c.get(&format!("/v1/config/{kind}/{name}")).await?)
        }
        ConfigAction::Set {
            kind,
            name,
            value,
            client,
        } => {
            let v: serde_json::Value =
                serde_json::from_str(value).context("the value must be JSON")?;
            let c = ApiClient::new(client)?;
            let stored = put(&c, kind, name, v).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&stored)?);
            } else {
                println!("{kind} {name} set");
            }
            Ok(())
        }
        ConfigAction::History { kind, name, client } => {
            let c = ApiClient::new(client)?;
            let v: serde_json::Value = c.get(&format!("/v1/config/{kind}/{name}/history")).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            for e in v.as_array().cloned().unwrap_or_default() {
                let when = e["version"]["wall"].as_u64().unwrap_or(0);
                let time = humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(when),
                );
                let value = if e["value"].is_null() {
                    "(deleted)".to_owned()
                } else {
                    e["value"].to_string()
                };
                println!(
                    "{time}  {:<16} {:<16} {value}",
                    e["operator"].as_str().unwrap_or("-"),
                    e["version"]["node"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        ConfigAction::Delete { kind, name, client } => {
            let c = ApiClient::new(client)?;
            c.config_write(kind, name, None).await?;
            if !client.json {
                println!("deleted {kind} {name}");
            }
            Ok(())
        }
        ConfigAction::Apply { file, client } => {
            let c = ApiClient::new(client)?;
            for e in read_entries(file)? {
                put(&c, &e.kind, &e.name, e.value)
                    .await
                    .with_context(|| format!("{} {}", e.kind, e.name))?;
                if !client.json {
                    println!("applied {} {}", e.kind, e.name);
                }
            }
            Ok(())
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileEntry {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) value: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    entry: Vec<FileEntry>,
}

pub(crate) fn read_entries(path: &Path) -> anyhow::Result<Vec<FileEntry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let parsed: EntryFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected {{\"entry\": [{{kind, name, value}}]}}",
                path.display()
            )
        })?
    } else {
        toml::from_str(&text).with_context(|| {
            format!(
                "{}: expected [[entry]] tables with kind, name, value",
                path.display()
            )
        })?
    };
    Ok(parsed.entry)
}

fn parse_match(m: &str) -> anyhow::Result<RouteMatch> {
    if let Some(h) = m.strip_prefix("header:") {
        let (name, value) = match h.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (h, None),
        };
        return Ok(RouteMatch {
            headers: vec![HeaderMatch {
                name: name.to_ascii_lowercase(),
                exact: value.map(str::to_owned),
                regex: None,
                present: value.is_none(),
            }],
            ..Default::default()
        });
    }
    if let Some(p) = m.strip_prefix("path:") {
        return Ok(RouteMatch {
            path: Some(PathMatch::Prefix(p.to_owned())),
            ..Default::default()
        });
    }
    bail!("--match {m:?}: expected header:NAME=VALUE, header:NAME or path:/prefix")
}

/// Runs `weft route set`.
pub async fn route(action: &RouteAction) -> anyhow::Result<()> {
    let RouteAction::Set(a) = action;
    if a.matches.len() != a.to.len() {
        bail!("each --match needs one --to VERSION");
    }
    let mut rules = Vec::new();
    for (m, to) in a.matches.iter().zip(&a.to) {
        rules.push(RouteRule {
            matches: parse_match(m)?,
            to: vec![WeightedVersion {
                version: to.clone(),
                weight: 1,
            }],
        });
    }
    if let Some(split) = &a.split {
        rules.push(RouteRule {
            matches: RouteMatch::default(),
            to: parse_split(split).map_err(|e| anyhow::anyhow!("--split: {}", e.message))?,
        });
    }
    if rules.is_empty() {
        bail!("give --split and/or --match … --to …");
    }
    let mirror = a.mirror.as_deref().map(parse_mirror).transpose()?;
    let sticky = match (&a.sticky_header, &a.sticky_cookie) {
        (Some(h), None) => Some(crate::routing::route::Sticky::Header(h.clone())),
        (None, Some(c)) => Some(crate::routing::route::Sticky::Cookie(c.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => bail!("use one of --sticky-header and --sticky-cookie"),
    };
    let c = ApiClient::new(&a.client)?;
    let mut problems = Vec::new();
    if let Some(default) = rules.iter().find(|r| r.matches == RouteMatch::default()) {
        let total: u64 = default.to.iter().map(|w| u64::from(w.weight)).sum();
        if total != 100 {
            problems.push(format!("--split weights add up to {total}, not 100: give each version its percent, e.g. v1=90,v2=10"));
        }
    }
    match catalog(&c).await {
        Ok(known) => match check_service(&known, &a.service, "service") {
            Err(p) => problems.push(p),
            Ok(()) => {
                let running = &known[&a.service];
                let mut named: Vec<&str> = rules
                    .iter()
                    .flat_map(|r| r.to.iter().map(|w| w.version.as_str()))
                    .collect();
                if let Some(m) = &mirror {
                    named.push(m.version.as_str());
                }
                named.dedup();
                for v in named {
                    if !running.iter().any(|r| r == v) {
                        problems.push(format!(
                            "no instance of {} runs version {v} (running: {}): requests sent there would get 503; deploy it first",
                            a.service,
                            running.join(", ")
                        ));
                    }
                }
            }
        },
        Err(e) if a.force => problems.push(format!("services not checked: {e:#}")),
        Err(e) => return Err(e),
    }
    refuse_or_warn(a.force, problems)?;
    let v = put(
        &c,
        "route",
        &a.service,
        serde_json::to_value(Route {
            rules,
            sticky,
            mirror,
        })?,
    )
    .await?;
    if a.client.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("route {} set", a.service);
    }
    Ok(())
}

/// `v2=50` (or `v2=50%`) into a mirror of 50 % of requests to v2.
fn parse_mirror(text: &str) -> anyhow::Result<crate::routing::route::Mirror> {
    let (version, percent) = text
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--mirror {text:?}: write VERSION=PERCENT, e.g. v2=50"))?;
    let percent: u32 =
        percent.trim().trim_end_matches('%').parse().map_err(|_| {
            anyhow::anyhow!("--mirror {text:?}: the percent is a whole number 1-100")
        })?;
    Ok(crate::routing::route::Mirror {
        version: version.trim().to_owned(),
        percent,
    })
}

/// Every service the catalog knows, with the versions it runs.
async fn catalog(c: &ApiClient) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
    let services: serde_json::Value = c.get("/v1/services").await?;
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in services.as_array().into_iter().flatten() {
        let Some(name) = s["service"].as_str() else {
            continue;
        };
        let versions = out.entry(name.to_owned()).or_default();
        for i in s["instances"].as_array().into_iter().flatten() {
            if let Some(v) = i["version"].as_str() {
                if !versions.iter().any(|x| x == v) {
                    versions.push(v.to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// The known name closest to `name` (a typo's likely meaning), if one is close.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push(
                    (prev[j] + usize::from(ca != *cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1),
                );
            }
            prev = cur;
        }
        prev[b.len()]
    }
    known
        .map(|k| (distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// A service no instance runs, named with the closest known one.
fn check_service(
    known: &std::collections::BTreeMap<String, Vec<String>>,
    service: &str,
    what: &str,
) -> Result<(), String> {
    if known.contains_key(service) {
        return Ok(());
    }
    let hint = match closest(service, known.keys()) {
        Some(k) => format!("; did you mean {k}?"),
        None => String::new(),
    };
    Err(format!(
        "{what} {service:?} runs nowhere in this cluster{hint} (`weft services` lists them)"
    ))
}

/// Refuses a write with problems, or, with `--allow-unknown`, prints each as a warning
/// and lets it through (staging ahead of a deployment).
fn refuse_or_warn(allow: bool, problems: Vec<String>) -> anyhow::Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    if allow {
        for p in &problems {
            eprintln!("warning: {p}");
        }
        return Ok(());
    }
    bail!(
        "{}; nothing written (--allow-unknown writes it anyway)",
        problems.join("; ")
    )
}

fn rule_name(a: &PolicyRuleArgs, action: &str) -> String {
    if let Some(n) = &a.name {
        return n.clone();
    }
    let mut n = format!(
        "{action}.{}.{}",
        a.source.replace('*', "any").replace('-', "none"),
        a.destination.replace('*', "any")
    );
    if a.path.is_some() || a.method.is_some() {
        let extra = format!("{:?}{:?}", a.path, a.method);
        let h = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
            extra.as_bytes(),
        ));
        n.push('.');
        n.push_str(&hex::encode(&h[..4]));
    }
    n
}

/// Runs a `weft policy` command.
pub async fn policy(action: &PolicyAction) -> anyhow::Result<()> {
    match action {
        PolicyAction::Default {
            action,
            dry_run,
            client,
        } => {
            if action != "allow" && action != "deny" {
                bail!("policy default {action:?}: expected allow or deny");
            }
            let c = ApiClient::new(client)?;
            put(
                &c,
                "policy",
                "default",
                serde_json::json!({ "default": action, "dry_run": dry_run }),
            )
            .await?;
            if !client.json {
                println!(
                    "policy default {action}{}",
                    if *dry_run { " (dry run)" } else { "" }
                );
            }
            Ok(())
        }
        PolicyAction::Allow(a) | PolicyAction::Deny(a) => {
            let verb = if matches!(action, PolicyAction::Allow(_)) {
                "allow"
            } else {
                "deny"
            };
            let mut value = serde_json::json!({ "source": a.source, "destination": a.destination, "action": verb });
            if let Some(p) = &a.path {
                value["path"] = p.clone().into();
            }
            if let Some(m) = &a.method {
                value["method"] = m.clone().into();
            }
            let name = rule_name(a, verb);
            let c = ApiClient::new(&a.client)?;
            let mut problems = Vec::new();
            match catalog(&c).await {
                Ok(known) => {
                    if a.source != "*" && a.source != "-" {
                        problems.extend(check_service(&known, &a.source, "source").err());
                    }
                    if a.destination != "*" {
                        problems.extend(check_service(&known, &a.destination, "destination").err());
                    }
                }
                Err(e) if a.force => problems.push(format!("services not checked: {e:#}")),
                Err(e) => return Err(e),
            }
            refuse_or_warn(a.force, problems)?;
            put(&c, "policy", &name, value).await?;
            if !a.client.json {
                println!("policy rule {name} set");
            }
            Ok(())
        }
        PolicyAction::List(client) => {
            let c = ApiClient::new(client)?;
            print(client, &c.get("/v1/config/policy").await?)
        }
        PolicyAction::Explain {
            source,
            destination,
            path,
            method,
            client,
        } => {
            let c = ApiClient::new(client)?;
            let mut q = format!(
                "/v1/policy/explain?source={}&destination={}",
                enc(source),
                enc(destination)
            );
            if let Some(p) = path {
                q.push_str(&format!("&path={}", enc(p)));
            }
            if let Some(m) = method {
                q.push_str(&format!("&method={}", enc(m)));
            }
            let d: serde_json::Value = c.get(&q).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                let verdict = match (d["verdict"].as_str(), d["dry_run"] == true) {
                    (Some("deny"), true) => "would be denied (dry run: allowed)",
                    (Some("deny"), false) => "denied",
                    _ => "allowed",
                };
                println!(
                    "{verdict}: {} (rule {})",
                    d["reason"].as_str().unwrap_or(""),
                    d["rule"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
