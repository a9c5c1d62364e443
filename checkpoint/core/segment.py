"""A segment of PPS samples on one continuous label scale, and which window of it to fit.

Pure. The segment owns its samples and its fit cache; `fit_for` decides which window
answers a tick (regression.py does the fitting, clock.py turns a fit into a bound).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from checkpoint.core.clockparams import ClockParams
from checkpoint.core.regression import Fit, fit_window

# Isolated misses a reused fit may have among the samples newer than it (see _still_fits).
_MAX_MISSES = 3


def refit_step(n: int, most: int) -> int:
    """Samples between the fits a run of `n` samples reuses: a quarter of the run, rounded
    down to a power of two, and at most `most`.

    A young run refits often (its fit narrows fast as samples come: 16 apart at 64
    samples, 64 at 256), a full window only every `most` pulses (its fit barely moves;
    the tail's bound still grows honestly with the distance to the fit's last sample).
    Powers of two nest, so the reused fit only moves forward as the run grows.
    """
    return max(min(1 << max((n >> 2).bit_length() - 1, 0), most), 1)


class Segment:
    """PPS samples whose labels are mutually consistent, on one continuous scale.

    ``cont = label_ns + shift`` at the time of arrival; ``relabels`` lists whole-second
    label steps as (cont_lo, cont_hi, delta, known_at_mono): a tick whose continuous
    time is ≥ cont_hi is labelled ``cont − (shift before + delta)``; one in
    [cont_lo, cont_hi) could be on either side.
    """

    __slots__ = (
        "mono",
        "cont",
        "shift",
        "relabels",
        "doubt_before",
        "fits",
        "starts",
        "bridge_ns",
        "entry_ns",
        "checked",
        "tail",
        "phase",
        "phase0",
        "params",
        "lengths",
    )

    def __init__(self, params: ClockParams) -> None:
        self.params = params
        self.lengths: dict[int, list[int]] = {}  # candidate_lengths' answers by run length
        bridge_ns = params.max_bridge_ns
        self.mono: list[int] = []
        self.cont: list[int] = []
        # cont − mono of each sample, less that of the first (so small integers, fast to
        # subtract): what a fit fits, relative to its reference sample.
        self.phase: list[int] = []
        self.phase0: int | None = None
        self.shift = 0
        self.relabels: list[tuple[int, int, int, int]] = []
        # (cont_lo, delta, known_at_mono, mono of the last old-label sample) of relabels
        # soon after the segment began: a receiver still settling may have had the
        # *earlier* labels wrong, so ticks before cont_lo could be on either side.
        self.doubt_before: list[tuple[int, int, int, int]] = []
        self.fits: dict[tuple[int, int], Fit] = {}
        self.starts: list[int] = [0]  # first index of each run (no gap > bridge_ns inside)
        self.bridge_ns = bridge_ns
        self.entry_ns = 0  # size of the phase step that opened this segment
        # What `_still_fits` knows of the fit it last checked: ((first, last) of the
        # fit, samples before this index are judged, the index where it stopped fitting,
        # the latest sample it missed, how many it missed).
        self.checked: tuple[tuple[int, int], int, int, int, int] = ((0, 0), 0, 0, -2, 0)
        # The last `fit_for` answer for a tick past a run's end: ((rs, re, reuse), fit).
        self.tail: tuple[tuple[int, int, bool], tuple[Fit, bool] | None] = ((-1, -1, False), None)

    def append(self, mono: int, cont: int) -> None:
        if self.mono and mono - self.mono[-1] > self.bridge_ns:
            self.starts.append(len(self.mono))
        self.mono.append(mono)
        self.cont.append(cont)
        if self.phase0 is None:
            self.phase0 = cont - mono
        self.phase.append(cont - mono - self.phase0)

    def run_of(self, i: int, nk: int) -> tuple[int, int]:
        """Index range [s, e) of the run holding sample i, cut at nk."""
        k = bisect_right(self.starts, i) - 1
        end = self.starts[k + 1] if k + 1 < len(self.starts) else nk
        return self.starts[k], min(end, nk)

    def shift_at(self, cont: int, now: int) -> tuple[int, int]:
        shift = amb = 0
        for lo, hi, delta, known in self.relabels:
            if known > now:
                continue
            if cont >= hi:
                shift += delta
            elif cont >= lo:
                amb += abs(delta)
        for lo, delta, known, _ in self.doubt_before:
            if known <= now and cont < lo:
                amb += abs(delta)
        return shift, amb

    def trim(self, keep_after: int) -> None:
        k = bisect_left(self.mono, keep_after)
        if k > 0:
            del self.mono[:k]
            del self.cont[:k]
            del self.phase[:k]
            self.starts = [0] + [i - k for i in self.starts if i > k]
            self.fits.clear()
            self.checked = ((0, 0), 0, 0, -2, 0)  # its indices moved
            self.tail = ((-1, -1, False), None)

    # -- which window to fit ---------------------------------------------------------

    def candidate_lengths(self, nk: int) -> list[int]:
        """Window lengths to try for a run of `nk` samples, longest first."""
        p = self.params
        # Asked at every new pulse: remembered. Runs longer than every window length
        # and floor all get the same answer, so at most that many answers are kept.
        nk = min(nk, max(p.window_samples, p.min_window_samples, p.min_lock_samples))
        known = self.lengths.get(nk)
        if known is not None:
            return known
        lengths = []
        floor = min(max(p.min_window_samples, p.min_lock_samples), nk)
        length = min(p.window_samples, nk)
        while length >= floor:
            lengths.append(length)
            length = int(length * p.window_shrink)
        if not lengths or lengths[-1] > floor:
            lengths.append(floor)
        self.lengths[nk] = lengths
        return lengths

    def fit_for(self, m: int, rs: int, re: int, reuse: bool) -> tuple[Fit, bool]:
        """Fit for a tick at m from the run [rs, re).

        For the questions asked on every record (`state`, `status`, the check of each
        new pulse: `reuse` True), a tick at or after the run's last sample reuses the fit
        of the run as it stood at its last multiple of `refit_step` samples, provided
        the samples since still lie within that fit's outlier threshold (an isolated
        late pulse excepted): one 600-sample fit every 128 pulses instead of one or two
        a pulse. The choice depends
        only on (rs, re), so the daemon and a replay pick the same fit whatever else
        asked the model in between. Stamps (`reuse` False) always get the newest window.
        """
        if m >= self.mono[re - 1]:
            # Every tick past the run's end gets the same window: asked many times a
            # pulse (state, status, each sentence's cross-check), answered once.
            key = (rs, re, reuse)
            cached = self.tail[1]
            if cached is not None and self.tail[0] == key:
                return cached
            got = self._fit_tail(m, rs, re, reuse)
            self.tail = (key, got)
            return got
        return self.fit_window_for(m, rs, re)

    def _fit_tail(self, m: int, rs: int, re: int, reuse: bool) -> tuple[Fit, bool]:
        p = self.params
        n = re - rs
        k = refit_step(n, p.refit_every_samples)
        if reuse and k > 1 and n - n % k >= max(p.min_window_samples, 1) and n % k:
            e = re - n % k
            fit, ok = self.fit_window_for(m, rs, e)
            if self._still_fits(fit, e, re):
                return fit, ok
        return self.fit_window_for(m, rs, re)

    def _still_fits(self, fit: Fit, e: int, re: int) -> bool:
        """Do samples [e, re), newer than `fit`, still lie within its outlier threshold?

        An isolated late pulse is what the full fit would reject too, so it does not
        force a refit (a receiver with 2 % late pulses would otherwise refit a
        600-sample window nearly every pulse); two misses in a row, or more than
        `_MAX_MISSES` since the fit, mean the phase really moved.
        """
        key, good_upto, bad_at, miss, misses = self.checked
        if key != (fit.first, fit.last):
            key, good_upto, bad_at, miss, misses = (fit.first, fit.last), e, 1 << 62, -2, 0
        if bad_at < re:
            return False
        p = self.params
        thr0 = max(p.outlier_sigmas * fit.sigma, p.outlier_floor_ns)
        for i in range(good_upto, re):
            pred, sd = fit.predict(self.mono[i])
            if abs(self.cont[i] - pred) > thr0 + p.k_sigma * sd:
                misses += 1
                if miss == i - 1 or misses > _MAX_MISSES:
                    self.checked = (key, i, i, i, misses)
                    return False
                miss = i
        self.checked = (key, max(good_upto, re), bad_at, miss, misses)
        return True

    def fit_window_for(self, m: int, rs: int, re: int) -> tuple[Fit, bool]:
        """Fit over samples [rs, re) for a tick at m, centred on m when samples allow.

        The longest candidate window passing both tests wins; if none does, the
        shortest is returned with False (its bound then gets ``misfit_sigmas``).
        """
        j = bisect_right(self.mono, m, rs, re)
        fit = None
        for length in self.candidate_lengths(re - rs):
            s = max(rs, min(j - length // 2, re - length))
            key = (s, s + length)
            fit = self.fits.get(key)
            if fit is None:
                fit = fit_window(self.mono, self.cont, self.phase, s, s + length, self.params)
                if len(self.fits) > 64:  # the window moves one sample a second
                    for old in list(self.fits)[:32]:
                        del self.fits[old]
                self.fits[key] = fit
            if fit.runs_ok and fit.local_ok(j, self.params.local_z, self.params.local_frac):
                return fit, True
        assert fit is not None
        return fit, False
