// The dashboard page: one self-contained HTML document (styles and script inline, no CDN). It reads
// /v1/dashboard/data and renders with DOM calls and textContent only, so stored text (prompts,
// replies, feedback) can never run as markup.
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CLaaS dashboard</title>
<link rel="icon" href="data:,">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #f6f7f9; }
  header { background: #1d2b3a; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  main { padding: 16px 20px; display: grid; gap: 18px; }
  section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 12px 16px; }
  h2 { font-size: 16px; margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f3; vertical-align: top; }
  tr.job { cursor: pointer; }
  tr.job:hover { background: #f0f4fa; }
  .status-done { color: #17803d; } .status-failed { color: #b42318; } .status-running { color: #b26b00; } .status-queued { color: #555; }
  .detail { background: #fafbfc; }
  .sample { border-left: 3px solid #7aa7d9; margin: 8px 0; padding: 4px 10px; }
  pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0 8px; background: #f3f4f6; padding: 6px; border-radius: 4px; max-height: 240px; overflow: auto; }
  .label { font-weight: 600; font-size: 12px; color: #555; text-transform: uppercase; letter-spacing: .03em; }
  .metrics span { display: inline-block; margin-right: 14px; }
  .charts { display: flex; flex-wrap: wrap; gap: 12px; }
  button { font: inherit; padding: 2px 8px; cursor: pointer; }
  #error { color: #b42318; }
</style>
</head>
<body>
<header><h1>CLaaS</h1><span id="model"></span><span id="mode"></span><span id="updated"></span></header>
<main>
  <div id="error" role="alert"></div>
  <section><h2>Feedback batches</h2><table><thead><tr><th>job</th><th>adapter</th><th>status</th><th>received</th><th>samples</th><th>version</th><th>loss</th><th>guard</th></tr></thead><tbody id="jobs"></tbody></table></section>
  <section><h2>Adapters</h2><div id="adapters"></div></section>
  <section><h2>Eval runs</h2><div id="evals"></div></section>
</main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
if (params.has("key")) { sessionStorage.setItem("claasKey", params.get("key")); history.replaceState(null, "", location.pathname); }
const key = sessionStorage.getItem("claasKey");
const headers = key ? { authorization: "Bearer " + key } : {};
const open = new Set();

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.addEventListener("click", v); else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  return e;
}
const fmt = (x, d = 4) => (typeof x === "number" && isFinite(x) ? (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : x.toFixed(d)) : "–");
const when = (t) => (t ? new Date(t).toLocaleString() : "–");
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) { const e = document.createElementNS(SVG, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; }

function lineChart(title, points) {
  const W = 300, H = 150, m = 30;
  const s = svg("svg", { width: W, height: H, "data-test": "chart" });
  const t = svg("text", { x: m, y: 14, "font-size": 12 }); t.textContent = title; s.append(t);
  const ys = points.map((p) => p[1]).filter((y) => isFinite(y));
  if (ys.length === 0) return s;
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(0, ...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const X = (x) => m + ((x - x0) / (x1 - x0)) * (W - 2 * m), Y = (y) => H - m + 8 - ((y - y0) / (y1 - y0)) * (H - 2 * m);
  s.append(svg("line", { x1: m, x2: W - m, y1: Y(y0), y2: Y(y0), stroke: "#ccc" }));
  const lab = svg("text", { x: 2, y: Y(y1) + 4, "font-size": 10 }); lab.textContent = fmt(y1, 3); s.append(lab);
  s.append(svg("polyline", { fill: "none", stroke: "#1f77b4", "stroke-width": 2, points: points.filter((p) => isFinite(p[1])).map((p) => X(p[0]) + "," + Y(p[1])).join(" ") }));
  for (const p of points) if (isFinite(p[1])) s.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: "#1f77b4" }));
  return s;
}

function timingBar(t) {
  const parts = [["teacher", t.teacherMs, "#1f77b4"], ["base", t.baseMs, "#9467bd"], ["student forward", t.studentForwardMs, "#2ca02c"], ["backward", t.backwardMs, "#d62728"], ["optimizer", t.optimizerMs, "#ff7f0e"]];
  const total = parts.reduce((a, p) => a + (p[1] || 0), 0) || 1;
  const s = svg("svg", { width: 420, height: 40, "data-test": "timings" });
  let x = 0;
  for (const [name, ms, colour] of parts) {
    const w = ((ms || 0) / total) * 400;
    const r = svg("rect", { x, y: 0, width: Math.max(w, 0), height: 16, fill: colour });
    const tip = svg("title", {}); tip.textContent = name + ": " + fmt(ms, 1) + " ms"; r.append(tip); s.append(r);
    x += w;
  }
  const lab = svg("text", { x: 0, y: 32, "font-size": 11 });
  lab.textContent = parts.map((p) => p[0] + " " + fmt(p[1], 1)).join(" · ") + " ms (total " + fmt(t.totalMs, 1) + ")";
  s.append(lab);
  return s;
}

function jobDetail(j) {
  const r = j.result || {}, m = r.metrics || {}, g = r.guard || {};
  const box = el("div", { "data-test": "job-detail" });
  box.append(el("div", { class: "metrics", "data-test": "metrics" },
    el("span", {}, "loss ", el("b", { "data-test": "metric-loss" }, fmt(m.loss))),
    el("span", {}, "divergence ", el("b", {}, fmt(m.distillLoss))),
    el("span", {}, "teacher–student KL ", el("b", {}, fmt(m.teacherStudentKl))),
    el("span", {}, "KL to base ", el("b", {}, fmt(m.klToBase))),
    el("span", {}, "grad norm ", el("b", {}, fmt(m.gradNorm))),
    el("span", {}, "IS weight ", el("b", {}, fmt(m.meanIsWeight))),
    el("span", {}, "clip fraction ", el("b", {}, fmt(m.clipFraction))),
    el("span", {}, "tokens ", el("b", {}, m.tokens ?? "–"))));
  if (r.guard) box.append(el("div", { "data-test": "guard" }, "guard: ", r.promoted ? "promoted" : "not promoted", " · update KL to the replaced version " + fmt(g.updateKl) + " · KL to base on probes " + fmt(g.klToBase) + " · entropy " + fmt(g.entropy), g.reason ? " · " + g.reason : ""));
  if (m.timings) box.append(timingBar(m.timings));
  if (j.error) box.append(el("div", { class: "status-failed" }, "failed: " + j.error));
  for (const s of j.samples) {
    const conv = s.messages.map((x) => x.role + ": " + (typeof x.content === "string" ? x.content : JSON.stringify(x.content))).join("\\n");
    box.append(el("div", { class: "sample", "data-test": "sample" },
      el("div", { class: "label" }, "conversation" + (s.served_by ? " (served by " + s.served_by + ")" : "")), el("pre", {}, conv),
      el("div", { class: "label" }, "reply"), el("pre", { "data-test": "sample-reply" }, s.reply),
      el("div", { class: "label" }, "feedback"), el("pre", { "data-test": "sample-feedback" }, s.feedback),
      el("details", {}, el("summary", {}, "teacher context"), el("pre", { "data-test": "teacher-context" }, s.teacher_context || "–"))));
  }
  return box;
}

async function rollback(id, version) {
  const [tenant, name] = id.split("/");
  const res = await fetch("/v1/lora/" + tenant + "/" + name + "/rollback", { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: JSON.stringify({ version }) });
  if (!res.ok) document.getElementById("error").textContent = "rollback failed: " + (await res.text());
  await refresh();
}

function render(d) {
  document.getElementById("model").textContent = "model " + d.model;
  document.getElementById("mode").textContent = "mode " + d.mode;
  document.getElementById("updated").textContent = "updated " + new Date(d.now).toLocaleTimeString();
  const jobs = document.getElementById("jobs");
  jobs.replaceChildren();
  for (const j of d.jobs) {
    const r = j.result || {};
    const row = el("tr", { class: "job", "data-test": "job-row", "data-job": j.id, onclick: () => { open.has(j.id) ? open.delete(j.id) : open.add(j.id); render(d); } },
      el("td", {}, j.id.slice(0, 12)), el("td", {}, j.lora_id), el("td", { class: "status-" + j.status }, j.status), el("td", {}, when(j.created_at)),
      el("td", {}, j.samples.length), el("td", {}, r.version ?? "–"), el("td", {}, fmt(r.metrics && r.metrics.loss)), el("td", {}, r.guard ? (r.promoted ? "promoted" : "rejected") : "–"));
    jobs.append(row);
    if (open.has(j.id)) jobs.append(el("tr", { class: "detail" }, el("td", { colspan: 8 }, jobDetail(j))));
  }
  const ad = document.getElementById("adapters");
  ad.replaceChildren();
  for (const a of d.adapters) {
    const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "version"), el("th", {}, "status"), el("th", {}, "created"), el("th", {}, "loss"), el("th", {}, "guard / reason"), el("th", {}, ""))));
    const body = el("tbody", {});
    for (const v of a.versions) {
      body.append(el("tr", { "data-test": "version-row" }, el("td", {}, v.version + (v.version === a.current_version ? " (serving)" : "")), el("td", {}, v.status), el("td", {}, when(v.created_at)),
        el("td", {}, fmt(v.metrics && v.metrics.loss)), el("td", {}, v.reason || ""),
        el("td", {}, v.version === a.current_version || v.status === "rejected" ? "" : el("button", { onclick: () => rollback(a.lora_id, v.version) }, "serve this version"))));
    }
    table.append(body);
    const byVersion = (f) => a.versions.filter((v) => v.metrics).map((v) => [v.version, f(v.metrics)]);
    const jobsOf = d.jobs.filter((j) => j.lora_id === a.lora_id && j.result && j.result.guard).map((j) => [j.result.version, j.result.guard.klToBase]);
    ad.append(el("h3", {}, a.lora_id + " — serving v" + a.current_version), table,
      el("div", { class: "charts" }, lineChart("loss", byVersion((m) => m.loss)), lineChart("teacher–student KL", byVersion((m) => m.teacherStudentKl)), lineChart("grad norm", byVersion((m) => m.gradNorm)), lineChart("KL to base (guard)", jobsOf)));
  }
  const ev = document.getElementById("evals");
  ev.replaceChildren();
  for (const r of d.eval_runs) {
    const s = r.summary;
    ev.append(el("div", { "data-test": "eval-run" }, el("b", {}, when(r.created_at) + " seed " + s.seed + ": "),
      Object.entries(s.styles || {}).map(([k, v]) => k + " " + fmt(v.before, 2) + " → " + fmt(v.after, 2) + " (" + (v.events ?? ">max") + " events)").join(" · "),
      " · accuracy Δ " + fmt(s.retention_delta, 2) + " · control Δ " + fmt(s.control_delta, 2)));
  }
}

async function refresh() {
  const res = await fetch("/v1/dashboard/data", { headers });
  if (!res.ok) { document.getElementById("error").textContent = res.status === 401 || res.status === 403 ? "This dashboard needs an admin key: open /v1/dashboard?key=<admin key>." : "Could not load data: " + res.status; return; }
  document.getElementById("error").textContent = "";
  render(await res.json());
}
refresh();
setInterval(refresh, 5000);
</script>
</body>
</html>
`;
