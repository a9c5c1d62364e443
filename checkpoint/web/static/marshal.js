// The marshal's page: readiness at a glance, recent passages, car numbers, voids.
// Rows are updated in place (never rebuilt), so a car number being typed survives
// every live update.
"use strict";

const MAX_ROWS = 50;
const CONFIRM_MS = 10000; // a correction not seen back from the box by then is flagged

const rows = new Map(); // seq -> {data, li, parts}
const pending = new Map(); // seq -> {kind, value, at}
let voidSeq = null;

const $ = (id) => document.getElementById(id);

function setLink(up) {
  const p = $("link");
  p.textContent = up ? "live" : "reconnecting";
  p.className = "pill " + (up ? "ok" : "bad");
}

function renderStatus(st) {
  $("box").textContent = st.box || "checkpoint";
  $("cp").textContent = st.cp || "";
  document.title = `${st.box || "box"} ${st.cp || ""}: ${st.ready ? "READY" : "NOT READY"}`;
  const v = $("verdict");
  CP.clear(v);
  const bad = st.items.filter((i) => i.s === "bad");
  v.className = "verdict s-" + (st.ready ? "ok" : "bad");
  v.append(CP.el("strong", {text: st.ready ? "READY" : "NOT READY"}));
  if (!st.ready) {
    // The items' texts are whole sentences ("GPS is locking: about 40 s").
    const why = bad.map((i) => i.t);
    if (st.alarms.length) why.push(`${st.alarms.length} alarm(s) below`);
    v.append(CP.el("span", {class: "why", text: why.join(" · ")}));
  }
  const ul = $("items");
  CP.clear(ul);
  for (const i of st.items) {
    ul.append(CP.el("li", {class: "s-" + i.s}, CP.el("b", {text: i.l}), CP.el("span", {text: i.t})));
  }
  const al = $("alarms");
  CP.clear(al);
  for (const a of st.alarms) al.append(CP.el("li", {text: a}));
}

function makeRow(seq) {
  const local = CP.el("span", {class: "local"});
  const utc = CP.el("span", {class: "utc"});
  const meta = CP.el("div", {class: "meta"});
  const state = CP.el("div", {class: "state"});
  const input = CP.el("input", {
    name: "car",
    class: "car",
    inputmode: "numeric",
    autocomplete: "off",
    maxlength: "16",
    placeholder: "car",
    "aria-label": `car number for passage ${seq}`,
  });
  const set = CP.el("button", {type: "submit", class: "set"}, "Set");
  const form = CP.el("form", {class: "assign"}, input, set);
  // Void sits on its own line, away from Set (a gloved mis-tap), and asks first.
  const voidBtn = CP.el("button", {type: "button", class: "void secondary"}, "Void…");
  const li = CP.el(
    "li",
    {class: "p", "data-seq": seq},
    CP.el("div", {class: "when"}, local, utc),
    meta,
    CP.el("div", {class: "act"}, form),
    state,
    CP.el("div", {class: "tools"}, voidBtn),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const car = input.value.trim();
    if (!car) return;
    send(seq, "assign", car);
    input.blur();
  });
  voidBtn.addEventListener("click", () => openVoid(seq));
  return {li, parts: {local, utc, meta, state, input, voidBtn}};
}

function paintRow(r) {
  const d = r.data;
  const p = r.parts;
  p.local.textContent = CP.localHundredths(d.ms);
  p.utc.textContent = `${d.utc} UTC`;
  // The clock state is only named when it is not the normal one (locked).
  const flag = d.clk && d.clk !== "locked" ? ` · ${d.clk.toUpperCase()}` : "";
  // One row per car: the other inputs that saw it at the same time ride along.
  const also = (d.also || []).map((a) => ` + ${a.in} ${CP.localHundredths(a.ms).slice(6)}`).join("");
  p.meta.textContent = `#${d.seq} ${d.in}${also} · ${d.unc}${flag}`;
  r.li.classList.toggle("voided", Boolean(d.void));
  r.li.classList.toggle("clock-warn", Boolean(d.clk && d.clk !== "locked"));
  r.li.classList.toggle("assigned", Boolean(d.car));
  // HQ's rulebook on the box predicts the car (d.pc): pre-filled, so one tap on Set
  // confirms it; "to confirm" (d.pcs) means the prediction is not sure.
  const guess = !d.car && !d.void && d.pc;
  r.li.classList.toggle("confirm", Boolean(guess && d.pcs === "confirm"));
  r.li.classList.toggle("predicted", Boolean(guess && d.pcs === "auto"));
  if (document.activeElement !== p.input && d.car && !pending.has(d.seq)) p.input.value = d.car;
  if (document.activeElement !== p.input && guess && !p.input.value) p.input.value = d.pc;
  p.voidBtn.disabled = Boolean(d.void);
  const pend = pending.get(d.seq);
  if (pend && ((pend.kind === "assign" && d.car === pend.value) || (pend.kind === "void" && d.void))) {
    pending.delete(d.seq);
  }
  let text = "";
  let cls = "state";
  if (d.void) {
    text = `VOID: ${d.void}`;
    cls += " bad";
  } else if (d.car) {
    text = `car ${d.car} ✓`;
    cls += " ok";
  } else if (guess) {
    text = d.pcs === "confirm" ? `to confirm: car ${d.pc}?` : `predicted car ${d.pc}: tap Set`;
    cls += d.pcs === "confirm" ? " warn" : "";
  }
  if (d.hq) {
    // HQ corrected this passage: the marshal sees it, HQ's word wins in the results.
    text = text ? `${text} · ${d.hq}` : d.hq;
    cls = "state hq";
  }
  const now = pending.get(d.seq);
  if (now) {
    const late = Date.now() - now.at > CONFIRM_MS;
    text = late ? `not confirmed by the box: ${now.kind} ${now.value}` : `sending ${now.kind} ${now.value}…`;
    cls = "state " + (late ? "bad" : "warn");
  }
  p.state.textContent = text;
  p.state.className = cls;
}

function upsert(list, full) {
  const ol = $("passages");
  if (full) {
    for (const [seq, r] of rows) if (!list.some((d) => d.seq === seq)) r.li.remove();
    for (const seq of [...rows.keys()]) if (!list.some((d) => d.seq === seq)) rows.delete(seq);
  }
  let fresh = false;
  for (const d of list) {
    let r = rows.get(d.seq);
    if (!r) {
      r = makeRow(d.seq);
      rows.set(d.seq, r);
      if (!full) {
        fresh = true;
        r.li.classList.add("new");
        setTimeout(() => r.li.classList.remove("new"), 3000);
      }
    }
    r.data = d;
    paintRow(r);
  }
  // Newest first; insert in order without touching rows already in place.
  const seqs = [...rows.keys()].sort((a, b) => b - a);
  for (const seq of seqs.slice(MAX_ROWS)) {
    rows.get(seq).li.remove();
    rows.delete(seq);
  }
  let prev = null;
  for (const seq of seqs.slice(0, MAX_ROWS)) {
    const li = rows.get(seq).li;
    const want = prev ? prev.nextSibling : ol.firstChild;
    if (want !== li) ol.insertBefore(li, want);
    prev = li;
  }
  $("empty").hidden = rows.size > 0;
  if (fresh && navigator.vibrate) navigator.vibrate(60);
}

function renderNext(m) {
  // The cars due next at this control, from the entry list and the schedule.
  const ol = $("next");
  CP.clear(ol);
  for (const c of m.cars) {
    const li = CP.el("li", {class: c.late ? "late" : ""});
    li.append(CP.el("strong", {text: c.car}), ` ${CP.localHundredths(c.ms).slice(0, 8)}`);
    ol.append(li);
  }
  $("next-panel").hidden = m.cars.length === 0;
}

// A row may hold one car's passages at several inputs: the correction goes to each.
async function send(seq, kind, value) {
  pending.set(seq, {kind, value, at: Date.now()});
  const r = rows.get(seq);
  if (r) paintRow(r);
  const seqs = r && r.data.seqs ? r.data.seqs : [seq];
  let res = {ok: true, data: {}};
  for (const s of seqs) {
    res = await CP.post("api/correct", {kind, seq: s, value}).catch((e) => ({
      ok: false,
      data: {error: String(e)},
    }));
    if (!res.ok) break;
  }
  if (!res.ok) {
    pending.delete(seq);
    if (r) {
      paintRow(r);
      r.parts.state.textContent = `refused: ${res.data.error || "error"}`;
      r.parts.state.className = "state bad";
    }
  }
}

function openVoid(seq) {
  voidSeq = seq;
  const r = rows.get(seq);
  const when = r ? CP.localHundredths(r.data.ms) : "";
  $("void-seq").textContent = `${when} (#${seq})`;
  $("void-reason").value = "false trigger";
  $("void-dialog").showModal();
}

function init() {
  $("tz").textContent = `local time (${CP.timeZone()}) and UTC`;
  $("void-form").addEventListener("submit", (ev) => {
    const reason = $("void-reason").value.trim();
    if (!reason) {
      ev.preventDefault();
      return;
    }
    send(voidSeq, "void", reason);
  });
  $("void-cancel").addEventListener("click", () => $("void-dialog").close());
  $("logout").addEventListener("click", async () => {
    await CP.post("logout", {});
    location.href = "login";
  });
  // Pending corrections turn "not confirmed" without waiting for the next update.
  setInterval(() => {
    for (const seq of pending.keys()) if (rows.has(seq)) paintRow(rows.get(seq));
  }, 1000);
  CP.session().then((s) => {
    if (!s) return;
    CP.stream(
      "api/events",
      {
        status: renderStatus,
        passages: (m) => upsert(m.rows, Boolean(m.full)),
        next: renderNext,
      },
      setLink,
    );
  });
}

init();
