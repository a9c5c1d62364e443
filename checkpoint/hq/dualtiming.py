"""Dual timing: a control's inputs paired into one timed passage per car.

A control may be timed by several inputs, as the Mille Miglia posts two
chronometers: two beams, a beam and the marshal's button, two boxes. Each car then
leaves one passage on each input within a moment. `merge` groups them: passages at
one control, on different inputs, within `pair_window_ns` of the group's first,
are one car. The group's time is the primary input's (the first of the control's
`inputs` list, else beam before beam2 before button); when the primary missed the
car, the best backup's time is used and the group says so (`backup`). When primary
and a backup differ by more than their two bounds plus `tolerance_ns`, the group is
flagged (`disagree_ns`): someone should look at that control.

Pure: rows in (HQ export shape), groups out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from checkpoint.hq.event import DEFAULT_INPUT_ORDER, Control

Key = tuple[str, str, int]  # (box, store, seq)


@dataclass(frozen=True, slots=True)
class Timed:
    """One car's passage at a control, from one or more inputs."""

    control: str
    utc_ns: int
    uncertainty_ns: int
    key: Key  # the passage whose time counts
    members: tuple[Key, ...]
    inputs: tuple[str, ...]  # "box:input" of each member, same order
    backup: str | None = None  # the input used because the primary missed
    disagree_ns: int | None = None  # primary - backup, when beyond the bounds
    car: str | None = None  # a marshal's or HQ's assignment (any member)
    car_source: str | None = None  # "marshal" or "hq"
    clock: str | None = None


def _rank(source: str, control: Control) -> tuple[int, int, str]:
    box, _, inp = source.partition(":")
    for i, want in enumerate(control.inputs):
        if want == source or want == inp:
            return (0, i, box)
    order = DEFAULT_INPUT_ORDER.index(inp) if inp in DEFAULT_INPUT_ORDER else 99
    return (1, order, box)


def _human(rows: list[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    # HQ's assignment beats a marshal's; several agree or the first HQ one wins.
    for want in ("hq", "marshal"):
        for r in rows:
            if r.get("car") and (r.get("car_source") or "marshal") == want:
                return str(r["car"]), want
    return None, None


def merge(
    rows: Iterable[Mapping[str, Any]], control: Control, pair_window_ns: int, tolerance_ns: int
) -> list[Timed]:
    """Group one control's non-void passages into timed passages, in time order."""
    live = sorted(
        (r for r in rows if not r.get("void") and r.get("checkpoint") == control.id),
        key=lambda r: (int(r["utc_ns"]), r["box"], r["seq"]),
    )
    groups: list[list[Mapping[str, Any]]] = []
    for r in live:
        src = f"{r['box']}:{r['input']}"
        g = groups[-1] if groups else None
        if (
            g is not None
            and int(r["utc_ns"]) - int(g[0]["utc_ns"]) <= pair_window_ns
            and src not in {f"{x['box']}:{x['input']}" for x in g}
        ):
            g.append(r)
        else:
            groups.append([r])
    # The primary is the declared first input, else the best-ranked input seen here.
    everything = {f"{r['box']}:{r['input']}" for r in live}
    primary = min(everything, key=lambda s: _rank(s, control)) if everything else None
    out = []
    for g in groups:
        srcs = [f"{r['box']}:{r['input']}" for r in g]
        ranked = sorted(range(len(g)), key=lambda i: _rank(srcs[i], control))
        best = g[ranked[0]]
        declared = _rank(srcs[ranked[0]], control)[:2] == (0, 0)
        is_primary = declared if control.inputs else srcs[ranked[0]] == primary
        backup = None if is_primary else srcs[ranked[0]]
        disagree = None
        unc0 = int(best.get("uncertainty_ns") or 0)
        for i in ranked[1:]:
            other = g[i]
            d = int(best["utc_ns"]) - int(other["utc_ns"])
            bound = unc0 + int(other.get("uncertainty_ns") or 0) + tolerance_ns
            if abs(d) > bound and (disagree is None or abs(d) > abs(disagree)):
                disagree = d
        car, source = _human(g)
        out.append(
            Timed(
                control=control.id,
                utc_ns=int(best["utc_ns"]),
                uncertainty_ns=unc0,
                key=(best["box"], best["store"], best["seq"]),
                members=tuple((r["box"], r["store"], r["seq"]) for r in g),
                inputs=tuple(srcs),
                backup=backup,
                disagree_ns=disagree,
                car=car,
                car_source=source,
                clock=best.get("clock"),
            )
        )
    return out
