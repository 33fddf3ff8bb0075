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

/// Seconds since the Unix epoch now.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A duration as people say it: `3 d 4 h`, `23 h 59 min`, `12 min`, `40 s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (d, h, _) if d >= 2 => format!("{d} d {h} h"),
        (d, h, m) if d == 1 || h > 0 => format!("{} h {m} min", d * 24 + h),
        (_, _, m) if m > 0 => format!("{m} min"),
        _ => format!("{secs} s"),
    }
}

/// A moment relative to now (`in 23 h 59 min`, `5 min ago`), with the Unix time in the
/// tooltip; `-` for 0 (unknown).
pub fn when(unix: u64) -> String {
    if unix == 0 {
        return "-".into();
    }
    let now = now_unix();
    let text = if unix >= now {
        format!("in {}", human_duration(unix - now))
    } else {
        format!("{} ago", human_duration(now - unix))
    };
    format!("<span title=\"unix {unix}\">{text}</span>")
}

/// A config entry's value as a rule a person reads (`v1 90 % · v2 10 %`, `allow
/// frontend → reviews (GET /api/*)`); the JSON stays in the tooltip.
pub fn describe_entry(kind: &str, value: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match kind {
        "route" => {
            let mut parts = Vec::new();
            for r in value["rules"].as_array().into_iter().flatten() {
                let to: Vec<String> = r["to"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| format!("{} {} %", text(&w["version"]), w["weight"]))
                    .collect();
                let mut when = Vec::new();
                for h in r["match"]["headers"].as_array().into_iter().flatten() {
                    when.push(if h["present"] == true {
                        format!("header {} present", text(&h["name"]))
                    } else {
                        format!("header {} = {}", text(&h["name"]), text(&h["exact"]))
                    });
                }
                if let Some(p) = r["match"]["path"].as_object() {
                    for (k, v) in p {
                        when.push(format!("path {k} {}", text(v)));
                    }
                }
                parts.push(if when.is_empty() {
                    format!("otherwise {}", to.join(" · "))
                } else {
                    format!("if {}: {}", when.join(" and "), to.join(" · "))
                });
            }
            if let Some(m) = value["mirror"].as_object() {
                parts.push(format!(
                    "mirror {} % to {}",
                    m.get("percent").map(text).unwrap_or_default(),
                    m.get("version").map(text).unwrap_or_default()
                ));
            }
            parts.join("; ")
        }
        "policy" if value.get("default").is_some() => format!(
            "by default {}{}",
            text(&value["default"]),
            if value["dry_run"] == true {
                " (dry run: logged, not enforced)"
            } else {
                ""
            }
        ),
        "policy" => {
            let mut extra = Vec::new();
            if let Some(m) = value["method"].as_str() {
                extra.push(m.to_owned());
            }
            if let Some(p) = value["path"].as_str() {
                extra.push(p.to_owned());
            }
            format!(
                "{} {} → {}{}",
                text(&value["action"]),
                text(&value["source"]),
                text(&value["destination"]),
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", extra.join(" "))
                }
            )
        }
        "rollout" => {
            let steps: Vec<String> = value["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| w.to_string())
                .collect();
            let secs = value["interval_ms"].as_u64().unwrap_or(0) / 1000;
            let mut gates = vec![format!(
                "errors ≤ {:.1} %",
                value["max_error_rate"].as_f64().unwrap_or(0.0) * 100.0
            )];
            if let Some(p99) = value["max_p99_ms"].as_u64() {
                gates.push(format!("p99 ≤ {p99} ms"));
            }
            gates.push(format!("at least {} requests", value["min_requests"]));
            format!(
                "{} → {} in steps {} %, {secs} s each; gates: {}; command: {}",
                text(&value["from"]),
                text(&value["to"]),
                steps.join(", "),
                gates.join(", "),
                text(&value["command"])
            )
        }
        "rollout_progress" => {
            let history = value["history"]
                .as_array()
                .map_or(&[][..], |h| h.as_slice());
            let last = history
                .last()
                .map(|e| format!("; last: {} ({})", text(&e["action"]), text(&e["reason"])))
                .unwrap_or_default();
            format!(
                "{} at {} % on the new version after {} decision(s){last}",
                text(&value["state"]).replace('_', " "),
                value["weight"],
                history.len()
            )
        }
        _ => match value.as_object() {
            Some(map) => map
                .iter()
                .map(|(k, v)| format!("{} {}", k.replace('_', " "), text(v)))
                .collect::<Vec<_>>()
                .join(" · "),
            None => text(value),
        },
    }
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
            when(m.cert_expiry_unix),
        ));
    }
    rows
}

const MEMBER_HEAD: &str = "<table><thead><tr><th>name</th><th>address</th><th>status</th><th>zone</th><th>version</th><th>CA</th><th>certificate expires</th></tr></thead><tbody>";

/// The CA replicas: name, state, root holder, intermediate expiry.
fn replica_list(members: &[MemberView]) -> String {
    let list: Vec<String> = members
        .iter()
        .filter(|m| m.ca)
        .map(|m| {
            format!(
                "<span class=\"{}\">{}</span>{} (intermediate expires {})",
                escape(&m.status),
                escape(&m.name),
                if m.root_holder { ", root holder" } else { "" },
                when(m.intermediate_expiry_unix)
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
<p>members: <span class="alive">{alive} alive</span> · <span class="{failed_class}">{failed} failed</span> · <span class="left">{left} left</span></p>
<p>node certificate expires {expiry} · cluster CA expires {ca_expiry}</p>
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
        failed_class = if count("failed") > 0 {
            "failed"
        } else {
            "muted"
        },
        expiry = when(status.cert_expiry_unix),
        ca_expiry = when(status.ca_expiry_unix),
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
                "<tr><td><a href=\"/service/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>\n",
                escape(&s.service),
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

/// A service's page: 15-minute charts of requests/s, error rate and p50/p99 per version,
/// drawn as SVG by /assets/app.js from `/v1/services/{name}/series`.
pub fn service(status: &NodeStatus, name: &str) -> String {
    let body = format!(
        r#"<h1>{name} <span class="muted">· last 15 minutes, per version, as {node} routed it</span></h1>
<p class="muted"><a href="/services">all services</a> · 5-second buckets, refreshed every 5 s. <span id="series-status">loading…</span></p>
<div id="series" data-service="{name}"></div>"#,
        name = escape(name),
        node = escape(&status.name),
    );
    page(name, status, &body)
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
            "<tr><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td>{}</td></tr>\n",
            escape(e["kind"].as_str().unwrap_or("")),
            escape(e["name"].as_str().unwrap_or("")),
            escape(&e["value"].to_string()),
            escape(&describe_entry(
                e["kind"].as_str().unwrap_or(""),
                &e["value"]
            )),
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
    let empty = if rows.is_empty() {
        "<p class=\"muted\">No entries yet: every request goes to any healthy instance and every source may call every service. Try <code>weft route set SERVICE --split v1=90,v2=10</code> or <code>weft policy default deny</code> then <code>weft policy allow SOURCE DESTINATION</code>.</p>"
    } else {
        ""
    };
    let body = format!(
        r#"<h1>Routes, policies and traffic settings</h1>
<table><thead><tr><th>kind</th><th>name</th><th>rule</th><th>written through</th></tr></thead><tbody>
{rows}</tbody></table>
{empty}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(40), "40 s");
        assert_eq!(human_duration(12 * 60 + 5), "12 min");
        assert_eq!(human_duration(23 * 3600 + 59 * 60), "23 h 59 min");
        assert_eq!(human_duration(86_400 + 3600), "25 h 0 min");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600), "3 d 4 h");
        assert_eq!(when(0), "-");
        assert!(when(now_unix() + 3600).contains("in 1 h 0 min"));
        assert!(when(now_unix() - 120).contains("2 min ago"));
    }

    #[test]
    fn entries_read_as_rules() {
        let route = serde_json::json!({"rules": [
            {"match": {"headers": [{"name": "x-canary", "exact": "1", "present": false}]}, "to": [{"version": "v2", "weight": 100}]},
            {"match": {}, "to": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}
        ]});
        assert_eq!(
            describe_entry("route", &route),
            "if header x-canary = 1: v2 100 %; otherwise v1 90 % · v2 10 %"
        );
        let rule = serde_json::json!({"action": "deny", "source": "-", "destination": "db", "method": "POST"});
        assert_eq!(describe_entry("policy", &rule), "deny - → db (POST)");
        let default = serde_json::json!({"default": "deny", "dry_run": true});
        assert_eq!(
            describe_entry("policy", &default),
            "by default deny (dry run: logged, not enforced)"
        );
        assert_eq!(
            describe_entry("ratelimit", &serde_json::json!({"rps": 50})),
            "rps 50"
        );
    }
}
