"""PPS edges + NMEA `Fix`es → `Sample(mono_ns, utc_s)`: which UTC second each pulse marks.

The pulse gives the *instant* (a kernel tick, µs-exact); the sentence gives the *label*
(which second). Getting the instant wrong costs microseconds and the clock model's
outlier filter catches it; getting the label wrong costs a whole second and nothing
downstream could tell. So this module is built to refuse rather than guess: every
doubt produces no sample and a counted reason in `rejects`.

Model
-----
Pulses are put on a *grid* (pulsegrid.py): a pulse is accepted when it lies a whole number `n ≥ 1`
of periods after the previous accepted pulse, within ``grid_slop_ns + n·ppm_tol``
(the period is learnt from the grid itself once it spans ``learn_period_s``;
before that ``max_ppm`` bounds it). Grid index `g` counts elapsed whole seconds, so a
missing pulse (`n = 2`) still advances the index by elapsed time, never by pulse
count. A pulse within ``double_pulse_ns`` of the previous edge is a bounce: the
first edge is kept. A pulse off the grid is held as a candidate and dropped; two
candidates on a grid of their own re-anchor the grid (the receiver restarted).

A sentence's *phase* is its arrival minus the latest grid pulse; its *latency* is its
arrival minus the pulse it labels. Which pulse a sentence names is decided in this
order:

1. *Continuation.* A label already given to a recent pulse, by a sentence of another
   kind, is the rest of that burst: a chatty receiver at 9600 baud (a u-blox M8 at
   factory settings sends ~830 bytes a second) ends its burst 0.9 s or more after the
   pulse, and a receiver whose output overruns the second sends the tail of the burst
   after the next pulse. Such a sentence is a duplicate while its latency is at most
   ``period + overrun_ns``; later it is ``late_sentence``. A *second* sentence of the
   same kind naming the same second is not a continuation (a receiver sends each kind
   once per second): it goes to rule 3, where a moved label shows as a date jump.
2. *Chain.* A new label that the current chain (``S − g``, below) puts on the latest
   pulse is accepted anywhere in ``(guard_ns, period − guard_ns)``; on the pulse
   before it (the burst's first time sentence came after the next pulse, the
   receiver's backlog having grown past a second) only while its latency stays
   within ``overrun_ns`` of a second and within ``onset_slew_ns`` of the previous
   second's onset: a backlog grows gradually, a moved label jumps by a whole second.
3. *Phase.* Otherwise, with the ``"after"`` convention (the sentence for S follows
   the pulse of S) a phase in ``(guard_ns, window_ns)`` labels the latest pulse; with
   ``"before"`` (the sentence naming S precedes the pulse of S) the *lead* to the next
   pulse, ``period − phase``, must be in ``(guard_ns, window_ns)`` and the label waits
   for that pulse.

Only the first sentence of each named second (its *onset*) is evidence about the
convention: a continuation arriving late in the second is what chatty receivers do.
An onset outside the band but inside the second, or within ``guard_ns`` of a pulse
(jitter could put it on either side), or, with "after", a label whose chain pulse has
not come yet, votes against the configured convention and is refused (convention.py
counts the votes). When ``mismatch_votes`` of the last ``mismatch_window`` onsets voted
so, `mismatch` is
raised: no sample leaves while it stands, and `advice` says what was seen and what to
change. It is not latched for good: it clears after ``mismatch_clear`` consecutive
clean onsets (a receiver reconfigured, a glitchy minute), and then a new chain must
still be confirmed. Long enough that a receiver whose phase only sometimes crosses
the band does not slip through on the seconds that happen to look plausible.

Limits of that evidence: "after" with latency L and "before" with lead 1 s − L
produce the same phases. Only the band edges discriminate; a receiver whose
sentences land in the middle of the second under the wrong convention is paired
wrong by exactly one second. The convention must be right in config; `phase_ns`
(median onset phase of recent seconds) is exposed so it can be checked at setup.
A receiver whose *first* time sentence of a second comes 900 ms or more after the
pulse (time sentences only at the end of a burst that nearly fills the line) looks
exactly like one announcing the coming second ~100 ms ahead: refused, and the advice
names both causes. Likewise a receiver whose backlog already exceeds a second when
the box starts cannot be told from one with the opposite label; `gpsconf` keeps the
output inside the line's capacity and the daemon reports the burst's end (doctor
warns).

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
``leap``, ``unconfirmed`` (held pairings dropped when a chain broke), ``contradicted``
(a fractional-second sentence more than a second away from the chain's time: the chain
is dropped), ``late_sentence``, ``out_of_order``. `stats` counts ``pulses``, ``fixes``,
``paired``, ``duplicate_sentence``, ``overrun_sentence`` (a continuation after the
next pulse), ``chain_overrun`` (an onset after the next pulse, paired by rule 2),
``fractional``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from checkpoint.core.convention import ConventionVote, median
from checkpoint.core.nmea import Fix
from checkpoint.core.pulsegrid import NS_PER_S, PulseGrid
from checkpoint.errors import require_at_least

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
        overrun_ns: int = 600_000_000,
        onset_slew_ns: int = 300_000_000,
        double_pulse_ns: int = 100_000_000,
        grid_slop_ns: int = 2_000_000,
        max_ppm: float = 500.0,
        learnt_ppm: float = 50.0,
        learn_period_s: int = 16,
        max_gap_s: int = 900,
        mismatch_votes: int = 3,
        mismatch_window: int = 8,
        mismatch_clear: int = 30,
    ) -> None:
        """Thresholds (all documented in the module docstring).

        `confirm`: consistent seconds required before the first sample of a chain.
        `guard_ns`: a sentence this close to a pulse is ambiguous (30 ms covers
        user-space read latency of the serial line). `window_ns`: the accepted
        onset latency ("after") or lead ("before") of a second with no chain to go
        by. `overrun_ns`: how far past the next pulse the tail of a burst may still
        arrive (a u-blox drops what its TX buffer cannot hold, so the tail is
        bounded). `max_ppm`: bound on the monotonic clock's rate error before the
        period is learnt (500 ppm also covers an NTP slew). `max_gap_s`: beyond this
        a pulse gap re-anchors the grid (past ~1000 s even 500 ppm would make the
        whole-second count ambiguous).
        """
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
        require_at_least("confirm", confirm, 1)
        self.convention = convention
        self.confirm = confirm
        self.guard_ns = guard_ns
        self.window_ns = window_ns
        self.overrun_ns = overrun_ns
        self.onset_slew_ns = onset_slew_ns
        self.double_pulse_ns = double_pulse_ns
        self.mismatch_clear = mismatch_clear  # clean onsets that lower a mismatch

        self.stats: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self._grid = PulseGrid(
            self.rejects,
            grid_slop_ns=grid_slop_ns,
            max_ppm=max_ppm,
            learnt_ppm=learnt_ppm,
            learn_period_s=learn_period_s,
            max_gap_ns=max_gap_s * NS_PER_S,
        )
        self._conv = ConventionVote(
            convention,
            guard_ns=guard_ns,
            votes=mismatch_votes,
            window=mismatch_window,
            clear=self.mismatch_clear,
        )
        self._start_state()

    def _start_state(self) -> None:
        """What the pairer learns as it goes: empty at start."""
        self._last_edge: int | None = None
        # Label bookkeeping for the current interval (after) / next pulse (before).
        self._label: int | None = None  # second named for the open interval / next pulse
        self._label_g: int | None = None  # grid index that label is meant for
        self._label_bad = False
        self._leap_g: int | None = None
        # Recent named seconds: S → (grid index, kinds seen); continuations find theirs.
        self._named: dict[int, tuple[int, set[str]]] = {}
        self._onset_latency: int | None = None
        # Chain of consistent pairings.
        self._offset: int | None = None  # S − g of the current chain
        self._streak = 0
        self._held: list[Sample] = []
        self._phases: deque[int] = deque(maxlen=16)
        self._tails: deque[int] = deque(maxlen=16)
        self._tail_s: int | None = None

    # ---------------------------------------------------------------- public

    @property
    def mismatch(self) -> bool:
        """True while the onsets say the configured convention is wrong: no samples leave."""
        return self._conv.mismatch

    @property
    def advice(self) -> str | None:
        """While `mismatch` stands: what was seen and what to change (else None)."""
        return self._conv.advice

    @property
    def phase_ns(self) -> int | None:
        """Median onset phase (first time sentence − latest pulse) of recent seconds."""
        return median(self._phases)

    @property
    def tail_ns(self) -> int | None:
        """Median latency of the last time sentence of recent seconds (the burst's end)."""
        return median(self._tails)

    @property
    def anchor_ns(self) -> int | None:
        """The latest pulse placed on the grid (None before the first)."""
        return self._grid.anchor

    def status(self) -> dict:
        """JSON-able summary for the daemon's status output."""
        return {
            "convention": self.convention,
            "mismatch": self.mismatch,
            "advice": self.advice,
            "phase_ns": self.phase_ns,
            "tail_ns": self.tail_ns,
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
        had_grid = self._grid.anchor is not None
        step = self._grid.place(mono_ns)
        if step is None:
            return []
        if step == 0:
            self._forget()  # a new grid: indices restart
        g = self._grid.g
        self._label, self._label_g, self._label_bad = None, None, False
        if self.convention == "after":
            # Close the previous interval: its pulse was never labelled.
            if had_grid and prev_g is not None and prev_label is None and not prev_bad:
                self.rejects["no_fix"] += 1
            self._label_g = g
            return []
        # "before": the label was announced by a sentence ahead of this pulse.
        if prev_label is not None and not prev_bad:
            if prev_g == g:
                # Named even before the grid can vouch for it: the rest of the burst,
                # arriving after this pulse, is then known as a continuation.
                self._name(prev_label, g, None)
            if step and prev_g == g:
                return self._accept(g, mono_ns, prev_label)
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
            self._fractional(fix)
            return []
        anchor = self._grid.anchor
        if anchor is None:
            self.rejects["unpaired"] += 1
            return []
        phase = fix.mono_ns - anchor
        period = self._grid.period()
        if phase < 0:
            self.rejects["out_of_order"] += 1
            return []
        named = self._named.get(fix.utc_s)
        if named is not None and fix.kind not in named[1]:
            self._continuation(fix, named, anchor, period)
            return []
        if phase > period + self.guard_ns:
            # The pulse this sentence belongs with did not come (or PPS is absent).
            self.rejects["unpaired"] += 1
            return []
        if fix.leap:
            self._leap(fix)
            return []
        if self.convention == "after" and self._offset is not None:
            out = self._by_chain(fix, anchor, phase, period)
            if out is not None:
                return out
        return self._by_phase(fix, anchor, phase, period)

    # ------------------------------------------------------- the rules, in order

    def _fractional(self, fix: Fix) -> None:
        """A sentence at a fraction of a second labels no pulse, but still states the time."""
        self.stats["fractional"] += 1
        if self._offset is not None:
            # One more than a second away from what the chain says (a stream spliced
            # from two times) means the chain's labels cannot be trusted either.
            expect = self._grid.g + self._offset
            if abs(fix.utc_s - expect) > 1:
                self.rejects["contradicted"] += 1
                self._conflict()

    def _continuation(
        self, fix: Fix, named: tuple[int, set[str]], anchor: int, period: float
    ) -> None:
        """Rule 1: the rest of a burst whose second is already named."""
        t, kinds = named
        pulses = self._grid.pulses
        latency = fix.mono_ns - pulses.get(t, anchor)
        if t in pulses and latency <= period + self.overrun_ns:
            kinds.add(fix.kind)
            self.stats["duplicate_sentence"] += 1
            if t < self._grid.g:
                self.stats["overrun_sentence"] += 1
            self._tail(fix.utc_s, latency)
            return
        self.rejects["late_sentence"] += 1

    def _leap(self, fix: Fix) -> None:
        """23:59:60: no label for this pulse; resume on the new day's labels."""
        g = self._grid.g
        target_g = g if self.convention == "after" else g + 1
        if self._leap_g != target_g:
            self.rejects["leap"] += 1
            self._leap_g = target_g
        self._spoil(target_g)
        self._break_chain()
        self._offset = None  # the POSIX labels step by design: not a date jump

    def _by_chain(self, fix: Fix, anchor: int, phase: int, period: float) -> list[Sample] | None:
        """Rule 2: the current chain says which pulse this second belongs to (None: no say)."""
        assert self._offset is not None
        g, pulses = self._grid.g, self._grid.pulses
        t = fix.utc_s - self._offset
        confirmed = self._streak >= self.confirm
        # A stamp is never early (the read comes after the bytes): a sentence
        # stamped before the next pulse arrived before it, so a confirmed chain
        # takes the whole interval; an unconfirmed one does not outweigh the phase.
        inside = self.guard_ns < phase < (period if confirmed else self.window_ns)
        if t == g and inside:
            # Late in the second but where the chain puts it: no evidence against.
            return self._onset(fix, t, anchor, phase, late=False)
        if confirmed and t == g - 1 and t in pulses and self._onset_latency:
            latency = fix.mono_ns - pulses[t]
            steady = abs(latency - self._onset_latency) <= self.onset_slew_ns
            if steady and latency <= period + self.overrun_ns:
                self.stats["chain_overrun"] += 1
                return self._onset(fix, t, pulses[t], latency, late=False)
        if t > g and self._streak >= self.confirm:
            # Named a second whose pulse has not come: a "before" receiver (or a
            # label that jumped ahead, which rule 3 will count as a date jump).
            self._vote(fix.utc_s, "early", True)
        return None

    def _by_phase(self, fix: Fix, anchor: int, phase: int, period: float) -> list[Sample]:
        """Rule 3: the phase alone."""
        if self.convention == "after":
            inside: float = float(phase)
            target_g = self._grid.g
        else:
            inside = period - phase  # lead to the next pulse
            target_g = self._grid.g + 1
        if inside <= self.guard_ns or inside >= period - self.guard_ns:
            verdict = "ambiguous_phase"
        elif inside >= self.window_ns:
            verdict = "convention_mismatch"
        else:
            verdict = ""
        if verdict:
            self._conv.refused(phase)
            self._vote(fix.utc_s, "late" if verdict == "convention_mismatch" else "ambiguous", True)
            self.rejects[verdict] += 1
            if self.convention == "after" or verdict == "ambiguous_phase":
                self._spoil(target_g)
                self._break_chain()
            # "before": a sentence soon after a pulse announces nothing about the next
            # one (a burst's tail, or an "after" receiver); it is refused, and left to
            # the vote, without spoiling the label that the next burst will announce.
            return []
        if self.convention == "after":
            return self._onset(fix, target_g, anchor, phase, late=False)
        return self._announce(fix, target_g, phase)

    def _announce(self, fix: Fix, target_g: int, phase: int) -> list[Sample]:
        """ "before": the sentence names the coming pulse; the label waits for it."""
        if self._label_g != target_g:
            self._label, self._label_g, self._label_bad = None, target_g, False
        if self._label_bad:
            return []
        if self._label is None:
            self._vote(fix.utc_s, "", False)
            self._phases.append(phase)
            self._label = fix.utc_s
            return []
        if self._label == fix.utc_s:
            self.stats["duplicate_sentence"] += 1
            return []
        # Two sentences for one pulse name different seconds: trust neither.
        self._conflict()
        return []

    # --------------------------------------------------------------- private

    def _onset(self, fix: Fix, t: int, pulse: int, latency: int, *, late: bool) -> list[Sample]:
        """The first sentence naming `fix.utc_s` labels pulse `t` ("after")."""
        self._vote(fix.utc_s, "late" if late else "", late)
        if self._label_g != t:
            self._label, self._label_g, self._label_bad = None, t, False
        if self._label_bad:
            return []
        if self._label is not None and self._label != fix.utc_s:
            # Two sentences for one pulse name different seconds: trust neither.
            self._conflict()
            return []
        if self._label == fix.utc_s:
            # The same kind twice for one second (GP and GN talkers both on): one label.
            self.stats["duplicate_sentence"] += 1
            return []
        self._label = fix.utc_s
        self._name(fix.utc_s, t, fix.kind)
        self._phases.append(latency)
        self._onset_latency = latency
        self._tail(fix.utc_s, latency)
        if self.mismatch:
            self.rejects["convention_mismatch"] += 1
            return []
        return self._accept(t, pulse, fix.utc_s)

    def _name(self, utc_s: int, g: int, kind: str | None) -> None:
        kinds = {kind} if kind else set()
        self._named[utc_s] = (g, kinds)
        for old in [s for s in self._named if s < utc_s - 3 or s > utc_s + 3]:
            del self._named[old]

    def _tail(self, utc_s: int, latency: int) -> None:
        # One value per named second: its latest time sentence so far.
        if self._tails and self._tail_s == utc_s:
            self._tails[-1] = max(self._tails[-1], latency)
        else:
            self._tails.append(latency)
            self._tail_s = utc_s

    def _conflict(self) -> None:
        self.rejects["conflict"] += 1
        self._label_bad = True
        self._offset = None  # neither label can anchor the chain
        self._break_chain()

    def _forget(self) -> None:
        """A new grid: labels, named seconds and the chain meant old indices."""
        self._label, self._label_g, self._label_bad = None, None, False
        self._named = {}
        self._onset_latency = None
        self._offset = None  # indices restart: S − g means nothing across grids
        self._break_chain()

    def _spoil(self, target_g: int) -> None:
        self._label_g, self._label, self._label_bad = target_g, None, True

    def _vote(self, utc_s: int, why: str, against: bool) -> None:
        """One onset's evidence about the convention; raising the mismatch breaks the chain."""
        if self._conv.vote(utc_s, why, against):
            self._break_chain()
            self._offset = None

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
