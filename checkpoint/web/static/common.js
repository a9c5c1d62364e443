// Shared helpers of the checkpoint pages. No framework, no build step.
// Data only ever reaches the page through textContent and attributes set one by
// one (never innerHTML), so a car number or a void reason cannot inject markup.
"use strict";

const CP = {
  csrf: null,

  // el("td", {class: "x", title: "y"}, "text", child, ...): a new element.
  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  },

  clear(e) {
    while (e.firstChild) e.removeChild(e.firstChild);
  },

  pad(n, w = 2) {
    return String(n).padStart(w, "0");
  },

  // Local time of day to the hundredth from integer ms since the epoch (the server
  // sends ms = floor(utc_ns / 1e6), so the hundredths match the UTC text exactly).
  localHundredths(ms) {
    const d = new Date(ms);
    const h = Math.floor((ms % 1000) / 10);
    return `${CP.pad(d.getHours())}:${CP.pad(d.getMinutes())}:${CP.pad(d.getSeconds())}.${CP.pad(h)}`;
  },

  timeZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    } catch (e) {
      return "local";
    }
  },

  // The session's CSRF token; a 401 sends the browser to the login form.
  async session() {
    const r = await fetch("api/session", {credentials: "same-origin", cache: "no-store"});
    if (r.status === 401) {
      location.href = "login";
      return null;
    }
    if (!r.ok) throw new Error(`session: HTTP ${r.status}`);
    const s = await r.json();
    CP.csrf = s.csrf;
    return s;
  },

  // POST JSON with the CSRF token; resolves to {ok, status, data}.
  async post(path, body) {
    const r = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": CP.csrf || ""},
      body: JSON.stringify(body),
    });
    let data = {};
    try {
      data = await r.json();
    } catch (e) {
      data = {error: await r.text().catch(() => "")};
    }
    if (r.status === 401) location.href = "login";
    return {ok: r.ok, status: r.status, data};
  },

  // Server-sent events with handlers by event name; onLink(true|false) reports the
  // connection. EventSource reconnects by itself; after an error we also check the
  // session, so an expired login goes back to the login form instead of retrying.
  stream(url, handlers, onLink) {
    const es = new EventSource(url);
    es.onopen = () => onLink(true);
    es.onerror = () => {
      onLink(false);
      fetch("api/session", {credentials: "same-origin", cache: "no-store"})
        .then((r) => {
          if (r.status === 401) location.href = "login";
        })
        .catch(() => {});
    };
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
    }
    return es;
  },
};
