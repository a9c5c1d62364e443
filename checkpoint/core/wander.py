"""The holdover self-test: how fast the oscillator wanders, learnt while locked (pure).

A snapshot of the fit is kept at most every ``self_test_every_ns`` (in practice at each
new fit the pulses are checked with: every 128 pulses for a full window, see
`segment.refit_step`); each later inlier sample
``self_test_min_ns..self_test_max_ns`` downstream measures how far the snapshot's
extrapolation missed, beyond its own statistical bound. That miss, as ``2·excess/d²``,
is a learnt rate of unmodelled frequency change; `allowance` is the larger of the
default and ``wander_learn_factor`` × the largest learnt over ``wander_memory_ns``.
clock.py adds ½·A·d² of it to every bound that extrapolates.
"""

from __future__ import annotations

from collections import deque

from checkpoint.core.clockparams import ClockParams
from checkpoint.core.regression import Fit


class WanderTest:
    """Snapshots of past fits and the misses they showed; one per clock model."""

    def __init__(self, params: ClockParams) -> None:
        self.params = params
        # (last, ref_mono, ref_cont, xc, xs, a, b, c, allowed miss, fit) of each snapshot:
        # the fields `check` reads for every snapshot at every pulse, unpacked once.
        self._snapshots: deque[tuple] = deque()
        self._obs: deque[tuple[int, float]] = deque()
        self._max: tuple[tuple, float] = ((), 0.0)  # (key of _obs, max)

    def restart(self) -> None:
        """A new segment: old fits say nothing about its samples (the learnt rate stays)."""
        self._snapshots.clear()

    def check(self, fit: Fit, m: int, cont: int) -> None:
        """An inlier sample (mono m, continuous cont) of `fit`: test the snapshots with it."""
        p = self.params
        snaps = self._snapshots
        while snaps and m - snaps[0][0] > p.self_test_max_ns:
            snaps.popleft()
        # The snapshot's own statistical term only widens what it is allowed to miss by,
        # so a miss within the rest of the allowance is no excess: that needs no σ.
        skip, t_min = p.k_sigma >= 0, p.self_test_min_ns
        for last, ref_mono, ref_cont, xc, xs, a, b, c, allowed, snap in snaps:
            d = m - last
            if d < t_min:
                break
            if skip:
                # snap.value(m), inline from the snapshot's unpacked fields: this loop
                # runs for ~18 snapshots every pulse.
                dm = m - ref_mono
                u = (dm / 1e9 - xc) / xs
                if abs(cont - (ref_cont + dm + round(a + u * (b + u * c)))) <= allowed:
                    continue
            spred, ssd = snap.predict(m)
            excess = abs(cont - spred) - (p.k_sigma * ssd + 3 * snap.sigma + p.pps_accuracy_ns)
            if excess > 0:
                ds = d / 1e9
                self._observe(m, 2 * excess / 1e9 / (ds * ds))
        while self._obs and m - self._obs[0][0] > p.wander_memory_ns:
            self._obs.popleft()
        if fit.order == 2 and (not snaps or fit.last - snaps[-1][0] >= p.self_test_every_ns):
            f = fit
            allowed = 3 * f.sigma + p.pps_accuracy_ns
            snaps.append((f.last, f.ref_mono, f.ref_cont, f.xc, f.xs, f.a, f.b, f.c, allowed, f))

    def _observe(self, m: int, a: float) -> None:
        """Keep one maximum per self-test period: bounded memory, same answer."""
        obs = self._obs
        if obs and m - obs[-1][0] < self.params.self_test_every_ns:
            if a > obs[-1][1]:
                obs[-1] = (obs[-1][0], a)
        else:
            obs.append((m, a))

    def allowance(self, now: int) -> float:
        """Allowed unmodelled frequency change rate A (fraction per second) at `now`."""
        p = self.params
        base = p.wander_ppm_per_min * 1e-6 / 60
        obs = self._obs
        if not obs:
            return base
        if obs[-1][0] <= now and now - p.wander_memory_ns <= obs[0][0]:
            # Every observation counts (the usual case): the max only changes with them.
            key = (len(obs), obs[0], obs[-1])
            if self._max[0] != key:
                self._max = (key, max(a for _, a in obs))
            learnt = self._max[1]
        else:
            learnt = 0.0
            for t, a in obs:
                if now - p.wander_memory_ns <= t <= now and a > learnt:
                    learnt = a
        return max(base, p.wander_learn_factor * learnt)
