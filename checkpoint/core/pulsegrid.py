"""Where PPS pulses fall on a grid of whole seconds (pure; pairing.py's first step).

A pulse is accepted when it lies a whole number ``n ≥ 1`` of periods after the previous
accepted one, within ``grid_slop_ns + n·ppm_tol``; the period is learnt from the grid
itself once it spans ``learn_period_s`` (before that ``max_ppm`` bounds it). The grid
index counts elapsed whole seconds, so a missing pulse advances it by elapsed time,
never by pulse count. A pulse off the grid is held as a candidate and dropped; two
candidates on a grid of their own re-anchor it (the receiver restarted), as does a
gap longer than ``max_gap_ns``.
"""

from __future__ import annotations

from collections import Counter

NS_PER_S = 1_000_000_000


class PulseGrid:
    """The latest accepted pulse, its index, where the grid started, recent pulses."""

    def __init__(
        self,
        rejects: Counter[str],
        *,
        grid_slop_ns: int,
        max_ppm: float,
        learnt_ppm: float,
        learn_period_s: int,
        max_gap_ns: int,
    ) -> None:
        self.rejects = rejects  # the pairer's, so its status has one set of reasons
        self.grid_slop_ns = grid_slop_ns
        self.max_ppm = max_ppm
        self.learnt_ppm = learnt_ppm
        self.learn_period_s = learn_period_s
        self.max_gap_ns = max_gap_ns
        self.anchor: int | None = None  # the latest pulse on the grid
        self.g = 0  # its index: whole seconds since the grid started
        self._start = 0
        self._start_g = 0
        self._candidate: int | None = None
        self.pulses: dict[int, int] = {}  # recent grid index → pulse tick

    def period(self) -> float:
        """Pulse period in monotonic ns, learnt from the grid once it is long enough."""
        seconds = self.g - self._start_g
        if self.anchor is not None and seconds >= self.learn_period_s:
            return (self.anchor - self._start) / seconds
        return float(NS_PER_S)

    def _ppm_tol(self) -> float:
        seconds = self.g - self._start_g
        return self.learnt_ppm if seconds >= self.learn_period_s else self.max_ppm

    def _on_grid(self, base: int, mono_ns: int, period: float, ppm: float) -> int:
        """Whole periods from `base` to `mono_ns`, or 0 when not on that grid."""
        delta = mono_ns - base
        if delta <= 0 or delta > self.max_gap_ns:
            return 0
        n = round(delta / period)
        if n < 1:
            return 0
        tol = self.grid_slop_ns + n * period * ppm * 1e-6
        return n if abs(delta - n * period) <= tol else 0

    def place(self, mono_ns: int) -> int | None:
        """Place a pulse: elapsed seconds since the last (0: a new grid began) or None."""
        step = self._step(mono_ns)
        if step is not None:
            self.pulses[self.g] = mono_ns
            for old in [g for g in self.pulses if g < self.g - 3]:
                del self.pulses[old]
        return step

    def _step(self, mono_ns: int) -> int | None:
        if self.anchor is None:
            self._restart(mono_ns)
            return 0
        n = self._on_grid(self.anchor, mono_ns, self.period(), self._ppm_tol())
        if n:
            if n > 1:
                self.rejects["missing_pulse"] += n - 1
            self.anchor = mono_ns
            self.g += n
            self._candidate = None
            return n
        if mono_ns - self.anchor > self.max_gap_ns:
            self._restart(mono_ns)
            return 0
        cand = self._candidate
        if cand is not None and self._on_grid(cand, mono_ns, float(NS_PER_S), self.max_ppm) == 1:
            # Two pulses agree with each other and not with the old grid: new phase.
            self.rejects["regrid"] += 1
            self._restart(mono_ns)
            return 0
        self.rejects["off_grid"] += 1
        self._candidate = mono_ns
        return None

    def _restart(self, mono_ns: int) -> None:
        self.anchor = mono_ns
        self._start = mono_ns
        self.g = 0
        self._start_g = 0
        self._candidate = None
        self.pulses = {}
