// HQ's live board: boxes, live passages, results, one car's view, a plot.
// All state comes from server-sent events; tables are rebuilt from data with
// textContent only.
"use strict";

const S = {
  hq: null,
  skew: 0, // HQ's clock minus this browser's, from hq.now_ms
  boxes: [],
  feed: [],
  filtered: null, // {car, cp, passages}: everything HQ holds for the feed's filters
  todo: {unassigned: 0, items: [], gaps: []},
  audit: [],
  results: {enabled: false, stages: [], cars: [], unassigned: {}},
  checkpoints: [],
  hist: {}, // box -> [[ms, unc_ns, clock], ...]
  seenFeed: new Set(),
  session: {logged_in: false, csrf: null, can_correct: false},
  sort: {key: "rank", asc: true},
  car: null, // the car shown in the car view
};
const HIST_MAX = 720;
const SILENT_MS = 60000; // a box whose last status is older than this is flagged
const COLOURS = ["#0b57d0", "#b3261e", "#137333", "#8a5300", "#7b1fa2", "#00838f", "#c2185b", "#5d4037"];

const $ = (id) => document.getElementById(id);
const el = CP.el;

function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, (Date.now() + S.skew - ms) / 1000);
  if (s < 120) return `${Math.round(s)} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function localTime(ms) {
  return ms === null || ms === undefined ? "" : CP.localHundredths(ms);
}

// The browser's own stream: shown only when it is down (it says nothing about the data).
function setLink(up) {
  $("link").hidden = up;
}

const HEARTBEAT_LATE_MS = 15000; // the collector writes a heartbeat every 5 s

// -- header -----------------------------------------------------------------------

function renderHq() {
  const h = S.hq;
  if (!h) return;
  if (h.db !== "ok") {
    $("hq").textContent = h.db;
    return;
  }
  // Collector up/down from its heartbeat, so a dead process shows as down even
  // when its last word was "connected".
  const beat = h.heartbeat_ms ? Date.now() + S.skew - h.heartbeat_ms : null;
  const c = $("collector");
  let text, cls;
  if (h.link === "never ran" || h.link === undefined) [text, cls] = ["collector never ran", "bad"];
  else if (h.link === "stopped") [text, cls] = ["collector stopped", "bad"];
  else if (beat === null || beat > HEARTBEAT_LATE_MS) [text, cls] = [`collector DOWN: no heartbeat for ${ago(h.heartbeat_ms).replace(" ago", "")}`, "bad"];
  else if (!h.link.startsWith("connected")) [text, cls] = [`collector up, broker ${h.link}`, "warn"];
  else [text, cls] = ["collector up", "ok"];
  c.textContent = text;
  c.className = "pill " + cls;
  $("age").textContent = h.data_ms ? `last event ${ago(h.data_ms)}` : "no event yet";
  $("hq").textContent = `${h.events} events · ${h.rejects} rejects`;
}

// -- to-do: what needs a person, the most visible thing on the board ------------------

function renderTodo() {
  const t = S.todo;
  const missing = t.gaps.reduce((n, g) => n + g.missing, 0);
  const parts = [];
  if (t.unassigned) parts.push(`${t.unassigned} passage${t.unassigned === 1 ? "" : "s"} with no car`);
  if (missing) parts.push(`${missing} event${missing === 1 ? "" : "s"} missing from ${t.gaps.length} box${t.gaps.length === 1 ? "" : "es"}`);
  $("todo").className = "todo " + (parts.length ? "has-todo" : "ok-todo");
  $("todo-count").textContent = parts.length ? `To do: ${parts.join(" · ")}` : "To do: nothing";
  $("todo-note").textContent = t.unassigned
    ? S.session.logged_in ? "click one to give it its car" : "log in to give them their cars"
    : "";
  const ul = $("todo-items");
  CP.clear(ul);
  for (const p of t.items) {
    const b = el("button", {type: "button", class: "todo-item", title: `${p.box} #${p.seq}`}, `${p.cp} ${localTime(p.ms)}`);
    b.addEventListener("click", () => fillCorrection(p));
    ul.append(el("li", {}, b));
  }
  for (const g of t.gaps) ul.append(el("li", {class: "gap", text: `${g.cp || g.box}: ${g.missing} missing (${g.box} seq ${g.gaps}), HQ asks again`}));
}

// -- audit trail ------------------------------------------------------------------------

function renderAudit() {
  const tb = $("audit").tBodies[0];
  CP.clear(tb);
  for (const a of S.audit) {
    tb.append(
      el(
        "tr",
        {title: `${a.at} UTC · ${a.source} · ${a.box} #${a.seq}`},
        el("td", {class: "num wall-only", text: a.id}),
        el("td", {class: "wide-only", text: a.by}),
        el("td", {text: a.action}),
        el("td", {text: a.control}),
        el("td", {text: a.ms ? localTime(a.ms) : ""}),
        el("td", {}, el("b", {text: a.car})),
        el("td", {class: "reason", text: a.reason}),
      ),
    );
  }
  if (!S.audit.length) tb.append(el("tr", {}, el("td", {colspan: 7, class: "muted", text: "no corrections yet"})));
}

function tick() {
  const now = new Date(Date.now() + S.skew);
  $("clock").textContent = `${CP.pad(now.getHours())}:${CP.pad(now.getMinutes())}:${CP.pad(now.getSeconds())} ${CP.timeZone()}`;
  renderHq();
  renderBoxes();
}

// -- boxes ------------------------------------------------------------------------

function renderBoxes() {
  const tb = $("boxes").tBodies[0];
  CP.clear(tb);
  let online = 0;
  for (const b of S.boxes) {
    let state = b.state;
    const age = b.seen_ms ? Date.now() + S.skew - b.seen_ms : null;
    if (state === "online" && age !== null && age > SILENT_MS) state = "silent";
    if (state === "online") online += 1;
    const clockCls = b.clock === "locked" ? "ok" : b.clock === "holdover" ? "warn" : "bad";
    tb.append(
      el(
        "tr",
        {},
        el("td", {title: `${b.cp} ${b.place || ""} (box ${b.box})`}, el("b", {text: b.cp}), el("span", {class: "muted wide-only place", text: b.place || ""})),
        el("td", {class: "state-" + state, title: `last status ${ago(b.seen_ms)}`, text: state}),
        el("td", {class: clockCls, text: b.clock ? `${b.clock} ${b.unc}` : "-"}),
        el("td", {class: "num wall-only" + (b.backlog ? " warn" : ""), text: b.backlog ?? "-"}),
        el("td", {class: b.missing ? "bad" : "", text: b.missing ? `${b.missing} [${b.gaps}]` : "0"}),
        el("td", {class: "wall-only", text: b.last_ms ? localTime(b.last_ms).slice(0, 8) : "-"}),
      ),
    );
  }
  $("box-count").textContent = `${online} of ${S.boxes.length} online`;
}

// -- plot: clock uncertainty over time, log scale ---------------------------------

function fitCanvas(c) {
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth;
  const h = Number(c.getAttribute("height"));
  if (c.width !== Math.round(w * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
    c.style.height = `${h}px`;
  }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  return {g, w, h};
}

function uncLabel(ns) {
  if (ns >= 1e9) return `${ns / 1e9} s`;
  if (ns >= 1e6) return `${ns / 1e6} ms`;
  if (ns >= 1e3) return `${ns / 1e3} µs`;
  return `${ns} ns`;
}

function renderPlot() {
  const {g, w, h} = fitCanvas($("plot"));
  const boxes = Object.keys(S.hist).sort();
  const pts = boxes.flatMap((b) => S.hist[b]);
  const legend = $("legend");
  CP.clear(legend);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#5f6368";
  if (!pts.length) {
    g.fillText("HQ has stored no clock status from any box yet.", 8, h / 2);
    return;
  }
  const L = 52, R = 8, T = 6, B = 18;
  let t0 = Math.min(...pts.map((p) => p[0]));
  let t1 = Math.max(...pts.map((p) => p[0]));
  if (t1 - t0 < 10000) t0 = t1 - 10000; // at least ten seconds wide
  const vals = pts.map((p) => Math.max(1, p[1]));
  let e0 = Math.floor(Math.log10(Math.min(...vals)));
  let e1 = Math.ceil(Math.log10(Math.max(...vals)));
  if (e1 - e0 < 2) e1 = e0 + 2;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (w - L - R);
  const y = (v) => T + (1 - (Math.log10(Math.max(1, v)) - e0) / (e1 - e0)) * (h - T - B);
  g.strokeStyle = "#e0e3e7";
  g.lineWidth = 1;
  for (let e = e0; e <= e1; e++) {
    const yy = Math.round(y(10 ** e)) + 0.5;
    g.beginPath();
    g.moveTo(L, yy);
    g.lineTo(w - R, yy);
    g.stroke();
    g.fillText(uncLabel(10 ** e), 4, yy + 4);
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    const d = new Date(t);
    const label = `${CP.pad(d.getHours())}:${CP.pad(d.getMinutes())}:${CP.pad(d.getSeconds())}`;
    const xx = x(t);
    g.fillText(label, Math.min(Math.max(L, xx - 22), w - R - 46), h - 4);
  }
  boxes.forEach((b, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const series = S.hist[b];
    g.strokeStyle = colour;
    g.fillStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    series.forEach((p, j) => (j ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
    g.stroke();
    for (const p of series) {
      if (p[2] !== "locked") g.fillRect(x(p[0]) - 2, y(p[1]) - 2, 4, 4); // not locked: marked
    }
    const swatch = el("i");
    swatch.style.background = colour; // CSSOM, not a style attribute: the CSP allows it
    legend.append(el("span", {}, swatch, b));
  });
}

// -- feed -------------------------------------------------------------------------

function stageFilter() {
  const name = $("f-stage").value;
  return S.results.stages.find((s) => s.name === name) || null;
}

function feedRow(p, isNew) {
  const tr = el(
    "tr",
    {class: "clickable" + (p.void ? " voided" : "") + (isNew ? " new" : ""), title: p.void ? `void: ${p.void}` : null},
    el("td", {text: localTime(p.ms)}),
    el("td", {class: "wall-only", text: p.utc}),
    el("td", {text: p.cp}),
    el("td", {}, el("b", {text: p.car || ""}), p.car ? null : el("span", {class: "badge warn", text: "no car"})),
    el("td", {class: "wall-only " + (p.clk === "locked" ? "" : "warn"), text: p.clk + (p.rs ? " (restamped)" : "")}),
    el("td", {class: "num wide-only", text: p.unc}),
    el("td", {class: "wide-only", text: `${p.box} #${p.seq}`}),
  );
  tr.addEventListener("click", () => {
    if (p.car) showCar(p.car);
    fillCorrection(p);
  });
  return tr;
}

// With a car or control filter the feed shows every passage HQ holds for it (asked
// from the server), not a filtered view of the newest few.
async function loadFiltered() {
  const car = $("f-car").value.trim();
  const cp = $("f-cp").value;
  if (!car && !cp) {
    S.filtered = null;
    renderFeed();
    return;
  }
  const q = new URLSearchParams({car, cp});
  const r = await fetch(`api/passages?${q}`, {cache: "no-store"});
  if (!r.ok) return;
  const v = await r.json();
  if (v.car !== $("f-car").value.trim() || v.cp !== $("f-cp").value) return; // changed meanwhile
  S.filtered = v;
  renderFeed();
}

function renderFeed() {
  const tb = $("feed").tBodies[0];
  CP.clear(tb);
  const st = stageFilter();
  const rows = S.filtered ? S.filtered.passages : S.feed;
  let shown = 0;
  for (const p of rows) {
    if (st && p.cp !== st.start && p.cp !== st.finish) continue;
    const isNew = !S.filtered && S.seenFeed.size > 0 && !S.seenFeed.has(p.id);
    tb.append(feedRow(p, isNew));
    shown += 1;
  }
  S.seenFeed = new Set(S.feed.map((p) => p.id));
  const f = S.filtered;
  const what = f ? [f.car && `car ${f.car}`, f.cp && `at ${f.cp}`].filter(Boolean).join(" ") : "";
  $("feed-note").textContent = f
    ? `${what}: all ${shown} HQ holds, newest first`
    : st ? `${shown} of the newest ${S.feed.length} (filtered)` : `newest ${S.feed.length}, newest first`;
}

function renderControls() {
  const sel = $("f-cp");
  const keep = sel.value;
  CP.clear(sel);
  sel.append(el("option", {value: ""}, "all controls"));
  for (const cp of S.checkpoints) sel.append(el("option", {value: cp}, cp));
  sel.value = S.checkpoints.includes(keep) ? keep : "";
}

// -- results ----------------------------------------------------------------------

function resultCell(c) {
  // A phone shows "—" for a missing passage, a wall screen says which one.
  if (c.s === "missing_start") return el("td", {class: "missing", title: "MISSING start"}, el("span", {class: "long", text: "MISSING start"}), el("span", {class: "short", text: "—"}));
  if (c.s === "missing_finish") return el("td", {class: "missing", title: "MISSING finish"}, el("span", {class: "long", text: "MISSING finish"}), el("span", {class: "short", text: "—"}));
  return el("td", {class: "num", title: `elapsed ${c.el} s, deviation ${c.dev} s, ±${c.unc}`}, el("b", {text: c.pts}), el("span", {class: "dev", text: ` (${c.dev})`}));
}

function sortKey(c, key) {
  if (key === "rank") return [c.rank, 0];
  if (key === "car") return [/^\d+$/.test(c.car) ? Number(c.car) : Infinity, c.car];
  if (key === "total") return [c.total === null ? Infinity : c.total, c.partial_points];
  const i = Number(key.slice(1)); // "s<index>"
  const cell = c.st[i];
  return [cell.s === "ok" ? cell.pts : Infinity, c.rank];
}

// `short`: the label a phone shows (T1, T2 ...; the full name is the tooltip).
function header(label, key, cls, short) {
  const s = S.sort;
  const attrs = {class: `sortable ${cls || ""} ${s.key === key ? "sorted" + (s.asc ? " asc" : "") : ""}`, title: label};
  const th = short ? el("th", attrs, el("span", {class: "long", text: label}), el("span", {class: "short", text: short})) : el("th", {...attrs, text: label});
  th.addEventListener("click", () => {
    S.sort = {key, asc: s.key === key ? !s.asc : true};
    renderResults();
  });
  return th;
}

function renderResults() {
  const r = S.results;
  const sel = $("f-stage");
  const keep = sel.value;
  CP.clear(sel);
  sel.append(el("option", {value: ""}, "all stages"));
  for (const s of r.stages) sel.append(el("option", {value: s.name}, `${s.name} (${s.start}→${s.finish})`));
  sel.value = r.stages.some((s) => s.name === keep) ? keep : "";
  $("targets").textContent = r.stages.map((s) => `${s.name} ${s.target} s`).join(" · ");
  const un = Object.entries(r.unassigned || {});
  $("unassigned").textContent = un.length ? "unassigned passages: " + un.map(([cp, n]) => `${cp} ${n}`).join(", ") : "";
  const note = $("no-results");
  if (!r.enabled) {
    note.hidden = false;
    note.textContent = "No stages file: start the board with --stages FILE to see results.";
  } else {
    note.hidden = r.cars.length > 0;
    note.textContent = "No car has an assigned passage yet.";
  }
  const only = sel.value ? r.stages.findIndex((s) => s.name === sel.value) : -1;
  const hr = $("results").tHead.rows[0];
  CP.clear(hr);
  // Total right after the car: a wall screen or a phone always shows it, however
  // many stages scroll beside it.
  hr.append(header("rank", "rank", "num"), header("car", "car"), header("total", "total", "num total"));
  r.stages.forEach((s, i) => {
    if (only < 0 || only === i) hr.append(header(s.name, `s${i}`, "num", `T${i + 1}`));
  });
  const car = $("f-car").value.trim();
  const cars = r.cars.filter((c) => !car || c.car.startsWith(car));
  const k = S.sort.key === "rank" && only >= 0 ? `s${only}` : S.sort.key;
  cars.sort((a, b) => {
    const ka = sortKey(a, k);
    const kb = sortKey(b, k);
    const d = ka[0] < kb[0] ? -1 : ka[0] > kb[0] ? 1 : ka[1] < kb[1] ? -1 : ka[1] > kb[1] ? 1 : 0;
    return S.sort.asc ? d : -d;
  });
  const tb = $("results").tBodies[0];
  CP.clear(tb);
  for (const c of cars) {
    const tr = el("tr", {class: "clickable" + (c.car === S.car ? " selected" : "")});
    tr.append(el("td", {class: "num", text: c.rank}), el("td", {}, el("b", {text: c.car})));
    tr.append(
      el("td", {class: "num total" + (c.total === null ? " missing" : "")}, c.total === null ? el("span", {title: `MISSING: ${c.partial_points} points so far`}, el("span", {class: "wide-only", text: "MISSING "}), `(${c.partial_points})`) : el("b", {text: c.total})),
    );
    c.st.forEach((cell, i) => {
      if (only < 0 || only === i) tr.append(resultCell(cell));
    });
    tr.addEventListener("click", () => showCar(c.car));
    tb.append(tr);
  }
}

// -- one car ------------------------------------------------------------------------

async function showCar(car) {
  S.car = car;
  const r = await fetch(`api/car?car=${encodeURIComponent(car)}`, {cache: "no-store"});
  if (!r.ok) return;
  const v = await r.json();
  if (S.car !== car) return; // another car was chosen meanwhile
  $("car-panel").hidden = false;
  $("car-title").textContent = v.car;
  const res = v.result;
  $("car-summary").textContent = res
    ? `rank ${res.rank} · ${res.total === null ? `MISSING ${res.missing} stage(s), ${res.partial_points} points so far` : `${res.total} points`}`
    : `${v.passages.length} passage(s)`;
  const st = $("car-stages").tBodies[0];
  CP.clear(st);
  for (const c of res ? res.st : []) {
    const missing = c.s !== "ok";
    st.append(
      el(
        "tr",
        {},
        el("td", {text: c.stage}),
        el("td", {text: c.start_ms ? localTime(c.start_ms) : "-"}),
        el("td", {class: c.s === "missing_finish" ? "missing" : "", text: c.finish_ms ? localTime(c.finish_ms) : missing ? "MISSING" : "-"}),
        el("td", {class: "num", text: c.el || "-"}),
        el("td", {class: "num", text: c.target}),
        el("td", {class: "num", text: c.dev || "-"}),
        el("td", {class: "num" + (missing ? " missing" : "")}, missing ? "MISSING" : el("b", {text: c.pts})),
        el("td", {class: "num", text: c.unc || ""}),
      ),
    );
  }
  renderCarPlot(res ? res.st : []);
  const pt = $("car-passages").tBodies[0];
  CP.clear(pt);
  for (const p of v.passages) {
    const tr = el(
      "tr",
      {class: "clickable" + (p.void ? " voided" : "")},
      el("td", {text: p.cp}),
      el("td", {text: localTime(p.ms)}),
      el("td", {text: p.utc}),
      el("td", {text: `${p.box} #${p.seq}`}),
      el("td", {class: p.clk === "locked" ? "" : "warn", text: p.clk}),
      el("td", {class: "num", text: p.unc}),
      el("td", {class: "bad", text: p.void ? `void: ${p.void}` : ""}),
    );
    tr.addEventListener("click", () => fillCorrection(p));
    pt.append(tr);
  }
  for (const tr of $("results").tBodies[0].rows) tr.classList.toggle("selected", tr.cells[1].textContent === car);
}

// Deviation per stage as bars around zero (early left, late right).
function renderCarPlot(stages) {
  const c = $("car-plot");
  const {g, w, h} = fitCanvas(c);
  const ok = stages.filter((s) => s.s === "ok");
  c.hidden = ok.length === 0;
  if (!ok.length) return;
  const L = 70, R = 60;
  const maxAbs = Math.max(0.01, ...ok.map((s) => Math.abs(s.dev_ns) / 1e9));
  const mid = L + (w - L - R) / 2;
  const scale = (w - L - R) / 2 / maxAbs;
  const row = Math.min(22, (h - 4) / stages.length);
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = "#9aa0a6";
  g.beginPath();
  g.moveTo(mid + 0.5, 0);
  g.lineTo(mid + 0.5, h);
  g.stroke();
  stages.forEach((s, i) => {
    const yy = 2 + i * row;
    g.fillStyle = "#5f6368";
    g.fillText(s.stage, 4, yy + row * 0.7);
    if (s.s !== "ok") {
      g.fillStyle = "#b3261e";
      g.fillText("MISSING", mid + 6, yy + row * 0.7);
      return;
    }
    const dev = s.dev_ns / 1e9;
    g.fillStyle = dev < 0 ? "#0b57d0" : "#b3261e";
    const x0 = dev < 0 ? mid + dev * scale : mid;
    g.fillRect(x0, yy + 3, Math.max(1, Math.abs(dev) * scale), row - 6);
    g.fillStyle = "#111";
    g.fillText(`${s.dev} s`, w - R + 4, yy + row * 0.7);
  });
}

// -- corrections --------------------------------------------------------------------

function fillCorrection(p) {
  if (!S.session.logged_in) return;
  $("c-box").value = p.box;
  $("c-seq").value = p.seq;
  $("c-value").value = p.car || "";
  $("c-passage").textContent = `${p.cp} ${localTime(p.ms)} ${p.car ? `car ${p.car}` : "no car"}${p.void ? " (void)" : ""}`;
  $("c-msg").textContent = "";
  $("c-msg").className = "msg";
  $("correct-panel").scrollIntoView({block: "nearest"});
  $("c-value").focus();
}

function actionChanged() {
  const a = $("c-action").value;
  const v = $("c-value");
  v.hidden = a === "unvoid";
  v.placeholder = a === "void" ? "reason" : "car";
  v.classList.toggle("wide", a === "void");
}

async function submitCorrection(ev) {
  ev.preventDefault();
  const action = $("c-action").value;
  if (!$("c-seq").value) {
    $("c-msg").textContent = "choose a passage first: click it in the to-do or the passages";
    $("c-msg").className = "msg bad";
    return;
  }
  const body = {box: $("c-box").value.trim(), seq: Number($("c-seq").value), action, override: $("c-override").checked};
  if (action === "assign") body.car = $("c-value").value.trim();
  if (action === "void") body.reason = $("c-value").value.trim();
  const res = await CP.post("api/correct", body);
  const msg = $("c-msg");
  if (res.ok) {
    const c = res.data.correction;
    msg.textContent = `${$("c-passage").textContent}: ${action} ${c.car || c.reason || ""} (correction #${c.id})`;
    msg.className = "msg ok";
  } else {
    msg.textContent = `refused: ${res.data.error || res.status}`;
    msg.className = "msg bad";
  }
}

async function loadSession() {
  S.session = await fetch("api/session", {cache: "no-store"}).then((r) => r.json());
  CP.csrf = S.session.csrf;
  $("login").hidden = S.session.logged_in || !S.session.can_correct;
  $("logout").hidden = !S.session.logged_in;
  $("correct-panel").hidden = !S.session.logged_in;
  renderTodo();
}

function init() {
  $("login").addEventListener("click", () => (location.href = "login"));
  $("logout").addEventListener("click", async () => {
    await CP.post("logout", {});
    await loadSession();
  });
  $("c-action").addEventListener("change", actionChanged);
  $("correct").addEventListener("submit", submitCorrection);
  $("f-stage").addEventListener("change", () => {
    renderResults();
    renderFeed();
  });
  $("f-cp").addEventListener("change", () => loadFiltered().catch(() => {}));
  $("f-car").addEventListener("input", () => {
    renderResults();
    loadFiltered().catch(() => {});
    const car = $("f-car").value.trim();
    if (S.results.cars.some((c) => c.car === car)) showCar(car);
  });
  window.addEventListener("resize", () => {
    renderPlot();
    if (S.car) showCar(S.car);
  });
  setInterval(tick, 1000);
  loadSession().catch(() => {});
  CP.stream(
    "api/events",
    {
      hq: (h) => {
        S.hq = h;
        if (h.now_ms) S.skew = h.now_ms - Date.now();
        renderHq();
      },
      boxes: (b) => {
        S.boxes = b;
        renderBoxes();
      },
      feed: (f) => {
        S.feed = f;
        if (S.filtered) loadFiltered().catch(() => {});
        else renderFeed();
        if (S.car) showCar(S.car);
      },
      todo: (t) => {
        S.todo = t;
        renderTodo();
      },
      audit: (a) => {
        S.audit = a;
        renderAudit();
      },
      results: (r) => {
        S.results = r;
        renderResults();
        renderFeed();
      },
      checkpoints: (c) => {
        S.checkpoints = c;
        renderControls();
      },
      history: (h) => {
        S.hist = h; // the full history, on (re)connect
        renderPlot();
      },
      hist: (h) => {
        for (const [box, pts] of Object.entries(h)) {
          const series = (S.hist[box] = S.hist[box] || []);
          for (const p of pts) if (!series.length || series[series.length - 1][0] !== p[0]) series.push(p);
          if (series.length > HIST_MAX) series.splice(0, series.length - HIST_MAX);
        }
        renderPlot();
      },
      ready: () => document.body.setAttribute("data-ready", "1"),
    },
    setLink,
  );
}

init();
