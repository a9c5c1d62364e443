"""Bulk corrections as an operator writes them in a spreadsheet: a CSV file, one
correction a row, turned into `ops.Request`s (`ops.apply_rows` then checks and writes
them all or none).
"""

from __future__ import annotations

import csv
import io

from checkpoint.errors import CommandError
from checkpoint.hq.ops import Pick, Request

CSV_COLUMNS = ("action", "control", "at", "car", "was", "box", "seq", "store", "reason", "by")


def parse_csv(text: str, source: str = "<csv>") -> list[tuple[str, Request]]:
    """Bulk corrections, one per row. Columns (header required, any order):

    action (assign|void|unvoid), control, at (local time of day), car (assign: the
    car to give; void/unvoid: the car whose passage), was (assign: the car the
    passage carries now), box + seq (+ store) instead of control, reason, by,
    new_car / force ("yes" to override the field and twice-at-a-control checks).
    """
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip() for c in reader.fieldnames or []]
    allowed = (*CSV_COLUMNS, "new_car", "force")
    unknown = [c for c in cols if c not in allowed]
    if not cols or "action" not in cols:
        raise CommandError(f"{source}: needs a header line with at least: action, control, at, car")
    if unknown:
        raise CommandError(
            f"{source}: unknown column {', '.join(unknown)} (columns: {', '.join(allowed)})"
        )
    out: list[tuple[str, Request]] = []
    problems: list[str] = []
    for n, raw in enumerate(reader, start=2):
        r = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(r.values()):
            continue
        label = f"{source} line {n}"
        action = r.get("action", "").lower()
        car = r.get("car") or None
        seq: int | None = None
        if r.get("seq"):
            try:
                seq = int(r["seq"])
            except ValueError:
                problems.append(f"{label}: seq must be a number, got {r['seq']!r}")
                continue
        pick = Pick(
            control=r.get("control") or None,
            at=r.get("at") or None,
            car=(r.get("was") or None) if action == "assign" else car,
            box=r.get("box") or None,
            seq=seq,
            store=r.get("store") or None,
        )
        out.append(
            (
                label,
                Request(
                    pick=pick,
                    action=action,
                    new_car=car if action == "assign" else None,
                    reason=r.get("reason") or None,
                    by=r.get("by") or None,
                    allow_new_car=r.get("new_car", "").lower() in ("yes", "true", "1"),
                    force=r.get("force", "").lower() in ("yes", "true", "1"),
                ),
            )
        )
    if problems:
        raise CommandError("\n".join(problems))
    return out
