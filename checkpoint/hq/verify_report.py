"""What `checkpoint verify` found, and the report it prints (text or JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from checkpoint.core import chain
from checkpoint.errors import CheckpointError


class VerifyError(CheckpointError):
    """The file cannot be read as a box store, an HQ database or an event export."""


@dataclass(slots=True)
class Result:
    """What `checkpoint verify` found in one file."""

    path: str
    kind: str  # "box store" | "HQ database" | "event export"
    report: chain.Report
    #: Breaks found by comparing with anchors outside the chain (a box's status at HQ).
    anchored: list[chain.Break] = field(default_factory=list)
    #: Signed chain heads that verified: (box, store, seq).
    signed: list[tuple[str, str, int]] = field(default_factory=list)
    #: Things worth saying that are not breaks (a box without a signed head, ...).
    notes: list[str] = field(default_factory=list)

    @property
    def breaks(self) -> list[chain.Break]:
        """Every break: one per store at most from the chains, then the anchored ones."""
        return self.report.breaks + self.anchored

    @property
    def ok(self) -> bool:
        """True when every chain verifies."""
        return not self.breaks


def payloads(rows: Iterator[tuple[Any, ...]], where: str) -> Iterator[dict[str, Any]]:
    """Each row's last column as an event dict; a row that is not one keeps its place."""
    for row in rows:
        text = row[-1]
        try:
            ev = json.loads(text)
        except (TypeError, ValueError):
            ev = None
        if not isinstance(ev, dict):
            # Keep its place: the chain reports the row as malformed (or as a gap).
            ev = {"seq": None, "box": row[0] if len(row) > 2 else "?", "store": where}
        yield ev


def render(result: Result) -> str:
    """The human-readable report `checkpoint verify` prints."""
    lines = [f"{result.path}: {result.kind}"]
    for s in result.report.stores:
        span = f"seq {s.first_seq}..{s.last_seq}" if s.first_seq is not None else "no seq"
        state = f"BROKEN at seq {s.breaks[0].seq}" if s.breaks else "ok"
        head = f", head {s.head[:16]}" if s.head and not s.breaks else ""
        lines.append(
            f"  {s.box} store {s.store}: {s.events} events ({span}), "
            f"{s.sealed} sealed, {s.unsealed} unsealed: {state}{head}"
        )
    for box, store, seq in result.signed:
        lines.append(
            f"  {box} store {store}: signed chain head at seq {seq} verified: "
            f"events 1..{seq} are the ones the box sealed"
        )
    lines += [f"  note: {n}" for n in result.notes]
    first = result.breaks[0] if result.breaks else None
    if first is None:
        n = len(result.report.stores)
        lines.append(
            f"OK: {n} chain{'s' if n != 1 else ''}, {result.report.events} events verified"
        )
    else:
        more = len(result.breaks) - 1
        lines.append(f"BROKEN: {first}" + (f" (and {more} more)" if more else ""))
        # Every other finding too: an edited column and the anchor it contradicts are
        # separate evidence, and the official needs all of it.
        lines += [f"  also: {b}" for b in result.breaks[1:50]]
    return "\n".join(lines) + "\n"


def as_json(result: Result) -> dict[str, Any]:
    """The report as a JSON-able dict (`checkpoint verify --json`)."""
    return {
        "path": result.path,
        "kind": result.kind,
        "ok": result.ok,
        "events": result.report.events,
        "stores": [
            {k: v for k, v in asdict(s).items() if k != "breaks"} for s in result.report.stores
        ],
        "breaks": [asdict(b) for b in result.breaks],
        "signed": [{"box": b, "store": s, "seq": n} for b, s, n in result.signed],
        "notes": result.notes,
    }
