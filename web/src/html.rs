//! Server-rendered overview page. Every value is HTML-escaped.

use crate::{MemberView, NodeStatus};

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const NAV: &str = r#"<nav><a href="/">overview</a><a href="/members">members</a><a href="/services">services</a><a href="/graph">service graph</a><a href="/rollouts">rollouts</a><a href="/config">routes &amp; policies</a><a href="/logs">request log</a></nav>"#;

/// The common page frame: title, stylesheet, navigation; `body` is already escaped HTML.
fn page(title: &str, status: &NodeStatus, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>weft · {title} · {name}</title>
<link rel="stylesheet" href="/assets/style.css">
</head>
<body>
{NAV}
{body}
<script src="/assets/app.js"></script>
</body></html>
"#,
        title = escape(title),
        name = escape(&status.name),
    )
}

fn member_rows(members: &[MemberView]) -> String {
    let mut rows = String::new();
    for m in members {
        let status = if m.revoked {
            "revoked"
        } else {
            m.status.as_str()
        };
        rows.push_str(&format!(
            "<tr><td>{}{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&m.name),
            if m.is_self { " (this node)" } else { "" },
            escape(&m.address),
            escape(status),
            escape(status),
            escape(&m.zone),
            escape(&m.version),
            if m.ca { "yes" } else { "" },
            m.cert_expiry_unix,
        ));
    }
    rows
}

const MEMBER_HEAD: &str = "<table><thead><tr><th>name</th><th>address</th><th>status</th><th>zone</th><th>version</th><th>CA</th><th>cert expiry (unix)</th></tr></thead><tbody>";

/// The CA replicas: name, state, root holder, intermediate expiry.
fn replica_list(members: &[MemberView]) -> String {
    let list: Vec<String> = members
        .iter()
        .filter(|m| m.ca)
        .map(|m| {
            format!(
                "<span class=\"{}\">{}</span>{} (intermediate until unix {})",
                escape(&m.status),
                escape(&m.name),
                if m.root_holder { ", root holder" } else { "" },
                m.intermediate_expiry_unix
            )
        })
        .collect();
    if list.is_empty() {
        "<span class=\"failed\">none known</span>".into()
    } else {
        list.join(" · ")
    }
}

/// The overview: this node, cluster health, certificate, warnings, CA replicas, members.
pub fn overview(status: &NodeStatus, members: &[MemberView]) -> String {
    let count = |s: &str| members.iter().filter(|m| m.status == s).count();
    let warnings: String = status
        .warnings
        .iter()
        .map(|w| format!("<p class=\"warn\">{}</p>", escape(w)))
        .collect();
    let ready = match &status.not_ready_reason {
        None => "ready".to_owned(),
        Some(r) => format!("<span class=\"failed\">not ready: {}</span>", escape(r)),
    };
    let body = format!(
        r#"<h1>weft · {name}</h1>
<p>cluster <b>{cluster}</b> · agent {version} · {ready}{ca}</p>
<p>members: <span class="alive">{alive} alive</span> · <span class="failed">{failed} failed</span> · <span class="left">{left} left</span></p>
<p>node certificate expires in {remaining}s (unix {expiry}) · cluster CA expires at unix {ca_expiry}</p>
<p>CA replicas: {replicas}</p>
<p class="muted">gossip {gossip} · QUIC {quic} · {dropped} gossip datagrams dropped</p>
{warnings}
<h2>Members</h2>
{MEMBER_HEAD}
{rows}</tbody></table>"#,
        name = escape(&status.name),
        cluster = escape(&status.cluster),
        version = escape(&status.version),
        ca = if status.ca { " · CA replica" } else { "" },
        replicas = replica_list(members),
        alive = count("alive"),
        failed = count("failed"),
        left = count("left"),
        remaining = status.cert_remaining_secs,
        expiry = status.cert_expiry_unix,
        ca_expiry = status.ca_expiry_unix,
        gossip = escape(&status.gossip_address),
        quic = escape(&status.quic_address),
        dropped = status.gossip_dropped,
        rows = member_rows(members),
    );
    page("overview", status, &body)
}

/// The members page.
pub fn members(status: &NodeStatus, members: &[MemberView]) -> String {
    let body = format!(
        "<h1>Members</h1>\n{MEMBER_HEAD}\n{}</tbody></table>",
        member_rows(members)
    );
    page("members", status, &body)
}

/// The services page: every instance with its health.
pub fn services(status: &NodeStatus, services: &[crate::ServiceView]) -> String {
    let mut rows = String::new();
    for s in services {
        for i in &s.instances {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>\n",
                escape(&s.service),
                escape(&s.vip.as_ref().map_or("-".into(), |ip| format!("{}.weft → {ip}", s.service))),
                escape(&i.node),
                escape(&i.address),
                i.port,
                escape(&i.protocol),
                escape(&i.version),
                escape(&i.health),
                escape(&i.health),
            ));
        }
    }
    let body = format!(
        "<h1>Services</h1>\n<table><thead><tr><th>service</th><th>name and virtual IP</th><th>node</th><th>address</th><th>port</th><th>protocol</th><th>version</th><th>health</th></tr></thead><tbody>\n{rows}</tbody></table>"
    );
    page("services", status, &body)
}

/// The routes and policies page, with the answer of an explain query if one was asked.
pub fn config(
    status: &NodeStatus,
    entries: &serde_json::Value,
    explain: Option<(&crate::ExplainQuery, &serde_json::Value)>,
) -> String {
    let mut rows = String::new();
    for e in entries.as_array().into_iter().flatten() {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>\n",
            escape(e["kind"].as_str().unwrap_or("")),
            escape(e["name"].as_str().unwrap_or("")),
            escape(&e["value"].to_string()),
            escape(e["version"]["node"].as_str().unwrap_or("")),
        ));
    }
    let answer = match explain {
        None => String::new(),
        Some((q, d)) => format!(
            "<p class=\"{}\"><b>{} → {}</b>: {} (rule {})</p>",
            if d["allowed"] == true {
                "alive"
            } else {
                "failed"
            },
            escape(&q.source),
            escape(&q.destination),
            escape(d["reason"].as_str().unwrap_or("")),
            escape(d["rule"].as_str().unwrap_or("")),
        ),
    };
    let body = format!(
        r#"<h1>Routes, policies and traffic settings</h1>
<table><thead><tr><th>kind</th><th>name</th><th>value</th><th>written by</th></tr></thead><tbody>
{rows}</tbody></table>
<h2>Explain a policy decision</h2>
<form method="get" action="/config">
<input name="source" placeholder="source service" required> → <input name="destination" placeholder="destination service" required>
<input name="path" placeholder="/path (HTTP)"> <input name="method" placeholder="GET">
<button type="submit">explain</button>
</form>
{answer}"#
    );
    page("routes & policies", status, &body)
}

/// The request log page: the JSON lines are fetched and filtered by /assets/app.js.
pub fn logs(status: &NodeStatus) -> String {
    let body = r#"<h1>Request log <span class="muted">(this node, newest first)</span></h1>
<p><input id="log-filter" placeholder="filter (service, status, path…)"> <span id="log-status" class="muted"></span></p>
<table><thead><tr><th>time</th><th>source</th><th>destination</th><th>upstream node</th><th>request</th><th>status</th><th>ms</th></tr></thead><tbody id="log-rows"></tbody></table>"#;
    page("request log", status, body)
}

/// The rollouts page: for each rollout, its steps on a timeline and both versions'
/// success rate and p99 at each decision, drawn as SVG by /assets/app.js from
/// /v1/rollouts and refreshed every 2 s.
pub fn rollouts(status: &NodeStatus) -> String {
    let body = format!(
        r#"<h1>Rollouts <span class="muted">· cluster {cluster} · seen from {name}</span></h1>
<p class="muted">Each rollout's decisions on a timeline (weight on the new version), and the success rate and p99 of both versions over each judged interval. Start one with <code>weft rollout start SERVICE --to VERSION</code>. <span id="rollouts-status">loading…</span></p>
<div id="rollouts"></div>"#,
        name = escape(&status.name),
        cluster = escape(&status.cluster),
    );
    page("rollouts", status, &body)
}

/// The service graph page: an SVG filled and refreshed by /assets/app.js.
pub fn graph(status: &NodeStatus) -> String {
    let body = format!(
        r#"<h1>Service graph <span class="muted">· cluster {cluster} · seen from {name}</span></h1>
<p class="muted">Edges show the last minute from every node's gossip: requests per second, error rate, p50 and p99. <span id="graph-status">loading…</span></p>
<svg id="graph" role="img" aria-label="service graph"></svg>
<h2>By version <span class="muted">(routed requests, last minute, every node)</span></h2>
<table><thead><tr><th>service</th><th>version</th><th>req/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th></tr></thead><tbody id="versions"></tbody></table>"#,
        name = escape(&status.name),
        cluster = escape(&status.cluster),
    );
    page("service graph", status, &body)
}
