"""The rally office at one control, for the marshal's page: who is due, who that was.

With the event file and the entry list on the box (`[web] event`, `[web] entries`),
the marshal's page shows the cars expected next with their due times and pre-fills
each passage with the car HQ's own identification (`checkpoint.hq.identify`) predicts:
the marshal confirms it with one tap or types another number. A passage the
prediction is not sure of is marked "to confirm" and stands out. Pure: the box's
recent passages and the time in; the page's extra fields out.

The box sees only its own control, so its predictions come from each car's start
and the schedule (HQ, with every control, anchors on the car's previous passage and
is sharper); a marshal's typed number always wins, here as at HQ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from checkpoint.hq.dualtiming import merge
from checkpoint.hq.entries import Entry
from checkpoint.hq.event import Event
from checkpoint.hq.identify import identify
from checkpoint.hq.office import starts_of

NEXT_CARS = 6
PAST_NS = 30 * 1_000_000_000  # a car this far past its due time is still "expected"


class MarshalOffice:
    """Predictions for checkpoint `checkpoint` from `event` and `entries`."""

    def __init__(self, event: Event, entries: list[Entry], checkpoint: str) -> None:
        self.event, self.checkpoint = event, checkpoint
        self.control = event.control(checkpoint)
        self.entries = entries
        self.starts = starts_of(event, entries) if event.scheduled else {}

    @property
    def usable(self) -> bool:
        """False when this control is not in the event or the event has no schedule."""
        return self.control is not None and bool(self.starts)

    def view(
        self, passages: Iterable[Mapping[str, Any]], now_utc_ns: int
    ) -> tuple[dict[int, dict[str, str]], list[dict[str, Any]]]:
        """(seq → {"car", "s": "auto"|"confirm"}, the next cars due: car, due ms, utc)."""
        if not self.usable or self.control is None:
            return {}, []
        rows = [
            {
                "box": "",
                "store": "",
                "seq": p["seq"],
                "checkpoint": self.checkpoint,
                "input": p.get("input") or "beam",
                "utc_ns": p["utc_ns"],
                "uncertainty_ns": p.get("uncertainty_ns") or 0,
                "car": p.get("car") or None,
                "car_source": "marshal" if p.get("car") else None,
                "void": bool(p.get("void")),
            }
            for p in passages
            if isinstance(p.get("seq"), int) and isinstance(p.get("utc_ns"), int)
        ]
        idp = self.event.identify
        timed = {
            self.checkpoint: merge(rows, self.control, idp.pair_window_ns, idp.dual_tolerance_ns)
        }
        retired = {e.number for e in self.entries if e.status == "retired"}
        idn = identify(self.event, timed, self.starts, retired=retired)
        pred: dict[int, dict[str, str]] = {}
        seen: set[str] = set()
        for call in idn.calls.get(self.checkpoint, []):
            if call.car is not None:
                seen.add(call.car)
            if call.status in ("auto", "confirm") and call.suggest is not None:
                for key in call.timed.members:
                    pred[key[2]] = {"car": call.suggest, "s": call.status}
        due = [
            (t, car)
            for car, t in idn.expected.get(self.checkpoint, [])
            if car not in seen and t >= now_utc_ns - PAST_NS
        ]
        nxt = [
            {"car": car, "ms": t // 1_000_000, "late": t < now_utc_ns}
            for t, car in sorted(due)[:NEXT_CARS]
        ]
        return pred, nxt
