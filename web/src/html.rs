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
<style>
:root {{ color-scheme: light dark; font-family: system-ui, sans-serif; }}
body {{ max-width: 960px; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #8884; }}
.alive {{ color: #2a8a3a; }} .failed {{ color: #c0392b; }} .left {{ color: #888; }}
.warn {{ color: #b9770e; }}
</style></head>
<body>
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
