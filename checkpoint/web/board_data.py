"""What HQ's board shows, read from HQ's database on a read-only connection.

The board is a separate process from the collector. It opens the database with
SQLite's `mode=ro` (it cannot write, whatever happens) and uses `HQStore`'s own
queries, so the board shows exactly what `hq status`, `hq export` and `hq results`
print: the same correction precedence, the same scoring.

`BoardReader.poll()` is cheap when nothing changed (`PRAGMA data_version` tells
whether another connection committed); passages and results are recomputed only when
an event or a correction was added. The clock-uncertainty history the plot draws
comes from HQ's `status_history` (every status message HQ stored), so a restarted
board shows it at once; the ring buffer here holds the latest points per box.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlite_utils

from checkpoint.hq import results as resultsmod
from checkpoint.hq.ops import audit_rows
from checkpoint.hq.status_text import link_text
from checkpoint.hq.store import HQStore
from checkpoint.web.marshal_view import fmt_uncertainty, utc_hundredths

HISTORY_POINTS = 720  # per box: two hours of statuses at the default 10 s interval
FEED_SIZE = 40


def open_readonly(path: str | Path) -> HQStore | None:
    """An `HQStore` on a read-only connection, or None while the database is not there yet.

    Only HQStore's read methods may be used on it. Built around the constructor
    because that one may migrate or switch journal mode, which a reader must not.
    """
    p = Path(path)
    if not p.exists():
        return None
    conn = sqlite3.connect(f"file:{quote(str(p.resolve()))}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "_sqlite_migrations" not in names or "events" not in names:
            conn.close()
            return None  # the collector is creating it right now
    except sqlite3.DatabaseError:
        conn.close()
        raise
    store = HQStore.__new__(HQStore)
    store.path = p
    store.db = sqlite_utils.Database(conn)
    return store


def _iso_ms(iso: object) -> int | None:
    """HQ's ISO timestamps (received_at, status_at) as epoch ms."""
    if not isinstance(iso, str) or not iso:
        return None
    try:
        t = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(t.timestamp() * 1000)


def feed_row(p: Mapping[str, Any]) -> dict[str, Any]:
    """One export row (`HQStore.passages()`) as the board's feed and car view need it."""
    utc_ns = p.get("utc_ns")
    ok = isinstance(utc_ns, int) and not isinstance(utc_ns, bool)
    return {
        "id": f"{p['box']}/{p['store']}/{p['seq']}",
        "box": p["box"],
        "store": p["store"][:8],
        "seq": p["seq"],
        "cp": p.get("checkpoint") or "",
        "ms": utc_ns // 1_000_000 if ok else None,
        "utc": utc_hundredths(utc_ns) if ok else "",
        "clk": p.get("clock") or "",
        "unc": fmt_uncertainty(p.get("uncertainty_ns")),
        "car": p.get("car") or "",
        "void": (p.get("void_reason") or "void") if p.get("void") else "",
        "rs": bool(p.get("restamped")),
    }


def _stage_cell(sr: resultsmod.StageResult) -> dict[str, Any]:
    cell: dict[str, Any] = {"s": sr.status}
    if sr.status == "ok":
        cell.update(
            pts=sr.points,
            dev=resultsmod.fmt_seconds(sr.deviation_ns, signed=True),
            dev_ns=sr.deviation_ns,
            el=resultsmod.fmt_seconds(sr.elapsed_ns),
            unc=fmt_uncertainty(sr.uncertainty_ns),
        )
    if sr.start_utc_ns is not None:
        cell["start"] = utc_hundredths(sr.start_utc_ns)
        cell["start_ms"] = sr.start_utc_ns // 1_000_000
    if sr.finish_utc_ns is not None:
        cell["finish"] = utc_hundredths(sr.finish_utc_ns)
        cell["finish_ms"] = sr.finish_utc_ns // 1_000_000
    return cell


def results_view(res: resultsmod.Results | None) -> dict[str, Any]:
    """The results table: stages (with targets) and ranked cars, compact."""
    if res is None:
        return {"enabled": False, "stages": [], "cars": [], "unassigned": {}}
    return {
        "enabled": True,
        "stages": [
            {
                "name": s.name,
                "start": s.start,
                "finish": s.finish,
                "target": resultsmod.fmt_seconds(s.target_ns),
            }
            for s in res.stages
        ],
        "cars": [
            {**resultsmod.car_json(c), "st": [_stage_cell(sr) for sr in c.stages]} for c in res.cars
        ],
        "unassigned": res.unassigned,
    }


TODO_MAX = 200  # passages listed in the to-do (the count is always complete)
AUDIT_MAX = 100  # newest corrections on the board (`hq audit` prints them all)


def todo_view(passages: list[dict[str, Any]], boxes: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's to-do: passages with no car (oldest first) and gaps in what boxes sent."""
    loose = [p for p in passages if not p.get("car") and not p.get("void")]
    return {
        "unassigned": len(loose),
        "items": [feed_row(p) for p in loose[:TODO_MAX]],
        "gaps": [
            {"box": b["box"], "cp": b["cp"], "missing": b["missing"], "gaps": b["gaps"]}
            for b in boxes
            if b["missing"]
        ],
    }


def audit_view(store: HQStore) -> list[dict[str, Any]]:
    """The newest corrections, newest first, each passage named by control and time."""
    rows = audit_rows(store)[-AUDIT_MAX:]
    return list(reversed(rows))


class BoardReader:
    """Polls HQ's database; keeps the board's state and the uncertainty history."""

    def __init__(
        self,
        path: str | Path,
        stages: resultsmod.Stages | None = None,
        *,
        history_points: int = HISTORY_POINTS,
        feed_size: int = FEED_SIZE,
    ) -> None:
        self.path = Path(path)
        self.stages = stages
        self.feed_size = feed_size
        self._store: HQStore | None = None
        self._data_version: int | None = None
        self._events_mark: tuple[Any, ...] | None = None
        self._status_seen: dict[str, str] = {}
        self.history: dict[str, deque[list[Any]]] = {}
        self._history_points = history_points
        self._hist_id = 0  # last status_history row read
        self._stored = False  # HQ's database keeps the history itself
        self.passages: list[dict[str, Any]] = []
        self.results: resultsmod.Results | None = None
        self.state: dict[str, Any] = {
            "hq": {"db": "waiting", "now_ms": 0},
            "boxes": [],
            "feed": [],
            "results": results_view(None),
            "checkpoints": [],
            "todo": {"unassigned": 0, "items": [], "gaps": []},
            "audit": [],
        }

    def close(self) -> None:
        """Close the read-only connection."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def poll(self, now_ms: int) -> dict[str, Any]:
        """Read what changed since the last poll: {section: new value}, plus `hist`
        (new uncertainty points per box) when there are any. Empty when nothing changed.
        """
        if self._store is None:
            self._store = open_readonly(self.path)
            if self._store is None:
                hq = {"db": f"waiting for {self.path} (is `checkpoint hq run` started?)"}
                return self._set({"hq": {**hq, "now_ms": now_ms}})
        store = self._store
        version = store.db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return {}
        self._data_version = version
        changed: dict[str, Any] = {}
        mark = store.db.execute(
            "SELECT (SELECT max(id) FROM events), (SELECT max(id) FROM corrections),"
            " (SELECT max(id) FROM conflicts)"  # a conflict takes a passage out of results
        ).fetchone()
        if mark != self._events_mark:
            self._events_mark = tuple(mark)
            self.passages = store.passages()
            self.results = (
                resultsmod.compute(self.passages, self.stages) if self.stages is not None else None
            )
            newest = sorted(self.passages, key=lambda p: p["utc_ns"] or 0)[-self.feed_size :]
            changed["feed"] = [feed_row(p) for p in reversed(newest)]
            changed["results"] = results_view(self.results)
            cps = {p["checkpoint"] for p in self.passages if p.get("checkpoint")}
            if self.stages is not None:
                cps |= {s.start for s in self.stages.stages} | {
                    s.finish for s in self.stages.stages
                }
            changed["checkpoints"] = sorted(cps)
            changed["audit"] = audit_view(store)
        boxes, hist = self._boxes(store)
        changed["boxes"] = boxes
        changed["todo"] = todo_view(self.passages, boxes)
        st = store.state()
        last_rx = store.db.execute("SELECT max(received_at) FROM events").fetchone()[0]
        changed["hq"] = {
            "db": "ok",
            "link": link_text(st.get("link")),
            "data_ms": _iso_ms(last_rx),
            "heartbeat_ms": _iso_ms(st.get("heartbeat_at")),
            "events": store.event_count(),
            "rejects": store.total_rejects(),
            "now_ms": now_ms,
        }
        out = self._set(changed)
        if hist:
            out["hist"] = hist
        return out

    def _set(self, changed: dict[str, Any]) -> dict[str, Any]:
        """Keep the sections that really changed; return only those."""
        out = {}
        for k, v in changed.items():
            if k == "hq" or self.state.get(k) != v:
                self.state[k] = v
                out[k] = v
        return out

    def _boxes(self, store: HQStore) -> tuple[list[dict[str, Any]], dict[str, list[list[Any]]]]:
        rows = {r["box"]: r for r in store.box_rows()}
        # A lost box's status ({"state":"lost"}, its last will) names no checkpoint:
        # its passages still do.
        last_cp = {p["box"]: p["checkpoint"] for p in self.passages if p.get("checkpoint")}
        boxes, hist = [], {}
        if not self._stored:
            self._stored = "status_history" in store.db.table_names()
        for b in store.summaries():
            raw = rows.get(b.box, {}).get("status")
            try:
                status = json.loads(raw) if raw else {}
            except ValueError:
                status = {}
            cp = status.get("checkpoint") if isinstance(status, dict) else None
            seen = _iso_ms(b.status_at)
            boxes.append(
                {
                    "box": b.box,
                    "cp": cp if isinstance(cp, str) and cp else last_cp.get(b.box, ""),
                    "state": b.state,
                    "clock": b.clock or "",
                    "unc": fmt_uncertainty(b.uncertainty_ns),
                    "backlog": b.backlog,
                    "seen_ms": seen,
                    "last": utc_hundredths(b.last_passage_utc_ns) if b.last_passage_utc_ns else "",
                    "last_ms": (b.last_passage_utc_ns or 0) // 1_000_000 or None,
                    "place": (status.get("place") or "") if isinstance(status, dict) else "",
                    "events": b.events,
                    "missing": b.missing,
                    "gaps": b.gaps,
                    "chain": b.chain,
                    "rejects": b.rejects,
                }
            )
            # One history point per status message HQ received (status_at moves), for
            # a database without HQ's stored history (before m003).
            if seen is not None and b.status_at != self._status_seen.get(b.box):
                self._status_seen[b.box] = b.status_at or ""
                if b.uncertainty_ns is not None and b.state == "online" and not self._stored:
                    point = [seen, b.uncertainty_ns, b.clock or ""]
                    q = self.history.setdefault(b.box, deque(maxlen=self._history_points))
                    q.append(point)
                    hist[b.box] = [point]
        # HQ's stored statuses: the plot has its history after a board restart.
        for r in store.status_history(self._hist_id, self._history_points):
            self._hist_id = r["id"]
            point = [_iso_ms(r["at"]), r["uncertainty_ns"], r["clock"] or ""]
            self.history.setdefault(r["box"], deque(maxlen=self._history_points)).append(point)
            hist.setdefault(r["box"], []).append(point)
        return boxes, hist

    def history_view(self) -> dict[str, list[list[Any]]]:
        """The whole uncertainty history, per box (for a browser that just connected)."""
        return {box: list(q) for box, q in self.history.items()}

    def passages_view(self, car: str = "", cp: str = "") -> dict[str, Any]:
        """Every passage HQ holds for a car and/or a control, newest first (not the feed's
        latest few): what the feed's filters show."""
        rows = [
            feed_row(p)
            for p in self.passages
            if (not car or p.get("car") == car) and (not cp or p.get("checkpoint") == cp)
        ]
        rows.sort(key=lambda r: r["ms"] or 0, reverse=True)
        return {"car": car, "cp": cp, "passages": rows}

    def car_view(self, car: str) -> dict[str, Any]:
        """Everything about one car: its passages at every control and its stage results."""
        passages = [feed_row(p) for p in self.passages if p.get("car") == car]
        passages.sort(key=lambda r: r["ms"] or 0)
        result = None
        if self.results is not None:
            for c in self.results.cars:
                if c.car == car:
                    result = {
                        **resultsmod.car_json(c),
                        "st": [
                            {"stage": sr.stage, "target": resultsmod.fmt_seconds(sr.target_ns)}
                            | _stage_cell(sr)
                            for sr in c.stages
                        ],
                    }
        return {"car": car, "passages": passages, "result": result}
