// The board's rally-office panel: live classification by class and the passages
// HQ could not identify with confidence ("to confirm"), from /api/office every 5 s.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let last = null;

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function renderClasses(doc) {
    const sel = $("office-class");
    const want = sel.value;
    const names = Object.keys(doc.classes).filter((k) => k !== "");
    const have = Array.from(sel.options).map((o) => o.value).filter((v) => v !== "");
    if (names.join() !== have.join()) {
      sel.replaceChildren(new Option("overall", ""), ...names.map((k) => new Option("class " + k, k)));
      sel.value = names.includes(want) ? want : "";
    }
    const body = $("office").tBodies[0];
    body.replaceChildren();
    for (const r of doc.classes[sel.value] || []) {
      const tr = document.createElement("tr");
      tr.dataset.car = r.car;
      cell(tr, r.rank != null ? r.rank : r.status.toUpperCase(), "num");
      cell(tr, r.car);
      cell(tr, r.crew);
      cell(tr, r.total, "num");
      cell(tr, r.provisional ? "provisional" : "", r.provisional ? "warn" : "");
      body.appendChild(tr);
    }
  }

  function renderConfirm(doc) {
    const body = $("confirm").tBodies[0];
    body.replaceChildren();
    for (const c of doc.confirm) {
      const tr = document.createElement("tr");
      tr.className = "confirm";
      cell(tr, c.control);
      cell(tr, c.utc.slice(11));
      cell(tr, c.box + " #" + c.seq);
      cell(tr, c.suggest);
      cell(tr, c.margin != null ? c.margin.toFixed(2) : "", "num");
      // A click fills the correction form (shown once logged in) with the likely car.
      tr.addEventListener("click", () => {
        if ($("correct-panel").hidden) return;
        $("c-action").value = "assign";
        $("c-box").value = c.box;
        $("c-seq").value = c.seq;
        $("c-value").value = c.suggest || "";
        $("c-msg").textContent = `to confirm: ${c.box} #${c.seq} at ${c.control}, likely car ${c.suggest}`;
        $("c-msg").className = "msg";
      });
      body.appendChild(tr);
    }
    $("confirm-note").textContent = doc.confirm.length
      ? doc.confirm.length + " passage(s): assign them with a correction"
      : "nothing to confirm";
  }

  async function poll() {
    try {
      const r = await fetch("api/office", {cache: "no-store"});
      const doc = await r.json();
      last = doc;
      if (!doc.ready) {
        $("office-note").textContent = doc.message;
        return;
      }
      $("office-note").textContent = (doc.event || "") + " · live, " + doc.issued;
      renderClasses(doc);
      renderConfirm(doc);
    } catch (e) {
      $("office-note").textContent = "cannot reach HQ";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("office-class").addEventListener("change", () => last && last.ready && renderClasses(last));
    poll();
    setInterval(poll, 5000);
  });
})();
