"""`hq status` / `hq watch` as text: controls by id and place, fitting a printed page.

One line per box (control, place, box, state, clock, last passage in local time,
backlog, missing, events, last status), at most ~100 characters, and an indented
second line only for a box with something unusual (duplicates, conflicts, rejects,
a broken chain, a new SD card), so the common case stays one glance per control.
"""

from __future__ import annotations

import json
import time
from typing import Any

from checkpoint.hq.localtime import local_time
from checkpoint.hq.store import BoxSummary, HQStore

STATE_COLOUR = {"online": "32", "lost": "31;1", "offline": "33", "unknown": "2"}


def _age(iso: str | None, now: float) -> str:
    if not iso:
        return "never"
    import datetime as dt

    try:
        t = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return iso
    s = max(0.0, now - t.timestamp())
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago"


def link_text(link: str | None) -> str:
    """The collector's link in words: "connected" / "disconnected: why" / "never ran".

    The MQTT detail "(session present: False)" means nothing to an operator.
    """
    if not link:
        return "never ran"
    return link.split(" (session present")[0]


def _where(store: HQStore) -> dict[str, tuple[str, str]]:
    out = {}
    for b in store.box_rows():
        try:
            st = json.loads(b["status"]) if b["status"] else {}
        except ValueError:
            st = {}
        st = st if isinstance(st, dict) else {}
        cp, place = st.get("checkpoint"), st.get("place")
        out[b["box"]] = (cp if isinstance(cp, str) else "", place if isinstance(place, str) else "")
    return out


def _extra(b: BoxSummary) -> str:
    bits = []
    if b.stores > 1:
        bits.append(f"new SD card: store {(b.current_store or '')[:8]} ({b.stores} stores)")
    if b.duplicates:
        bits.append(f"{b.duplicates} duplicates")
    if b.conflicts:
        bits.append(f"{b.conflicts} conflicts")
    if b.rejects:
        bits.append(f"{b.rejects} rejects (hq rejects)")
    if b.chain_breaks:
        bits.append(f"chain broken: {b.chain_breaks} breaks (checkpoint verify)")
    if b.missing:
        bits.append(f"missing seq {b.gaps}")
    return ", ".join(bits)


def render(store: HQStore, *, colour: bool = False, now: float | None = None) -> str:
    """The status text; `colour` adds ANSI colours per box state."""
    now = time.time() if now is None else now
    st = store.state()
    head = (
        f"HQ collector: {link_text(st.get('link'))}, heartbeat "
        f"{_age(st.get('heartbeat_at'), now)}; {store.event_count()} events, "
        f"{store.total_rejects()} rejects, {store.total_chain_breaks()} chain breaks"
    )
    where = _where(store)
    header = ["control", "place", "box", "state", "clock", "± µs", "last", "backlog"]
    header += ["gaps", "events", "seen"]
    rows: list[tuple[list[str], str, str]] = []
    summaries = sorted(store.summaries(), key=lambda b: (where.get(b.box, ("", ""))[0], b.box))
    for b in summaries:
        cp, place = where.get(b.box, ("", ""))
        cells = [
            cp or "-",
            (place[:19] + "…") if len(place) > 20 else (place or "-"),
            b.box,
            b.state,
            b.clock or "-",
            f"{b.uncertainty_ns / 1e3:.1f}" if b.uncertainty_ns is not None else "-",
            local_time(b.last_passage_utc_ns, digits=0) or "-",
            str(b.backlog) if b.backlog is not None else "-",
            str(b.missing),
            str(b.events),
            _age(b.status_at, now),
        ]
        rows.append((cells, b.state, _extra(b)))
    widths = [
        max(len(r[i]) for r in [header, *(c for c, _, _ in rows)]) for i in range(len(header))
    ]

    def line(cells: list[str], state: str | None = None) -> str:
        text = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        if colour and state in STATE_COLOUR:
            return f"\x1b[{STATE_COLOUR[state]}m{text}\x1b[0m"
        return text

    out = [head if len(head) <= 100 else head.replace("; ", "\n  "), ""]
    out += [line(header), "  ".join("-" * w for w in widths)]
    for cells, state, extra in rows:
        out.append(line(cells, state))
        if extra:
            out.append(f"    {extra}"[:100])
    if not rows:
        out.append("(no box seen yet)")
    out.append("local times; last = latest passage HQ holds; gaps = events HQ still lacks")
    return "\n".join(out) + "\n"


def status_json(store: HQStore) -> dict[str, Any]:
    """`hq status --json`: the same document as before plus each box's control and place."""
    from dataclasses import asdict

    where = _where(store)
    boxes = []
    for b in store.summaries():
        d = asdict(b)
        d["checkpoint"], d["place"] = where.get(b.box, ("", ""))
        boxes.append(d)
    return {"hq": store.state(), "boxes": boxes}
