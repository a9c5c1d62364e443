"""PPS edges + NMEA `Fix`es → `Sample(mono_ns, utc_s)`: which UTC second each pulse marks.

The pulse gives the *instant* (a kernel tick, µs-exact); the sentence gives the *label*
(which second). Getting the instant wrong costs microseconds and the clock model's
outlier filter catches it; getting the label wrong costs a whole second and nothing
downstream could tell. So this module is built to refuse rather than guess: every
doubt produces no sample and a counted reason in `rejects`.

Model
-----
Pulses are put on a *grid*: a pulse is accepted when it lies a whole number `n ≥ 1`
of periods after the previous accepted pulse, within ``grid_slop_ns + n·ppm_tol``
(the period is learnt from the grid itself once it spans ``learn_period_s``;
before that ``max_ppm`` bounds it). Grid index `g` counts elapsed whole seconds, so a
missing pulse (`n = 2`) still advances the index by elapsed time, never by pulse
count. A pulse within ``double_pulse_ns`` of the previous edge is a bounce: the
first edge is kept. A pulse off the grid is held as a candidate and dropped; two
candidates on a grid of their own re-anchor the grid (the receiver restarted).

A sentence's *phase* is its arrival minus the latest grid pulse. With the
``"after"`` convention (most receivers: the sentence for S follows the pulse of S by
50–600 ms) a phase in ``(guard_ns, window_ns)`` labels that pulse. With
``"before"`` (the sentence naming S precedes the pulse of S) the *lead* to the next
pulse, ``period − phase``, must be in ``(guard_ns, window_ns)`` and the label
waits for that pulse. A phase outside the accepted band but clearly inside the
second is evidence *against* the configured convention; a phase within
``guard_ns`` of a pulse is ambiguous (jitter could put it on either side). Both
are refused, and when ``mismatch_votes`` of the last ``mismatch_window`` seconds
voted so, `mismatch` latches: no sample is produced again by this Pairer (a wrong
convention is a configuration error, and un-latching on a few clean seconds would
let through exactly the seconds whose phase happens to look plausible).

Limits of that evidence: "after" with latency L and "before" with lead 1 s − L
produce the same phases. Only the band edges discriminate; a receiver whose
sentences land in the middle of the second under the wrong convention is paired
wrong by exactly one second. The convention must be right in config; `phase_ns`
(median phase of recent seconds) is exposed so it can be checked at setup.

Every pairing (g, S) must keep ``S − g`` constant (the named second increments by
one per elapsed second). A chain of ``confirm`` consecutive consistent pairings is
required before any sample leaves; the held ones are then released together. A
change of ``S − g`` (date jump, rollover, negative leap, a mislabelled second) is
refused and counted as ``date_jump``, and the chain must be confirmed again.
Sentences for one second that name different seconds (``conflict``) break the
chain. Several sentences naming the same second give one sample.

Leap seconds: a sentence flagged ``leap`` (23:59:60) is not paired, and the chain
is broken, so pairing resumes ``confirm`` seconds after the step with the POSIX
labels of the new day. Samples therefore never straddle the step consistently:
the clock model sees a whole-second label step and relabels its fit (see clock.py).

Only sentences with ``frac_ns == 0`` label pulses (a 5 Hz receiver's other
sentences are counted as ``fractional`` and ignored). Invalid fixes never label.

Reject keys: ``double_pulse``, ``off_grid``, ``regrid``, ``missing_pulse`` (grid
steps of n > 1), ``no_fix`` (a pulse nobody labelled), ``unpaired`` (a valid
sentence with no pulse to label: NMEA without PPS), ``invalid_fix``,
``ambiguous_phase``, ``convention_mismatch``, ``conflict``, ``date_jump``,
``leap``, ``unconfirmed`` (held pairings dropped when a chain broke),
``out_of_order``. `stats` counts ``pulses``, ``fixes``, ``paired``,
``duplicate_sentence``, ``fractional``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from checkpoint.nmea import Fix

NS_PER_S = 1_000_000_000

CONVENTIONS = ("after", "before")


@dataclass(frozen=True, slots=True)
class Sample:
    """One paired pulse: the PPS assert tick and the POSIX second it marks."""

    mono_ns: int
    utc_s: int


class Pairer:
    """Pairs PPS ticks with the UTC second named by NMEA sentences; refuses when unsure.

    Feed every PPS edge to `pps` and every parsed sentence to `fix`, in arrival
    order; each returns the samples that became certain with that input (often
    none). Pure: no I/O, no clock reads.
    """

    def __init__(
        self,
        convention: str = "after",
        *,
        confirm: int = 3,
        guard_ns: int = 30_000_000,
        window_ns: int = 900_000_000,
        double_pulse_ns: int = 100_000_000,
        grid_slop_ns: int = 2_000_000,
        max_ppm: float = 500.0,
        learnt_ppm: float = 50.0,
        learn_period_s: int = 16,
        max_gap_s: int = 900,
        mismatch_votes: int = 3,
        mismatch_window: int = 8,
    ) -> None:
        """Thresholds (all documented in the module docstring).

        `confirm`: consistent seconds required before the first sample of a chain.
        `guard_ns`: a sentence this close to a pulse is ambiguous (30 ms covers
        user-space read latency of the serial line). `window_ns`: the accepted
        latency ("after") or lead ("before"). `max_ppm`: bound on the monotonic
        clock's rate error before the period is learnt (500 ppm also covers an NTP
        slew). `max_gap_s`: beyond this a pulse gap re-anchors the grid (past
        ~1000 s even 500 ppm would make the whole-second count ambiguous).
        """
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
        if confirm < 1:
            raise ValueError("confirm must be >= 1")
        self.convention = convention
        self.confirm = confirm
        self.guard_ns = guard_ns
        self.window_ns = window_ns
        self.double_pulse_ns = double_pulse_ns
        self.grid_slop_ns = grid_slop_ns
        self.max_ppm = max_ppm
        self.learnt_ppm = learnt_ppm
        self.learn_period_s = learn_period_s
        self.max_gap_ns = max_gap_s * NS_PER_S
        self.mismatch_votes = mismatch_votes
        self.mismatch_window = mismatch_window

        self.stats: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.mismatch = False

        self._last_edge: int | None = None
        # Grid: latest accepted pulse, its index, and where the grid started.
        self._anchor: int | None = None
        self._g = 0
        self._grid_start = 0
        self._grid_start_g = 0
        self._candidate: int | None = None
        # Label bookkeeping for the current interval (after) / next pulse (before).
        self._label: int | None = None  # second named for the open interval / next pulse
        self._label_g: int | None = None  # grid index that label is meant for
        self._label_bad = False
        self._voted_g: int | None = None
        self._leap_g: int | None = None
        self._votes: deque[bool] = deque(maxlen=mismatch_window)
        # Chain of consistent pairings.
        self._offset: int | None = None  # S − g of the current chain
        self._streak = 0
        self._held: list[Sample] = []
        self._phases: deque[int] = deque(maxlen=16)

    # ---------------------------------------------------------------- public

    @property
    def phase_ns(self) -> int | None:
        """Median phase (sentence arrival − latest pulse) of recent seconds, or None."""
        if not self._phases:
            return None
        ordered = sorted(self._phases)
        return ordered[len(ordered) // 2]

    def status(self) -> dict:
        """JSON-able summary for the daemon's status output."""
        return {
            "convention": self.convention,
            "mismatch": self.mismatch,
            "phase_ns": self.phase_ns,
            "chain": self._streak,
            "stats": dict(self.stats),
            "rejects": dict(self.rejects),
        }

    def pps(self, mono_ns: int) -> list[Sample]:
        """Take one PPS assert tick; return samples that became certain."""
        self.stats["pulses"] += 1
        last = self._last_edge
        if last is not None:
            if mono_ns <= last:
                self.rejects["out_of_order"] += 1
                return []
            if mono_ns - last < self.double_pulse_ns:
                # A bounce or a second edge source: the first edge is the assert.
                self.rejects["double_pulse"] += 1
                return []
        self._last_edge = mono_ns

        prev_label, prev_g, prev_bad = self._label, self._label_g, self._label_bad
        had_grid = self._anchor is not None
        step = self._grid_step(mono_ns)
        if step is None:
            return []
        self._label, self._label_g, self._label_bad = None, None, False
        if self.convention == "after":
            # Close the previous interval: its pulse was never labelled.
            if had_grid and prev_g is not None and prev_label is None and not prev_bad:
                self.rejects["no_fix"] += 1
            self._label_g = self._g
            return []
        # "before": the label was announced by a sentence ahead of this pulse.
        if prev_label is not None and not prev_bad:
            if step and prev_g == self._g:
                return self._accept(self._g, mono_ns, prev_label)
            self.rejects["unpaired"] += 1  # the pulse it announced never came
        elif had_grid and prev_label is None and not prev_bad:
            self.rejects["no_fix"] += 1
        return []

    def fix(self, fix: Fix) -> list[Sample]:
        """Take one parsed sentence; return samples that became certain."""
        self.stats["fixes"] += 1
        if not fix.valid:
            self.rejects["invalid_fix"] += 1
            return []
        if fix.frac_ns != 0:
            self.stats["fractional"] += 1
            return []
        if self.mismatch:
            self.rejects["convention_mismatch"] += 1
            return []
        anchor = self._anchor
        if anchor is None:
            self.rejects["unpaired"] += 1
            return []
        phase = fix.mono_ns - anchor
        period = self._period()
        if phase < 0:
            self.rejects["out_of_order"] += 1
            return []
        if phase > period + self.guard_ns:
            # The pulse this sentence belongs with did not come (or PPS is absent).
            self.rejects["unpaired"] += 1
            return []

        if self.convention == "after":
            inside = phase
            target_g = self._g
        else:
            inside = period - phase  # lead to the next pulse
            target_g = self._g + 1
        if inside <= self.guard_ns or inside >= period - self.guard_ns:
            verdict = "ambiguous_phase"
        elif inside >= self.window_ns:
            verdict = "convention_mismatch"
        else:
            verdict = ""
        self._vote(target_g, phase, bool(verdict))
        if verdict:
            self.rejects[verdict] += 1
            self._spoil(target_g)
            self._break_chain()
            return []
        if self.mismatch:
            self.rejects["convention_mismatch"] += 1
            return []

        if fix.leap:
            # 23:59:60: no label for this pulse; resume on the new day's labels.
            if self._leap_g != target_g:
                self.rejects["leap"] += 1
                self._leap_g = target_g
            self._spoil(target_g)
            self._break_chain()
            self._offset = None  # the POSIX labels step by design: not a date jump
            return []

        if self._label_g != target_g:
            self._label, self._label_g, self._label_bad = None, target_g, False
        if self._label_bad:
            return []
        if self._label is None:
            self._label = fix.utc_s
            if self.convention == "after":
                return self._accept(target_g, anchor, fix.utc_s)
            return []
        if self._label == fix.utc_s:
            self.stats["duplicate_sentence"] += 1
            return []
        # Two sentences for one pulse name different seconds: trust neither.
        self.rejects["conflict"] += 1
        self._label_bad = True
        self._break_chain()
        return []

    # --------------------------------------------------------------- private

    def _period(self) -> float:
        """Pulse period in monotonic ns, learnt from the grid once it is long enough."""
        seconds = self._g - self._grid_start_g
        if self._anchor is not None and seconds >= self.learn_period_s:
            return (self._anchor - self._grid_start) / seconds
        return float(NS_PER_S)

    def _ppm_tol(self) -> float:
        seconds = self._g - self._grid_start_g
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

    def _grid_step(self, mono_ns: int) -> int | None:
        """Place a pulse on the grid: elapsed seconds (0 = new grid) or None (dropped)."""
        if self._anchor is None:
            self._new_grid(mono_ns)
            return 0
        n = self._on_grid(self._anchor, mono_ns, self._period(), self._ppm_tol())
        if n:
            if n > 1:
                self.rejects["missing_pulse"] += n - 1
            self._anchor = mono_ns
            self._g += n
            self._candidate = None
            return n
        if mono_ns - self._anchor > self.max_gap_ns:
            self._new_grid(mono_ns)
            return 0
        cand = self._candidate
        if cand is not None and self._on_grid(cand, mono_ns, float(NS_PER_S), self.max_ppm) == 1:
            # Two pulses agree with each other and not with the old grid: new phase.
            self.rejects["regrid"] += 1
            self._new_grid(mono_ns)
            return 0
        self.rejects["off_grid"] += 1
        self._candidate = mono_ns
        return None

    def _new_grid(self, mono_ns: int) -> None:
        self._anchor = mono_ns
        self._grid_start = mono_ns
        self._g = 0
        self._grid_start_g = 0
        self._candidate = None
        self._label, self._label_g, self._label_bad = None, None, False
        self._offset = None  # indices restart: S − g means nothing across grids
        self._break_chain()

    def _spoil(self, target_g: int) -> None:
        self._label_g, self._label, self._label_bad = target_g, None, True

    def _vote(self, target_g: int, phase: int, against: bool) -> None:
        """One vote per second (its first sentence decides; a later contrary one flips it)."""
        if self._voted_g != target_g:
            self._voted_g = target_g
            self._votes.append(against)
            if not against:
                self._phases.append(phase)
        elif against and self._votes and not self._votes[-1]:
            self._votes[-1] = True
        if sum(self._votes) >= self.mismatch_votes and not self.mismatch:
            self.mismatch = True
            self._break_chain()

    def _break_chain(self) -> None:
        if self._held:
            self.rejects["unconfirmed"] += len(self._held)
        self._held = []
        self._streak = 0

    def _accept(self, g: int, pulse_mono: int, utc_s: int) -> list[Sample]:
        if self.mismatch:
            self.rejects["convention_mismatch"] += 1
            return []
        offset = utc_s - g
        if self._offset is not None and offset != self._offset:
            self.rejects["date_jump"] += 1
            self._break_chain()
        self._offset = offset
        self._streak += 1
        sample = Sample(pulse_mono, utc_s)
        if self._streak < self.confirm:
            self._held.append(sample)
            return []
        out = [*self._held, sample]
        self._held = []
        self.stats["paired"] += len(out)
        return out
