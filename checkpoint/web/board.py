"""HQ's live timing board: boxes, a live feed, stage results, per-car views, a plot.

Served by `checkpoint hq serve`. A separate process from the collector: it polls
HQ's database read-only every second (`board_data.BoardReader`) on one worker
thread that owns the SQLite connection, and pushes what changed to browsers over
server-sent events. Viewing needs no login (HQ binds it to its own network);
corrections (assign / void / unvoid through `HQStore.correct`, the same audit trail
as `checkpoint hq assign`) need the password from `--password-file`, and are refused
altogether without one.

Routes:

    GET  /                     the board (static HTML)
    GET  /login, POST /login, POST /logout
    GET  /api/session          {"logged_in": bool, "csrf": token|null, "can_correct": bool}
    GET  /api/events           SSE: hq, boxes, feed, results, checkpoints, todo, audit, hist
    GET  /api/car?car=42       one car: passages at every control, stage results
    GET  /results[.csv|.json], /api/office   the rally office (checkpoint.web.office_web)
    GET  /api/passages?car=42&cp=PC2  every passage HQ holds for a car and/or control
    POST /api/correct          {"box", "seq", "action": assign|void|unvoid, "car"?, "reason"?,
                                "store"?}  (login + CSRF token)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from checkpoint.errors import CommandError, StoreError
from checkpoint.hq import ops as hq_ops
from checkpoint.hq import results as resultsmod
from checkpoint.hq.store import HQStore
from checkpoint.web import forms
from checkpoint.web.board_data import BoardReader
from checkpoint.web.login import Auth
from checkpoint.web.office_web import add_office_routes
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

log = logging.getLogger("checkpoint.web.board")

POLL_S = 1.0
_SECTIONS = ("hq", "checkpoints", "boxes", "results", "feed", "todo", "audit")


class BoardServer(Site):
    """The board for HQ database `db` on `host:port`. `start()`, then `stop()`."""

    def __init__(
        self,
        db: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8090,
        stages: resultsmod.Stages | None = None,
        password: str | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.db = Path(db)
        self.poll_s = poll_s
        self.reader = BoardReader(self.db, stages)
        self.auth = Auth(
            password, cookie="checkpoint_board", title="checkpoint HQ", label="Password"
        )
        self.hub = SseHub(max_clients=64)
        # One worker: it owns the read-only SQLite connection and the reader's state,
        # so polls, car views and history reads never run at the same time.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="board-db")
        self._thread = ServerThread(
            self._make_app, host=host, port=port, name="hq-board", on_stop=self._on_stop
        )
        self._task: asyncio.Task[None] | None = None
        self._poke: asyncio.Event | None = None
        self._closed = False

    def stop(self) -> None:
        """Close every stream, stop the thread, close the database."""
        super().stop()
        if not self._closed:
            self._closed = True
            self._worker.submit(self.reader.close).result(5)
            self._worker.shutdown(wait=True)

    async def _make_app(self) -> web.Application:
        self._poke = asyncio.Event()
        try:
            await self._poll()
        except Exception:  # served anyway; the poller keeps trying and logging
            log.exception("board: cannot read %s", self.db)
        self._task = asyncio.get_running_loop().create_task(self._poller())
        app = new_app()
        assets = Assets(
            ["board.html", "board.js", "office.js", "common.js", "style.css", "favicon.svg"]
        )
        self.auth.add_routes(app)
        app.router.add_get("/", assets.route("board.html"))
        assets.add_routes(app, ["board.js", "office.js", "common.js", "style.css"])
        app.router.add_get("/api/session", self._session)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/car", self._car)
        app.router.add_get("/api/passages", self._passages)
        app.router.add_post("/api/correct", self._post_correct)
        add_office_routes(app, self.db, self._in_worker)
        return app

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    # -- polling --------------------------------------------------------------------

    async def _poller(self) -> None:
        assert self._poke is not None
        while not self._closed:
            try:
                await asyncio.wait_for(self._poke.wait(), self.poll_s)
            except TimeoutError:
                pass
            self._poke.clear()
            if self._closed:  # `stop` gave up waiting for this loop and closed the database
                return
            try:
                await self._poll()
            except Exception:  # a locked or damaged database: try again next second
                if self._closed:
                    return
                log.exception("board: cannot read %s", self.db)

    async def _poll(self) -> None:
        changed = await self._in_worker(self.reader.poll, int(time.time() * 1000))
        for name in _SECTIONS:
            if name in changed:
                self.hub.publish(sse_frame(name, changed[name]))
        if "hist" in changed:
            self.hub.publish(sse_frame("hist", changed["hist"]))

    # -- handlers -------------------------------------------------------------------

    async def _session(self, request: web.Request) -> web.Response:
        s = self.auth.session(request)
        return json_response(
            {
                "logged_in": s is not None,
                "csrf": s.csrf if s is not None else None,
                "can_correct": self.auth.enabled,
            }
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        state = self.reader.state  # replaced per section by the worker, never mutated
        history = await self._in_worker(self.reader.history_view)
        initial = b"".join(sse_frame(n, state[n]) for n in _SECTIONS)
        initial += sse_frame("history", history) + sse_frame("ready", {})
        return await self.hub.stream(request, initial)

    async def _car(self, request: web.Request) -> web.Response:
        try:
            car = forms.car(request.query.get("car", ""))
        except CommandError as e:
            return json_error(400, str(e))
        return json_response(await self._in_worker(self.reader.car_view, car))

    async def _passages(self, request: web.Request) -> web.Response:
        car, cp = request.query.get("car", ""), request.query.get("cp", "")
        try:
            car = forms.car(car) if car else ""
            cp = forms.box(cp) if cp else ""  # a control id has a box id's shape
        except CommandError as e:
            return json_error(400, str(e))
        return json_response(await self._in_worker(self.reader.passages_view, car, cp))

    async def _post_correct(self, request: web.Request) -> web.Response:
        self.auth.require_post(request)
        data = await read_json(request)
        try:
            action = data.get("action")
            if action not in ("assign", "void", "unvoid"):
                raise forms.FormError("action must be assign, void or unvoid")
            kwargs: dict[str, Any] = {
                "box": forms.box(data.get("box")),
                "seq": forms.seq(data.get("seq")),
                "store": forms.store_prefix(data.get("store")),
            }
            if action == "assign":
                kwargs["car"] = forms.car(data.get("car"))
            if action == "void":
                kwargs["reason"] = forms.reason(data.get("reason"))
            kwargs["override"] = data.get("override") is True
            row = await asyncio.get_running_loop().run_in_executor(
                None, self._correct, action, kwargs
            )
        except CommandError as e:
            return json_error(400, str(e))
        except StoreError as e:
            log.error("board correction failed: %s", e)
            return json_error(503, str(e))
        log.info(
            "board: %s %s seq %s by %s (correction #%s)",
            action,
            row["box"],
            row["ref_seq"],
            row["by"],
            row["id"],
        )
        if self._poke is not None:
            self._poke.set()  # show it now, not at the next poll
        return json_response({"ok": True, "correction": row})

    def _correct(self, action: str, kw: dict[str, Any]) -> dict[str, Any]:
        # A short-lived writing connection per correction, like `checkpoint hq assign`:
        # the board's own connection stays read-only.
        with HQStore(self.db, create=False) as store:
            # The same checks as `hq assign`: a car with a space, not in the field, or
            # twice at one control is refused unless the operator ticked "override".
            req = hq_ops.Request(
                pick=hq_ops.Pick(box=kw["box"], seq=kw["seq"], store=kw["store"]),
                action=action,
                new_car=kw.get("car"),
                reason=kw.get("reason"),
                allow_new_car=kw["override"],
                force=kw["override"],
            )
            store.resolve_passage(kw["box"], kw["seq"], kw["store"])  # its precise errors
            hq_ops.check(store.passages(), req)
            return store.correct(
                kw["box"],
                kw["seq"],
                action,
                car=kw.get("car"),
                reason=kw.get("reason"),
                by="hq-board",
                store=kw["store"],
            )
