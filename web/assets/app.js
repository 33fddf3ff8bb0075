// weft dashboard: draws the service graph from /v1/graph and refreshes it every 2 s
// without reloading the page. No external code, no inline script (CSP).
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text; // textContent: never parsed as markup
  return e;
}

function draw(svg, graph) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const w = svg.clientWidth || 900, h = svg.clientHeight || 480;
  const services = graph.services || [];
  const pos = {};
  const r = Math.min(w, h) / 2 - 70;
  services.forEach((s, i) => {
    const a = (2 * Math.PI * i) / Math.max(services.length, 1) - Math.PI / 2;
    pos[s] = [w / 2 + r * Math.cos(a), h / 2 + r * Math.sin(a)];
  });
  (graph.edges || []).forEach((e, i) => {
    const a = pos[e.source] || [40, h / 2], b = pos[e.destination];
    if (!b) return;
    const id = e.source + "->" + e.destination;
    const cls = e.error_rate > 0.05 ? "edge bad" : "edge";
    svg.appendChild(el("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: cls, "data-edge": id }));
    // Label at 60 % of the way, nudged off the line so neighbouring labels do not collide.
    const x = a[0] + (b[0] - a[0]) * 0.6, y = a[1] + (b[1] - a[1]) * 0.6 + (i % 2 ? 14 : -8);
    const label = `${e.rps.toFixed(1)} rps · ${(e.error_rate * 100).toFixed(1)}% err · p50 ${e.p50_ms} ms · p99 ${e.p99_ms} ms`;
    svg.appendChild(el("text", { x: x, y: y, "text-anchor": "middle", class: "edge-label", "data-edge": id, "data-rps": e.rps.toFixed(2) }, label));
  });
  for (const s of services) {
    const [x, y] = pos[s];
    svg.appendChild(el("circle", { cx: x, cy: y, r: 9, class: "svc" }));
    svg.appendChild(el("text", { x: x, y: y + 24, "text-anchor": "middle" }, s));
  }
}

async function refresh() {
  const svg = document.getElementById("graph");
  const status = document.getElementById("graph-status");
  if (!svg) return;
  try {
    const resp = await fetch("/v1/graph", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    draw(svg, await resp.json());
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "agent unreachable, retrying… (" + e.message + ")";
  }
}

refresh();
setInterval(refresh, 2000);

// Request log page: the newest entries, filtered, refreshed every 2 s.
async function refreshLogs() {
  const rows = document.getElementById("log-rows");
  if (!rows) return;
  const filter = document.getElementById("log-filter").value;
  const status = document.getElementById("log-status");
  try {
    const resp = await fetch("/v1/logs?filter=" + encodeURIComponent(filter), { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const entries = await resp.json();
    while (rows.firstChild) rows.removeChild(rows.firstChild);
    for (const e of entries) {
      const tr = document.createElement("tr");
      const req = e.protocol === "http" ? `${e.method || ""} ${e.path || ""}` : "tcp stream";
      for (const v of [e.time, e.source, e.destination, e.upstream_node, req, e.status, Number(e.duration_ms).toFixed(1)]) {
        const td = document.createElement("td");
        td.textContent = v === undefined ? "" : String(v);
        tr.appendChild(td);
      }
      rows.appendChild(tr);
    }
    status.textContent = entries.length + " entries · updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "agent unreachable, retrying… (" + e.message + ")";
  }
}

if (document.getElementById("log-rows")) {
  refreshLogs();
  setInterval(refreshLogs, 2000);
  document.getElementById("log-filter").addEventListener("input", refreshLogs);
}
