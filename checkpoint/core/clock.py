"""PPS samples + NMEA fixes + system clock readings → mono→UTC with an honest error bound.

Every stamp answers: "what UTC was it at this CLOCK_MONOTONIC tick, and by how much
could that be wrong?" The bound is meant to be *true* (the real UTC lies within
``utc_ns ± uncertainty_ns``) and as tight as the data allow. Pure: no I/O, no clock
reads, no threads; all instants are int ns (a float cannot hold epoch ns), floats
only for small relative quantities (ppm, residuals of a few ms at most).

Sources, best first
-------------------
``locked``   PPS samples around the tick. A polynomial in (mono − ref) is fitted to
             the phase ``utc − mono`` over a window of samples: offset, frequency and,
             where the data show it (``|c|/σ_c ≥ drift_t`` with at least
             ``quadratic_min_samples``), frequency drift. Fitting relative to a
             reference sample keeps the big numbers in int; the float residuals are
             µs–ms. Late interrupts go first: a robust start (median of slopes half a
             window apart, then medians of thirds for the curvature) and MAD-based
             rejection at ``outlier_sigmas``, iterated with 0/1-weighted least squares.
             The window (at most ``window_samples``) is centred on the tick when
             samples after it exist (re-stamping once the next pulse is in
             interpolates) and otherwise ends at the latest sample. Like chrony's
             regress.c it shrinks (by ``window_shrink``) while a runs test on the
             residual signs fails (``runs_z``), and also while the residuals nearest
             the tick do not average to zero (``local_z``): that is where a polynomial
             bent by temperature wander errs first. A window never spans a gap longer
             than ``max_bridge_ns``; such gaps split the samples into *runs*.
             Locked = the nearest sample used is within ``locked_gap_ns``.
``holdover`` PPS lost (or, re-stamping, the tick sits inside an outage): the nearest
             run's fit extrapolated up to ``holdover_max_ns``, with the wander term
             below. A tick between two runs gets both extrapolations; each interval is
             a bound, so their intersection is one too (bridging an outage once the
             PPS is back). A run just restarted after an outage needs
             ``min_lock_samples`` before it is used; until then the run before holds.
``nmea``     no usable PPS: the nearest trusted sentence, ``utc_s + frac + (mono −
             arrival) + latency`` (latency = arrival − start of the named second,
             negative for "before" receivers). Each sentence kind's latency range is
             learnt while locked (plus margins); before that the prior
             ``nmea_latency_min_ns..nmea_latency_max_ns`` is ±1 s (the convention is
             the pairer's business, not ours). A kind gives time only after
             ``nmea_min_consistent`` sentences consistent with elapsed mono.
``unsynced`` only a (CLOCK_MONOTONIC, CLOCK_REALTIME) pair; the system clock of a Pi
             with no RTC and no network can be days off, so the default bound is
             `UNKNOWN_UNCERTAINTY_NS` unless ``sysclock_uncertainty_ns`` says otherwise.
             With nothing at all the stamp is ``utc_ns = 0`` with that bound.

Each available source gives a candidate; the stamp is the one with the smallest
bound (each is a bound on its own, so the smallest is still one). `state(now)` is the
source a tick stamped *now* would get.

Uncertainty
-----------
For a PPS candidate at distance ``d`` (s) from the nearest sample (``d_b``, ``d_a``
before/after the tick)::

    u = f·k_sigma·σ·√(gᵀ(XᵀX)⁻¹g)   # fit parameter covariance propagated to the tick
      + f·σ                         # one PPS jitter: bias the runs test cannot see
      + pps_accuracy_ns             # receiver PPS vs UTC (antenna cable, firmware)
      + ½·A·d_b·d_a  (or ½·A·d²)    # unmodelled frequency change since/between samples
      + misfit_sigmas·σ             # only when even the shortest window fails the tests
      + ambiguity                   # steps and whole seconds, see "Steps" below

``σ`` is the residual RMS of the fit, ``g = (1, u, u²)``; ``f`` (≥ 1) allows for σ
drawn low by few residuals (2.3 for a ten-pulse line just after lock, 1.08 for 600).
``A`` is the rate of
*unmodelled* frequency change the oscillator is allowed: ``wander_ppm_per_min``
(0.05 ppm/min ≈ an unforeseen 0.2 °C/min on a 0.25 ppm/°C Pi crystal) or, when larger,
``wander_learn_factor`` × what the oscillator showed while locked: at most every
``self_test_every_ns`` (every 128 pulses with a full window) a snapshot of the fit is
kept and each later inlier sample
``120..1200 s`` downstream measures how far the snapshot's extrapolation missed,
beyond its own statistical bound; that miss, as ``2·excess/d²``, is the learnt A
(max over the last ``wander_memory_ns``). After 10 minutes of holdover the default A
alone gives 150 µs; a fit over 600 s of 1 µs-jitter pulses adds a few µs.

Steps (labels and phase)
------------------------
A sample that misses the fit by more than ``gross_ns`` (and twice its bound) is held
apart; while held, stamps of ticks after the last good sample carry the miss in their
bound (outlier or step is not known yet). If ``step_confirm`` consecutive held samples
agree with each other it was a step. A whole-second step means the labels moved and
the oscillator did not (a leap second without the ``leap`` flag, a receiver learning
the GPS−UTC offset, a date jump the pairer confirmed): the segment is *relabelled*,
the fit carries on, and ticks between the last old and first new sample carry the
step in their bound; when the relabel comes within ``early_relabel_ns`` of the
segment's first sample (a receiver that started with a wrong second and corrected
itself), every earlier tick carries it too. Any other step (the pulse itself moved)
starts a new segment;
ticks between the two segments carry the step; the new one locks after
``min_lock_samples``. A ``leap`` fix relabels exactly at the end of 23:59:60 (POSIX
repeats the second, so a tick inside the leap second reads as the first second of
the next day: that is all POSIX can say).

While locked, every sentence is checked against the PPS labels with the learnt
latency of its kind; a whole-second disagreement opens a *doubt*: until a sentence
agrees again, GPS-derived stamps (PPS or NMEA) of ticks after the last agreeing
sentence carry the disagreement in their bound. This covers the seconds in which a
date jump has reached the sentences but not yet been confirmed by the samples. After
confirmation the box follows the receiver: nothing local can say which labels were
right (a receiver with a wrong date from the start is wrong with µs bounds).

Deliberate choices
------------------
* A tick before the first sample is stamped by extrapolating backwards (labelled
  holdover) if within ``holdover_max_ns``: a cold-start passage re-stamped after lock
  improves from ±1 s to µs. Ticks beyond every source get the unsynced/unknown stamp.
* One model per boot. CLOCK_MONOTONIC restarts at boot; samples from another boot
  are meaningless here. Samples must come in mono order; older or duplicate ones
  are dropped and counted (``out_of_order``).
* Only samples/fixes/readings with ``mono_ns ≤ now`` are used, so a stamp is a
  function of (inputs, now). The learnt NMEA latency is the one known at the time of
  the call (it only ever helps the NMEA candidate).
* `stamp` never raises: a passage is never dropped because the clock is bad. An
  internal error yields the unknown stamp and counts ``stamp_error``.
* CLOCK_MONOTONIC is slewed by an NTP daemon's frequency corrections; a change of the
  slew rate shows up here as a frequency step (the window tests shrink the window,
  the learnt wander grows). Do not let NTP slew the box's clock aggressively.
* The PPS and the beams are both GPIO interrupts stamped by the kernel; a constant
  interrupt latency cancels between them and is not in the bound. Antenna cable
  delay and receiver PPS error are, as ``pps_accuracy_ns``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter

from checkpoint.core.clockparams import (
    NS_PER_S,
    RANK,
    UNKNOWN_UNCERTAINTY_NS,
    ClockParams,
    ClockState,
    Est,
    Stamp,
    ceil_ns,
    sat_add,
)
from checkpoint.core.nmea import Fix
from checkpoint.core.nmea_time import NmeaTime
from checkpoint.core.pairing import Sample
from checkpoint.core.regression import Fit
from checkpoint.core.segment import Segment
from checkpoint.core.wander import WanderTest

# The clock's public names live in clockparams.py; importers keep using this module.
__all__ = [
    "NS_PER_S",
    "UNKNOWN_UNCERTAINTY_NS",
    "ClockModel",
    "ClockParams",
    "ClockState",
    "Stamp",
]


class ClockModel:
    """mono→UTC from PPS samples, NMEA fixes and system clock readings (module docstring)."""

    def __init__(self, params: ClockParams | None = None) -> None:
        """Start empty: every stamp is unsynced/unknown until a source arrives."""
        self.params = params or ClockParams()
        self.counters: Counter[str] = Counter()
        self._segs: list[Segment] = []
        self._pending: list[tuple[int, int, int]] = []  # (mono, label ns, |miss| ns)
        self._nmea = NmeaTime(self.params, self.counters)
        self._selftest = WanderTest(self.params)
        self._leaps: set[int] = set()
        self._sys_mono: list[int] = []
        self._sys_rt: list[int] = []
        self._freq_ppm: float | None = None
        # True while answering `state`, `status` or checking a new pulse: those may
        # reuse a slightly older fit (see `Segment.fit_for`); a published stamp never does.
        self._reuse = False

    # ----------------------------------------------------------------- input

    def add_sample(self, s: Sample) -> None:
        """Take a paired PPS sample (from `Pairer`), in mono order."""
        p = self.params
        m, lab = int(s.mono_ns), int(s.utc_s) * NS_PER_S
        seg = self._segs[-1] if self._segs else None
        last = seg.mono[-1] if seg else None
        if self._pending:
            last = self._pending[-1][0] if last is None else max(last, self._pending[-1][0])
        if last is not None and m <= last:
            self.counters["out_of_order"] += 1
            return
        self.counters["samples"] += 1
        if seg is None or m - seg.mono[-1] > p.holdover_max_ns:
            self._new_segment([(m, lab)], 0)
            return
        cont = lab + seg.shift
        self._reuse = True
        try:
            # Within gross_ns it is the same segment whatever the bound: compute that
            # only for a sample further off (tol is never below gross_ns).
            pred, tol, fit = self._predict_new(seg, m, bound=False)
            if not abs(cont - pred) <= tol:
                pred, tol, fit = self._predict_new(seg, m)
        finally:
            self._reuse = False
        if abs(cont - pred) <= tol:
            if self._pending:
                self.counters["gross_outliers"] += len(self._pending)
                self._pending.clear()
            self._check_inlier(fit, m, cont)
            seg.append(m, cont)
            self._trim(m)
            return
        self._pending.append((m, lab, min(abs(cont - pred), UNKNOWN_UNCERTAINTY_NS)))
        self._try_step(seg)

    def add_fix(self, fix: Fix) -> None:
        """Take a parsed sentence: NMEA-state time, latency learning, label cross-check."""
        if not fix.valid:
            self.counters["invalid_fix"] += 1
            return
        m = int(fix.mono_ns)
        utc = int(fix.utc_s) * NS_PER_S + int(fix.frac_ns)
        if self._nmea.out_of_order(m):
            self.counters["fix_out_of_order"] += 1
            return
        if fix.leap:
            self._register_leap(fix, m)
        self._nmea.follow(fix.kind, m, utc, fix.leap)
        if self._cross_check(fix.kind, m, utc):
            self._nmea.keep(fix.kind, m, utc)

    def add_sysclock(self, mono_ns: int, realtime_ns: int) -> None:
        """Take a (CLOCK_MONOTONIC, CLOCK_REALTIME) reading: the unsynced fallback."""
        m = int(mono_ns)
        if self._sys_mono and m < self._sys_mono[-1]:
            self.counters["sysclock_out_of_order"] += 1
            return
        self._sys_mono.append(m)
        self._sys_rt.append(int(realtime_ns))
        if len(self._sys_mono) > 1024:
            del self._sys_mono[:512], self._sys_rt[:512]

    # ---------------------------------------------------------------- output

    def state(self, now_mono_ns: int) -> ClockState:
        """The source a tick stamped now would get."""
        self._reuse = True
        try:
            return self.stamp(now_mono_ns, now_mono_ns).clock
        finally:
            self._reuse = False

    def stamp(self, mono_ns: int, now_mono_ns: int) -> Stamp:
        """UTC of a past (or present) tick, using every input with mono ≤ now. Never raises."""
        try:
            m, now = int(mono_ns), int(now_mono_ns)
            best: Est | None = None
            doubt = self._doubt_ns(m, now)
            for source in (self._pps_estimate, self._nmea_estimate, self._sys_estimate):
                if best is not None and not self._may_beat(source, best.unc_ns, doubt):
                    continue
                est = source(m, now)
                if est is None:
                    continue
                if doubt and est.clock is not ClockState.UNSYNCED:
                    # GPS labels in dispute: whichever side is right must be inside.
                    est.unc_ns = sat_add(est.unc_ns, doubt)
                if est.clock is ClockState.NMEA:
                    # The sentences of a receiver that corrected its second carried it too.
                    est.unc_ns = sat_add(est.unc_ns, self._early_doubt_ns(m, now))
                if (
                    best is None
                    or est.unc_ns < best.unc_ns
                    or (est.unc_ns == best.unc_ns and RANK[est.clock] < RANK[best.clock])
                ):
                    best = est
            if best is None:
                return Stamp(0, UNKNOWN_UNCERTAINTY_NS, ClockState.UNSYNCED)
            return Stamp(best.utc_ns, best.unc_ns, best.clock)
        except Exception:  # a passage must get a stamp even if the model is broken
            self.counters["stamp_error"] += 1
            return Stamp(0, UNKNOWN_UNCERTAINTY_NS, ClockState.UNSYNCED)

    def _may_beat(self, source: object, best_ns: int, doubt: int) -> bool:
        """Could `source` give a smaller bound than `best_ns` (after PPS)? False only if sure.

        Once locked, PPS bounds are µs and NMEA's at least a millisecond: `state`, asked
        every second, then needs no NMEA or system-clock candidate at all. Each floor is
        what that source's bound cannot go below (a bound only grows with distance and
        doubts); a lower-ranked source never wins a tie.
        """
        p = self.params
        if source == self._sys_estimate:
            return p.sysclock_uncertainty_ns < best_ns
        if source != self._nmea_estimate or p.max_freq_ppm < 0 or p.learnt_freq_margin_ppm < 0:
            return True
        half = self._nmea.narrowest_half_ns()
        return sat_add(ceil_ns(half + p.nmea_floor_ns), doubt) < best_ns

    def status(self, now_mono_ns: int) -> dict:
        """JSON-able health summary at `now` (state, bound, frequency, window, counters)."""
        self._reuse = True  # a summary, asked every turn: the periodic fit is good enough
        try:
            return self._status(now_mono_ns)
        finally:
            self._reuse = False

    def _status(self, now_mono_ns: int) -> dict:
        p = self.params
        now = int(now_mono_ns)
        st = self.stamp(now, now)
        out: dict = {
            "state": st.clock.value,
            "uncertainty_ns": st.uncertainty_ns,
            "freq_ppm": None,
            "drift_ppm_per_min": None,
            "jitter_ns": None,
            "samples_in_window": 0,
            "window_s": 0.0,
            "fit_order": None,
            "last_sample_age_s": None,
            "outliers_rejected": self.counters["outliers"],
            "segments": len(self._segs),
            "holdover_wander_ppm_per_min": self._selftest.allowance(now) * 60e6,
            "nmea_latency_ms": {
                k: [lo / 1e6, hi / 1e6] for k, (lo, hi) in sorted(self._nmea.lat_range.items())
            },
            "last_fix_age_s": None,
            "doubt_s": self._nmea.doubt_ns(now, now) // NS_PER_S,
            "counters": dict(self.counters),
        }
        seg = self._segs[-1] if self._segs else None
        if seg is not None:
            nk = bisect_right(seg.mono, now)
            if nk:
                out["last_sample_age_s"] = (now - seg.mono[nk - 1]) / 1e9
            rs, re = seg.run_of(max(nk - 1, 0), nk)
            if re - rs >= p.min_lock_samples:
                fit, _ok = seg.fit_for(now, rs, re, self._reuse)
                out.update(
                    freq_ppm=round(fit.freq_ppm(now), 6),
                    drift_ppm_per_min=round(fit.drift_ppm_per_min(), 6),
                    jitter_ns=round(fit.sigma, 1),
                    samples_in_window=fit.n,
                    window_s=(fit.last - fit.first) / 1e9,
                    fit_order=fit.order,
                )
            else:
                # One labelled sample per PPS second: the marshal's "about N s to lock".
                out["lock_in_s"] = p.min_lock_samples - (re - rs)
        else:
            out["lock_in_s"] = p.min_lock_samples
        k = bisect_right(self._nmea.fix_mono, now)
        if k:
            out["last_fix_age_s"] = (now - self._nmea.fix_mono[k - 1]) / 1e9
        return out

    # ------------------------------------------------------------ PPS model

    def _new_segment(self, samples: list[tuple[int, int]], entry_ns: int) -> None:
        seg = Segment(self.params)
        seg.entry_ns = entry_ns
        for m, lab in samples:
            seg.append(m, lab)
        self._segs.append(seg)
        self._pending.clear()
        self._selftest.restart()

    def _trim(self, now: int) -> None:
        keep_after = now - self.params.history_ns
        while len(self._segs) > 1 and self._segs[0].mono[-1] < keep_after:
            del self._segs[0]
        seg = self._segs[-1]
        if seg.mono[0] < keep_after - 600 * NS_PER_S:
            seg.trim(keep_after)

    def _fit_bound(self, fit: Fit, sd: float, wander_ns: float, ok: bool) -> float:
        p = self.params
        f = fit.factor
        u = f * (p.k_sigma * sd + fit.sigma) + p.pps_accuracy_ns + wander_ns
        if not ok:
            u += p.misfit_sigmas * f * fit.sigma
        return u

    def _predict_new(
        self, seg: Segment, m: int, bound: bool = True
    ) -> tuple[int, float, Fit | None]:
        """Where the segment expects a new sample at m, and how far off is still 'same'.

        The fit is returned only when the sample extends a locked run (for the
        outlier count and the holdover self-test). With `bound` False the tolerance
        may come back as its floor, gross_ns (see `_seg_estimate`).
        """
        p = self.params
        d = m - seg.mono[-1]
        est = self._seg_estimate(seg, m, len(seg.mono), m, bound)
        if est is None:
            return seg.cont[-1] + d, p.gross_ns + d * p.max_freq_ppm * 1e-6, None
        cont, unc, near, fit = est
        return cont, max(float(p.gross_ns), 2 * unc), fit if near * 1e9 <= p.max_bridge_ns else None

    def _check_inlier(self, fit: Fit | None, m: int, cont: int) -> None:
        """Count late pulses; feed the holdover self-test with the good ones."""
        if fit is None:
            return
        p = self.params
        pred, sd = fit.predict(m)
        thr = max(p.outlier_sigmas * fit.sigma, p.outlier_floor_ns) + p.k_sigma * sd
        if abs(cont - pred) > thr:
            self.counters["outliers"] += 1
            return
        self._freq_ppm = fit.freq_ppm(m)
        self._selftest.check(fit, m, cont)

    def _try_step(self, seg: Segment) -> None:
        """Held samples that agree with each other: relabel (whole seconds) or new segment."""
        p = self.params
        pend = self._pending
        # Keep the tail of held samples that agree with each other.
        for i in range(len(pend) - 1, 0, -1):
            (m0, l0, _), (m1, l1, _) = pend[i - 1], pend[i]
            if abs((l1 - l0) - (m1 - m0)) > p.gross_ns + (m1 - m0) * p.max_freq_ppm * 1e-6:
                self.counters["gross_outliers"] += i
                del pend[:i]
                break
        if len(pend) < p.step_confirm:
            return
        m0, l0, _ = pend[0]
        pred, tol, _ = self._predict_new(seg, m0)
        r = l0 + seg.shift - pred
        k = round(r / NS_PER_S)
        if k != 0 and abs(r - k * NS_PER_S) <= max(p.gross_ns, tol):
            # The labels moved by whole seconds; the oscillator did not: keep the fit.
            delta = -k * NS_PER_S
            seg.relabels.append((seg.cont[-1] + 1, pred, delta, pend[-1][0]))
            if pend[-1][0] - seg.mono[0] <= p.early_relabel_ns:
                seg.doubt_before.append((seg.cont[-1] + 1, delta, pend[-1][0], seg.mono[-1]))
            seg.shift += delta
            for m, lab, _ in pend:
                seg.append(m, lab + seg.shift)
            pend.clear()
            self.counters["relabel"] += 1
            return
        # The pulses themselves moved: which side is right is unknown, so the ticks
        # between the two segments carry the step in their bound.
        self.counters["step"] += 1
        self._new_segment([(m, lab) for m, lab, _ in pend], max(d for _, _, d in pend))

    def _register_leap(self, fix: Fix, m: int) -> None:
        """23:59:60: POSIX labels from the end of this second on are one lower."""
        if fix.utc_s in self._leaps or not self._segs:
            return
        self._leaps.add(fix.utc_s)
        seg = self._segs[-1]
        boundary = (fix.utc_s + 1) * NS_PER_S + seg.shift
        seg.relabels.append((boundary, boundary, NS_PER_S, m))
        seg.shift += NS_PER_S
        self.counters["leap"] += 1

    def _seg_estimate(
        self, seg: Segment, m: int, nk: int, now: int, bound: bool = True
    ) -> tuple[int, float, float, Fit | None] | None:
        """(continuous-scale estimate, bound, distance to nearest used sample s, fit).

        A tick inside a run is interpolated by that run's fit. A tick in a gap between
        runs gets each neighbouring run's extrapolation; each interval is a bound, so
        their intersection is one too (the fit is None then). With `bound` False the
        caller needs no bound: from a single run it comes back as 0.0 (the estimate does
        not depend on it; between two runs it does, and is computed).
        """
        p = self.params
        mono = seg.mono
        if nk == len(mono) and m >= mono[-1] and nk - seg.starts[-1] >= p.min_lock_samples:
            # The usual question (a new pulse, a sentence, the state each second): a tick
            # after the newest sample of a run long enough to fit. Only that run is in
            # reach (what `_runs_around` would find), so the general search is skipped.
            near = (m - mono[-1]) / 1e9
            if near * 1e9 > p.holdover_max_ns:
                return None
            rs = seg.starts[-1]
            fit, ok = seg.fit_for(m, rs, nk, self._reuse)
            if not bound:
                return fit.value(m), 0.0, near, fit
            spread = max(near * near, ((m - fit.last) / 1e9) ** 2)
            cont, sd = fit.predict(m)
            wander = 0.5 * self._selftest.allowance(now) * spread * 1e9
            return cont, self._fit_bound(fit, sd, wander, ok), near, fit
        j = bisect_right(mono, m, 0, nk)
        reach: list[tuple[int, int, float, float]] = []  # runs within holdover reach
        for rs, re in self._runs_around(seg, j, nk):
            if rs < j < re:  # inside: samples on both sides
                d_b, d_a = (m - mono[j - 1]) / 1e9, (mono[j] - m) / 1e9
                near, spread = min(d_b, d_a), d_b * d_a
            else:
                near = abs(m - (mono[re - 1] if j >= re else mono[rs])) / 1e9
                spread = near * near
            if near * 1e9 <= p.holdover_max_ns:
                reach.append((rs, re, near, spread))
        if not bound and len(reach) == 1:
            rs, re, near, _ = reach[0]
            fit, _ok = seg.fit_for(m, rs, re, self._reuse)
            return fit.value(m), 0.0, near, fit
        wander = self._selftest.allowance(now)
        found: list[tuple[int, float, float, Fit]] = []
        for rs, re, near, spread in reach:
            fit, ok = seg.fit_for(m, rs, re, self._reuse)
            if m > fit.last:  # the wander since the last sample the fit saw
                spread = max(spread, ((m - fit.last) / 1e9) ** 2)
            cont, sd = fit.predict(m)
            ub = self._fit_bound(fit, sd, 0.5 * wander * spread * 1e9, ok)
            found.append((cont, ub, near, fit))
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        (c1, u1, n1, _), (c2, u2, n2, _) = found
        lo, hi = max(c1 - u1, c2 - u2), min(c1 + u1, c2 + u2)
        if lo > hi:  # contradiction: both sides cannot be right; claim only the hull
            self.counters["bridge_conflict"] += 1
            lo, hi = min(c1 - u1, c2 - u2), max(c1 + u1, c2 + u2)
        mid = (lo + hi) / 2
        return round(mid), (hi - lo) / 2 + 1, min(n1, n2), None

    def _runs_around(self, seg: Segment, j: int, nk: int) -> list[tuple[int, int]]:
        """The nearest run on each side of sample index j with enough samples to fit (a run
        just started after an outage is skipped: the run before it still holds over)."""
        p = self.params
        runs: list[tuple[int, int]] = []
        i = j - 1
        while i >= 0:
            rs, re = seg.run_of(i, nk)
            if re - rs >= p.min_lock_samples:
                runs.append((rs, re))
                break
            i = rs - 1
        i = j
        while i < nk:
            rs, re = seg.run_of(i, nk)
            if re - rs >= p.min_lock_samples:
                if (rs, re) not in runs:
                    runs.append((rs, re))
                break
            i = re
        return runs

    def _pps_estimate(self, m: int, now: int, bound: bool = True) -> Est | None:
        """The segment owning m (the latest one starting at or before it) stamps it.

        With `bound` False (the sentence cross-check) the time and state are the same,
        the bound is not computed (0 unless between two runs).
        """
        p = self.params
        segs = self._segs
        k = len(segs) - 1
        while k > 0 and segs[k].mono[0] > m:
            k -= 1
        if k < 0:
            return None
        seg = segs[k]
        nk = bisect_right(seg.mono, now)
        if nk < p.min_lock_samples:
            return None
        est = self._seg_estimate(seg, m, nk, now, bound)
        if est is None:
            return None
        cont, unc, near, _fit = est
        shift, amb = seg.shift_at(cont, now)
        clock = ClockState.LOCKED if near * 1e9 <= p.locked_gap_ns else ClockState.HOLDOVER
        if not bound:
            return Est(cont - shift, 0, clock)
        if m > seg.mono[nk - 1]:
            if k + 1 < len(segs) and segs[k + 1].mono[0] <= now:
                amb += segs[k + 1].entry_ns  # between two segments split by a step
            elif self._pending and self._pending[0][0] <= now:
                # Samples after this tick miss the fit grossly: outlier or step, not
                # yet known; until then the tick could be on either side.
                amb = sat_add(amb, max(d for mm, _, d in self._pending if mm <= now))
        return Est(cont - shift, sat_add(ceil_ns(unc), amb), clock)

    # ------------------------------------------------------------ NMEA model

    def _cross_check(self, kind: str, m: int, utc: int) -> bool:
        """Compare a sentence with the PPS labels (nmea_time.py learns from it)."""
        self._reuse = True  # whole seconds and ms of latency: the periodic fit will do
        try:
            est = self._pps_estimate(m, m, bound=False)
        finally:
            self._reuse = False
        if est is None or est.clock is not ClockState.LOCKED:
            return True
        return self._nmea.check(kind, m, est.utc_ns - utc)

    def _early_doubt_ns(self, m: int, now: int) -> int:
        amb = 0
        for seg in self._segs:
            for _, delta, known, last_old in seg.doubt_before:
                if known <= now and m <= last_old + NS_PER_S:
                    amb += abs(delta)
        return amb

    def _doubt_ns(self, m: int, now: int) -> int:
        return self._nmea.doubt_ns(m, now)

    def _nmea_estimate(self, m: int, now: int) -> Est | None:
        return self._nmea.estimate(m, now, self._freq_ppm)

    def _sys_estimate(self, m: int, now: int) -> Est | None:
        known = bisect_right(self._sys_mono, now)
        if not known:
            return None
        i = bisect_left(self._sys_mono, m, 0, known)
        j = min(range(max(0, i - 1), min(known, i + 1)), key=lambda k: abs(m - self._sys_mono[k]))
        utc = self._sys_rt[j] + (m - self._sys_mono[j])
        return Est(utc, self.params.sysclock_uncertainty_ns, ClockState.UNSYNCED)
