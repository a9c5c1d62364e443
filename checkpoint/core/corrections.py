"""A passage with its corrections folded in: the one row shape the box shows.

The box's store (`Store.passages`) and the marshal feed (box/marshalfeed.py) both turn
a passage event and the `restamp`/`assign`/`void` events naming it into one row, so the
marshal page shows the same row whether it came from the card at start or from this
run's events. Pure.

A row is the passage's payload plus `void` (False until voided) and `corrections` (the
seqs applied, in order). A `restamp` or `assign` copies its fields over (the new
`utc_ns`/`utc`/`clock`/`uncertainty_ns`, or `car`), envelope keys excepted; a `void`
sets `void` True and `void_reason` from its `reason`; `<type>_by` records each
correction's `by`. A correction naming a correction rather than a passage is not
interpreted here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CORRECTION_TYPES = ("restamp", "assign", "void")

#: Keys of an event that describe the event itself (timing.Pipeline's envelope), never
#: copied onto the passage a correction names.
ENVELOPE_KEYS = frozenset({"schema", "type", "box", "checkpoint", "store", "seq", "ref_seq", "by"})


def row(passage: Mapping[str, Any]) -> dict[str, Any]:
    """A passage event as a row with nothing applied yet (a new dict)."""
    out = dict(passage)
    out.setdefault("void", False)
    out["corrections"] = []
    return out


def apply(passage_row: Mapping[str, Any], correction: Mapping[str, Any]) -> dict[str, Any]:
    """The row with one correction event applied (a new dict; the old one is unchanged,
    so a row already handed to another thread is never mutated)."""
    out = dict(passage_row)
    kind = correction["type"]
    if kind == "void":
        out["void"] = True
        out["void_reason"] = correction.get("reason")
    else:
        out.update({k: v for k, v in correction.items() if k not in ENVELOPE_KEYS})
    if "by" in correction:
        out[f"{kind}_by"] = correction["by"]
    out["corrections"] = [*passage_row.get("corrections", ()), correction["seq"]]
    return out
