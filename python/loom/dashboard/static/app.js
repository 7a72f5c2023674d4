// Loom dashboard. Plain JavaScript, no build step. Everything shown is set as text
// (textContent), never parsed as HTML: topics, payloads and span attributes come from
// agents and models.
"use strict";

const state = {
  tab: "overview",
  overview: null,
  paused: false,
  source: null,
  shown: 0,
  skipped: 0,
  missed: 0,
  run: null,
  runsKey: "",
  processes: null,
  processesAt: 0,
  trace: null,
  traces: [],
};

// -- helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const $ = (sel) => document.querySelector(sel);

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function fmtNum(n) {
  if (n === null || n === undefined) return "";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 });
}

function fmtDur(ns) {
  if (ns < 1e3) return `${ns} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(1)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}

function fmtTime(seconds) {
  const d = new Date(seconds * 1000);
  return d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function fmtClock(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString("en-GB", { hour12: false });
}

function setStatus(text, bad) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("bad", Boolean(bad));
}

// -- tabs ----------------------------------------------------------------------------

function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll("section.tab")) s.classList.toggle("active", s.id === `tab-${name}`);
  refresh();
}

// -- topology and agents -----------------------------------------------------------------

function renderOverview(data) {
  state.overview = data;
  $("#project-name").textContent = data.project.name || "";
  document.title = `Loom · ${data.project.name || "dashboard"}`;
  const internal = $("#show-internal").checked;
  fill($("#agents tbody"), data.agents.map((a) => el("tr", { "data-agent": a.id },
    el("td", { class: "mono", text: a.id }),
    el("td", { text: a.kind || "" }),
    el("td", {}, ...a.subscriptions.filter((s) => internal || !s.inbox).map((s) => el("div", { class: "sub mono" },
      `${s.pattern} · ${s.qos}${s.group ? " · group " + s.group : ""}${s.transport === "jetstream" ? " · JetStream " + s.consumer : ` · ${s.depth}/${s.capacity}`}`))),
    el("td", { text: a.max_concurrency || "" }),
  )));
  const topics = data.topics.filter((t) => internal || !t.topic.startsWith("_"));
  fill($("#topics tbody"), topics.map((t) => el("tr", { "data-topic": t.topic },
    el("td", { class: "mono", text: t.topic }),
    el("td", { class: "num", text: fmtNum(t.rate) }),
    el("td", { class: "num", text: fmtNum(t.published) }),
    el("td", { class: "num", text: fmtNum(t.delivered) }),
    el("td", { class: t.dropped ? "num bad" : "num", text: fmtNum(t.dropped) }),
    el("td", { class: "mono", text: t.agents.join(", ") }),
  )));
  drawTopology(data, internal);
  const send = $("#send-form");
  send.classList.toggle("hidden", !data.allow_send);
  $("#capture-hint").textContent = data.capture
    ? "Content capture is on: payload previews are shown (secret-looking keys masked)."
    : "Content capture is off ([telemetry] capture_content): events show type, size and ids only.";
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// NATS subject matching: "*" one token, ">" the rest.
function topicMatches(pattern, topic) {
  const p = pattern.split("."), t = topic.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return t.length > i;
    if (i >= t.length || (p[i] !== "*" && p[i] !== t[i])) return false;
  }
  return p.length === t.length;
}

// Agents of the project's other processes, as [label, patterns].
function remoteAgents() {
  const out = [];
  for (const proc of state.processes || []) {
    if (proc.self) continue;
    const where = `${proc.process.host}:${proc.process.pid}`;
    for (const a of proc.agents) out.push([`${a.id}@${where}`, a.subscriptions.filter((s) => !s.inbox).map((s) => s.pattern)]);
  }
  return out;
}

function renderProcesses(list) {
  state.processes = list;
  $("#processes-card").classList.toggle("hidden", !list);
  if (!list) return;
  fill($("#processes tbody"), list.map((p) => el("tr", { "data-process": `${p.process.host}:${p.process.pid}` },
    el("td", { class: "mono" }, `${p.process.name} · ${p.process.host}:${p.process.pid}`, p.self ? el("span", { class: "muted", text: " (this process)" }) : null),
    el("td", {}, ...p.agents.map((a) => el("div", { class: "sub mono", text: `${a.id}: ${a.subscriptions.filter((s) => !s.inbox).map((s) => `${s.pattern}${s.group ? " (group " + s.group + ")" : ""}`).join(", ") || "no subscriptions"}` }))),
  )));
}

function drawTopology(data, internal) {
  const topics = data.topics.filter((t) => internal || !t.topic.startsWith("_")).map((t) => t.topic);
  const topicSet = new Set(topics);
  const edges = data.edges.filter((e) => topicSet.has(e.topic));
  const senders = [...new Set([...edges.map((e) => e.source)])].sort();
  const remote = remoteAgents();
  const remoteOf = (topic) => remote.filter(([, pats]) => pats.some((p) => topicMatches(p, topic))).map(([label]) => label);
  const subscribersOf = (t) => [...t.agents, ...remoteOf(t.topic)];
  const receivers = [...new Set(data.topics.filter((t) => topicSet.has(t.topic)).flatMap(subscribersOf))].sort();
  for (const a of data.agents) if (!senders.includes(a.id) && !receivers.includes(a.id)) receivers.push(a.id);
  const rows = Math.max(senders.length, topics.length, receivers.length, 1);
  const height = rows * 34 + 20;
  const width = 900;
  const box = $("#topology");
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  box.setAttribute("height", String(height));
  box.replaceChildren();
  const col = { s: 120, t: width / 2, r: width - 120 };
  const y = (i, n) => 20 + (i + 0.5) * ((height - 20) / Math.max(n, 1));
  const pos = {};
  senders.forEach((a, i) => (pos["s:" + a] = [col.s, y(i, senders.length)]));
  topics.forEach((t, i) => (pos["t:" + t] = [col.t, y(i, topics.length)]));
  receivers.forEach((a, i) => (pos["r:" + a] = [col.r, y(i, receivers.length)]));
  const rate = Object.fromEntries(data.topics.map((t) => [t.topic, t.rate]));
  const maxCount = Math.max(1, ...edges.map((e) => e.count));
  const link = (a, b, w, cls) => {
    const [x1, y1] = a, [x2, y2] = b;
    const mx = (x1 + x2) / 2;
    box.append(svg("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, class: cls, "stroke-width": w }));
  };
  for (const e of edges) link(pos["s:" + e.source], pos["t:" + e.topic], 1 + 4 * (e.count / maxCount), "edge emit");
  for (const t of data.topics) {
    if (!topicSet.has(t.topic)) continue;
    for (const a of subscribersOf(t)) link(pos["t:" + t.topic], pos["r:" + a], 1 + Math.min(4, Math.log10(1 + (rate[t.topic] || 0))), "edge deliver");
  }
  const node = (key, label, cls, anchor) => {
    const [x, yy] = pos[key];
    const g = svg("g", { class: `node ${cls}`, "data-node": label });
    g.append(svg("circle", { cx: x, cy: yy, r: 6 }));
    const dx = anchor === "end" ? -10 : anchor === "start" ? 10 : 0;
    const dy = anchor === "middle" ? -10 : 4;
    g.append(svg("text", { x: x + dx, y: yy + dy, "text-anchor": anchor }, label));
    box.append(g);
  };
  senders.forEach((a) => node("s:" + a, a, "agent", "end"));
  topics.forEach((t) => node("t:" + t, rate[t] ? `${t}  ${fmtNum(rate[t])}/s` : t, "topic", "middle"));
  receivers.forEach((a) => node("r:" + a, a, "agent", "start"));
  $("#topology-hint").textContent = edges.length || !topics.length
    ? "Senders on the left (seen by the event stream), topics in the middle with their rate, subscribers on the right."
    : "Subscribers on the right; who sends what appears once events flow while the Events tab or this page listens.";
}

// -- events --------------------------------------------------------------------------

function openStream() {
  if (state.source) state.source.close();
  const pattern = $("#event-pattern").value.trim() || ">";
  const source = new EventSource(`/api/events?pattern=${encodeURIComponent(pattern)}`);
  state.source = source;
  source.onopen = () => setStatus("live");
  source.onerror = () => setStatus("event stream interrupted; retrying…", true);
  source.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    state.skipped += data.skipped || 0;
    state.missed += data.missed || 0;
    if (!state.paused) {
      const list = $("#event-list");
      for (const e of data.events) {
        state.shown += 1;
        list.prepend(eventRow(e));
      }
      while (list.children.length > 500) list.lastChild.remove();
    }
    $("#event-counts").textContent = `${fmtNum(state.shown)} shown · ${fmtNum(state.skipped)} over the rate limit · ${fmtNum(state.missed)} not sampled`;
  };
}

function eventRow(e) {
  const ids = [`id ${e.id.slice(0, 12)}`];
  if (e.correlation_id) ids.push(`corr ${e.correlation_id.slice(0, 12)}`);
  if (e.reply_to) ids.push(`reply→ ${e.reply_to}`);
  if (e.delivery > 1) ids.push(`delivery ${e.delivery}`);
  return el("tr", { class: "event", "data-topic": e.topic, "data-type": e.type },
    el("td", { class: "mono", text: fmtTime(e.ts) }),
    el("td", { class: "mono", text: e.topic }),
    el("td", { text: e.type }),
    el("td", { class: "mono", text: e.source || "" }),
    el("td", { class: "num", text: fmtNum(e.size) }),
    el("td", { class: "mono small" }, ids.join(" · "), e.preview !== undefined ? el("div", { class: "preview", text: e.preview }) : null),
  );
}

async function sendEvent(ev) {
  ev.preventDefault();
  let payload;
  try {
    payload = JSON.parse($("#send-payload").value || "null");
  } catch (err) {
    $("#send-result").textContent = `payload is not JSON: ${err.message}`;
    return;
  }
  const response = await fetch("/api/emit", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ topic: $("#send-topic").value, type: $("#send-type").value, payload }),
  });
  $("#send-result").textContent = response.ok ? "sent" : await response.text();
}

// -- bus -----------------------------------------------------------------------------

function renderBus(data) {
  const tap = data.stream;
  $("#bus-totals").textContent = `${fmtNum(data.published)} published` +
    (tap ? ` · live streams (${tap.pages} page(s)): ${fmtNum(tap.seen)} seen, ${fmtNum(tap.dropped)} not sampled` : "");
  fill($("#subscriptions tbody"), data.subscriptions.map((s) => {
    const drops = Object.entries(s.dropped).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${fmtNum(n)}`).join(", ");
    const bar = el("div", { class: "bar" }, el("span", {}));
    bar.firstChild.style.width = `${Math.min(100, (100 * s.depth) / Math.max(1, s.capacity))}%`;
    return el("tr", { "data-sub": s.pattern },
      el("td", { class: "mono", text: s.agent }),
      el("td", { class: "mono", text: s.pattern }),
      el("td", { text: s.qos }),
      el("td", { text: s.group || "" }),
      el("td", {}, bar, el("span", { class: "small", text: `${s.depth} / ${s.capacity}` })),
      el("td", { class: "num", text: fmtNum(s.delivered) }),
      el("td", { class: drops ? "bad" : "muted", text: drops || "none" }),
    );
  }));
  const js = data.jetstream;
  $("#jetstream-none").classList.toggle("hidden", Boolean(js));
  $("#consumers").classList.toggle("hidden", !js);
  if (js) {
    fill($("#consumers tbody"), js.consumers.map((c) => el("tr", {},
      el("td", { class: "mono", text: c.name }),
      el("td", { class: "mono", text: c.pattern }),
      el("td", { text: c.group || "" }),
      el("td", { class: "num", text: c.unavailable ? c.unavailable : fmtNum(c.pending) }),
      el("td", { class: "num", text: fmtNum(c.ack_pending) }),
      el("td", { class: "num", text: fmtNum(c.redelivered) }),
    )));
    const k = js.counters;
    $("#jetstream-counters").textContent = `stream ${js.stream}: ${fmtNum(k.published)} published · ${fmtNum(k.delivered)} delivered · ${fmtNum(k.acked)} acked · ${fmtNum(k.redelivered)} redelivered · ${fmtNum(k.failed)} failed · ${fmtNum(k.dead_lettered)} dead-lettered`;
  }
}

// -- runs and traces -----------------------------------------------------------------

async function loadRuns() {
  const runs = await api("/api/runs");
  const key = JSON.stringify(runs);
  if (key === state.runsKey) return; // unchanged: keep the list (and what is hovered)
  state.runsKey = key;
  fill($("#runs"), runs.map((r) => el("li", {
    class: `run${r.run_id === state.run ? " selected" : ""}`,
    "data-run": r.run_id,
    onclick: () => selectRun(r.run_id),
  },
    el("div", { class: "mono", text: r.run_id }),
    el("div", { class: "small muted", text: `${r.live ? "live · " : ""}${r.traces} trace(s) · ${r.spans} spans · ${fmtDur(r.duration)}${r.errors ? ` · ${r.errors} error(s)` : ""}` }),
  )));
  if (!state.run && runs.length) selectRun(runs[0].run_id);
}

async function selectRun(run) {
  state.run = run;
  for (const li of document.querySelectorAll("#runs li")) li.classList.toggle("selected", li.dataset.run === run);
  const q = $("#trace-query").value.trim();
  const traces = await api(`/api/runs/${encodeURIComponent(run)}/traces?q=${encodeURIComponent(q)}`);
  state.traces = traces;
  $("#trace-status").textContent = q ? `${traces.length} trace(s) match in ${run}` : "";
  fill($("#traces"), traces.map((t) => el("li", {
    class: `trace${t.trace_id === state.trace ? " selected" : ""}${t.errors ? " has-error" : ""}`,
    "data-trace": t.trace_id,
    onclick: () => selectTrace(t.trace_id),
  },
    el("div", { text: t.root || t.trace_id }),
    el("div", { class: "small muted", text: `${fmtDur(t.duration)} · ${t.spans.length} spans${t.tokens ? ` · ${t.tokens} tokens` : ""}${t.cost ? ` · $${t.cost.toFixed(4)}` : ""}${t.errors ? ` · ${t.errors} error(s)` : ""}` }),
  )));
  const keep = traces.find((t) => t.trace_id === state.trace);
  if (keep) selectTrace(keep.trace_id);
  else if (traces.length) selectTrace(traces[0].trace_id);
  else {
    $("#waterfall").replaceChildren();
    $("#trace-summary").textContent = "no traces";
  }
}

function selectTrace(traceId) {
  state.trace = traceId;
  for (const li of document.querySelectorAll("#traces li")) li.classList.toggle("selected", li.dataset.trace === traceId);
  const t = state.traces.find((x) => x.trace_id === traceId);
  if (!t) return;
  const link = $("#jaeger-export");
  link.href = `/api/runs/${encodeURIComponent(state.run)}/jaeger?trace=${encodeURIComponent(traceId)}`;
  link.classList.remove("hidden");
  $("#trace-summary").textContent = `trace ${traceId} · ${fmtDur(t.duration)} · ${t.spans.length} spans${t.tokens ? ` · ${t.tokens} tokens` : ""}${t.cost ? ` · $${t.cost.toFixed(4)}` : ""}`;
  drawWaterfall(t);
}

function drawWaterfall(t) {
  const box = $("#waterfall");
  const byId = Object.fromEntries(t.spans.map((s) => [s.id, s]));
  const children = {};
  const roots = [];
  for (const s of t.spans) {
    if (s.parent && byId[s.parent]) (children[s.parent] = children[s.parent] || []).push(s);
    else roots.push(s);
  }
  const rows = [];
  const walk = (s, depth) => {
    rows.push([s, depth]);
    for (const c of (children[s.id] || []).sort((a, b) => a.start - b.start)) walk(c, depth + 1);
  };
  roots.sort((a, b) => a.start - b.start).forEach((r) => walk(r, 0));
  const t0 = t.start;
  const total = Math.max(1, t.duration);
  box.replaceChildren(...rows.map(([s, depth]) => {
    const label = el("div", { class: "label" }, s.name);
    label.style.paddingLeft = `${depth * 14}px`;
    const bar = el("div", { class: `span-bar ${s.error ? "error" : ""} ${kindClass(s.name)}` });
    bar.style.left = `${(100 * (s.start - t0)) / total}%`;
    bar.style.width = `${Math.max(0.3, (100 * (s.end - s.start)) / total)}%`;
    const extra = [];
    if (s.tokens_in || s.tokens_out) extra.push(`${s.tokens_in || 0}→${s.tokens_out || 0} tok`);
    if (s.cost) extra.push(`$${s.cost.toFixed(4)}`);
    return el("div", {
      class: `span${s.error ? " error" : ""}${s.match ? " match" : ""}`,
      "data-name": s.name,
      onclick: () => showSpan(s),
    },
      label,
      el("div", { class: "track" }, bar),
      el("div", { class: "dur small", text: `${fmtDur(s.end - s.start)}${extra.length ? " · " + extra.join(" · ") : ""}` }),
    );
  }));
}

function kindClass(name) {
  const op = name.split(" ")[0];
  return ["chat", "execute_tool", "invoke_agent", "send", "process", "invoke_workflow"].includes(op) ? `op-${op}` : "op-other";
}

function showSpan(s) {
  const box = $("#span-detail");
  box.classList.remove("hidden");
  const attrs = Object.entries(s.attrs).sort(([a], [b]) => a.localeCompare(b));
  box.replaceChildren(
    el("h3", { text: s.name }),
    el("p", { class: "small muted", text: `${s.service} · ${s.kind} · ${fmtDur(s.end - s.start)}${s.error ? " · ERROR " + s.status : ""}` }),
    el("table", { class: "attrs" }, el("tbody", {}, ...attrs.map(([k, v]) => el("tr", {},
      el("th", { class: "mono", text: k }),
      el("td", { class: "mono pre", text: typeof v === "string" ? v : JSON.stringify(v) }),
    )))),
    ...(s.events.length ? [el("h3", { text: "events" }), el("ul", {}, ...s.events.map((e) => el("li", { class: "mono small", text: `${e.name} ${JSON.stringify(e.attrs)}` })))] : []),
  );
}

async function searchTraces() {
  const q = $("#trace-query").value.trim();
  if (!q) {
    if (state.run) selectRun(state.run);
    return;
  }
  const found = await api(`/api/search?q=${encodeURIComponent(q)}`);
  const runs = new Set(found.map((f) => f.run_id));
  $("#trace-status").textContent = `${found.length} trace(s) in ${runs.size} run(s) match`;
  for (const li of document.querySelectorAll("#runs li")) li.classList.toggle("dim", !runs.has(li.dataset.run));
  if (found.length) await selectRun(found[0].run_id);
}

// -- tools, models, durable runs ---------------------------------------------------------

function renderTools(data) {
  fill($("#tools tbody"), data.tools.map((t) => el("tr", { "data-tool": t.name },
    el("td", { class: "mono", text: t.name }),
    el("td", { text: t.source === "mcp" ? `mcp:${t.server}` : t.source === "remote" ? `remote@${t.hosts.join(",")}` : t.source }),
    el("td", { class: "mono small", text: t.parameters.join(", ") }),
    el("td", { text: [t.requires_approval ? "approval" : "", t.idempotent ? "idempotent" : ""].filter(Boolean).join(", ") }),
    el("td", { class: "small", text: t.description }),
  )));
  const sb = $("#sandbox");
  sb.replaceChildren();
  const sandbox = data.sandbox || {};
  const put = (k, v) => sb.append(el("dt", { text: k }), el("dd", { class: "mono small", text: v }));
  if (sandbox.workspace) put("workspace", sandbox.workspace);
  const shell = sandbox.shell || {};
  for (const [k, v] of Object.entries(shell.enforcement || {})) put(k, String(v));
  if (shell.allow) put("shell allowlist", Object.keys(shell.allow).sort().join(" "));
  if (!sb.children.length) put("sandbox", "native tools not built yet (no agent used a tool)");
  const llm = data.llm;
  if (llm) {
    fill($("#providers tbody"), llm.providers.map((p) => el("tr", {},
      el("td", { class: "mono", text: p.name }),
      el("td", { class: "mono", text: p.model || (p.serve ? `local: ${p.serve}` : "") }),
      el("td", { class: "mono small", text: p.base_url || "" }),
    )));
    const usage = (rows) => rows.map((u) => el("tr", {},
      el("td", { class: "mono", text: u.name }),
      el("td", { class: "num", text: fmtNum(u.calls) }),
      el("td", { class: "num", text: fmtNum(u.input_tokens) }),
      el("td", { class: "num", text: fmtNum(u.output_tokens) }),
      el("td", { class: "num", text: u.cost_usd.toFixed(4) }),
    ));
    fill($("#usage-provider tbody"), usage(llm.by_provider));
    fill($("#usage-agent tbody"), usage(llm.by_agent));
    $("#llm-total").textContent = `total $${llm.total_cost_usd.toFixed(4)}`;
  }
}

function renderDurable(data) {
  const none = !data || data.error;
  $("#durable-none").classList.toggle("hidden", !none);
  if (data && data.error) $("#durable-none").textContent = data.error;
  $("#durable-runs").classList.toggle("hidden", none);
  if (none) return;
  $("#durable-where").textContent = data.where;
  fill($("#durable-runs tbody"), data.runs.map((r) => el("tr", { "data-run": r.run_id },
    el("td", { class: "mono small", text: r.run_id.slice(0, 16) }),
    el("td", { class: "mono", text: r.agent }),
    el("td", { class: "mono", text: r.entry }),
    el("td", { class: `status-${r.status}`, text: r.status }),
    el("td", { class: "num", text: r.steps }),
    el("td", { text: fmtClock(r.updated) }),
    el("td", { class: "small bad", text: r.error }),
  )));
  fill($("#approvals tbody"), data.approvals.map((a) => el("tr", {},
    el("td", { class: "mono small", text: a.approval_id }),
    el("td", { class: "mono", text: a.agent }),
    el("td", { class: "mono", text: a.tool }),
    el("td", { class: "mono small", text: JSON.stringify(a.arguments) }),
    el("td", { text: fmtClock(a.requested) }),
  )));
}

// -- refresh loop --------------------------------------------------------------------

async function refresh() {
  try {
    if (state.tab === "overview" && Date.now() - state.processesAt > 3000) {
      state.processesAt = Date.now();
      renderProcesses(await api("/api/processes"));
    }
    if (state.tab === "overview" || !state.overview) renderOverview(await api("/api/overview"));
    if (state.tab === "bus") renderBus(await api("/api/bus"));
    if (state.tab === "tools") renderTools(await api("/api/tools"));
    if (state.tab === "durable") renderDurable(await api("/api/durable"));
    if (state.tab === "traces") await loadRuns();
    if (!state.overview.live) setStatus("traces of past runs (no agents running here)");
    else if (!state.source || state.source.readyState !== 1) setStatus("connected");
  } catch (err) {
    setStatus(String(err.message || err), true);
  }
}

function start() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#event-apply").addEventListener("click", () => { $("#event-list").replaceChildren(); openStream(); });
  $("#event-pattern").addEventListener("keydown", (e) => { if (e.key === "Enter") { $("#event-list").replaceChildren(); openStream(); } });
  $("#event-pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("#event-pause").textContent = state.paused ? "resume" : "pause";
  });
  $("#event-clear").addEventListener("click", () => { $("#event-list").replaceChildren(); state.shown = 0; state.skipped = 0; state.missed = 0; });
  $("#send-form").addEventListener("submit", sendEvent);
  $("#show-internal").addEventListener("change", () => state.overview && renderOverview(state.overview));
  $("#trace-search").addEventListener("click", searchTraces);
  $("#trace-query").addEventListener("keydown", (e) => { if (e.key === "Enter") searchTraces(); });
  refresh().then(() => { if (state.overview && state.overview.live) openStream(); });
  setInterval(() => { if (state.tab !== "traces" && state.tab !== "events") refresh(); }, 1000);
  setInterval(() => { if (state.tab === "traces") loadRuns().catch(() => {}); }, 5000);
}

document.addEventListener("DOMContentLoaded", start);
