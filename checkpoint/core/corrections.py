"""One fold of corrections into passages: which car, void or not, which time.

A correction names a passage and does one of four things; each touches one *slot* of
the passage, and slots are independent:

    assign  {car}                                  → slot "car":   `car`
    void    {reason}                               → slot "void":  `void` True, `void_reason`
    unvoid  {}                                     → slot "void":  `void` False
    restamp {utc_ns, utc, clock, uncertainty_ns}   → slot "stamp": those four fields

In every slot the correction with the highest `rank` wins, whatever order the
corrections arrive or are stored in, so a fold is deterministic.

The rank is the one parameter, and it is where the rooms differ:

* On a box, corrections are its own events: rank `(seq,)`, the later one wins (a box
  has no `unvoid`: it only ever voids).
* At HQ, an HQ correction overrides any box correction, the latest HQ correction (by
  its audit id) wins among HQ ones, the highest box seq among box ones: rank
  `(1, id)` for HQ, `(0, seq)` for the box (`checkpoint.hq.store`'s docstring).

So "HQ overrides the box" is a ranking, not a second fold: HQ's export, `is_void`, the
box's own passage list and the marshal page's feed all fold the same way.

Pure: dicts in, new dicts out; nothing here reads a database.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("assign", "void", "unvoid", "restamp")
STAMP_FIELDS = ("utc_ns", "utc", "clock", "uncertainty_ns")
_SLOT = {"assign": "car", "void": "void", "unvoid": "void", "restamp": "stamp"}


@dataclass(frozen=True, slots=True)
class Correction:
    """One correction of the passage `ref`.

    `ref` is the passage's key in the caller's terms (a box: its seq; HQ: (box, store,
    seq)). `fields` holds what the action needs (`car`; `reason`; the stamp fields) and
    may hold more (`by`, ...). `rank` orders corrections of one slot: highest wins.
    """

    ref: Hashable
    action: str
    rank: tuple[int, ...]
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in _SLOT:
            raise ValueError(f"unknown correction {self.action!r} (one of {', '.join(ACTIONS)})")

    @property
    def slot(self) -> str:
        """ "car", "void" or "stamp"."""
        return _SLOT[self.action]


Winners = dict[str, Correction]  # slot → the correction that counts


def winners(corrections: Iterable[Correction]) -> dict[Hashable, Winners]:
    """Per passage `ref`, the correction that counts in each slot (highest rank)."""
    out: dict[Hashable, Winners] = {}
    for c in corrections:
        slots = out.setdefault(c.ref, {})
        best = slots.get(c.slot)
        if best is None or c.rank > best.rank:
            slots[c.slot] = c
    return out


def apply(passage: Mapping[str, Any], won: Winners, *, fill: bool = True) -> dict[str, Any]:
    """A copy of `passage` with the corrections in `won` applied, slot by slot.

    A slot not in `won` keeps what the passage has, so a feed may apply corrections one
    at a time in rank order (the marshal page's rolling list) and get the same row as
    one fold. A restamp replaces the stamp fields it carries. With `fill` (HQ's rows),
    `car`, `void` and `void_reason` are always present in the result (None, False, None
    for an uncorrected passage); without it (the box's rows, whose shape `checkpoint
    passages --json` publishes) a key no correction set stays as the passage has it.
    """
    row = dict(passage)
    if fill:
        row.setdefault("car", None)
        row.setdefault("void", False)
        row.setdefault("void_reason", None)
    car = won.get("car")
    if car is not None:
        row["car"] = car.fields.get("car")
    v = won.get("void")
    if v is not None:
        row["void"] = v.action == "void"
        row["void_reason"] = v.fields.get("reason") if row["void"] else None
    stamp = won.get("stamp")
    if stamp is not None:
        row.update({f: stamp.fields[f] for f in STAMP_FIELDS if f in stamp.fields})
    return row


def fold(
    passages: Mapping[Hashable, Mapping[str, Any]], corrections: Iterable[Correction]
) -> dict[Hashable, dict[str, Any]]:
    """Every passage with its corrections applied (`apply` after `winners`), same keys."""
    won = winners(corrections)
    return {ref: apply(p, won.get(ref, {})) for ref, p in passages.items()}


def is_void(corrections: Iterable[Correction]) -> bool:
    """Whether the winning void-slot correction among `corrections` is a `void`."""
    best: Correction | None = None
    for c in corrections:
        if c.slot == "void" and (best is None or c.rank > best.rank):
            best = c
    return best is not None and best.action == "void"
