"""The rally office: HQ's passages + event + entry list → identified passages, results.

`build(rows, event, entries)` is pure: it pairs each control's inputs
(`dualtiming`), identifies the cars (`identify`), fills the export rows' `car` and
`car_source` ("auto" where HQ identified the car; a person's assignment is never
overwritten) and classifies (`classify`). `load(store)` reads what it needs from
HQ's database and calls it; every view (CLI, board, results page) goes through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checkpoint.errors import ConfigError
from checkpoint.hq.classify import Classification, classify
from checkpoint.hq.dualtiming import Timed, merge
from checkpoint.hq.entries import Entry, start_ns
from checkpoint.hq.event import Event
from checkpoint.hq.identify import Identification, identify


@dataclass
class Office:
    """Everything the rally office derives from one snapshot of HQ's database."""

    event: Event
    entries: list[Entry]
    starts: dict[str, int]
    timed: dict[str, list[Timed]]
    identification: Identification
    rows: list[dict[str, Any]]
    classification: Classification


def starts_of(event: Event, entries: list[Entry]) -> dict[str, int]:
    """Each running car's scheduled start (UTC ns)."""
    out = {}
    for e in entries:
        if not e.running:
            continue
        try:
            out[e.number] = start_ns(e.start, event.date, event.timezone)
        except ConfigError as err:
            raise ConfigError(f"entry {e.number}: {err}") from None
    return out


def identified_rows(rows: list[Mapping[str, Any]], idn: Identification) -> list[dict[str, Any]]:
    """Export rows with the identification's car where no person gave one."""
    out = []
    for r in rows:
        row = dict(r)
        call = idn.by_key.get((r["box"], r["store"], r["seq"]))
        if call is not None and call.car is not None and not row.get("car"):
            row["car"], row["car_source"] = call.car, call.source
        out.append(row)
    return out


def build(
    rows: list[Mapping[str, Any]], event: Event, entries: list[Entry], *, final: bool = True
) -> Office:
    """Pair, identify and classify (pure)."""
    idp = event.identify
    timed = {
        c.id: merge(rows, c, idp.pair_window_ns, idp.dual_tolerance_ns) for c in event.controls
    }
    starts = starts_of(event, entries) if event.scheduled else {}
    retired = {e.number for e in entries if e.status == "retired"}
    idn = identify(event, timed, starts, retired=retired)
    counts = idn.counts()
    cls = classify(
        event,
        entries,
        starts_of(event, entries),
        idn.car_passages(),
        final=final,
        to_confirm=counts.get("confirm", 0),
        unknown=counts.get("unknown", 0),
    )
    return Office(event, entries, starts, timed, idn, identified_rows(rows, idn), cls)
