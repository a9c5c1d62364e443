"""`hq status` and `hq watch`: what HQ knows of each box, one `BoxSummary` per box.

Read-only over HQ's tables (boxes, stores, rejects, events); `HQStore.summaries` calls it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from checkpoint.contracts import is_int

Db = Any  # a sqlite_utils.Database (HQStore.db)


@dataclass(frozen=True, slots=True)
class BoxSummary:
    """One line of `hq status`: what HQ knows of a box."""

    box: str
    state: str  # online | lost | offline | unknown
    clock: str | None
    uncertainty_ns: int | None
    backlog: int | None
    status_at: str | None
    last_passage_utc_ns: int | None
    current_store: str | None
    stores: int
    events: int
    upto: int
    missing: int
    gaps: str
    resend_requests: int
    duplicates: int
    conflicts: int
    rejects: int
    #: Breaks of the box's hash chain found so far (all its stores).
    chain_breaks: int = 0
    #: "ok" (sealed, no break), "broken", "unsealed" (older box software) or "-" (nothing yet).
    chain: str = "-"


def summaries(db: Db) -> list[BoxSummary]:
    """What `hq status` and `hq watch` show, one entry per box ever seen."""
    rejects = {r[0]: r[1] for r in db.execute("SELECT box, count(*) FROM rejects GROUP BY box")}
    last_passage = {
        r[0]: r[1]
        for r in db.execute(
            "SELECT box, max(utc_ns) FROM events WHERE type='passage' AND quarantine IS NULL"
            " GROUP BY box"
        )
    }
    stores: dict[str, list[dict[str, Any]]] = {}
    for s in db.query("SELECT * FROM stores ORDER BY box, first_seen_at, rowid"):
        stores.setdefault(s["box"], []).append(s)
    out = []
    for b in db.query("SELECT * FROM boxes ORDER BY box"):
        try:
            st = json.loads(b["status"]) if b["status"] else {}
        except ValueError:
            st = {}
        state = b["state"]
        shown = {"ready": "online", "lost": "lost", "offline": "offline"}.get(
            state or "", "unknown" if state is None else str(state)
        )
        cur = next((s for s in stores.get(b["box"], []) if s["store"] == b["current_store"]), None)
        all_stores = stores.get(b["box"], [])
        breaks = sum(s["chain_breaks"] or 0 for s in all_stores)
        out.append(
            BoxSummary(
                box=b["box"],
                state=shown,
                clock=st.get("clock") if isinstance(st.get("clock"), str) else None,
                uncertainty_ns=_int_or_none(st.get("uncertainty_ns")),
                backlog=_int_or_none(st.get("backlog")),
                status_at=b["status_at"],
                last_passage_utc_ns=last_passage.get(b["box"]),
                current_store=b["current_store"],
                stores=len(all_stores),
                events=sum(s["events"] or 0 for s in all_stores),
                upto=cur["upto"] if cur else 0,
                missing=sum(s["missing"] or 0 for s in all_stores),
                gaps="; ".join(
                    f"{s['store'][:8]}:{s['gaps']}" if len(all_stores) > 1 else s["gaps"]
                    for s in all_stores
                    if s["gaps"]
                ),
                resend_requests=sum(s["resend_requests"] or 0 for s in all_stores),
                duplicates=b["duplicates"] or 0,
                conflicts=b["conflicts"] or 0,
                rejects=rejects.get(b["box"], 0),
                chain_breaks=breaks,
                chain=_chain_word(breaks, all_stores),
            )
        )
    return out


def _chain_word(breaks: int, stores: list[dict[str, Any]]) -> str:
    """ "broken", "ok" (sealed, no break), "unsealed" (older box software) or "-"."""
    if breaks:
        return "broken"
    if any(s["chain_sealed"] for s in stores):
        return "ok"
    if any(s["chain_unsealed"] for s in stores):
        return "unsealed"
    return "-"


def _int_or_none(v: object) -> int | None:
    return v if is_int(v) else None  # type: ignore[return-value]
