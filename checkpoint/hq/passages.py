"""HQ's passages as exported: every box's passages with all corrections folded in.

What HQ holds is events (passages, restamps) and an audit trail of corrections (assign,
void, unvoid; HQ's and the boxes'). This module reads them and hands them to the one
fold (`checkpoint.core.corrections`) with HQ's ranking: an HQ correction overrides any
box correction, the latest HQ one (by id) wins among HQ's, the highest box seq among the
box's; of several restamps the highest seq wins.

A seq with two valid versions (a forgery and the box's own) counts only as the version HQ
decided to keep (`checkpoint.hq.integrity`); undecided, neither counts, and box
corrections made by a disputed event count only if the version they came in is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from checkpoint.core import corrections as fold
from checkpoint.hq import integrity

Db = Any  # a sqlite_utils.Database (HQStore.db)
Key = tuple[str, str, int]  # (box, store, seq)

# Fields of an export row, in order: the event's own names, then the corrections.
EXPORT_FIELDS = (
    "box",
    "store",
    "seq",
    "checkpoint",
    "input",
    "source",
    "mono_ns",
    "utc_ns",
    "utc",
    "clock",
    "uncertainty_ns",
    "car",
    "void",
    "void_reason",
    "restamped",
    "orig_utc_ns",
    # Where `car` comes from: "hq" or "marshal" (a person), "auto" (identified by
    # HQ from the schedule, `hq export` with an event loaded), empty without a car.
    "car_source",
)
_EVENT_FIELDS = EXPORT_FIELDS[:11]


def rank(source: str, correction_id: int, event_seq: int | None) -> tuple[int, int]:
    """HQ's precedence: HQ (1, audit id) beats box (0, the box event's seq)."""
    return (1, correction_id) if source == "hq" else (0, event_seq or 0)


def audit_corrections(
    rows: Iterable[Mapping[str, Any]], unproven: set[Key]
) -> list[fold.Correction]:
    """Assign/void/unvoid rows of the audit trail as corrections of (box, store, ref_seq).

    Restamps are left to `restamp_corrections` (they are read from the events, whose
    versions the integrity checks vouch for); `keep` decisions are not passage fixes.
    A box correction whose own event seq is in `unproven` is left out.
    """
    out = []
    for c in rows:
        if c["action"] not in ("assign", "void", "unvoid"):
            continue
        if c["source"] == "box" and (c["box"], c["store"], c["event_seq"]) in unproven:
            continue  # made by an event whose seq is disputed
        out.append(
            fold.Correction(
                (c["box"], c["store"], c["ref_seq"]),
                c["action"],
                rank(c["source"], c["id"], c["event_seq"]),
                {"car": c["car"], "reason": c["reason"], "source": c["source"]},
            )
        )
    return out


def is_void(db: Db, box: str, store: str, seq: int) -> bool:
    """Whether the passage is void now, by the precedence `passages` applies."""
    rows = db.execute(
        "SELECT id, source, event_seq, action FROM corrections"
        " WHERE box=? AND store=? AND ref_seq=? AND action IN ('void', 'unvoid')",
        (box, store, seq),
    ).fetchall()
    return fold.is_void(
        fold.Correction((box, store, seq), action, rank(source, cid, event_seq))
        for cid, source, event_seq, action in rows
    )


def passages(db: Db, checkpoint: str | None = None) -> list[dict[str, Any]]:
    """One row per passage (EXPORT_FIELDS) with assignments, voids and restamps applied.

    Quarantined passages are left out (they are in `rejects`). Voided ones stay, flagged,
    so the export is a complete audit. Ordered by effective UTC, then box, store, seq.
    """
    disputed = integrity.disputed(db)
    events = _passage_events(db, checkpoint, disputed)
    audit = db.execute("SELECT * FROM corrections ORDER BY id")
    cols = [d[0] for d in audit.description]
    rows = [dict(zip(cols, r, strict=True)) for r in audit.fetchall()]
    corrections = [
        *audit_corrections(rows, _unproven(db, disputed)),
        *_restamp_corrections(db, disputed),
    ]
    won = fold.winners(corrections)
    out = [_export_row(key, ev, won.get(key, {})) for key, ev in events.items()]
    out.sort(key=lambda r: (r["utc_ns"], r["box"], r["store"], r["seq"]))
    return out


def _counts(disputed: Mapping[Key, str | None], key: Key, payload: str) -> bool:
    """A stored event counts unless its seq is disputed and it is not the kept version."""
    return key not in disputed or disputed[key] == integrity.version_id(payload)


def _passage_events(
    db: Db, checkpoint: str | None, disputed: Mapping[Key, str | None]
) -> dict[Key, dict[str, Any]]:
    sql = "SELECT box, store, seq, payload FROM events WHERE type='passage' AND quarantine IS NULL"
    params: list[Any] = []
    if checkpoint is not None:
        sql += " AND checkpoint=?"
        params.append(checkpoint)
    out = {}
    for box, store, seq, payload in db.execute(sql, params).fetchall():
        if _counts(disputed, (box, store, seq), payload):
            out[(box, store, seq)] = json.loads(payload)
    for (box, store, seq), kept in disputed.items():
        # The version HQ kept may be the one in `conflicts`, not in `events`.
        other = db.execute(
            "SELECT payload FROM conflicts WHERE box=? AND store=? AND seq=? AND hash=?"
            " AND quarantine IS NULL",
            (box, store, seq, kept),
        ).fetchone()
        ev = json.loads(other[0]) if other else {}
        if ev.get("type") == "passage" and checkpoint in (None, ev.get("checkpoint")):
            out[(box, store, seq)] = ev
    return out


def _restamp_corrections(db: Db, disputed: Mapping[Key, str | None]) -> list[fold.Correction]:
    out = []
    for box, store, seq, payload in db.execute(
        "SELECT box, store, seq, payload FROM events WHERE type='restamp' AND quarantine IS NULL"
    ):
        if _counts(disputed, (box, store, seq), payload):
            ev = json.loads(payload)
            out.append(fold.Correction((box, store, ev["ref_seq"]), "restamp", (seq,), ev))
    return out


def _unproven(db: Db, disputed: Mapping[Key, str | None]) -> set[Key]:
    """Disputed seqs whose first stored version is not the kept one: box corrections
    were made from the version stored first, so they count only if that one is kept."""
    out = set()
    for key, kept in disputed.items():
        first = db.execute(
            "SELECT payload FROM events WHERE box=? AND store=? AND seq=?", key
        ).fetchone()
        if kept is None or first is None or integrity.version_id(first[0]) != kept:
            out.add(key)
    return out


def _export_row(key: Key, ev: Mapping[str, Any], won: fold.Winners) -> dict[str, Any]:
    row = fold.apply({f: ev.get(f) for f in _EVENT_FIELDS}, won)
    row["box"], row["store"], row["seq"] = key
    row["orig_utc_ns"] = ev.get("utc_ns")
    row["restamped"] = "stamp" in won
    car = won.get("car")
    row["car_source"] = None if car is None else ("hq" if car.rank[0] else "marshal")
    return {f: row.get(f) for f in EXPORT_FIELDS}
