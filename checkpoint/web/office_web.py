"""The rally office on HQ's board server: posted results and the "to confirm" queue.

Routes (read-only; no login: competitors read the results, HQ reads the queue):

    GET /results          the classification as the A4 page `hq results --format html`
                          posts, refreshed every 30 s
    GET /results.csv      the same as CSV
    GET /results.json     the same as JSON (with every car's sheet)
    GET /api/office       live classification by class and the "to confirm" queue,
                          for the board's panel (`office.js`)

Each request reads one snapshot through a read-only connection on the board's
database worker; results are "live" (a car not yet at the finish is not DNF).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from checkpoint.errors import CheckpointError
from checkpoint.hq import office, officestore, posting
from checkpoint.hq.store import iso_now, ns_to_iso
from checkpoint.web.board_data import open_readonly
from checkpoint.web.server import CSP, json_response

REFRESH_S = 30
_STYLE_HASH = base64.b64encode(hashlib.sha256(posting.PAGE_CSS.encode()).digest()).decode()
# The posted page is one standalone file (it is also saved and printed), so its
# style is inline: allowed by its hash only, the rest of the policy unchanged.
PAGE_CSP = CSP.replace("style-src 'self'", f"style-src 'self' 'sha256-{_STYLE_HASH}'")


def _issued() -> str:
    return iso_now()[:19].replace("T", " ") + " UTC"


def snapshot(db: Path) -> office.Office | str:
    """The office from a read-only snapshot, or the reason there is none yet."""
    store = open_readonly(db)
    if store is None:
        return "HQ has no database yet"
    try:
        return officestore.load_office(store, final=False)
    except CheckpointError as err:
        return str(err)
    finally:
        store.close()


def board_view(off: office.Office | str) -> dict[str, Any]:
    """What the board's office panel shows: classes with their ranking, the queue."""
    if isinstance(off, str):
        return {"ready": False, "message": off}
    cls = off.classification
    by = {c.number: c for c in cls.cars}

    def row(n: str, rank: int | None) -> dict[str, Any]:
        c = by[n]
        return {
            "rank": rank,
            "car": n,
            "crew": c.entry.crew,
            "status": c.status,
            "total": posting.fmt_points(c.total) if c.total is not None else None,
            "provisional": bool(c.provisional),
        }

    classes = {"": [row(c.number, c.rank) for c in cls.cars]}
    for k, numbers in cls.classes.items():
        classes[k] = [row(n, by[n].class_rank) for n in numbers]
    confirm = [
        {
            "control": c.timed.control,
            "utc": ns_to_iso(c.timed.utc_ns),
            "box": c.timed.key[0],
            "store": c.timed.key[1],
            "seq": c.timed.key[2],
            "suggest": c.suggest,
            "margin": c.margin,
        }
        for c in off.identification.to_confirm()
    ]
    return {
        "ready": True,
        "event": cls.event,
        "issued": _issued(),
        "classes": classes,
        "confirm": confirm,
        "unknown": cls.unknown,
    }


Worker = Callable[..., Awaitable[Any]]


def add_office_routes(app: web.Application, db: Path, in_worker: Worker) -> None:
    """Register the office's read-only routes on the board's app."""

    async def get(fmt: str) -> web.Response:
        off = await in_worker(snapshot, db)
        if isinstance(off, str):
            return web.Response(status=503, text=f"No results yet: {off}\n")
        cls = off.classification
        if fmt == "csv":
            return web.Response(text=posting.render_csv(cls), content_type="text/csv")
        if fmt == "json":
            return web.Response(
                text=posting.render_json(cls, _issued()), content_type="application/json"
            )
        page = posting.render_html(cls, _issued(), refresh_s=REFRESH_S)
        return web.Response(
            text=page, content_type="text/html", headers={"Content-Security-Policy": PAGE_CSP}
        )

    async def results(_r: web.Request) -> web.Response:
        return await get("html")

    async def results_csv(_r: web.Request) -> web.Response:
        return await get("csv")

    async def results_json(_r: web.Request) -> web.Response:
        return await get("json")

    async def api(_r: web.Request) -> web.Response:
        return json_response(board_view(await in_worker(snapshot, db)))

    app.router.add_get("/results", results)
    app.router.add_get("/results.csv", results_csv)
    app.router.add_get("/results.json", results_json)
    app.router.add_get("/api/office", api)
