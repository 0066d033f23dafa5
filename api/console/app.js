// Dunes analyst console. Plain JavaScript, no dependencies, no build step: served by
// `dunes run` from the binary. Every datum comes from the Dunes API with the analyst's
// token (kept in this tab's sessionStorage only); the server enforces the role on every
// call, this page only hides what the role may not do.
"use strict";

const TOKEN_KEY = "dunes.token";
const SAVED_KEY = "dunes.saved-queries";
const ROW_H = 32;

const state = {
  token: null,
  session: null,
  incidents: new Map(), // id -> summary
  revision: 0,
  streamAbort: null,
  selected: 0,
  filtered: [],
  samples: [], // overview: [{t, events}]
};
window.dunesMetrics = {};

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(msg, bad) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = "show" + (bad ? " bad" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, 5000);
}

function fmtTime(s) {
  if (!s) return "";
  const d = new Date(s);
  if (isNaN(d)) return String(s);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function levelBadge(l) { return h("span", { class: "badge l" + l }, "L" + l); }

function can(what) {
  const r = state.session && state.session.role;
  switch (what) {
    case "act": return ["analyst", "responder", "admin"].includes(r);
    case "escalate": return ["responder", "admin"].includes(r);
    case "hunt": return ["analyst", "responder", "admin"].includes(r);
    case "audit": return ["auditor", "admin"].includes(r);
    default: return false;
  }
}

class ApiError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.token }, opts.headers || {});
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method: opts.method || "GET", headers, body: opts.body, signal: opts.signal });
  if (resp.status === 401) {
    signOut("Your token is invalid or has expired: sign in with a new one.");
    throw new ApiError(401, "unauthorized");
  }
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!resp.ok) throw new ApiError(resp.status, (json && json.error) || resp.statusText);
  return json;
}

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---------- session ----------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.session = null;
  stopStream();
  history.replaceState(null, "", location.pathname + "#/login");
  renderLogin(message);
}

async function signIn(token) {
  state.token = token.trim();
  const s = await api("/api/v1/session");
  state.session = s;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  const top = document.getElementById("top");
  top.hidden = false;
  const left = Math.max(0, s.exp - Math.floor(Date.now() / 1000));
  document.getElementById("who").textContent = `${s.sub} (${s.role}) · token expires in ${Math.round(left / 60)} min`;
  document.getElementById("nav-hunt").hidden = !can("hunt");
}

function renderLogin(message) {
  document.getElementById("top").hidden = true;
  const input = h("textarea", { id: "token", rows: 6, placeholder: "eyJhbGciOiJNTC1EU0EtNjUi…", autocomplete: "off", spellcheck: "false" });
  const err = h("div", { class: "err", id: "login-error" }, message || "");
  const form = h("form", { class: "card login", id: "login-form", onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = "";
    try {
      await signIn(input.value);
      if (location.hash === "#/queue") route();
      else location.hash = "#/queue";
    } catch (ex) {
      state.token = null;
      if (!err.textContent) err.textContent = "Sign-in refused: " + ex.message;
    }
  } },
  h("h1", {}, "Dunes console"),
  h("p", { class: "muted" }, "Paste an API token (", h("code", {}, "dunes token issue --sub you --role analyst"), "). It stays in this tab only."),
  input,
  h("div", { class: "row" }, h("button", { class: "primary", type: "submit", id: "login-submit" }, "Sign in")),
  err);
  document.getElementById("view").replaceChildren(form);
  input.focus();
}

// ---------- live stream (Server-Sent Events over fetch, so the token goes in a header) ----------

function stopStream() {
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
  const live = document.getElementById("live");
  live.textContent = "offline";
  live.className = "live";
}

async function startStream() {
  stopStream();
  const ctl = new AbortController();
  state.streamAbort = ctl;
  const live = document.getElementById("live");
  try {
    if (!state.revision) {
      // not loaded by the queue yet: start from now
      const r = await api("/api/v1/incidents?view=summary&limit=1", { signal: ctl.signal });
      state.revision = r.revision;
    }
    const resp = await fetch("/api/v1/incidents/stream?after=" + state.revision, {
      headers: { Authorization: "Bearer " + state.token }, signal: ctl.signal,
    });
    if (!resp.ok) throw new Error("stream refused: " + resp.status);
    live.textContent = "live";
    live.className = "live on";
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (event === "incidents") onIncidents(JSON.parse(data.join("\n")));
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (state.streamAbort === ctl) {
    live.textContent = "reconnecting";
    live.className = "live";
    setTimeout(() => { if (state.streamAbort === ctl && state.token) startStream(); }, 2000);
  }
}

function onIncidents(msg) {
  state.revision = Math.max(state.revision, msg.revision);
  const fresh = new Set();
  for (const inc of msg.incidents) {
    if (!state.incidents.has(inc.incident_id)) fresh.add(inc.incident_id);
    state.incidents.set(inc.incident_id, inc);
  }
  if (currentView === "queue") renderQueueBody(fresh);
  const shown = msg.incidents.find((i) => i.incident_id === currentIncident);
  if (currentView === "incident" && shown && signature(shown, shown.actions) !== state.shownSignature) {
    refreshIncident();
  }
}

// ---------- queue ----------

let currentView = null;
let currentIncident = null;
const filters = { level: "", status: "", rule: "", tag: "", server: "", principal: "", from: "", to: "", text: "", sort: "detected_desc" };

async function loadIncidents() {
  const r = await api("/api/v1/incidents?view=summary&limit=100000");
  state.incidents = new Map();
  // the API lists newest first; the map keeps detection order (oldest first)
  for (let i = r.incidents.length - 1; i >= 0; i--) state.incidents.set(r.incidents[i].incident_id, r.incidents[i]);
  state.revision = r.revision;
}

function applyFilters() {
  const f = filters;
  const from = f.from ? new Date(f.from).getTime() : null;
  const to = f.to ? new Date(f.to).getTime() : null;
  const text = f.text.toLowerCase();
  const out = [];
  for (const inc of state.incidents.values()) {
    if (f.level && String(inc.level) !== f.level) continue;
    if (f.status && inc.status !== f.status) continue;
    if (f.rule && inc.rule_id !== f.rule) continue;
    if (f.tag && !inc.tags.some((t) => t.toLowerCase().includes(f.tag.toLowerCase()))) continue;
    if (f.server && !String(inc.server_id || "").toLowerCase().includes(f.server.toLowerCase())) continue;
    if (f.principal && !String(inc.principal || "").toLowerCase().includes(f.principal.toLowerCase())) continue;
    const t = Date.parse(inc.detected_at);
    if (from !== null && t < from) continue;
    if (to !== null && t > to) continue;
    if (text && !(inc.title + " " + inc.incident_id + " " + inc.rule_id).toLowerCase().includes(text)) continue;
    out.push(inc);
  }
  const sev = { info: 0, low: 1, medium: 2, high: 3, critical: 4 };
  const by = {
    detected_desc: (a, b) => Date.parse(b.detected_at) - Date.parse(a.detected_at),
    detected_asc: (a, b) => Date.parse(a.detected_at) - Date.parse(b.detected_at),
    level_desc: (a, b) => b.level - a.level || Date.parse(b.detected_at) - Date.parse(a.detected_at),
    severity_desc: (a, b) => (sev[b.severity] || 0) - (sev[a.severity] || 0) || Date.parse(b.detected_at) - Date.parse(a.detected_at),
    matches_desc: (a, b) => b.match_count - a.match_count,
  }[f.sort];
  out.sort(by);
  return out;
}

async function renderQueue() {
  const t0 = performance.now();
  const view = document.getElementById("view");
  view.replaceChildren(h("p", { class: "muted" }, "Loading incidents…"));
  await loadIncidents();
  const fetched = performance.now();
  const sel = (id, label, options) => h("label", {}, label, h("select", { id, onchange: (e) => { filters[id.slice(2)] = e.target.value; state.selected = 0; renderQueueBody(); } },
    options.map(([v, t]) => h("option", { value: v, selected: filters[id.slice(2)] === v }, t))));
  const txt = (id, label, placeholder, type) => h("label", {}, label, h("input", { id, type: type || "text", placeholder: placeholder || "", value: filters[id.slice(2)],
    oninput: (e) => { filters[id.slice(2)] = e.target.value; state.selected = 0; renderQueueBody(); } }));
  const rules = [...new Set([...state.incidents.values()].map((i) => i.rule_id))].sort();
  view.replaceChildren(
    h("div", { class: "counts", id: "counts" }),
    h("div", { class: "filters" },
      sel("f-level", "Level", [["", "any"], ["3", "3 emergency"], ["2", "2 analyst"], ["1", "1 automated"]]),
      sel("f-status", "Status", [["", "any"], ["open", "open"], ["acknowledged", "acknowledged"], ["resolved", "resolved"]]),
      sel("f-rule", "Rule", [["", "any"], ...rules.map((r) => [r, r])]),
      txt("f-tag", "Tag", "owasp-mcp:MCP05"),
      txt("f-server", "Server", "server id"),
      txt("f-principal", "Principal", "user or client"),
      txt("f-from", "Detected from", "", "datetime-local"),
      txt("f-to", "to", "", "datetime-local"),
      txt("f-text", "Search (/)", "title, id, rule"),
      sel("f-sort", "Sort", [["detected_desc", "newest first"], ["detected_asc", "oldest first"], ["level_desc", "level"], ["severity_desc", "severity"], ["matches_desc", "matches"]])),
    h("div", { class: "qhead" }, h("span", {}, "Level"), h("span", {}, "Severity"), h("span", {}, "Rule"), h("span", {}, "Title"), h("span", {}, "Principal"), h("span", {}, "Server"), h("span", {}, "Status"), h("span", {}, "Detected")),
    h("div", { class: "qscroll", id: "qscroll", tabindex: "0", onscroll: () => paintRows() }, h("div", { id: "qspacer" })),
    h("p", { class: "muted" }, "Keys: j/k or ↑/↓ move, Enter opens, / searches. New incidents arrive live."));
  renderQueueBody();
  const done = performance.now();
  window.dunesMetrics.queueFirstRenderMs = done - t0;
  window.dunesMetrics.queueRenderOnlyMs = done - fetched;
  window.dunesMetrics.queueRows = state.incidents.size;
  document.getElementById("qscroll").focus();
}

function renderQueueBody(fresh) {
  if (currentView !== "queue" || !document.getElementById("qscroll")) return;
  state.filtered = applyFilters();
  state.fresh = fresh || new Set();
  const all = [...state.incidents.values()];
  const count = (pred) => all.filter(pred).length;
  const counts = document.getElementById("counts");
  counts.replaceChildren(
    ...[3, 2, 1].map((l) => h("div", { class: "count", id: "count-l" + l }, levelBadge(l),
      h("b", {}, count((i) => i.level === l)), h("span", { class: "muted" }, count((i) => i.level === l && i.status !== "resolved") + " not resolved"))),
    h("div", { class: "count", id: "count-shown" }, h("span", { class: "muted" }, "shown"), h("b", { id: "shown" }, state.filtered.length)));
  document.getElementById("qspacer").style.height = state.filtered.length * ROW_H + "px";
  state.selected = Math.min(state.selected, Math.max(0, state.filtered.length - 1));
  paintRows();
}

function paintRows() {
  const box = document.getElementById("qscroll");
  if (!box) return;
  const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - 5);
  const last = Math.min(state.filtered.length, first + Math.ceil(box.clientHeight / ROW_H) + 10);
  const rows = [];
  for (let n = first; n < last; n++) {
    const inc = state.filtered[n];
    const row = h("div", {
      class: "qrow" + (n === state.selected ? " sel" : "") + (state.fresh && state.fresh.has(inc.incident_id) ? " new" : ""),
      dataset: { id: inc.incident_id, level: inc.level, status: inc.status, rule: inc.rule_id },
      onclick: () => { location.hash = "#/incident/" + encodeURIComponent(inc.incident_id); },
    },
    h("span", {}, levelBadge(inc.level)), h("span", {}, inc.severity), h("span", { class: "mono" }, inc.rule_id),
    h("span", { title: inc.title }, inc.title), h("span", {}, inc.principal || ""), h("span", {}, inc.server_id || ""),
    h("span", {}, inc.status + (inc.assignee ? " · " + inc.assignee : "")), h("span", { class: "mono", title: inc.detected_at }, fmtTime(inc.detected_at).slice(5, 16)));
    row.style.top = n * ROW_H + "px";
    rows.push(row);
  }
  const spacer = document.getElementById("qspacer");
  box.replaceChildren(spacer, ...rows);
}

function queueKeys(e) {
  if (currentView !== "queue") return;
  const tag = (e.target.tagName || "").toLowerCase();
  if (e.key === "/" && tag !== "input" && tag !== "textarea") {
    e.preventDefault();
    document.getElementById("f-text").focus();
    return;
  }
  if (tag === "input" || tag === "textarea" || tag === "select") return;
  const box = document.getElementById("qscroll");
  if (e.key === "j" || e.key === "ArrowDown") state.selected = Math.min(state.filtered.length - 1, state.selected + 1);
  else if (e.key === "k" || e.key === "ArrowUp") state.selected = Math.max(0, state.selected - 1);
  else if (e.key === "Enter" && state.filtered[state.selected]) {
    location.hash = "#/incident/" + encodeURIComponent(state.filtered[state.selected].incident_id);
    return;
  } else return;
  e.preventDefault();
  const y = state.selected * ROW_H;
  if (y < box.scrollTop) box.scrollTop = y;
  else if (y + ROW_H > box.scrollTop + box.clientHeight) box.scrollTop = y + ROW_H - box.clientHeight;
  paintRows();
}

// ---------- incident page ----------

function highlighters(rule) {
  // The rule's regex literals (SQL string literals of regexp_* / ~ predicates) compiled as
  // JavaScript regexes, to mark the matched spans in the evidence.
  const out = [];
  if (!rule || !rule.query) return out;
  const re = /(?:regexp_like|regexp_match|regexp_instr|regexp_count|~\*?)\s*\(?[^']*'((?:[^']|'')+)'/gi;
  let m;
  while ((m = re.exec(rule.query))) {
    let src = m[1].replace(/''/g, "'");
    let flags = "g";
    if (src.startsWith("(?i)")) { src = src.slice(4); flags += "i"; }
    try { out.push(new RegExp(src, flags)); } catch (_) { /* a Rust-only construct: no highlight */ }
  }
  return out;
}

function marked(text, res) {
  const s = String(text);
  const spans = [];
  for (const re of res) {
    re.lastIndex = 0;
    let m;
    while ((m = re.exec(s)) && spans.length < 200) {
      if (m[0].length === 0) { re.lastIndex++; continue; }
      spans.push([m.index, m.index + m[0].length]);
    }
  }
  if (!spans.length) return [s];
  spans.sort((a, b) => a[0] - b[0]);
  const parts = [];
  let at = 0;
  for (const [a, b] of spans) {
    if (a < at) continue;
    parts.push(s.slice(at, a), h("mark", {}, s.slice(a, b)));
    at = b;
  }
  parts.push(s.slice(at));
  return parts;
}

function pretty(v) {
  if (typeof v === "string") {
    const t = v.trim();
    if (t.startsWith("{") || t.startsWith("[")) {
      try { return JSON.stringify(JSON.parse(t), null, 2); } catch (_) { return v; }
    }
    return v;
  }
  return JSON.stringify(v, null, 2);
}

function evidenceBlock(row, res) {
  const msgKeys = ["method", "tool_name", "args_preview", "result_preview", "error_message"];
  const rest = Object.entries(row).filter(([k]) => !msgKeys.includes(k) && k !== "contributions" && k !== "explanation");
  return h("div", { class: "evidence" },
    h("div", { class: "row" }, h("b", {}, row.method || "event"), row.tool_name ? h("span", { class: "chip" }, "tool " + row.tool_name) : null,
      h("span", { class: "muted mono" }, row.event_id || ""), h("span", { class: "muted" }, fmtTime(row.ts))),
    row.args_preview !== undefined ? [h("div", { class: "muted" }, "arguments"), h("pre", { class: "args" }, marked(pretty(row.args_preview), res))] : null,
    row.result_preview !== undefined ? [h("div", { class: "muted" }, "result (excerpt)"), h("pre", { class: "result" }, marked(pretty(row.result_preview), res))] : null,
    row.error_message !== undefined && row.error_message !== null ? [h("div", { class: "muted" }, "error"), h("pre", {}, marked(String(row.error_message), res))] : null,
    h("table", {}, rest.map(([k, v]) => h("tr", {}, h("td", { class: "k" }, k), h("td", { class: "mono" }, marked(typeof v === "string" ? v : JSON.stringify(v), res))))));
}

function contributionChart(contribs) {
  const w = 520, bh = 22, left = 170, max = Math.max(...contribs.map((c) => Math.abs(c.z || 0)), 1);
  const s = svg("svg", { width: w, height: contribs.length * bh + 10, id: "anomaly-chart", role: "img", "aria-label": "feature contributions (z-score)" });
  contribs.forEach((c, i) => {
    const z = c.z || 0;
    const len = (Math.abs(z) / max) * (w - left - 60);
    s.append(svg("text", { x: 0, y: i * bh + 15 }, c.feature),
      svg("rect", { x: left, y: i * bh + 4, width: Math.max(1, len), height: bh - 8, class: "bar-l2" }),
      svg("text", { x: left + len + 4, y: i * bh + 15 }, "z " + z.toFixed(1) + (c.tail_ratio ? ` · ${c.tail_ratio.toFixed(1)}× p99` : "")));
  });
  return s;
}

async function renderIncident(id) {
  const view = document.getElementById("view");
  // a refresh of the incident shown keeps it on screen until the new one is built
  if (currentIncident !== id || !document.getElementById("inc-title")) {
    view.replaceChildren(h("p", { class: "muted" }, "Loading incident…"));
  }
  currentIncident = id;
  let inc;
  try {
    inc = await api("/api/v1/incidents/" + encodeURIComponent(id));
  } catch (e) {
    view.replaceChildren(h("div", { class: "card err" }, "Cannot load incident " + id + ": " + e.message));
    return;
  }
  let rule = null;
  try { rule = await api("/api/v1/rules/" + encodeURIComponent(inc.rule_id)); } catch (_) { rule = null; }
  const res = highlighters(rule);
  const main = h("div", {},
    h("div", { class: "card" },
      h("div", { class: "row" }, levelBadge(inc.level), h("span", { class: "badge status", id: "inc-status" }, inc.status),
        h("span", { class: "chip" }, inc.severity), inc.assignee ? h("span", { class: "chip", id: "inc-assignee" }, "assigned to " + inc.assignee) : null,
        inc.disposition ? h("span", { class: "chip" }, inc.disposition.replace("_", " ")) : null),
      h("h1", { id: "inc-title" }, inc.title),
      h("div", { class: "kv" },
        h("span", {}, "incident"), h("span", { class: "mono" }, inc.incident_id),
        h("span", {}, "server"), h("span", {}, inc.server_id || "—"),
        h("span", {}, "session"), h("span", { class: "mono" }, inc.session_id || "—"),
        h("span", {}, "entity"), h("span", { class: "mono" }, JSON.stringify(inc.entity)),
        h("span", {}, "first / last event"), h("span", {}, fmtTime(inc.first_ts) + " / " + fmtTime(inc.last_ts)),
        h("span", {}, "detected"), h("span", {}, fmtTime(inc.detected_at)),
        h("span", {}, "matches"), h("span", {}, inc.match_count),
        h("span", {}, "tags"), h("span", {}, inc.tags.map((t) => h("span", { class: "chip" }, t))))),
    h("div", { class: "card", id: "rule" }, h("h2", {}, "Rule"),
      rule ? [h("div", { class: "kv" },
        h("span", {}, "id"), h("span", { class: "mono" }, rule.id),
        h("span", {}, "name"), h("span", {}, rule.title),
        h("span", {}, "version (SHA-256)"), h("span", { class: "mono" }, rule.sha256),
        h("span", {}, "file"), h("span", { class: "mono" }, rule.file)),
        rule.description ? h("p", {}, rule.description) : null,
        rule.query ? [h("div", { class: "muted" }, "SQL"), h("pre", { id: "rule-sql" }, rule.query)] : null,
        rule.sigma ? [h("div", { class: "muted" }, "Sigma source"), h("pre", {}, typeof rule.sigma === "string" ? rule.sigma : JSON.stringify(rule.sigma, null, 2))] : null]
        : h("div", { class: "kv" }, h("span", {}, "id"), h("span", { class: "mono" }, inc.rule_id), h("span", {}, "version (SHA-256)"), h("span", { class: "mono" }, inc.rule_sha256))),
    anomalyCard(inc),
    h("div", { class: "card", id: "evidence" }, h("h2", {}, `Evidence (${inc.evidence.length} of ${inc.match_count} matches)`),
      inc.evidence.map((row) => evidenceBlock(row, res))),
    h("div", { class: "card", id: "timeline" }, h("h2", {}, "Session timeline"), h("p", { class: "muted" }, "Loading…")));
  const side = h("div", {},
    actionsCard(inc),
    clocksCard(inc),
    h("div", { class: "card", id: "ledger" }, h("h2", {}, "Ledger"), h("p", { class: "muted" }, "Reading the ledger…")),
    h("div", { class: "card", id: "responses" }, h("h2", {}, "Responses"), h("p", { class: "muted" }, "…")),
    historyCard(inc));
  view.replaceChildren(h("p", {}, h("a", { href: "#/queue" }, "← queue")), h("div", { class: "grid" }, main, side));
  state.shownSignature = signature(inc, inc.history.length);
  loadTimeline(inc);
  loadLedger(inc);
}

// What an incident page shows that a change can alter (a change elsewhere redraws nothing).
function signature(inc, actions) {
  return [inc.status, inc.level, inc.assignee || "", actions, inc.match_count].join("|");
}

async function refreshIncident() {
  if (currentView === "incident" && currentIncident) {
    const y = window.scrollY;
    await renderIncident(currentIncident);
    window.scrollTo(0, y);
  }
}

function anomalyCard(inc) {
  const row = inc.evidence.find((e) => Array.isArray(e.contributions));
  if (!row) return null;
  return h("div", { class: "card", id: "anomaly" }, h("h2", {}, "Why the anomaly model fired"),
    contributionChart(row.contributions),
    h("ul", {}, (row.explanation || []).map((x) => h("li", {}, x))));
}

function clocksCard(inc) {
  const clocks = inc.notification || [];
  if (!clocks.length) return null;
  return h("div", { class: "card", id: "clocks" }, h("h2", {}, "Regulatory deadlines"),
    h("table", {}, h("tr", {}, h("th", {}, "regime"), h("th", {}, "stage"), h("th", {}, "deadline"), h("th", {}, "state")),
      clocks.map((c) => h("tr", {}, h("td", {}, c.regime_name || c.regime), h("td", {}, c.name || c.stage),
        h("td", { class: "mono" }, c.deadline ? fmtTime(c.deadline) : "not started"),
        h("td", { class: /overdue|late/.test(c.state) ? "bad" : c.submitted_at ? "ok" : "" }, c.state + (c.submitted_at ? " " + fmtTime(c.submitted_at) : ""))))));
}

function historyCard(inc) {
  return h("div", { class: "card", id: "history" }, h("h2", {}, "Lifecycle"),
    inc.history.length ? h("table", {}, inc.history.map((a) => h("tr", { dataset: { action: a.action } },
      h("td", { class: "mono" }, fmtTime(a.at)), h("td", {}, h("b", {}, a.action)),
      h("td", {}, `${a.actor} (${a.role})`, a.assignee ? " → " + a.assignee : "", a.disposition ? " · " + a.disposition : "",
        a.suppress_until ? " · until " + fmtTime(a.suppress_until) : "", a.note ? h("div", { class: "muted" }, a.note) : null),
      h("td", { class: "mono", title: "ledger record" }, a.ledger_index !== undefined && a.ledger_index !== null ? "#" + a.ledger_index : ""))))
      : h("p", { class: "muted" }, "No analyst action yet."));
}

async function act(inc, kind, body) {
  try {
    const r = await api(`/api/v1/incidents/${encodeURIComponent(inc.incident_id)}/${kind}`, {
      method: "POST", body: JSON.stringify(body || {}), headers: { "Idempotency-Key": crypto.randomUUID() },
    });
    toast(`${kind}: ledgered as record #${r.action.ledger_index}`);
    const s = state.incidents.get(inc.incident_id);
    if (s) { s.status = r.incident.status; s.level = r.incident.level; s.assignee = r.incident.assignee; }
    await refreshIncident();
  } catch (e) {
    toast(`${kind} refused: ${e.message}`, true);
  }
}

function actionsCard(inc) {
  if (!can("act")) {
    return h("div", { class: "card", id: "actions-none" }, h("h2", {}, "Actions"), h("p", { class: "muted" }, `Your role (${state.session.role}) can read but not act on incidents.`));
  }
  const resolved = inc.status === "resolved";
  const note = h("textarea", { id: "act-note", rows: 2, placeholder: "note / reason (ledgered with the action)" });
  const assignee = h("input", { id: "act-assignee", placeholder: "assignee", value: state.session.sub });
  const disposition = h("select", { id: "act-disposition" }, h("option", { value: "true_positive" }, "true positive"), h("option", { value: "false_positive" }, "false positive"), h("option", { value: "benign" }, "benign"));
  const hours = h("input", { id: "act-hours", type: "number", min: 1, max: 720, value: 24 });
  const n = () => (note.value.trim() ? note.value.trim() : undefined);
  return h("div", { class: "card actions", id: "actions" }, h("h2", {}, "Actions"), note,
    h("div", { class: "row" },
      h("button", { id: "act-ack", disabled: resolved || inc.status === "acknowledged", onclick: () => act(inc, "ack", { note: n() }) }, "Acknowledge"),
      h("button", { id: "act-comment", onclick: () => { if (!n()) return toast("write the comment in the note field", true); act(inc, "comment", { note: n() }); } }, "Comment")),
    h("div", { class: "row" }, assignee, h("button", { id: "act-assign", disabled: resolved, onclick: () => act(inc, "assign", { assignee: assignee.value, note: n() }) }, "Assign")),
    can("escalate") ? h("div", { class: "row" },
      h("button", { id: "act-escalate", disabled: resolved || inc.level !== 2, onclick: () => act(inc, "escalate", { note: n() }) }, "Escalate to Level 3"),
      h("button", { id: "act-deescalate", disabled: resolved || inc.level === 1, onclick: () => act(inc, "deescalate", { note: n() }) }, "De-escalate")) : null,
    h("div", { class: "row" }, disposition, h("button", { id: "act-resolve", class: "primary", disabled: resolved, onclick: () => {
      if (!n()) return toast("a resolution needs a reason in the note field", true);
      act(inc, "resolve", { disposition: disposition.value, note: n() });
    } }, "Resolve")),
    h("div", { class: "row" }, h("label", {}, "suppress similar (hours)", hours), h("button", { id: "act-suppress", disabled: resolved, onclick: () => act(inc, "suppress", { hours: Number(hours.value), note: n() }) }, "Suppress similar")));
}

async function loadTimeline(inc) {
  const box = document.getElementById("timeline");
  if (!box) return;
  if (!can("hunt")) {
    box.replaceChildren(h("h2", {}, "Session timeline"), h("p", { class: "muted" }, "Needs a hunting role (analyst, responder, admin)."));
    return;
  }
  const key = inc.session_id ? ["session_id", inc.session_id] : inc.entity && inc.entity.principal ? ["principal", inc.entity.principal] : null;
  if (!key) {
    box.replaceChildren(h("h2", {}, "Session timeline"), h("p", { class: "muted" }, "No session or principal on this incident."));
    return;
  }
  const lit = "'" + String(key[1]).replace(/'/g, "''") + "'";
  const sql = `SELECT ts, method, tool_name, principal, event_id FROM events WHERE ${key[0]} = ${lit} ORDER BY ts LIMIT 300`;
  try {
    const r = await api("/api/v1/query", { method: "POST", body: JSON.stringify({ sql }) });
    const ids = new Set(inc.event_ids);
    box.replaceChildren(h("h2", {}, `Timeline of ${key[0]} ${key[1]} (${r.row_count}${r.truncated ? "+" : ""} events; incident events highlighted)`),
      h("div", { class: "results" }, h("table", {}, h("tr", {}, h("th", {}, "time"), h("th", {}, "method"), h("th", {}, "tool"), h("th", {}, "principal"), h("th", {}, "event")),
        r.rows.map((x) => h("tr", { class: ids.has(x.event_id) ? "hit" : "" }, h("td", { class: "mono" }, fmtTime(x.ts)), h("td", {}, x.method), h("td", {}, x.tool_name || ""), h("td", {}, x.principal || ""), h("td", { class: "mono" }, x.event_id))))));
  } catch (e) {
    box.replaceChildren(h("h2", {}, "Session timeline"), h("p", { class: "err" }, e.message));
  }
}

async function loadLedger(inc) {
  const box = document.getElementById("ledger");
  const rbox = document.getElementById("responses");
  try {
    const l = await api(`/api/v1/incidents/${encodeURIComponent(inc.incident_id)}/ledger`);
    const p = l.inclusion;
    box.replaceChildren(h("h2", {}, "Ledger"),
      h("div", { class: "kv" },
        h("span", {}, "incident records"), h("span", { class: "mono", id: "ledger-incident-records" }, l.incident_records.map((i) => "#" + i).join(" ")),
        h("span", {}, "event records"), h("span", { class: "mono" }, l.event_records.length ? l.event_records.slice(0, 20).map((i) => "#" + i).join(" ") + (l.event_records.length > 20 ? ` … (${l.event_records.length})` : "") : "—"),
        h("span", {}, "action records"), h("span", { class: "mono" }, l.action_records.map((i) => "#" + i).join(" ") || "—")),
      p ? h("div", { id: "inclusion" },
        p.verified ? h("p", { class: "ok", id: "proof-ok" }, `✓ record #${p.index} is in the signed tree of ${p.tree_size} records (key epoch ${p.key_epoch}): its ${p.path.length}-hash audit path recomputes the checkpoint root.`)
          : h("p", { class: p.pending ? "muted" : "bad", id: "proof-bad" }, p.pending ? `record #${p.index}: ${p.pending}` : `✗ the inclusion proof of record #${p.index} does not verify`),
        p.root ? h("div", { class: "mono muted" }, "root " + p.root) : null) : null);
    rbox.replaceChildren(h("h2", {}, "Responses"), l.responses.length ? h("table", {}, l.responses.map((r) => h("tr", {},
      h("td", { class: "mono" }, "#" + r.index), h("td", {}, h("b", {}, r.response.action || "")), h("td", { class: "mono" }, JSON.stringify(r.response.target || {})))))
      : h("p", { class: "muted" }, "No automated response."));
  } catch (e) {
    box.replaceChildren(h("h2", {}, "Ledger"), h("p", { class: "err" }, e.message));
    rbox.replaceChildren(h("h2", {}, "Responses"), h("p", { class: "err" }, e.message));
  }
}

// ---------- hunting ----------

const hunt = { rows: [], columns: [], page: 0, pageSize: 100 };

function savedQueries() {
  try { return JSON.parse(localStorage.getItem(SAVED_KEY) || "[]"); } catch (_) { return []; }
}

async function renderHunt() {
  const view = document.getElementById("view");
  if (!can("hunt")) {
    view.replaceChildren(h("div", { class: "card" }, `Hunting needs the analyst, responder or admin role; yours is ${state.session.role}.`));
    return;
  }
  const editor = h("textarea", { id: "sql", rows: 7, spellcheck: "false", class: "mono" },
    hunt.sql || "SELECT method, tool_name, count(*) AS n\nFROM events\nGROUP BY method, tool_name\nORDER BY n DESC");
  editor.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runHunt(); } });
  const tables = h("div", { class: "card tables", id: "tables" }, h("h2", {}, "Tables"), h("p", { class: "muted" }, "…"));
  const saved = h("div", { class: "card", id: "saved" });
  view.replaceChildren(h("div", { class: "hunt" },
    h("div", {}, tables, saved),
    h("div", {},
      h("div", { class: "card" }, editor,
        h("div", { class: "row" },
          h("button", { class: "primary", id: "run", onclick: runHunt }, "Run (Ctrl+Enter)"),
          h("label", {}, "max rows", h("input", { id: "max-rows", type: "number", value: 10000, min: 1 })),
          h("button", { id: "save", onclick: () => {
            const name = prompt("Name of this query");
            if (!name) return;
            const list = savedQueries().filter((q) => q.name !== name);
            list.push({ name, sql: editor.value });
            localStorage.setItem(SAVED_KEY, JSON.stringify(list));
            paintSaved();
          } }, "Save"),
          h("button", { id: "dl-csv", onclick: () => download("hunt.csv", toCsv(), "text/csv") }, "CSV"),
          h("button", { id: "dl-ndjson", onclick: () => download("hunt.ndjson", hunt.rows.map((r) => JSON.stringify(r)).join("\n") + "\n", "application/x-ndjson") }, "NDJSON"),
          h("span", { class: "muted", id: "hunt-status" }))),
      h("div", { class: "card", id: "histogram" }),
      h("div", { class: "card" }, h("div", { class: "results", id: "results" }), h("div", { class: "row", id: "pager" })))));
  paintSaved();
  const box = [h("h2", {}, "Tables")];
  for (const t of ["events", "tool_defs", "incidents"]) {
    try {
      const r = await api("/api/v1/query", { method: "POST", body: JSON.stringify({ sql: `SELECT * FROM ${t} LIMIT 0` }) });
      box.push(h("details", { open: t === "events" }, h("summary", { class: "mono" }, t),
        h("ul", {}, r.columns.map((c) => h("li", { title: "insert", onclick: () => insertAtCursor(editor, typeof c === "string" ? c : c.name) }, typeof c === "string" ? c : `${c.name} ${c.type || ""}`)))));
    } catch (e) {
      box.push(h("div", { class: "muted" }, `${t}: ${e.message}`));
    }
  }
  tables.replaceChildren(...box);
}

function insertAtCursor(el, text) {
  const [a, b] = [el.selectionStart, el.selectionEnd];
  el.value = el.value.slice(0, a) + text + el.value.slice(b);
  el.focus();
  el.selectionStart = el.selectionEnd = a + text.length;
}

function paintSaved() {
  const box = document.getElementById("saved");
  const list = savedQueries();
  box.replaceChildren(h("h2", {}, "Saved queries"), list.length ? h("ul", {}, list.map((q) => h("li", {},
    h("a", { href: "#/hunt", onclick: (e) => { e.preventDefault(); document.getElementById("sql").value = q.sql; } }, q.name), " ",
    h("button", { onclick: () => { localStorage.setItem(SAVED_KEY, JSON.stringify(savedQueries().filter((x) => x.name !== q.name))); paintSaved(); } }, "×"))))
    : h("p", { class: "muted" }, "None yet (kept in this browser)."));
}

function colName(c) { return typeof c === "string" ? c : c.name; }

async function runHunt() {
  const sql = document.getElementById("sql").value;
  hunt.sql = sql;
  const status = document.getElementById("hunt-status");
  status.textContent = "running…";
  try {
    const max = Number(document.getElementById("max-rows").value) || undefined;
    const r = await api("/api/v1/query", { method: "POST", body: JSON.stringify({ sql, max_rows: max }) });
    hunt.columns = r.columns.map(colName);
    hunt.rows = r.rows;
    hunt.page = 0;
    status.textContent = `${r.row_count} rows${r.truncated ? " (truncated)" : ""} in ${r.elapsed_ms} ms`;
    paintResults();
    paintHistogram();
  } catch (e) {
    status.textContent = "";
    document.getElementById("results").replaceChildren(h("p", { class: "err", id: "hunt-error" }, e.message));
    document.getElementById("pager").replaceChildren();
  }
}

function cell(v) {
  if (v === null || v === undefined) return "";
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

function paintResults() {
  const { rows, columns, page, pageSize } = hunt;
  const slice = rows.slice(page * pageSize, (page + 1) * pageSize);
  document.getElementById("results").replaceChildren(h("table", { id: "result-table" },
    h("tr", {}, columns.map((c) => h("th", {}, c))),
    slice.map((r) => h("tr", {}, columns.map((c) => h("td", { title: cell(r[c]) }, cell(r[c])))))));
  const pages = Math.max(1, Math.ceil(rows.length / pageSize));
  document.getElementById("pager").replaceChildren(
    h("button", { disabled: page === 0, onclick: () => { hunt.page--; paintResults(); } }, "‹ prev"),
    h("span", { id: "page-label" }, `page ${page + 1} of ${pages}`),
    h("button", { id: "next-page", disabled: page + 1 >= pages, onclick: () => { hunt.page++; paintResults(); } }, "next ›"));
}

function toCsv() {
  const esc = (v) => { const s = cell(v); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
  return [hunt.columns.join(","), ...hunt.rows.map((r) => hunt.columns.map((c) => esc(r[c])).join(","))].join("\n") + "\n";
}

function paintHistogram() {
  const box = document.getElementById("histogram");
  const col = hunt.columns.find((c) => ["ts", "detected_at", "first_ts", "time", "minute", "hour"].includes(c));
  const times = col ? hunt.rows.map((r) => Date.parse(r[col])).filter((t) => !isNaN(t)) : [];
  if (times.length < 2) { box.replaceChildren(h("span", { class: "muted" }, "Time histogram: select a ts column to see one.")); return; }
  const lo = Math.min(...times), hi = Math.max(...times), bins = 40, width = (hi - lo) / bins || 1;
  const counts = new Array(bins).fill(0);
  for (const t of times) counts[Math.min(bins - 1, Math.floor((t - lo) / width))]++;
  const max = Math.max(...counts), W = 720, H = 120, bw = W / bins;
  const s = svg("svg", { width: W, height: H + 20, id: "hist-chart", role: "img", "aria-label": "rows over time" });
  counts.forEach((c, i) => s.append(svg("rect", { x: i * bw + 1, y: H - (c / max) * H, width: bw - 2, height: (c / max) * H, class: "bar" }, svg("title", {}, `${c} rows from ${fmtTime(new Date(lo + i * width))}`))));
  s.append(svg("text", { x: 0, y: H + 14 }, fmtTime(new Date(lo))), svg("text", { x: W - 150, y: H + 14 }, fmtTime(new Date(hi))));
  box.replaceChildren(h("div", { class: "muted" }, `rows over ${col}`), s);
}

// ---------- overview ----------

let overviewTimer = null;

async function renderOverview() {
  const view = document.getElementById("view");
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  await paintOverview();
  clearInterval(overviewTimer);
  overviewTimer = setInterval(() => { if (currentView === "overview") paintOverview(); else clearInterval(overviewTimer); }, 5000);
}

async function paintOverview() {
  let o;
  try { o = await api("/api/v1/overview"); } catch (e) { document.getElementById("view").replaceChildren(h("div", { class: "card err" }, e.message)); return; }
  const p = o.pipeline;
  const now = Date.parse(p.at);
  if (p.events_total !== null) state.samples.push({ t: now, events: p.events_total });
  state.samples = state.samples.slice(-60);
  const s = state.samples;
  const rate = s.length >= 2 && s[s.length - 1].t > s[s.length - 2].t
    ? (s[s.length - 1].events - s[s.length - 2].events) / ((s[s.length - 1].t - s[s.length - 2].t) / 1000) : null;
  const num = (v, d) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));
  const by = o.incidents.by_level;
  const ledger = o.ledger;
  const verifyOut = h("span", { id: "verify-result" });
  const from = h("input", { id: "export-from", type: "number", min: 0, placeholder: "from", value: 0 });
  const to = h("input", { id: "export-to", type: "number", min: 0, placeholder: "to" });
  document.getElementById("view").replaceChildren(
    h("div", { class: "counts" },
      h("div", { class: "count" }, h("span", { class: "muted" }, "events/s"), h("b", { id: "ov-rate" }, rate === null ? "—" : num(rate, 0))),
      h("div", { class: "count" }, h("span", { class: "muted" }, "events processed"), h("b", { id: "ov-events" }, num(p.events_total, 0))),
      h("div", { class: "count" }, h("span", { class: "muted" }, "event-time lag (s)"), h("b", {}, num(p.event_lag_seconds, 1))),
      h("div", { class: "count" }, h("span", { class: "muted" }, "p99 batch (ms)"), h("b", {}, p.batch_seconds_p99 === null ? "—" : num(p.batch_seconds_p99 * 1000, 0))),
      [3, 2, 1].map((l) => h("div", { class: "count" }, levelBadge(l), h("b", { id: "ov-l" + l }, by[l] || 0)))),
    h("div", { class: "grid" },
      h("div", {},
        h("div", { class: "card" }, h("h2", {}, "Incidents per hour by level (last 48 h)"), hourlyChart(o.incidents.hourly)),
        h("div", { class: "card" }, h("h2", {}, "Events per second (this page's readings)"), sparkline(s)),
        h("div", { class: "card" }, h("h2", {}, "Rules"), h("table", { id: "rules-table" },
          h("tr", {}, ["rule", "hits", "unresolved", "true pos.", "false pos.", "benign", "FP rate"].map((c) => h("th", {}, c))),
          o.rules.map((r) => h("tr", {}, h("td", { class: "mono", title: r.title }, r.rule_id), h("td", {}, r.hits), h("td", {}, r.unresolved),
            h("td", {}, r.true_positive), h("td", {}, r.false_positive), h("td", {}, r.benign),
            h("td", {}, r.false_positive_rate === null ? "—" : Math.round(r.false_positive_rate * 100) + " %")))))),
      h("div", {},
        h("div", { class: "card", id: "ledger-status" }, h("h2", {}, "Ledger"),
          ledger && !ledger.error ? h("div", { class: "kv" },
            h("span", {}, "records signed"), h("span", { id: "ov-tree-size" }, ledger.tree_size),
            h("span", {}, "last checkpoint"), h("span", {}, fmtTime(new Date(ledger.timestamp_micros / 1000))),
            h("span", {}, "signer key epoch"), h("span", {}, ledger.key_epoch),
            h("span", {}, "root"), h("span", { class: "mono" }, ledger.root.slice(0, 32) + "…"))
            : h("p", { class: "muted" }, ledger && ledger.error ? ledger.error : "No signed checkpoint yet."),
          can("audit") ? [h("div", { class: "row" }, h("button", { id: "verify", onclick: async () => {
            verifyOut.textContent = "verifying…";
            try {
              const v = await api("/api/v1/ledger/verify");
              verifyOut.className = v.ok ? "ok" : "bad";
              verifyOut.textContent = v.ok ? `✓ ${v.report.records} records, ${v.report.checkpoints} checkpoints verified` : "✗ " + JSON.stringify(v.report.first_failure);
            } catch (e) { verifyOut.className = "bad"; verifyOut.textContent = e.message; }
          } }, "Verify the whole ledger"), verifyOut),
          h("div", { class: "row" }, from, to, h("button", { id: "export", onclick: async () => {
            const q = new URLSearchParams();
            if (from.value !== "") q.set("from", from.value);
            if (to.value !== "") q.set("to", to.value);
            try {
              const b = await api("/api/v1/ledger/export?" + q.toString());
              download(`dunes-export-${b.summary.from}-${b.summary.to}.json`, JSON.stringify(b), "application/json");
            } catch (e) { toast("export refused: " + e.message, true); }
          } }, "Export range as bundle"))] : h("p", { class: "muted" }, "Verification and export need the auditor or admin role.")))));
}

function hourlyChart(rows) {
  if (!rows.length) return h("p", { class: "muted" }, "No incident in the last 48 hours.");
  const W = 640, H = 140, bw = Math.max(4, Math.min(24, W / rows.length));
  const max = Math.max(...rows.map((r) => r.level1 + r.level2 + r.level3), 1);
  const s = svg("svg", { width: Math.max(W, rows.length * bw), height: H + 20, id: "hourly-chart", role: "img", "aria-label": "incidents per hour" });
  rows.forEach((r, i) => {
    let y = H;
    for (const l of [1, 2, 3]) {
      const v = r["level" + l];
      const hh = (v / max) * H;
      y -= hh;
      if (v) s.append(svg("rect", { x: i * bw + 1, y, width: bw - 2, height: hh, class: "bar-l" + l }, svg("title", {}, `${fmtTime(new Date(r.hour * 1000))}: level ${l} × ${v}`)));
    }
  });
  s.append(svg("text", { x: 0, y: H + 14 }, fmtTime(new Date(rows[0].hour * 1000)).slice(0, 16)));
  return s;
}

function sparkline(samples) {
  if (samples.length < 3) return h("p", { class: "muted" }, "Collecting readings (every 5 s)…");
  const rates = [];
  for (let i = 1; i < samples.length; i++) rates.push((samples[i].events - samples[i - 1].events) / Math.max(0.001, (samples[i].t - samples[i - 1].t) / 1000));
  const W = 640, H = 80, max = Math.max(...rates, 1);
  const pts = rates.map((r, i) => `${(i / Math.max(1, rates.length - 1)) * W},${H - (r / max) * H}`).join(" ");
  return svg("svg", { width: W, height: H + 16 }, svg("polyline", { points: pts, fill: "none", stroke: "#1f2937", "stroke-width": 2 }), svg("text", { x: 0, y: H + 14 }, `max ${max.toFixed(0)}/s`));
}

// ---------- router ----------

async function route() {
  const hash = location.hash || "#/queue";
  if (!state.token) { renderLogin(); return; }
  if (hash.startsWith("#/login")) { location.hash = "#/queue"; return; }
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", hash.startsWith(a.getAttribute("href")));
  try {
    if (hash.startsWith("#/incident/")) {
      currentView = "incident";
      await renderIncident(decodeURIComponent(hash.slice("#/incident/".length)));
    } else if (hash.startsWith("#/hunt")) {
      currentView = "hunt";
      await renderHunt();
    } else if (hash.startsWith("#/overview")) {
      currentView = "overview";
      await renderOverview();
    } else {
      currentView = "queue";
      await renderQueue();
    }
    if (!state.streamAbort) startStream();
  } catch (e) {
    if (e.status !== 401) document.getElementById("view").replaceChildren(h("div", { class: "card err" }, e.message));
  }
}

async function boot() {
  document.getElementById("logout").addEventListener("click", () => signOut("Signed out."));
  document.addEventListener("keydown", queueKeys);
  window.addEventListener("hashchange", route);
  // `dunes token issue --login` prints a link with the token in the fragment (never sent to
  // a server, dropped from the address bar and history at once).
  const m = location.hash.match(/^#token=([A-Za-z0-9._~-]+)/);
  let token = sessionStorage.getItem(TOKEN_KEY);
  if (m) {
    token = m[1];
    history.replaceState(null, "", location.pathname + "#/queue");
  }
  if (token) {
    try {
      await signIn(token);
    } catch (e) {
      state.token = null;
      if (e.status !== 401) renderLogin("Sign-in failed: " + e.message);
      return;
    }
    await route();
  } else {
    renderLogin();
  }
}

boot();
