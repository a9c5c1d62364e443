"""Passage detection: beam edges → passages. Pure: no I/O, no clock reads.

A passage is an active period (beam broken / button pressed) that lasts at least
`min_break` and whose leading edge comes at least `lockout` after the previous
passage's leading edge on the same input. Its time is the leading edge: that is
the instant the car's nose cut the beam, and the only edge whose kernel tick we
trust as the car's. Shorter breaks (insects, rain) are glitches; breaks inside the
lockout (wheel gaps, a trailer, a re-trigger) belong to the previous car.

A passage is reported as soon as it is certain (when the break has lasted
`min_break`, not when it ends), so the stamp reaches HQ while the car is still in
the beam.

`RateLimiter` keeps a chattering input (a loose connector: thousands of edges a
second) from flooding the box: it admits a bounded number of edges per second per
input and holds back only the latest excess edge, so memory stays constant and the
input's final level is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass

_SECOND_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Passage:
    """A detected passage; `mono_ns` is the kernel tick of its leading edge."""

    input: str
    source: str
    mono_ns: int


@dataclass(slots=True)
class _InputState:
    source: str
    min_break_ns: int
    lockout_ns: int
    active: bool = False
    lead_ns: int | None = None
    decided: bool = True
    last_passage_ns: int | None = None
    glitches: int = 0
    suppressed: int = 0
    chatter: int = 0
    passages: int = 0


class Detector:
    """Turns per-input edges into passages.

    `inputs` maps input name → (source, min_break_ns, lockout_ns). Edges must be
    fed in arrival order per input; `advance(now_ns)` reports passages whose break
    has lasted long enough although the beam is still broken.
    """

    def __init__(self, inputs: dict[str, tuple[str, int, int]]) -> None:
        self._inputs = {
            name: _InputState(source=src, min_break_ns=mb, lockout_ns=lo)
            for name, (src, mb, lo) in inputs.items()
        }

    def edge(self, name: str, mono_ns: int, active: bool, fault: bool = False) -> list[Passage]:
        """Feed one edge; returns the passage it completes, if any.

        `fault` marks an edge at which the rate limiter started or stopped
        dropping this input's edges: the level is right but what happened in
        between is unknown, so no break spanning it can be a passage.
        """
        st = self._inputs.get(name)
        if st is not None and fault:
            st.chatter += 1
            st.active, st.decided = active, True
            st.lead_ns = mono_ns if active else st.lead_ns
            return []
        if st is None or active == st.active:
            # Unknown input, or a repeated level (an edge lost in the kernel's
            # 16-event queue): nothing new to learn from it.
            return []
        out: list[Passage] = []
        if active:
            st.active, st.lead_ns, st.decided = True, mono_ns, False
        else:
            if not st.decided and st.lead_ns is not None:
                if mono_ns - st.lead_ns >= st.min_break_ns:
                    out.extend(self._decide(name, st))
                else:
                    st.glitches += 1
                    st.decided = True
            st.active = False
        return out

    def advance(self, now_ns: int) -> list[Passage]:
        """Report passages whose break has lasted `min_break` by `now_ns`."""
        out: list[Passage] = []
        for name, st in self._inputs.items():
            if st.active and not st.decided and st.lead_ns is not None:
                if now_ns - st.lead_ns >= st.min_break_ns:
                    out.extend(self._decide(name, st))
        return out

    def _decide(self, name: str, st: _InputState) -> list[Passage]:
        st.decided = True
        lead = st.lead_ns
        assert lead is not None
        if st.last_passage_ns is not None and lead - st.last_passage_ns < st.lockout_ns:
            st.suppressed += 1
            return []
        st.last_passage_ns = lead
        st.passages += 1
        return [Passage(input=name, source=st.source, mono_ns=lead)]

    def min_break_ns(self, name: str) -> int:
        return self._inputs[name].min_break_ns

    def next_due(self) -> int | None:
        """Earliest tick at which `advance` could report a passage, if any is pending."""
        due = [
            st.lead_ns + st.min_break_ns
            for st in self._inputs.values()
            if st.active and not st.decided and st.lead_ns is not None
        ]
        return min(due) if due else None

    def levels(self) -> dict[str, bool]:
        """Current level per input as the detector last saw it (True = broken)."""
        return {name: st.active for name, st in self._inputs.items()}

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            name: {
                "passages": st.passages,
                "glitches": st.glitches,
                "suppressed": st.suppressed,
                "chatter": st.chatter,
            }
            for name, st in self._inputs.items()
        }


class RateLimiter:
    """Admits at most `max_per_s` edges per one-second window of kernel ticks.

    The first edge over the limit is admitted flagged as a fault (the detector
    then refuses to make a passage of the break it is in); later ones are counted
    and dropped, except the most recent, which is released, also flagged, when
    the next window opens. A chattering input thus costs O(1) memory, the
    detector still learns its true final level, and the dropped stretch can never
    look like one long break.
    """

    def __init__(self, max_per_s: int) -> None:
        self.max_per_s = max_per_s
        self.dropped = 0
        self._window_start: int | None = None
        self._count = 0
        self._held: tuple[int, bool] | None = None
        self.faulted_until_ns: int = 0

    def offer(self, mono_ns: int, active: bool) -> list[tuple[int, bool, bool]]:
        """An edge arrives; returns the edges to pass on as (tick, level, fault)."""
        out = self.poll(mono_ns)
        if self._window_start is None or mono_ns - self._window_start >= _SECOND_NS:
            self._window_start, self._count = mono_ns, 0
        self._count += 1
        if self._count <= self.max_per_s:
            out.append((mono_ns, active, False))
        elif self._count == self.max_per_s + 1:
            out.append((mono_ns, active, True))
            self._flag(mono_ns)
        else:
            self.dropped += 1
            self._held = (mono_ns, active)
            self._flag(mono_ns)
        return out

    def _flag(self, mono_ns: int) -> None:
        # Stay flagged for a while after the chatter stops, so the status
        # message and the LED show it to the marshal.
        self.faulted_until_ns = mono_ns + 10 * _SECOND_NS

    def poll(self, now_ns: int) -> list[tuple[int, bool, bool]]:
        """Release the held-back final edge once its window has passed."""
        if self._held is None or self._window_start is None:
            return []
        if now_ns - self._window_start < _SECOND_NS:
            return []
        (mono_ns, active), self._held = self._held, None
        self._window_start, self._count = now_ns, 1
        return [(mono_ns, active, True)]

    def faulted(self, now_ns: int) -> bool:
        return now_ns < self.faulted_until_ns
