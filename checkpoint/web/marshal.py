"""The marshal's phone page, served by the box: readiness, recent passages, car numbers, voids.

`MarshalServer` never touches the daemon's state: it calls `snapshot()` and
`passages()`, which return immutable data the daemon's core thread publishes by
replacing a reference (so a read is one atomic attribute load, no lock), and
`correct(kind, seq, value)`, which only enqueues. Stamping and storing never wait for
the page; the page's own thread only costs the core thread a share of the GIL, and
passage times are kernel ticks taken before any Python runs.

Routes (all but the login and static files need the session cookie):

    GET  /               the page (static HTML; data comes from the API)
    GET  /login, POST /login, POST /logout
    GET  /api/session    {"csrf": token, "box", "cp"}: the token POSTs must carry
    GET  /api/events     server-sent events: `status` (readiness) and `passages`
                         (full list on connect, then only rows that changed)
    POST /api/correct    {"kind": "assign"|"void", "seq": N, "value": car|reason}
    GET  /marshal.js, /common.js, /style.css
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from checkpoint.errors import CommandError
from checkpoint.web import forms
from checkpoint.web.login import Auth
from checkpoint.web.marshal_view import passage_rows, readiness
from checkpoint.web.server import (
    Assets,
    ServerThread,
    Site,
    json_error,
    json_response,
    new_app,
    read_json,
)
from checkpoint.web.sse import SseHub, sse_frame

log = logging.getLogger("checkpoint.web.marshal")

TICK_S = 0.25  # how often the daemon's snapshot is looked at: a passage shows within this
STATUS_EVERY_S = 1.0  # status pushes at most this often unless `ready` flips

Snapshot = Callable[[], dict[str, Any]]
Passages = Callable[[], "list[dict[str, Any]] | tuple[dict[str, Any], ...]"]
Correct = Callable[[str, int, str], None]


def _dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


class MarshalServer(Site):
    """The marshal page on `host:port`, protected by `pin`. `start()`, then `stop()`."""

    def __init__(
        self,
        snapshot: Snapshot,
        passages: Passages,
        correct: Correct,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        pin: str,
        tick_s: float = TICK_S,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        office: Any = None,
    ) -> None:
        self._snapshot, self._passages, self._correct = snapshot, passages, correct
        # checkpoint.web.marshal_office.MarshalOffice: cars due next, predicted car numbers.
        self._office = office
        self._next: list[dict[str, Any]] = []
        self._next_text = ""
        self._tick_s, self._clock_ns = tick_s, clock_ns
        self.auth = Auth(pin, cookie="checkpoint_marshal", title="checkpoint marshal", label="PIN")
        self.hub = SseHub(max_clients=16)  # a Pi Zero serves a few phones, not a crowd
        self._thread = ServerThread(
            self._make_app, host=host, port=port, name="marshal-web", on_stop=self._on_stop
        )
        # Loop-thread state: the last view sent, to send only what changed.
        self._status: dict[str, Any] = readiness({}, 0)
        self._status_text = ""
        self._status_sent_s = 0.0
        self._rows: dict[int, dict[str, Any]] = {}
        self._row_text: dict[int, str] = {}
        self._last_snapshot: object = None
        self._last_passages: object = None
        self._broken_since: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def _make_app(self) -> web.Application:
        self._safe_refresh()
        app = new_app()
        assets = Assets(["marshal.html", "marshal.js", "common.js", "style.css", "favicon.svg"])
        self.auth.add_routes(app)
        app.router.add_get("/", self._page(assets))
        assets.add_routes(app, ["marshal.js", "common.js", "style.css"])
        app.router.add_get("/api/session", self._session)
        app.router.add_get("/api/events", self._events)
        app.router.add_post("/api/correct", self._post_correct)
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return app

    # -- watching the daemon ------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self._safe_refresh()

    def _safe_refresh(self, force_status: bool = False) -> None:
        try:
            self._refresh(force_status)
        except Exception:  # a bad snapshot must not end the page's updates
            log.exception("marshal page: cannot read the daemon's snapshot")

    def _blocked(self, st: dict[str, Any], now: int) -> dict[str, float]:
        """Per input, seconds it has stayed broken across snapshots (a car takes < 1 s)."""
        inputs = st.get("inputs") if isinstance(st.get("inputs"), dict) else {}
        out = {}
        for name, i in inputs.items():
            if isinstance(i, dict) and i.get("broken") is True:
                since = self._broken_since.setdefault(name, now)
                out[name] = (now - since) / 1e9
            else:
                self._broken_since.pop(name, None)
        return out

    def _refresh(self, force_status: bool = False) -> None:
        """Look at the daemon's latest data; push what changed to every browser."""
        now = self._clock_ns()
        snap = self._snapshot()
        view = readiness(snap or {}, now, self._blocked(snap or {}, now))
        text = _dumps(view)
        mono_s = now / 1e9
        due = (
            view["ready"] != self._status["ready"] or mono_s - self._status_sent_s >= STATUS_EVERY_S
        )
        if text != self._status_text and (due or force_status):
            self._status, self._status_text, self._status_sent_s = view, text, mono_s
            self.hub.publish(sse_frame("status", view))
        recent = self._passages()
        if recent is self._last_passages:
            return  # the daemon publishes a new tuple on every change
        self._last_passages = recent
        rows = passage_rows(recent)
        self._predict(recent, rows)
        texts = {seq: _dumps(r) for seq, r in rows.items()}
        changed = [rows[s] for s, t in texts.items() if self._row_text.get(s) != t]
        self._rows, self._row_text = rows, texts
        if changed:
            self.hub.publish(sse_frame("passages", {"rows": changed}))

    def _predict(self, recent: Any, rows: dict[int, dict[str, Any]]) -> None:
        """Pre-fill rows without a car with the predicted one; push the cars due next."""
        if self._office is None or not isinstance(recent, list | tuple):
            return
        pred, nxt = self._office.view([p for p in recent if isinstance(p, dict)], time.time_ns())
        for seq, row in rows.items():
            if seq in pred and "car" not in row and "void" not in row:
                row["pc"], row["pcs"] = pred[seq]["car"], pred[seq]["s"]
        text = _dumps(nxt)
        if text != self._next_text:
            self._next, self._next_text = nxt, text
            self.hub.publish(sse_frame("next", {"cars": nxt}))

    # -- handlers -----------------------------------------------------------------------

    def _page(self, assets: Assets) -> Callable[[web.Request], Any]:
        async def page(request: web.Request) -> web.StreamResponse:
            if self.auth.session(request) is None:
                raise web.HTTPSeeOther("/login")
            return assets.response(request, "marshal.html")

        return page

    async def _session(self, request: web.Request) -> web.Response:
        s = self.auth.require(request)
        return json_response({"csrf": s.csrf, "box": self._status["box"], "cp": self._status["cp"]})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.auth.require(request)
        self._safe_refresh(force_status=True)  # the newest data, not up to a tick old
        rows = [self._rows[s] for s in sorted(self._rows)]
        initial = sse_frame("status", self._status) + sse_frame(
            "passages", {"rows": rows, "full": True}
        )
        if self._office is not None:
            initial += sse_frame("next", {"cars": self._next})
        return await self.hub.stream(request, initial)

    async def _post_correct(self, request: web.Request) -> web.Response:
        self.auth.require_post(request)
        data = await read_json(request)
        kind = data.get("kind")
        try:
            if kind not in ("assign", "void"):
                raise forms.FormError("kind must be assign or void")
            seq = forms.seq(data.get("seq"))
            value = (
                forms.car(data.get("value"))
                if kind == "assign"
                else forms.reason(data.get("value"))
            )
            shown = {q for r in self._rows.values() for q in r.get("seqs", [r["seq"]])}
            if seq not in shown:
                # Only passages the page shows: a seq of another event type (a restamp,
                # an assign) must never be given a car.
                raise forms.FormError(f"seq {seq} is not one of the recent passages")
            self._correct(kind, seq, value)
        except CommandError as e:
            return json_error(400, str(e))
        log.info("marshal page: %s seq %d %r", kind, seq, value)
        return json_response({"ok": True}, 202)
