// Tributary console: search with a histogram, live tail, overview. Plain DOM:
// every value from the server goes into the page with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const SEVERITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];
const COLORS = {
  emerg: "#8e1515", alert: "#a51d1d", crit: "#b52626", err: "#c62d2d", warning: "#d98a12",
  notice: "#5a93dd", info: "#3c7fd6", debug: "#9aa3b5", none: "#7d8fb0",
};
const MAX_TAIL_LINES = 1000;
let token = sessionStorage.getItem("tributary-token") || "";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function status(text) {
  $("status").textContent = text || "";
}

class NeedToken extends Error {}

async function api(path, signal) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, signal, cache: "no-store" });
  if (r.status === 401) {
    $("login").hidden = false;
    throw new NeedToken("this collector wants a token");
  }
  const body = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
  if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
  return body;
}

function report(e) {
  if (e && e.name === "AbortError") return;
  status(e instanceof NeedToken ? "a token is needed" : String(e && e.message ? e.message : e));
}

// ---- routing: the hash holds the page and its query, so a URL can be shared ----

function route() {
  const hash = location.hash.replace(/^#/, "");
  const [page, qs] = hash.split("?");
  return { page: ["search", "tail", "overview"].includes(page) ? page : "search", params: new URLSearchParams(qs || "") };
}

function setHash(page, params) {
  const qs = params.toString();
  history.replaceState(null, "", "#" + page + (qs ? "?" + qs : ""));
}

function showPage(page) {
  for (const p of ["search", "tail", "overview"]) {
    $("page-" + p).hidden = p !== page;
    const nav = $("nav-" + p);
    if (p === page) nav.setAttribute("aria-current", "page");
    else nav.removeAttribute("aria-current");
  }
  if (page !== "tail") stopTail();
  if (page === "overview") startOverview();
  else stopOverview();
}

// ---- topics ----

let topics = [];

async function loadTopics() {
  topics = await api("/v1/topics");
  for (const id of ["s-topic", "t-topic"]) {
    const sel = $(id);
    const keep = sel.value;
    sel.replaceChildren();
    for (const t of topics) sel.append(el("option", null, t.name));
    if (keep) sel.value = keep;
  }
}

// ---- the filters shared by search and tail ----

function filterParams(prefix) {
  const p = new URLSearchParams();
  p.set("topic", $(prefix + "-topic").value);
  for (const k of ["host", "source", "severity"]) {
    const v = $(prefix + "-" + k).value.trim();
    if (v) p.set(k, v);
  }
  const text = $(prefix + "-text").value;
  if (text) p.set(prefix === "s" && $("s-regex").checked ? "regex" : "contains", text);
  // Field filters: `key=value` pairs separated by spaces (dotted keys for nesting).
  for (const pair of $(prefix + "-fields").value.split(/\s+/)) {
    const i = pair.indexOf("=");
    if (i > 0) p.set("field." + pair.slice(0, i), pair.slice(i + 1));
  }
  return p;
}

function fillFilters(prefix, params) {
  if (params.get("topic")) $(prefix + "-topic").value = params.get("topic");
  for (const k of ["host", "source", "severity"]) $(prefix + "-" + k).value = params.get(k) || "";
  $(prefix + "-text").value = params.get("regex") || params.get("contains") || "";
  $(prefix + "-fields").value = [...params.entries()]
    .filter(([k]) => k.startsWith("field."))
    .map(([k, v]) => k.slice(6) + "=" + v)
    .join(" ");
  if (prefix === "s") $("s-regex").checked = params.has("regex");
}

// ---- search ----

function toLocalInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

function fromLocalInput(v) {
  const t = new Date(v).getTime();
  return Number.isNaN(t) ? null : t;
}

/// Set a date input to `ms`, keeping the milliseconds the input cannot show.
function setExact(input, ms) {
  input.value = toLocalInput(ms);
  input.dataset.ms = String(ms);
}

/// A date input's time: the exact one it was set to, unless edited since.
function exactInput(input) {
  const ms = Number(input.dataset.ms);
  if (input.dataset.ms && input.value === toLocalInput(ms)) return ms;
  return fromLocalInput(input.value);
}

function syncRange() {
  const abs = $("s-range").value === "abs";
  for (const e of document.querySelectorAll(".abs")) e.classList.toggle("shown", abs);
}

/// The search's API parameters: filters and the time range.
function searchParams() {
  const p = filterParams("s");
  const range = $("s-range").value;
  if (range === "abs") {
    const from = exactInput($("s-from"));
    const to = exactInput($("s-to"));
    if (from !== null) p.set("since", new Date(from).toISOString());
    if (to !== null) p.set("until", new Date(to).toISOString());
  } else {
    p.set("since", range);
  }
  return p;
}

let searchAbort = null;
// Completed searches, on the page as `data-searched` (tests wait for it to move).
let searchCount = 0;
let shown = new Set();
let oldest = null;

async function runSearch(e) {
  if (e) e.preventDefault();
  const p = searchParams();
  const hashParams = new URLSearchParams(p);
  hashParams.set("range", $("s-range").value);
  setHash("search", hashParams);
  if (searchAbort) searchAbort.abort();
  searchAbort = new AbortController();
  const signal = searchAbort.signal;
  status("");
  $("s-summary").textContent = "searching…";
  try {
    const [h, q] = await Promise.all([
      api("/v1/histogram?" + p + "&buckets=60", signal),
      api("/v1/query?" + p + "&order=desc&limit=100", signal),
    ]);
    drawHistogram(h);
    $("results").replaceChildren();
    shown = new Set();
    oldest = null;
    addResults(q.records);
    const more = q.records.length >= 100;
    $("more").hidden = !more;
    $("s-summary").textContent =
      h.total + " records from " + h.since + " to " + h.until +
      (h.complete ? "" : " (histogram incomplete: the scan hit its time limit)") +
      "; showing the newest " + shown.size + ".";
    document.body.dataset.searched = String(++searchCount);
  } catch (err) {
    $("s-summary").textContent = "";
    report(err);
  }
}

async function loadMore() {
  if (oldest === null) return;
  const p = searchParams();
  p.set("until", new Date(oldest).toISOString());
  try {
    const q = await api("/v1/query?" + p + "&order=desc&limit=100");
    const before = shown.size;
    addResults(q.records);
    $("more").hidden = shown.size === before || q.records.length < 100;
  } catch (err) {
    report(err);
  }
}

function severityOf(r) {
  const s = r.fields && r.fields.severity;
  return typeof s === "string" ? s : null;
}

function basename(s) {
  const i = s.lastIndexOf("/");
  return i >= 0 && i < s.length - 1 ? s.slice(i + 1) : s;
}

/// One record as a line: time, host, source, severity, message.
function recordLine(r) {
  const li = el("li");
  li.tabIndex = 0;
  li.append(el("span", "ts", r.timestamp), el("span", "host", r.host), el("span", "src", basename(r.source)));
  const sev = severityOf(r);
  if (sev) li.append(el("span", "sev sev-" + (SEVERITIES.includes(sev) ? sev : "none"), sev));
  li.append(el("span", "msg", r.message + (r.partial ? " […]" : "")));
  return li;
}

function addResults(records) {
  const ol = $("results");
  for (const r of records) {
    const key = r.partition + ":" + r.offset;
    if (shown.has(key)) continue;
    shown.add(key);
    const ts = Date.parse(r.timestamp);
    if (oldest === null || ts < oldest) oldest = ts;
    const li = recordLine(r);
    const toggle = () => toggleDetails(li, r);
    li.addEventListener("click", (ev) => {
      if (ev.target.closest("dl, .context, button")) return;
      toggle();
    });
    li.addEventListener("keydown", (ev) => {
      if (ev.target === li && (ev.key === "Enter" || ev.key === " ")) {
        ev.preventDefault();
        toggle();
      }
    });
    ol.append(li);
  }
}

/// Expand a line to its full record, with a button for its context.
function toggleDetails(li, r) {
  const open = li.querySelector("dl");
  if (open) {
    for (const x of li.querySelectorAll("dl, .context, button")) x.remove();
    li.classList.remove("open");
    return;
  }
  li.classList.add("open");
  const dl = el("dl", "details");
  const row = (k, v) => dl.append(el("dt", null, k), el("dd", null, v));
  row("topic", r.topic);
  row("partition", r.partition);
  row("offset", r.offset);
  row("timestamp", r.timestamp);
  row("host", r.host);
  row("source", r.source);
  if (r.agent) row("agent", r.agent);
  for (const [k, v] of Object.entries(r.fields || {})) {
    row("fields." + k, typeof v === "string" ? v : JSON.stringify(v));
  }
  if (r.partial) row("partial", "true");
  if (r.truncated) row("truncated", "true");
  row("message", r.message);
  const btn = el("button", "secondary", "Context");
  btn.type = "button";
  btn.addEventListener("click", () => showContext(li, r, btn));
  li.append(dl, btn);
}

async function showContext(li, r, btn) {
  btn.disabled = true;
  try {
    const c = await api(
      "/v1/context?topic=" + encodeURIComponent(r.topic) + "&partition=" + r.partition +
      "&offset=" + r.offset + "&before=10&after=10");
    const box = el("ol", "records context");
    box.setAttribute("aria-label", "records around this one from " + r.source);
    for (const x of c.before) box.append(recordLine(x));
    const me = recordLine(c.record);
    me.classList.add("focus");
    box.append(me);
    for (const x of c.after) box.append(recordLine(x));
    li.append(box);
    btn.remove();
  } catch (err) {
    btn.disabled = false;
    report(err);
  }
}

// ---- histogram ----

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function drawHistogram(h) {
  const box = $("histogram");
  box.replaceChildren();
  const n = h.buckets.length;
  if (!n) return;
  const W = 1000;
  const H = 120;
  const max = Math.max(1, ...h.buckets.map((b) => b.count));
  const bw = W / n;
  const root = svg("svg", { viewBox: "0 0 " + W + " " + (H + 10), preserveAspectRatio: "none", role: "img" });
  const order = [...SEVERITIES, "none"];
  h.buckets.forEach((b, i) => {
    const g = svg("g", { "data-count": b.count, "data-start": b.start_ms, class: "bar" });
    const title = document.createElementNS(SVG, "title");
    title.textContent = b.start + ": " + b.count + " records";
    g.append(title);
    // A full-height transparent target, so empty buckets can be clicked too.
    g.append(svg("rect", { x: i * bw, y: 0, width: bw, height: H, fill: "transparent" }));
    let y = H;
    for (const s of order) {
      const c = (b.by_severity && b.by_severity[s]) || 0;
      if (!c) continue;
      const hgt = (c / max) * (H - 4);
      y -= hgt;
      g.append(svg("rect", { x: i * bw + 0.5, y, width: Math.max(bw - 1, 0.5), height: hgt, fill: COLORS[s] }));
    }
    g.addEventListener("click", () => narrow(b.start_ms, b.start_ms + h.interval_ms - 1));
    root.append(g);
  });
  // Drag across buckets to narrow to them.
  const sel = svg("rect", { class: "sel", x: 0, y: 0, width: 0, height: H, visibility: "hidden" });
  root.append(sel);
  let x0 = null;
  const bucketAt = (ev) => {
    const r = root.getBoundingClientRect();
    return Math.min(n - 1, Math.max(0, Math.floor(((ev.clientX - r.left) / r.width) * n)));
  };
  root.addEventListener("mousedown", (ev) => { x0 = bucketAt(ev); });
  root.addEventListener("mousemove", (ev) => {
    if (x0 === null) return;
    const x1 = bucketAt(ev);
    const a = Math.min(x0, x1);
    sel.setAttribute("x", a * bw);
    sel.setAttribute("width", (Math.abs(x1 - x0) + 1) * bw);
    sel.setAttribute("visibility", "visible");
  });
  root.addEventListener("mouseup", (ev) => {
    if (x0 === null) return;
    const x1 = bucketAt(ev);
    const a = Math.min(x0, x1);
    const b = Math.max(x0, x1);
    x0 = null;
    sel.setAttribute("visibility", "hidden");
    if (a !== b) {
      ev.stopPropagation();
      narrow(h.buckets[a].start_ms, h.buckets[b].start_ms + h.interval_ms - 1);
    }
  }, true);
  box.append(root);
}

function narrow(from, to) {
  $("s-range").value = "abs";
  setExact($("s-from"), from);
  setExact($("s-to"), to);
  syncRange();
  runSearch();
}

// ---- live tail ----

let tailAbort = null;
let tailCursor = null;
let paused = false;

function stopTail() {
  if (tailAbort) tailAbort.abort();
  tailAbort = null;
}

async function startTail(e) {
  if (e) e.preventDefault();
  stopTail();
  paused = false;
  $("t-pause").textContent = "Pause";
  const p = filterParams("t");
  setHash("tail", p);
  $("tail").replaceChildren();
  tailCursor = null;
  followTail(p);
}

async function followTail(p) {
  tailAbort = new AbortController();
  const signal = tailAbort.signal;
  $("t-state").textContent = "following";
  status("");
  while (!signal.aborted) {
    try {
      const q = new URLSearchParams(p);
      q.set("wait_ms", "20000");
      q.set("limit", "500");
      if (tailCursor) q.set("cursor", tailCursor);
      const a = await api("/v1/tail?" + q, signal);
      tailCursor = a.cursor;
      const ol = $("tail");
      const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      for (const r of a.records) ol.append(recordLine(r));
      while (ol.children.length > MAX_TAIL_LINES) ol.firstChild.remove();
      if (atBottom && a.records.length) window.scrollTo(0, document.body.scrollHeight);
    } catch (err) {
      if (signal.aborted) return;
      report(err);
      if (err instanceof NeedToken) return;
      await new Promise((ok) => setTimeout(ok, 2000));
    }
  }
}

function togglePause() {
  if (paused) {
    paused = false;
    $("t-pause").textContent = "Pause";
    followTail(filterParams("t"));
  } else {
    paused = true;
    stopTail();
    $("t-pause").textContent = "Resume";
    $("t-state").textContent = "paused (new records wait; resume shows them)";
  }
}

// ---- overview ----

let overviewTimer = null;
let lastEnds = null;

function stopOverview() {
  if (overviewTimer) clearInterval(overviewTimer);
  overviewTimer = null;
}

function startOverview() {
  stopOverview();
  refreshOverview();
  overviewTimer = setInterval(refreshOverview, 5000);
}

function cells(tr, values, numeric) {
  values.forEach((v, i) => tr.append(el("td", numeric.includes(i) ? "num" : null, v)));
}

async function refreshOverview() {
  try {
    const [ts, agents, groups] = await Promise.all([api("/v1/topics"), api("/v1/agents"), api("/v1/groups")]);
    const now = Date.now();
    const body = $("o-topics").tBodies[0];
    body.replaceChildren();
    const ends = {};
    for (const t of ts) {
      for (const p of t.partitions) {
        const key = t.name + "/" + p.partition;
        ends[key] = p.end_offset;
        let rate = "";
        if (lastEnds && lastEnds.ends[key] !== undefined) {
          rate = ((p.end_offset - lastEnds.ends[key]) * 1000 / Math.max(1, now - lastEnds.at)).toFixed(1);
        }
        const tr = el("tr");
        cells(tr, [t.name, p.partition, p.end_offset - p.start_offset, p.bytes, p.start_offset, p.end_offset, rate], [1, 2, 3, 4, 5, 6]);
        body.append(tr);
      }
    }
    lastEnds = { at: now, ends };
    const ab = $("o-agents").tBodies[0];
    ab.replaceChildren();
    for (const a of agents) {
      const tr = el("tr");
      cells(tr, [a.host, a.identity || "", a.address, a.version, a.connected_since, a.last_batch || "", a.records, a.records_per_second], [6, 7]);
      ab.append(tr);
    }
    const gb = $("o-groups").tBodies[0];
    gb.replaceChildren();
    for (const g of groups) {
      for (const o of g.offsets) {
        const tr = el("tr");
        cells(tr, [g.group, o.topic, o.partition, o.offset, o.end_offset, o.lag], [2, 3, 4, 5]);
        gb.append(tr);
      }
    }
    status("");
  } catch (err) {
    report(err);
  }
}

// ---- start ----

async function start() {
  const { page, params } = route();
  // A link may bring the token (quickstart prints one): keep it for this tab and
  // take it out of the address bar.
  if (params.get("token")) {
    token = params.get("token");
    sessionStorage.setItem("tributary-token", token);
    params.delete("token");
    setHash(page, params);
  }
  showPage(page);
  try {
    await loadTopics();
  } catch (err) {
    report(err);
    return;
  }
  if (page === "search") {
    fillFilters("s", params);
    const range = params.get("range") || (params.has("until") ? "abs" : params.get("since") || "1h");
    $("s-range").value = ["15m", "1h", "24h", "7d", "abs"].includes(range) ? range : "1h";
    if (params.get("since") && $("s-range").value === "abs") setExact($("s-from"), Date.parse(params.get("since")));
    if (params.get("until")) setExact($("s-to"), Date.parse(params.get("until")));
    syncRange();
    if (topics.length) runSearch();
  } else if (page === "tail") {
    fillFilters("t", params);
    if (topics.length) startTail();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", runSearch);
  $("s-range").addEventListener("change", syncRange);
  $("more").addEventListener("click", loadMore);
  $("tail-form").addEventListener("submit", startTail);
  $("t-pause").addEventListener("click", togglePause);
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("tributary-token", token);
    $("login").hidden = true;
    start();
  });
  // A new address (a link, a nav tab, an edited URL) is a new query.
  window.addEventListener("hashchange", start);
  start();
});
