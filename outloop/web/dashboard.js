// outloop dashboard: asks /api/<panel> every few seconds and draws each panel (tables and SVG charts
// drawn here: no library, no CDN). Text from the data goes in as text nodes only, never as HTML.
"use strict";

// every 5 s; "?every=MS" asks more or less often (at least every 0.5 s)
const REFRESH_MS = Math.max(500, Number(new URLSearchParams(location.search).get("every")) || 5000);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text != null) node.textContent = String(text);
  return node;
}

function short(n) {
  if (n == null) return "";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(0) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

function pct(v) { return v == null ? "" : (100 * v).toFixed(0) + "%"; }

function table(columns, rows) {
  // columns: [[header, key or function, numeric?]]
  const head = el("tr", {}, ...columns.map(([h, , n]) => el("th", n ? { class: "n" } : {}, h)));
  const body = rows.map(r => el("tr", {}, ...columns.map(([, k, n]) => {
    const v = typeof k === "function" ? k(r) : r[k];
    return el("td", n ? { class: "n", title: String(v ?? "") } : { title: String(v ?? "") }, v);
  })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

// A line chart: series [{points: [[x, y]], color, dash}], bands [{x0, x1, y0, y1, color}], hlines [{y, color, label}]
function lineChart(title, opts) {
  const W = 420, H = 170, L = 46, R = 10, T = 8, B = 22;
  const xs = [], ys = [0];
  for (const s of opts.series) for (const [x, y] of s.points) { xs.push(x); ys.push(y); }
  for (const b of opts.bands || []) { xs.push(b.x0, b.x1); ys.push(b.y0, b.y1); }
  for (const h of opts.hlines || []) ys.push(h.y);
  if (opts.xmin != null) xs.push(opts.xmin);
  if (opts.xmax != null) xs.push(opts.xmax);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y1 = Math.max(...ys) * 1.05 || 1;
  const sx = x => L + (x1 === x0 ? 0 : (x - x0) / (x1 - x0)) * (W - L - R);
  const sy = y => H - B - (y / y1) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": title });
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }));
  root.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
  for (const f of [0, 0.5, 1]) {
    root.append(svg("text", { x: L - 4, y: sy(f * y1) + 3, "text-anchor": "end" }, short(f * y1)));
  }
  const fmt = opts.xfmt || (x => new Date(x).toISOString().slice(5, 16).replace("T", " "));
  root.append(svg("text", { x: L, y: H - 6 }, fmt(x0)));
  root.append(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, fmt(x1)));
  for (const b of opts.bands || []) {
    root.append(svg("rect", { class: "band", x: sx(b.x0), y: sy(b.y1), width: Math.max(2, sx(b.x1) - sx(b.x0)),
      height: Math.max(1, sy(b.y0) - sy(b.y1)), fill: b.color, opacity: 0.25 }));
  }
  for (const h of opts.hlines || []) {
    root.append(svg("line", { class: "limit", x1: L, x2: W - R, y1: sy(h.y), y2: sy(h.y), stroke: h.color,
      "stroke-dasharray": "4 3" }));
    root.append(svg("text", { x: W - R - 2, y: sy(h.y) - 3, "text-anchor": "end" }, h.label));
  }
  for (const s of opts.series) {
    if (!s.points.length) continue;
    const d = s.points.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    root.append(svg("path", { class: "series", d, fill: "none", stroke: s.color, "stroke-width": 2,
      "stroke-dasharray": s.dash || "" }));
    if (s.points.length === 1) {
      const [x, y] = s.points[0];
      root.append(svg("circle", { class: "series", cx: sx(x), cy: sy(y), r: 3, fill: s.color }));
    }
  }
  return el("div", { class: "chart" }, el("div", { class: "title" }, title), root);
}

// Horizontal bars: items [{label, value, text}]
function barChart(title, items, color) {
  const W = 420, row = 16, L = 150, H = items.length * row + 4;
  const max = Math.max(...items.map(i => i.value), 1);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": title });
  items.forEach((it, i) => {
    const y = 2 + i * row;
    const label = it.label.length > 26 ? it.label.slice(0, 25) + "…" : it.label;
    root.append(svg("text", { x: L - 4, y: y + 11, "text-anchor": "end" }, label));
    root.append(svg("rect", { class: "bar", x: L, y, height: row - 4, width: Math.max(1, (it.value / max) * (W - L - 60)),
      fill: color }));
    root.append(svg("text", { x: L + Math.max(1, (it.value / max) * (W - L - 60)) + 4, y: y + 11 }, it.text));
  });
  return el("div", { class: "chart" }, el("div", { class: "title" }, title), root);
}

const RENDER = {
  quota(d) {
    const charts = [], unset = [];
    for (const w of d.windows) {
      const fc = w.forecast, t = x => Date.parse(x);
      const pts = w.series.map(([x, y]) => [t(x), y]);
      const last = pts.length ? pts[pts.length - 1] : [t(w.at), fc.used_tokens];
      const end = t(w.end);
      const hl = w.limit_tokens ? [{ y: w.limit_tokens, color: "#b00", label: "limit " + short(w.limit_tokens) }] : [];
      if (!w.limit_tokens) unset.push(w.window);
      charts.push(lineChart(`${w.window}: used ${short(w.used.total)}${w.percent == null ? "" : " (" + w.percent + "% " + w.basis + ")"}, ` +
        `${short(w.tokens_per_hour)}/h, projected ${short(fc.projected_tokens)} (p10-p90 ${short(fc.p10)}-${short(fc.p90)})`, {
        xmin: t(w.start), xmax: end, hlines: hl,
        bands: [{ x0: last[0], x1: end, y0: fc.p10, y1: fc.p90, color: "#3b6fd8" }],
        series: [{ points: pts, color: "#1d2330" }, { points: [last, [end, fc.projected_tokens]], color: "#3b6fd8", dash: "5 4" }],
      }));
    }
    const dec = d.decision;
    return { rows: d.windows.length, nodes: [el("div", { class: "charts" }, ...charts),
      el("p", {}, `risk ${dec.level}, action ${dec.action}: ${dec.reason}`),
      el("p", { class: "note" }, `assessed ${d.as_of}; ${d.usage_records} usage records; forecasts are estimates` +
        (unset.length ? `; no limit set for ${unset.join(", ")} (OUTLOOP_QUOTA_<WINDOW>_TOKENS or quota.json)` : ""))] };
  },
  health(d) {
    const rows = Object.entries(d).map(([name, c]) => ({ name, state: c.ok ? "up" : "down", detail: c.detail, ok: c.ok }));
    const t = table([["component", "name"], ["state", "state"], ["detail", "detail"]], rows);
    t.querySelectorAll("tbody tr").forEach((tr, i) => tr.children[1].setAttribute("class", rows[i].ok ? "ok" : "bad"));
    return { rows: rows.length, nodes: [t] };
  },
  patterns(d) {
    return { rows: d.length, nodes: [
      barChart("occurrences", d.map(p => ({ label: p.signature, value: p.occurrence_count, text: p.occurrence_count })), "#3b6fd8"),
      table([["signature", "signature"], ["calls", "occurrence_count", 1], ["sessions", "session_count", 1],
        ["tokens", p => short(p.tokens_total), 1], ["confidence", "confidence_score", 1], ["status", "status"]], d)] };
  },
  context(d) {
    const s = d.sessions;
    return { rows: s.length + d.offenders.length, nodes: [
      barChart("efficiency per session (used / loaded)", s.map(r => ({ label: r.session_id, value: r.efficiency || 0,
        text: pct(r.efficiency) + " of " + short(r.loaded_tokens) })), "#087f23"),
      table([["session", "session_id"], ["loaded", r => short(r.loaded_tokens), 1], ["carry", r => short(r.carry_tokens), 1],
        ["waste", r => short(r.waste_tokens), 1], ["re-reads", r => short(r.reread_tokens), 1], ["eff", r => pct(r.efficiency), 1]], s),
      el("h3", {}, "worst offenders: largest outputs never used"),
      table([["session", "session_id"], ["tool", "tool_name"], ["target", "target"], ["tokens", r => short(r.tokens), 1],
        ["carry", r => short(r.carry_tokens), 1]], d.offenders),
      el("p", { class: "note" }, d.basis)] };
  },
  routing(d) {
    const h = d.hours.map(r => [Date.parse(r.hour), r.cumulative_net_tokens]);
    const fid = d.hours.filter(r => r.fidelity != null).map(r => [Date.parse(r.hour), 100 * r.fidelity]);
    const n = d.hours.map(r => [Date.parse(r.hour), r.decisions]);
    return { rows: d.hours.length + d.by_rule.length, nodes: [el("div", { class: "charts" },
      lineChart("net tokens saved (cumulative, by hour)", { series: [{ points: h, color: "#087f23" }] }),
      lineChart("decisions per hour", { series: [{ points: n, color: "#3b6fd8" }] }),
      lineChart("fidelity per hour (%)", { series: [{ points: fid, color: "#b06f00" }], hlines: [{ y: 100, color: "#999", label: "100%" }] })),
      table([["rule", "rule"], ["basis", "basis"], ["decisions", "decisions", 1], ["raw", r => short(r.raw_tokens), 1],
        ["compact", r => short(r.compact_tokens), 1], ["net saved", r => short(r.net_tokens), 1], ["$", "net_usd", 1],
        ["fidelity", r => pct(r.fidelity), 1]], d.by_rule),
      table([["mode", "mode"], ["action", "action"], ["decisions", "decisions", 1]], d.actions)] };
  },
  recommendations(d) {
    if (!d.rows.length) return { rows: 0, nodes: [el("p", { class: "note empty" }, d.note)], empty: true };
    const cols = Object.keys(d.rows[0]).slice(0, 7).map(k => [k, r => typeof r[k] === "object" ? JSON.stringify(r[k]) : r[k]]);
    return { rows: d.rows.length, nodes: [table(cols, d.rows), el("p", { class: "note" }, "from table " + d.table)] };
  },
  dead_letters(d) {
    if (!d.total) return { rows: 0, nodes: [el("p", { class: "note empty" }, "none: every record was used")], empty: true };
    return { rows: d.total, nodes: [el("p", {}, `${d.total} dead letters`),
      table([["reason", "reason"], ["letters", "letters", 1], ["last", "last"]], d.by_reason),
      table([["at", "at"], ["topic", "topic"], ["offset", "offset", 1], ["reason", "reason"], ["detail", "detail"]], d.latest)] };
  },
};

async function refresh(name) {
  const section = document.getElementById(name);
  const body = section.querySelector(".body");
  let out;
  try {
    const resp = await fetch("/api/" + name, { headers: { Accept: "application/json" } });
    const answer = await resp.json();
    if (answer.error) throw new Error(answer.error);
    out = RENDER[name](answer.data);
    section.dataset.state = out.empty ? "empty" : "data";
    section.dataset.rows = String(out.rows);
  } catch (err) {
    out = { nodes: [el("p", { class: "error" }, String(err.message || err))] };
    section.dataset.state = "error";
  }
  body.replaceChildren(...out.nodes);
}

async function refreshAll() {
  await Promise.all(Object.keys(RENDER).map(refresh));
  document.getElementById("updated").textContent = "updated " + new Date().toISOString().slice(0, 19).replace("T", " ") + "Z";
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

refreshAll();
setInterval(refreshAll, REFRESH_MS);
