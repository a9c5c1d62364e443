"""Is the box ready? One verdict from the daemon's status, for every place that asks.

`doctor` (preflight), the marshal page and the status LED all judge the same status
message (README "Status") with these rules, so they cannot disagree:

* clock: `locked` within the bound is ok; `holdover` within the bound is a warning
  (the PPS is lost, times are extrapolated from the disciplined clock and still inside
  what the box promises, but someone should look); anything wider than
  `max_uncertainty_ns`, or `nmea`/`unsynced` (millisecond grade or the system clock,
  neither times a regularity stage to the hundredth), is bad;
* an input is bad when it chatters (`fault`) or has read broken for `BEAM_BLOCKED_S`
  (a car breaks a beam for well under a second: longer is a blocked or misaligned
  beam, or a button held down), and a warning when its level is unknown;
* the broker not connected is a warning: passages are kept on the card.

`ready` is "nothing bad". Pure: no clock of its own (the caller says how long each
input has read broken, e.g. with `BrokenFor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OK, WARN, BAD = "ok", "warn", "bad"
BEAM_BLOCKED_S = 3.0
MAX_UNCERTAINTY_NS = 100_000  # a box that times to the tenth of a millisecond


def _num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def clock_level(status: Mapping[str, Any], max_uncertainty_ns: int = MAX_UNCERTAINTY_NS) -> str:
    """ok, warn or bad for the status's `clock` and `uncertainty_ns` (module docstring)."""
    clock, unc = status.get("clock"), status.get("uncertainty_ns")
    within = not _num(unc) or unc <= max_uncertainty_ns
    if clock == "locked":
        return OK if within else BAD
    if clock == "holdover":
        return WARN if within and _num(unc) else BAD
    return BAD


def input_problem(
    info: Mapping[str, Any], broken_for_s: float, blocked_after_s: float = BEAM_BLOCKED_S
) -> str | None:
    """ "fault", "blocked", "unknown" (its level) or None for one input of the status."""
    if info.get("fault"):
        return "fault"
    if broken_for_s >= blocked_after_s:  # the caller saw it read broken this long
        return "blocked"
    if info.get("broken") is None:
        return "unknown"
    return None


def input_level(
    info: Mapping[str, Any], broken_for_s: float, blocked_after_s: float = BEAM_BLOCKED_S
) -> str:
    problem = input_problem(info, broken_for_s, blocked_after_s)
    return OK if problem is None else WARN if problem == "unknown" else BAD


@dataclass
class BrokenFor:
    """How long each input has read broken, across statuses (one status cannot tell a
    passing car from a blocked beam). `update` returns seconds per input."""

    _since: dict[str, float] = field(default_factory=dict)

    def update(self, now_s: float, status: Mapping[str, Any]) -> dict[str, float]:
        inputs = status.get("inputs")
        out: dict[str, float] = {}
        for name, info in (inputs if isinstance(inputs, Mapping) else {}).items():
            if isinstance(info, Mapping) and info.get("broken"):
                out[name] = now_s - self._since.setdefault(name, now_s)
            else:
                self._since.pop(name, None)
        return out


@dataclass(frozen=True)
class Verdict:
    clock: str
    inputs: dict[str, str]  # input name -> level
    broker: str

    @property
    def ready(self) -> bool:
        levels = [self.clock, self.broker, *self.inputs.values()]
        return BAD not in levels


def verdict(
    status: Mapping[str, Any],
    *,
    link: bool | None,
    broken_for_s: Mapping[str, float],
    max_uncertainty_ns: int = MAX_UNCERTAINTY_NS,
    blocked_after_s: float = BEAM_BLOCKED_S,
) -> Verdict:
    """The box's readiness from one status; `link` is whether the broker is connected."""
    inputs = status.get("inputs")
    inputs = inputs if isinstance(inputs, Mapping) else {}
    return Verdict(
        clock=clock_level(status, max_uncertainty_ns),
        inputs={
            name: input_level(
                info if isinstance(info, Mapping) else {},
                broken_for_s.get(name, 0.0),
                blocked_after_s,
            )
            for name, info in inputs.items()
        },
        broker=OK if link is True else WARN,
    )
