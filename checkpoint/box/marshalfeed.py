"""What the daemon hands the marshal page (checkpoint/web): status and recent passages.

Written on the core thread, read from the page's thread: `snapshot` and `recent` are
each replaced by one assignment, never mutated, so a reader needs no lock. HQ's
corrections (`hqfix`) are shown beside the passages they concern and never turned into
this box's events: HQ's database is their one owner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from checkpoint import hqfix
from checkpoint.core import corrections

RECENT = 50  # passages the marshal page shows
SNAPSHOT_EVERY_NS = 500_000_000
_KINDS = ("passage", "assign", "void", "restamp")


class MarshalFeed:
    def __init__(self, recent: list[dict[str, Any]]) -> None:
        self.snapshot: dict[str, Any] = {}
        self.hq_fixes: dict[int, dict[str, Any]] = {}  # seq -> HQ's correction (hqfix)
        self.recent: tuple[dict[str, Any], ...] = tuple(recent)
        self._next_snapshot_ns = 0

    def turn(
        self, events: list[dict[str, Any]], now: int, status: Callable[[], dict[str, Any]]
    ) -> None:
        """The latest status twice a second, and this turn's passages and corrections."""
        self._fold(events)
        if now >= self._next_snapshot_ns:
            self._next_snapshot_ns = now + SNAPSHOT_EVERY_NS
            self.snapshot = status()

    def set_hq_fixes(self, payload: bytes, store_id: str) -> None:
        """HQ's retained corrections; ValueError for a document that is not one."""
        self.hq_fixes = hqfix.parse(payload, store_id) if payload else {}
        self.recent = tuple(self._with_hq(r) for r in self.recent)

    def _with_hq(self, row: dict[str, Any]) -> dict[str, Any]:
        fix = self.hq_fixes.get(row["seq"])
        if fix is None:
            return row if "hq" not in row else {k: v for k, v in row.items() if k != "hq"}
        return {**row, "hq": hqfix.label(fix)}

    def _fold(self, events: list[dict[str, Any]]) -> None:
        """Replace `recent` when this turn added passages or corrected one."""
        if not any(ev["type"] in _KINDS for ev in events):
            return
        rows = {r["seq"]: r for r in self.recent}
        for ev in events:
            kind, ref = ev["type"], ev.get("ref_seq")
            if kind == "passage":
                rows[ev["seq"]] = self._with_hq({**ev, "void": False})
            elif kind in _KINDS and ref in rows:
                # Events come in seq order, so each one wins its slot: applying them one
                # at a time is the fold `Store.passages()` makes. `apply` copies: published
                # rows are never changed.
                c = corrections.Correction(ref, kind, (ev["seq"],), ev)
                rows[ref] = corrections.apply(rows[ref], {c.slot: c}, fill=False)
        self.recent = tuple(rows[s] for s in sorted(rows)[-RECENT:])
