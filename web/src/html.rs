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

/// The overview: this node and the member table.
pub fn overview(status: &NodeStatus, members: &[MemberView]) -> String {
    let alive = members.iter().filter(|m| m.status == "alive").count();
    let mut rows = String::new();
    for m in members {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&m.name),
            escape(&m.address),
            escape(&m.status),
            escape(&m.status),
            escape(&m.zone),
            escape(&m.version),
            if m.ca { "yes" } else { "" },
        ));
    }
    let warnings: String = status
        .warnings
        .iter()
        .map(|w| format!("<p class=\"warn\">{}</p>", escape(w)))
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>weft · {name}</title>
<link rel="stylesheet" href="/assets/style.css"></head>
<body>
<nav><a href="/">overview</a><a href="/graph">service graph</a></nav>
<h1>weft · {name}</h1>
<p>cluster <b>{cluster}</b> · {ready} · certificate expires in {remaining}s · {alive}/{total} members alive</p>
{warnings}
<h2>Members</h2>
<table><thead><tr><th>name</th><th>address</th><th>status</th><th>zone</th><th>version</th><th>CA</th></tr></thead>
<tbody>
{rows}</tbody></table>
</body></html>
"#,
        name = escape(&status.name),
        cluster = escape(&status.cluster),
        ready = if status.ready { "ready" } else { "not ready" },
        remaining = status.cert_remaining_secs,
        total = members.len(),
    )
}

/// The service graph page: an SVG filled and refreshed by /assets/app.js.
pub fn graph(status: &NodeStatus) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>weft · service graph · {name}</title>
<link rel="stylesheet" href="/assets/style.css">
</head>
<body>
<nav><a href="/">overview</a><a href="/graph">service graph</a></nav>
<h1>Service graph <span class="muted">· cluster {cluster} · seen from {name}</span></h1>
<p class="muted">Edges show the last minute from every node's gossip: requests per second, error rate, p50 and p99. <span id="graph-status">loading…</span></p>
<svg id="graph" role="img" aria-label="service graph"></svg>
<script src="/assets/app.js"></script>
</body></html>
"#,
        name = escape(&status.name),
        cluster = escape(&status.cluster),
    )
}
