"""HQ corrections as an operator types them, checked against what HQ knows.

An operator at the timing tent sees "a passage at PC2 at 10:32:05 with no car",
not "box07 seq 14". Here a passage is chosen by control and local time of day
(or by the car it carries), and what was typed is checked before anything is
written:

* a control HQ never saw is an error naming it (with the closest known id);
* a car number with a space ("12 A") is an error, never a silent new car;
* a car no passage at HQ carries is not in the field: refused unless `new_car`;
* a car that already has a passage at that control: refused unless `force`
  (a control that starts and finishes a loop sees a car twice);
* unvoiding a passage that is not void is refused (no audit row for nothing).

`apply_rows` checks a whole batch (a bulk CSV, read by ops_csv.py) against HQ's
passages *and* the batch's own earlier rows, reports every problem at once with its
line, and writes nothing unless all are right; then it writes them in one transaction.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from checkpoint.contracts import MAX_REASON
from checkpoint.core import corrections
from checkpoint.errors import CommandError
from checkpoint.hq.audit import check_car
from checkpoint.hq.localtime import NS, local_dt, local_time
from checkpoint.hq.store import HQStore

_TOD = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")


# -- local time ---------------------------------------------------------------------


def parse_time_of_day(text: str) -> tuple[int, int]:
    """ "10:32", "10:32:05" or "10:32:05.12" → (ns after local midnight, resolution ns)."""
    m = _TOD.match(text.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59 or int(m.group(3) or 0) > 59:
        raise CommandError(
            f"time {text!r}: give the local time of day as HH:MM, HH:MM:SS or HH:MM:SS.ff"
        )
    h, mi, s, frac = m.group(1), m.group(2), m.group(3), m.group(4)
    start = (int(h) * 3600 + int(mi) * 60 + int(s or 0)) * NS
    if frac:
        start += int(frac.ljust(9, "0"))
        return start, 10 ** (9 - len(frac))
    return start, (NS if s else 60 * NS)


def _time_of_day_ns(utc_ns: int, tz: dt.tzinfo | None) -> int:
    t = local_dt(utc_ns, tz)
    return (t.hour * 3600 + t.minute * 60 + t.second) * NS + utc_ns % NS


# -- what a person typed --------------------------------------------------------------


def typed_car(text: object) -> str:
    """A car number as typed at HQ: no inner blanks (a "12 A" is a typo, not a car)."""
    raw = str(text) if text is not None else ""
    if re.search(r"\s", raw.strip()):
        squeezed = re.sub(r"\s+", "", raw)
        raise CommandError(
            f"car number {raw!r} contains a space: type it as painted on the car "
            f"(e.g. {squeezed!r})"
        )
    return check_car(raw)


def suggest(given: str, known: Iterable[str]) -> str:
    """ "; did you mean X?" for the closest known id, else ""."""
    close = difflib.get_close_matches(given, sorted(known), n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def controls_known(store: HQStore) -> set[str]:
    """Every control (checkpoint id) HQ has a passage from or a box status naming it."""
    seen = {
        r[0]
        for r in store.db.execute("SELECT DISTINCT checkpoint FROM events WHERE checkpoint != ''")
        if r[0]
    }
    for s in store.box_rows():
        cp = _status_field(s.get("status"), "checkpoint")
        if cp:
            seen.add(cp)
    return seen


def _status_field(raw: str | None, key: str) -> str | None:
    import json

    try:
        st = json.loads(raw) if raw else {}
    except ValueError:
        return None
    v = st.get(key) if isinstance(st, dict) else None
    return v if isinstance(v, str) and v else None


def places(store: HQStore) -> dict[str, str]:
    """Control id → place name, from the boxes' status (`[box] place` in their config)."""
    out: dict[str, str] = {}
    for s in store.box_rows():
        cp = _status_field(s.get("status"), "checkpoint")
        place = _status_field(s.get("status"), "place")
        if cp and place:
            out[cp] = place
    return out


def unseen_controls(stage_controls: Iterable[str], known: set[str]) -> list[str]:
    """One problem line per control a stages file names that HQ has never seen."""
    out = []
    for cp in dict.fromkeys(stage_controls):
        if cp not in known:
            seen = ", ".join(sorted(known)) or "none yet"
            out.append(
                f"control {cp!r} was never seen at HQ (controls seen: {seen}){suggest(cp, known)}"
            )
    return out


# -- choosing a passage -----------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """How an operator names one passage: control + time of day and/or car, or box + seq."""

    control: str | None = None
    at: str | None = None
    car: str | None = None  # the car the passage carries now
    box: str | None = None
    seq: int | None = None
    store: str | None = None


def _key(row: dict[str, Any]) -> tuple[str, str, int]:
    return (row["box"], row["store"], row["seq"])


def describe(row: dict[str, Any], tz: dt.tzinfo | None = None) -> str:
    """ "PC2 10:32:05.12 car 12 (box07 #14)", how every message names a passage."""
    car = f"car {row['car']}" if row.get("car") else "no car"
    void = ", void" if row.get("void") else ""
    return (
        f"{row['checkpoint']} {local_time(row['utc_ns'], tz)} {car}{void}"
        f" ({row['box']} #{row['seq']})"
    )


def _by_seq(rows: Sequence[dict[str, Any]], pick: Pick) -> dict[str, Any]:
    """The passage BOX SEQ (`--store` a prefix when the seq is in several stores)."""
    cands = [r for r in rows if r["box"] == pick.box and r["seq"] == pick.seq]
    if pick.store:
        cands = [r for r in cands if r["store"].startswith(pick.store)]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise CommandError(f"box {pick.box!r} has no passage with seq {pick.seq} at HQ")
    raise CommandError(f"box {pick.box!r} seq {pick.seq} is in several stores; add --store")


def _meant(cands: list[dict[str, Any]], action: str, pick: Pick) -> list[dict[str, Any]]:
    """Of several candidates, the ones the action can mean (if any; else all of them)."""
    if action == "unvoid":
        return [r for r in cands if r["void"]] or cands
    if len(cands) > 1 and action == "assign" and pick.car is None:
        # "The passage at 10:32 with no car" is what the operator means.
        return [r for r in cands if not r["car"] and not r["void"]] or cands
    if len(cands) > 1 and action == "void":
        return [r for r in cands if not r["void"]] or cands
    return cands


def choose(
    rows: Sequence[dict[str, Any]],
    pick: Pick,
    *,
    action: str,
    controls: set[str] | None = None,
    tz: dt.tzinfo | None = None,
) -> dict[str, Any]:
    """The one passage `pick` names, or a CommandError listing the candidates."""
    if pick.box is not None:
        return _by_seq(rows, pick)
    if not pick.control:
        raise CommandError("say which passage: --control and --at/--car, or BOX SEQ")
    here = [r for r in rows if r["checkpoint"] == pick.control]
    if not here:
        known = controls if controls is not None else {r["checkpoint"] for r in rows}
        seen = ", ".join(sorted(known)) or "none yet"
        raise CommandError(
            f"control {pick.control!r} has no passages at HQ (controls seen: {seen})"
            + suggest(pick.control, known)
        )
    if pick.at is None and pick.car is None:
        raise CommandError(
            f"say which passage at {pick.control}: --at HH:MM:SS (see `hq todo`) or --car N"
        )
    cands = here
    if pick.at is not None:
        start, res = parse_time_of_day(pick.at)
        cands = [r for r in cands if start <= _time_of_day_ns(r["utc_ns"], tz) < start + res]
    if pick.car is not None:
        cands = [r for r in cands if r["car"] == pick.car]
    cands = _meant(cands, action, pick)
    what = " ".join(
        x
        for x in (
            pick.control,
            f"at {pick.at}" if pick.at else "",
            f"car {pick.car}" if pick.car else "",
        )
        if x
    )
    if not cands:
        near = sorted(here, key=lambda r: r["utc_ns"])
        if pick.car is not None and pick.at is None:
            raise CommandError(f"car {pick.car} has no passage at {pick.control}")
        listed = ", ".join(local_time(r["utc_ns"], tz) for r in near[:8])
        raise CommandError(f"no passage {what}; passages there at: {listed}")
    if len(cands) > 1:
        listed = "; ".join(describe(r, tz) for r in cands[:8])
        raise CommandError(
            f"{len(cands)} passages match {what}: {listed}; give the time to the hundredth"
        )
    return cands[0]


# -- one correction, checked --------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One correction as typed: which passage, what to do, and the overrides."""

    pick: Pick
    action: str  # assign | void | unvoid
    new_car: str | None = None
    reason: str | None = None
    by: str | None = None
    allow_new_car: bool = False
    force: bool = False


def check(
    rows: list[dict[str, Any]],
    req: Request,
    *,
    controls: set[str] | None = None,
    tz: dt.tzinfo | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the passage, the correction fields) or CommandError saying what is wrong."""
    if req.action not in ("assign", "void", "unvoid"):
        raise CommandError(f"action must be assign, void or unvoid, got {req.action!r}")
    row = choose(rows, req.pick, action=req.action, controls=controls, tz=tz)
    fields: dict[str, Any] = {}
    if req.action == "assign":
        car = typed_car(req.new_car)
        field_ = {r["car"] for r in rows if r["car"]}
        if field_ and car not in field_ and not req.allow_new_car:
            raise CommandError(
                f"car {car} is not in the field (no passage at HQ carries it; "
                f"{len(field_)} cars do){suggest(car, field_)}; add --new-car if it is right"
            )
        twice = [
            r
            for r in rows
            if r["checkpoint"] == row["checkpoint"]
            and r["car"] == car
            and not r["void"]
            and _key(r) != _key(row)
        ]
        if twice and not req.force:
            raise CommandError(
                f"car {car} already has a passage at {row['checkpoint']}: {describe(twice[0], tz)};"
                " void or reassign that one first, or add --force (a loop passes twice)"
            )
        fields["car"] = car
    elif req.action == "void":
        reason = (req.reason or "").strip()
        if not reason or len(reason) > MAX_REASON:
            raise CommandError(f"void needs a reason of 1-{MAX_REASON} characters")
        fields["reason"] = reason
    elif not row["void"]:
        raise CommandError(f"{describe(row, tz)} is not void: nothing to undo")
    return row, fields


def _apply_in_memory(row: dict[str, Any], action: str, fields: dict[str, Any]) -> None:
    """What the export will show once this correction is written (the same fold): later
    rows of a bulk file are checked against it. An HQ correction made now outranks all."""
    c = corrections.Correction(_key(row), action, (1, 0), fields)
    row.update(corrections.apply(row, {c.slot: c}))


def apply_rows(
    store: HQStore,
    requests: Sequence[tuple[str, Request]],
    *,
    tz: dt.tzinfo | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Check every request (labelled, e.g. "line 3"), then write all or none.

    Returns (label, audit row) per request. Raises CommandError listing every
    problem (one per line) when any request is wrong; nothing is written then.
    """
    rows = [dict(r) for r in store.passages()]
    controls = controls_known(store)
    by_key = {_key(r): r for r in rows}
    planned: list[tuple[str, dict[str, Any], Request, dict[str, Any]]] = []
    problems = []
    for label, req in requests:
        try:
            row, fields = check(rows, req, controls=controls, tz=tz)
        except CommandError as err:
            problems.append(f"{label}: {err}")
            continue
        _apply_in_memory(by_key[_key(row)], req.action, fields)
        planned.append((label, row, req, fields))
    if problems:
        raise CommandError("\n".join(problems))
    done = []
    with store.transaction():
        for label, row, req, fields in planned:
            cid = store.add_correction(
                box=row["box"],
                store=row["store"],
                ref_seq=row["seq"],
                action=req.action,
                source="hq",
                by=(req.by or "hq").strip() or "hq",
                **fields,
            )
            done.append((label, {"id": cid, "passage": describe(row, tz), **fields}))
    return done


# -- audit ---------------------------------------------------------------------------


def audit_rows(store: HQStore) -> list[dict[str, Any]]:
    """The audit trail with each passage named as an operator knows it."""
    where = {
        (r["box"], r["store"], r["seq"]): r
        for r in store.db.query(
            "SELECT box, store, seq, checkpoint, utc_ns FROM events WHERE type='passage'"
        )
    }
    out = []
    for c in store.corrections():
        p = where.get((c["box"], c["store"], c["ref_seq"]), {})
        out.append(
            {
                "id": c["id"],
                "at": c["at"],
                "by": c["by"] or c["source"],
                "source": c["source"],
                "action": c["action"],
                "control": p.get("checkpoint") or "",
                "passage": local_time(p.get("utc_ns")),
                "ms": p["utc_ns"] // 1_000_000 if p.get("utc_ns") is not None else None,
                "car": c["car"] or "",
                "reason": c["reason"] or c["detail"] or "",
                "box": c["box"],
                "seq": c["ref_seq"],
            }
        )
    return out
