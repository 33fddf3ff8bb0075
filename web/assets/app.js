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

// Columns by depth: callers left, what they call to the right (longest path from a node
// nobody calls), so a chain reads left to right and ten services do not crowd a circle.
function layout(services, edges, w, h) {
  const depth = {};
  for (const s of services) depth[s] = 0;
  for (let round = 0; round < services.length; round++) {
    let moved = false;
    for (const e of edges) {
      if (e.source === e.destination || !(e.destination in depth)) continue;
      const d = (depth[e.source] || 0) + 1;
      if (d > depth[e.destination] && d < services.length) { depth[e.destination] = d; moved = true; }
    }
    if (!moved) break;
  }
  const columns = {};
  for (const s of services) (columns[depth[s]] = columns[depth[s]] || []).push(s);
  const keys = Object.keys(columns).map(Number).sort((a, b) => a - b);
  const pos = {};
  keys.forEach((k, ci) => {
    const col = columns[k].sort();
    const x = keys.length === 1 ? w / 2 : 110 + (ci * (w - 220)) / (keys.length - 1);
    col.forEach((s, i) => { pos[s] = [x, ((i + 1) * h) / (col.length + 1)]; });
  });
  return pos;
}

function draw(svg, graph) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const w = svg.clientWidth || 900, h = svg.clientHeight || 480;
  const edges = graph.edges || [];
  // Anonymous local clients (HTTP proxy, virtual IPs without an identity) are a node too.
  const services = [...(graph.services || [])];
  if (edges.some((e) => e.source === "-") && !services.includes("-")) services.unshift("-");
  if (services.length === 0) {
    svg.appendChild(el("text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "empty" },
      "No services yet: register one (weft service register) or add a [[service]] to the agent's file."));
    return;
  }
  const defs = el("defs");
  for (const k of ["ok", "warn", "bad"]) {
    const m = el("marker", { id: "arrow-" + k, viewBox: "0 0 10 10", refX: 9, refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 14, markerHeight: 14, orient: "auto" });
    m.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow " + k }));
    defs.appendChild(m);
  }
  svg.appendChild(defs);
  const pos = layout(services, edges, w, h);
  const R = 11;
  const maxRps = Math.max(1, ...edges.map((e) => e.rps));
  const labels = [];
  edges.forEach((e) => {
    const a = pos[e.source], b = pos[e.destination];
    if (!a || !b) return;
    const id = e.source + "->" + e.destination;
    const health = e.error_rate > 0.05 ? "bad" : e.error_rate > 0.01 ? "warn" : "ok";
    // Stop at the circles' edges so the arrowhead shows.
    const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1;
    const ux = dx / len, uy = dy / len;
    const width = 1.5 + 6 * Math.sqrt(e.rps / maxRps);
    svg.appendChild(el("line", {
      x1: a[0] + ux * R, y1: a[1] + uy * R, x2: b[0] - ux * (R + 2), y2: b[1] - uy * (R + 2),
      class: "edge " + health, "stroke-width": width.toFixed(1), "marker-end": `url(#arrow-${health})`, "data-edge": id,
    }));
    // The label beside the middle of the line (offset perpendicular to it), on a plate.
    const mx = (a[0] + b[0]) / 2 + uy * 14, my = (a[1] + b[1]) / 2 - ux * 14;
    const text = `${e.rps.toFixed(1)} req/s · ${(e.error_rate * 100).toFixed(1)} % errors · p50 ${e.p50_ms} ms · p99 ${e.p99_ms} ms`;
    labels.push([mx, my, text, id, e.rps, health]);
  });
  for (const s of services) {
    const [x, y] = pos[s];
    const anon = s === "-";
    svg.appendChild(el("circle", { cx: x, cy: y, r: R, class: anon ? "svc anon" : "svc" }));
    svg.appendChild(el("text", { x: x, y: y + R + 16, "text-anchor": "middle", class: "svc-name" }, anon ? "local clients without an identity" : s));
  }
  for (const [x, y, text, id, rps, health] of labels) {
    svg.appendChild(el("text", { x: x, y: y, "text-anchor": "middle", class: "edge-label " + health, "data-edge": id, "data-rps": rps.toFixed(2) }, text));
  }
  if (edges.length === 0) {
    svg.appendChild(el("text", { x: w / 2, y: 28, "text-anchor": "middle", class: "empty" },
      "No traffic in the last minute: edges appear as services call each other through the mesh."));
  }
}

// The per-version table under the graph.
function versions(list) {
  const body = document.getElementById("versions");
  if (!body) return;
  while (body.firstChild) body.removeChild(body.firstChild);
  for (const v of list) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-version", v.destination + "/" + v.version);
    for (const x of [v.destination, v.version, v.rps.toFixed(1), (v.error_rate * 100).toFixed(1) + "%", v.p50_ms, v.p99_ms]) {
      const td = document.createElement("td");
      td.textContent = String(x);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

async function refresh() {
  const svg = document.getElementById("graph");
  const status = document.getElementById("graph-status");
  if (!svg) return;
  try {
    const resp = await fetch("/v1/graph", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const graph = await resp.json();
    draw(svg, graph);
    versions(graph.versions || []);
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

// Rollouts page: per rollout, a timeline of its decisions (weight on the new version over
// time, one marker per decision) and the two versions' success rate and p99 at each
// judged interval, from /v1/rollouts every 2 s.
function chart(title, points, series, yMax, fmt, span) {
  const w = 900, h = 150, left = 56, right = 16, top = 24, bottom = 28;
  const svg = el("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img", "aria-label": title });
  svg.appendChild(el("text", { x: left, y: 14, class: "chart-title" }, title));
  if (points.length === 0) {
    svg.appendChild(el("text", { x: left, y: h / 2, class: "muted" }, "no decisions yet"));
    return svg;
  }
  // The same time axis as the timeline above it, so points line up with decisions.
  const [t0, t1] = span;
  const X = (t) => left + ((t - t0) / (t1 - t0)) * (w - left - right);
  const Y = (v) => top + (1 - Math.min(v, yMax) / yMax) * (h - top - bottom);
  svg.appendChild(el("line", { x1: left, y1: Y(0), x2: w - right, y2: Y(0), class: "axis" }));
  svg.appendChild(el("text", { x: left - 6, y: Y(yMax) + 4, "text-anchor": "end", class: "tick" }, fmt(yMax)));
  svg.appendChild(el("text", { x: left - 6, y: Y(0) + 4, "text-anchor": "end", class: "tick" }, fmt(0)));
  series.forEach((s, si) => {
    const pts = points.filter((p) => p[s.key] !== undefined && p[s.key] !== null);
    if (pts.length === 0) return;
    const d = pts.map((p, i) => (i ? "L" : "M") + X(p.t).toFixed(1) + "," + Y(p[s.key]).toFixed(1)).join(" ");
    svg.appendChild(el("path", { d: d, class: "series s" + si, "data-series": s.key }));
    for (const p of pts) {
      svg.appendChild(el("circle", { cx: X(p.t), cy: Y(p[s.key]), r: 3.5, class: "dot s" + si }));
    }
    svg.appendChild(el("text", { x: w - right - (series.length - 1 - si) * 90, y: 14, "text-anchor": "end", class: "legend s" + si }, "● " + s.label));
  });
  return svg;
}

// A rollout's time axis: its first decision to now (or to its last decision once done).
function span(r) {
  const hist = (r.progress && r.progress.history) || [];
  if (hist.length === 0) return [Date.now() - 1000, Date.now()];
  const done = ["promoted", "rolled_back", "aborted"].includes(r.state);
  const end = done ? hist[hist.length - 1].at_ms : Date.now();
  const t0 = hist[0].at_ms;
  return [t0, Math.max(end + (end - t0) * 0.03, t0 + 1)];
}

function timeline(r) {
  const hist = (r.progress && r.progress.history) || [];
  const w = 900, h = 120, left = 56, right = 16;
  const svg = el("svg", { viewBox: `0 0 ${w} ${h}`, class: "timeline", role: "img", "aria-label": "rollout timeline" });
  if (hist.length === 0) {
    svg.appendChild(el("text", { x: left, y: 40, class: "muted" }, "waiting for a driver…"));
    return svg;
  }
  const [t0, t1] = span(r);
  const X = (t) => left + ((t - t0) / (t1 - t0)) * (w - left - right);
  const Y = (wgt) => 20 + (1 - wgt / 100) * 60;
  // The weight as a step line: it holds until the next decision.
  let d = "";
  hist.forEach((e, i) => {
    const x = X(e.at_ms).toFixed(1);
    d += i ? ` H${x} V${Y(e.weight).toFixed(1)}` : `M${x},${Y(e.weight).toFixed(1)}`;
  });
  d += ` H${X(t1).toFixed(1)}`;
  svg.appendChild(el("line", { x1: left, y1: Y(0), x2: w - right, y2: Y(0), class: "axis" }));
  svg.appendChild(el("text", { x: left - 6, y: Y(100) + 4, "text-anchor": "end", class: "tick" }, "100%"));
  svg.appendChild(el("text", { x: left - 6, y: Y(0) + 4, "text-anchor": "end", class: "tick" }, "0%"));
  svg.appendChild(el("path", { d: d, class: "weight" }));
  hist.forEach((e, i) => {
    const x = X(e.at_ms), y = Y(e.weight);
    const marker = el("circle", { cx: x, cy: y, r: 5, class: "decision " + e.action, "data-action": e.action });
    marker.appendChild(el("title", {}, `${new Date(e.at_ms).toLocaleTimeString()} ${e.action} → ${e.weight}% (${e.node}): ${e.reason}`));
    svg.appendChild(marker);
    svg.appendChild(el("text", { x: x, y: h - 8 - (i % 2) * 12, "text-anchor": "middle", class: "tick" }, `${e.action} ${e.weight}%`));
  });
  return svg;
}

function rolloutCard(r) {
  const card = document.createElement("section");
  card.className = "rollout";
  card.setAttribute("data-service", r.service);
  const h = document.createElement("h2");
  h.textContent = `${r.service}: ${r.plan.from} → ${r.plan.to}`;
  const state = document.createElement("span");
  state.className = "state " + r.state;
  state.textContent = ` ${r.state.replace("_", " ")} · ${r.weight}% on ${r.plan.to}`;
  h.appendChild(state);
  card.appendChild(h);
  const gates = document.createElement("p");
  gates.className = "muted";
  const p99 = r.plan.max_p99_ms ? `p99 ≤ ${r.plan.max_p99_ms} ms` : "no p99 gate";
  gates.textContent = `steps ${r.plan.steps.join(", ")}% · ${r.plan.interval_ms / 1000} s each · gates: errors ≤ ${(r.plan.max_error_rate * 100).toFixed(1)}%, ${p99}, at least ${r.plan.min_requests} requests · driven by ${r.driven_by || "—"}`;
  card.appendChild(gates);
  card.appendChild(timeline(r));
  const points = ((r.progress && r.progress.history) || [])
    .filter((e) => e.new || e.old)
    .map((e) => ({
      t: e.at_ms,
      newOk: e.new && e.new.requests ? 100 * (1 - e.new.error_rate) : null,
      oldOk: e.old && e.old.requests ? 100 * (1 - e.old.error_rate) : null,
      newP99: e.new && e.new.requests ? e.new.p99_ms : null,
      oldP99: e.old && e.old.requests ? e.old.p99_ms : null,
    }));
  const maxP99 = Math.max(1, r.plan.max_p99_ms || 0, ...points.flatMap((p) => [p.newP99 || 0, p.oldP99 || 0]));
  card.appendChild(chart("success rate per judged interval", points,
    [{ key: "oldOk", label: r.plan.from }, { key: "newOk", label: r.plan.to }], 100, (v) => v + "%", span(r)));
  card.appendChild(chart("p99 latency per judged interval", points,
    [{ key: "oldP99", label: r.plan.from }, { key: "newP99", label: r.plan.to }], maxP99, (v) => Math.round(v) + " ms", span(r)));
  return card;
}

async function refreshRollouts() {
  const box = document.getElementById("rollouts");
  if (!box) return;
  const status = document.getElementById("rollouts-status");
  try {
    const resp = await fetch("/v1/rollouts", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const all = (await resp.json()).rollouts || [];
    while (box.firstChild) box.removeChild(box.firstChild);
    for (const r of all) box.appendChild(rolloutCard(r));
    if (all.length === 0) {
      const p = document.createElement("p");
      p.textContent = "No rollouts in this cluster.";
      box.appendChild(p);
    }
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "agent unreachable, retrying… (" + e.message + ")";
  }
}

if (document.getElementById("rollouts")) {
  refreshRollouts();
  setInterval(refreshRollouts, 2000);
}

// Service page: 15 minutes per version in 5-second buckets, three charts (requests/s,
// error rate, p50 and p99), from /v1/services/NAME/series every 5 s.
function seriesChart(title, lines, fmt, span, floor) {
  const w = 900, h = 170, left = 60, right = 16, top = 26, bottom = 26;
  const svg = el("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img", "aria-label": title });
  svg.appendChild(el("text", { x: left, y: 15, class: "chart-title" }, title));
  const all = lines.flatMap((l) => l.points);
  if (all.length === 0) {
    svg.appendChild(el("text", { x: left, y: h / 2, class: "muted" }, "no requests in the last 15 minutes"));
    return svg;
  }
  // One time axis for the three charts (15 minutes), a y axis of at least `floor`.
  const [t0, t1] = span;
  const yMax = Math.max(...all.map((p) => p.v), floor) * 1.1;
  const X = (t) => left + ((t - t0) / (t1 - t0)) * (w - left - right);
  const Y = (v) => top + (1 - v / yMax) * (h - top - bottom);
  svg.appendChild(el("line", { x1: left, y1: Y(0), x2: w - right, y2: Y(0), class: "axis" }));
  svg.appendChild(el("text", { x: left - 6, y: Y(yMax) + 10, "text-anchor": "end", class: "tick" }, fmt(yMax)));
  svg.appendChild(el("text", { x: left - 6, y: Y(0) + 4, "text-anchor": "end", class: "tick" }, fmt(0)));
  svg.appendChild(el("text", { x: left, y: h - 6, class: "tick" }, new Date(t0 * 1000).toLocaleTimeString()));
  svg.appendChild(el("text", { x: w - right, y: h - 6, "text-anchor": "end", class: "tick" }, "now"));
  lines.forEach((l, i) => {
    const d = l.points.map((p, k) => (k ? "L" : "M") + X(p.t).toFixed(1) + "," + Y(p.v).toFixed(1)).join(" ");
    svg.appendChild(el("path", { d: d, class: "series c" + (i % 6), "data-series": l.label }));
    svg.appendChild(el("text", { x: w - right - i * 110, y: 15, "text-anchor": "end", class: "legend c" + (i % 6) }, "● " + l.label));
  });
  return svg;
}

async function refreshSeries() {
  const box = document.getElementById("series");
  if (!box) return;
  const status = document.getElementById("series-status");
  try {
    const resp = await fetch("/v1/services/" + encodeURIComponent(box.dataset.service) + "/series", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const data = await resp.json();
    const vs = data.versions || [];
    const pick = (key, scale) => vs.map((v) => ({ label: v.version, points: v.points.map((p) => ({ t: p.t, v: p[key] * scale })) }));
    // Latency only where there were requests (an empty bucket is not 0 ms).
    const lat = (key) => vs.map((v) => ({ label: `${v.version} ${key.slice(0, 3)}`, points: v.points.filter((p) => p.rps > 0).map((p) => ({ t: p.t, v: p[key] })) }));
    const ts = vs.flatMap((v) => v.points.map((p) => p.t));
    const span = [Math.min(...ts), Math.max(...ts, Math.min(...ts) + 1)];
    while (box.firstChild) box.removeChild(box.firstChild);
    if (vs.length === 0) {
      const p = document.createElement("p");
      p.textContent = "This node has routed no requests to this service in the last 15 minutes (each node charts what it sends; the service graph shows the whole mesh).";
      box.appendChild(p);
    } else {
      box.appendChild(seriesChart("requests per second", pick("rps", 1), (v) => v.toFixed(1), span, 1));
      box.appendChild(seriesChart("error rate", pick("error_rate", 100), (v) => v.toFixed(1) + " %", span, 1));
      box.appendChild(seriesChart("latency p50 and p99", [...lat("p50_ms"), ...lat("p99_ms")], (v) => Math.round(v) + " ms", span, 1));
    }
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "agent unreachable, retrying… (" + e.message + ")";
  }
}

if (document.getElementById("series")) {
  refreshSeries();
  setInterval(refreshSeries, 5000);
}
