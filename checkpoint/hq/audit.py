"""HQ's audit trail of corrections: appending a sealed row, and checking HQ's own.

Every correction (HQ's and the boxes') is one row of `corrections`, sealed on the row
before (`checkpoint.hq.integrity`), so an edited or deleted row breaks the chain
`checkpoint verify` walks. `HQStore.add_correction` and `HQStore.correct` call these.
"""

from __future__ import annotations

from typing import Any

from checkpoint.contracts import MAX_CAR, MAX_REASON
from checkpoint.errors import CommandError
from checkpoint.hq import integrity

Db = Any  # a sqlite_utils.Database (HQStore.db)


def append(db: Db, row: dict[str, Any]) -> int:
    """Insert one audit row, sealed on the row before; returns its id."""
    # The seal names the row before: read it and insert under the write lock, or a
    # correction from the CLI and one from the collector could both follow the
    # same row. Inside a caller's transaction, the caller holds it.
    own = not db.conn.in_transaction
    if own:
        db.execute("BEGIN IMMEDIATE")
    try:
        last = db.execute(
            "SELECT hash FROM corrections WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
        row = integrity.seal_correction(row, last[0] if last else None)
        cols = ", ".join(row)
        cur = db.execute(
            f"INSERT INTO corrections ({cols}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
    except BaseException:
        if own:
            db.conn.rollback()
        raise
    if own:
        db.conn.commit()
    return int(cur.lastrowid or 0)


def check_car(car: object) -> str:
    """A car number: 1-16 printable characters (the box's own rule), else CommandError."""
    text = str(car).strip() if car is not None else ""
    if not (1 <= len(text) <= MAX_CAR) or not text.isprintable():
        raise CommandError(f"car number must be 1-{MAX_CAR} printable characters, got {car!r}")
    return text


def check_hq_correction(
    action: str, car: str | None, reason: str | None, by: str | None
) -> tuple[str | None, str | None, str]:
    """(car, reason, by) of an HQ correction as stored, or CommandError naming the fault."""
    if action not in ("assign", "void", "unvoid"):
        raise CommandError(f"unknown correction {action!r}")
    if action == "assign":
        car = check_car(car)
    if action == "void":
        reason = (reason or "").strip()
        if not reason or len(reason) > MAX_REASON:
            raise CommandError(f"void needs a reason of 1-{MAX_REASON} characters")
    return car, reason, (by or "hq").strip() or "hq"


def resolve_passage(db: Db, box: str, seq: int, store: str | None = None) -> str:
    """The store holding passage (box, seq); `store` may be a unique prefix.

    Raises CommandError when there is no such passage or the choice is ambiguous.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise CommandError(f"seq must be a positive integer, got {seq!r}")
    rows = db.execute(
        "SELECT store, type, quarantine FROM events WHERE box=? AND seq=?", (box, seq)
    ).fetchall()
    if store is not None:
        rows = [r for r in rows if r[0].startswith(store)]
    passages = [r for r in rows if r[1] == "passage"]
    where = f"box {box!r}" + (f" store {store!r}" if store else "")
    if not passages:
        if rows:
            kinds = ", ".join(sorted({r[1] for r in rows}))
            raise CommandError(f"{where} seq {seq} is a {kinds} event, not a passage")
        raise CommandError(f"{where} has no event with seq {seq} at HQ")
    if len(passages) > 1:
        names = ", ".join(r[0] for r in passages)
        raise CommandError(f"{where} seq {seq} exists in several stores ({names}); add --store")
    if passages[0][2]:
        raise CommandError(f"{where} seq {seq} is quarantined ({passages[0][2]}); see hq rejects")
    return passages[0][0]
