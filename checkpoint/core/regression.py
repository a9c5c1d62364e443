"""The clock's regression maths: a robust polynomial fit of PPS samples (pure).

`fit_window` fits phase(u) = a + b·u + c·u² to a window of a segment's samples (mono
tick → continuous UTC ns), robustly: it starts from medians of thirds, iterates the
inlier set at `outlier_sigmas`, drops an insignificant drift term, and checks the
residuals' runs. `Fit.predict` gives the phase and its σ anywhere; `small_sample_factor`
widens a σ estimated from few residuals. clock.py decides *which* windows to fit and
what bound to promise (see its docstring); this module only fits, the way chrony keeps
its maths in regress.c apart from the reference-clock state.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import compress
from operator import ne
from typing import Protocol


class FitParams(Protocol):
    """What a fit needs of the clock's parameters (`clock.ClockParams` has them)."""

    # Read-only members, so a frozen dataclass matches (the compiled core checks types).
    @property
    def quadratic_min_samples(self) -> int: ...  # fit a parabola from this many samples on
    @property
    def drift_t(self) -> float: ...  # keep the drift term only at this t-value or more
    @property
    def runs_z(self) -> float: ...  # residual runs test threshold
    @property
    def outlier_sigmas(self) -> float: ...
    @property
    def outlier_floor_ns(self) -> int: ...


def small_sample_factor(dof: int) -> float:
    """How much a σ estimated with `dof` degrees of freedom may understate the true one.

    √(dof / χ²₀.₀₀₅(dof)), the χ² quantile by Wilson–Hilferty: 2.3 at 8 dof (a ten-pulse
    line), 1.3 at 58, 1.08 at 598. A full window barely changes; a short fit right after
    lock gets the wider bound its few residuals deserve.
    """
    if dof < 2:
        return 10.0
    c = 2.0 / (9.0 * dof)
    q = 1.0 - c - 2.576 * math.sqrt(c)
    if q <= 0.1:
        return 10.0
    return min(10.0, 1.0 / math.sqrt(q * q * q))


def _median(values: list[float]) -> float:
    return _middle(sorted(values))


def _middle(s: list[float]) -> float:
    """The median of an already sorted list."""
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _median_distance(s: list[float], med: float) -> float:
    """`_median([abs(r - med) for r in s])` for a sorted `s`, without sorting again.

    Left of `med` the distances med − r grow leftwards, right of it r − med grow
    rightwards: two sorted sequences, whose k-th smallest value a bisection finds.
    (abs(r − med) is med − r to the last bit: rounding is symmetric.) Not for NaN or
    infinities, where sorting means nothing: those take the sort.
    """
    n = len(s)
    if not math.isfinite(sum(s)):
        return _median([abs(r - med) for r in s])
    p = bisect_left(s, med)  # s[:p] < med <= s[p:]
    nb = n - p

    def kth(k: int) -> float:
        # i distances from the left side, k + 1 − i from the right, make the k + 1 smallest.
        lo, hi = max(0, k + 1 - nb), min(k + 1, p)
        while lo < hi:
            i = (lo + hi) // 2
            if med - s[p - 1 - i] < s[p + k - i] - med:
                lo = i + 1
            else:
                hi = i
        j = k + 1 - lo
        # abs: a zero difference keeps abs's sign (+0.0), as the sorted distances do.
        left = abs(med - s[p - lo]) if lo else -math.inf
        right = abs(s[p + j - 1] - med) if j else -math.inf
        return max(left, right)

    return kth(n // 2) if n % 2 else 0.5 * (kth(n // 2 - 1) + kth(n // 2))


class Fit:
    """phase(u) = a + b·u + c·u², u = (x − xc)/xs, x = (mono − ref_mono)/1e9 s, phase in ns.

    ``cont(mono) = ref_cont + (mono − ref_mono) + phase``; ``cov`` is (XᵀX)⁻¹ packed as
    (c00, c01, c02, c11, c12, c22); the prediction σ is ``sigma·√(gᵀ cov g)``.
    """

    __slots__ = (
        "ref_mono",
        "ref_cont",
        "xc",
        "xs",
        "a",
        "b",
        "c",
        "cov",
        "sigma",
        "n",
        "n_out",
        "order",
        "runs_ok",
        "first",
        "last",
        "resid",
        "inl",
        "start",
        "local",
        "factor",
    )

    # Declared for the compiled core (checkpoint/native.py): mypyc lays out native fields.
    ref_mono: int
    ref_cont: int
    xc: float
    xs: float
    a: float
    b: float
    c: float
    cov: tuple
    sigma: float
    n: int
    n_out: int
    order: int
    runs_ok: bool
    first: int
    last: int
    resid: list
    inl: list
    start: int
    local: dict
    factor: float

    def value(self, mono: int) -> int:
        """`predict` without the σ: the fit's continuous-scale time at mono."""
        dm = mono - self.ref_mono
        u = (dm / 1e9 - self.xc) / self.xs
        return self.ref_cont + dm + round(self.a + u * (self.b + u * self.c))

    def predict(self, mono: int) -> tuple[int, float]:
        dm = mono - self.ref_mono
        u = (dm / 1e9 - self.xc) / self.xs
        y = self.a + u * (self.b + u * self.c)
        c00, c01, c02, c11, c12, c22 = self.cov
        u2 = u * u
        var = c00 + 2 * u * c01 + 2 * u2 * c02 + u2 * c11 + 2 * u * u2 * c12 + u2 * u2 * c22
        return self.ref_cont + dm + round(y), self.sigma * math.sqrt(max(var, 0.0))

    def local_ok(self, j: int, z_crit: float, frac: float) -> bool:
        """Do the residuals near sample index j average to zero, as a good fit's would?

        The stamp is made near j; a polynomial that bends away from the data there
        (the oscillator wandered) shows as a mean residual of the nearest
        ``frac·n`` samples beyond ``z_crit·σ/√k``.
        """
        n = len(self.resid)
        k = max(10, int(n * frac))
        if k >= n:
            return True
        lo = min(max(j - self.start - k // 2, 0), n - k)
        known = self.local.get(lo)  # asked again for every stamp near the same sample
        if known is not None:
            return known
        self.local[lo] = ok = self._local_mean_ok(lo, k, z_crit)
        return ok

    def _local_mean_ok(self, lo: int, k: int, z_crit: float) -> bool:
        window = zip(self.resid[lo : lo + k], self.inl[lo : lo + k], strict=True)
        kept = [r for r, ok in window if ok]
        if len(kept) < 5:
            return True
        mean = sum(kept) / len(kept)
        return abs(mean) <= z_crit * self.sigma / math.sqrt(len(kept))

    def freq_ppm(self, mono: int) -> float:
        """Rate error of the monotonic clock at `mono` (positive: it runs fast)."""
        u = ((mono - self.ref_mono) / 1e9 - self.xc) / self.xs
        return -((self.b + 2 * self.c * u) / self.xs) / 1e3

    def drift_ppm_per_min(self) -> float:
        return -(2 * self.c / (self.xs * self.xs)) / 1e3 * 60


def _solve(order: int, us: list[float], ys: list[float], inl: list[bool]) -> tuple:
    """Least squares of ys on (1, u[, u²]) over inliers: (a, b, c, cov, n)."""
    if len(us) != len(inl):
        raise ValueError("us and inl must have the same length")
    # One plain loop per order: the sums are added term by term, left to right (not
    # `sum()`, which compensates since Python 3.12), and this is the hot loop of a refit.
    s1 = s2 = s3 = s4 = t0 = t1 = t2 = 0.0
    if order == 2:
        for u, y in zip(compress(us, inl), compress(ys, inl), strict=True):
            u2 = u * u
            s1 += u
            s2 += u2
            t0 += y
            t1 += u * y
            s3 += u2 * u
            s4 += u2 * u2
            t2 += u2 * y
    else:
        for u, y in zip(compress(us, inl), compress(ys, inl), strict=True):
            s1 += u
            s2 += u * u
            t0 += y
            t1 += u * y
    n = inl.count(True)
    s0 = float(n)
    if order == 2:
        # Symmetric 3×3 inverse by cofactors; u ∈ [−1, 1] keeps it well conditioned.
        m00, m01, m02, m11, m12, m22 = s0, s1, s2, s2, s3, s4
        i00 = m11 * m22 - m12 * m12
        i01 = m02 * m12 - m01 * m22
        i02 = m01 * m12 - m02 * m11
        i11 = m00 * m22 - m02 * m02
        i12 = m01 * m02 - m00 * m12
        i22 = m00 * m11 - m01 * m01
        det = m00 * i00 + m01 * i01 + m02 * i02
        if det <= 0 or not math.isfinite(det):
            return _solve(1, us, ys, inl)
        cov = (i00 / det, i01 / det, i02 / det, i11 / det, i12 / det, i22 / det)
        a = cov[0] * t0 + cov[1] * t1 + cov[2] * t2
        b = cov[1] * t0 + cov[3] * t1 + cov[4] * t2
        c = cov[2] * t0 + cov[4] * t1 + cov[5] * t2
        return a, b, c, cov, n, 2
    det = s0 * s2 - s1 * s1
    if det <= 0:
        mean = t0 / s0 if s0 else 0.0
        return mean, 0.0, 0.0, (1.0 / max(s0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0), n, 0
    cov = (s2 / det, -s1 / det, 0.0, s0 / det, 0.0, 0.0)
    a = cov[0] * t0 + cov[1] * t1
    b = cov[1] * t0 + cov[3] * t1
    return a, b, 0.0, cov, n, 1


def _runs_ok(kept: list[float], z_crit: float) -> bool:
    """Wald–Wolfowitz runs test on the signs of the inliers' residuals (in sample order):
    too few runs = systematic misfit."""
    # Signs of the nonzero residuals (True: positive); a run starts at each change.
    signs = [r > 0 for r in kept if r != 0.0]
    n = len(signs)
    n1 = signs.count(True)
    n2 = n - n1
    runs = 1 + sum(map(ne, signs, signs[1:])) if signs else 0
    if n < 20 or n1 == 0 or n2 == 0:
        return n < 20
    mu = 2.0 * n1 * n2 / n + 1.0
    var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - n) / (n * n * (n - 1.0))
    return var <= 0 or (runs - mu) / math.sqrt(var) >= -z_crit


def _robust_start(us: list[float], ys: list[float], order: int) -> tuple[float, float, float]:
    """Outlier-resistant first guess (a, b, c) for the least-squares iterations.

    Slope: median of the slopes between samples half a window apart (each late pulse
    spoils one pair, not the median); offset: median of the detrended values. With
    `order` 2, a parabola through the (median u, median residual) of each third of
    the detrended data adds the curvature (detrending first keeps a late pulse from
    shifting those medians by whole samples of the trend).
    """
    n = len(us)
    h = max(n // 2, 1)
    pairs = zip(us, ys, us[h:], ys[h:], strict=False)  # i and i + h
    slopes = [(y1 - y0) / (u1 - u0) for u0, y0, u1, y1 in pairs if u1 > u0]
    b = _median(slopes) if slopes else 0.0
    a = _median([y - b * u for u, y in zip(us, ys, strict=True)])
    if order < 2 or n < 9:
        return a, b, 0.0
    z = [y - a - b * u for u, y in zip(us, ys, strict=True)]
    pts = []
    for k in range(3):
        lo, hi = k * n // 3, (k + 1) * n // 3
        pts.append((_median(us[lo:hi]), _median(z[lo:hi])))
    (u0, z0), (u1, z1), (u2, z2) = pts
    if not u0 < u1 < u2:
        return a, b, 0.0
    # Newton divided differences, expanded to a + b·u + c·u².
    d01 = (z1 - z0) / (u1 - u0)
    d12 = (z2 - z1) / (u2 - u1)
    c = (d12 - d01) / (u2 - u0)
    b1 = d01 - c * (u0 + u1)
    a1 = z0 - b1 * u0 - c * u0 * u0
    return a + a1, b + b1, c


def fit_window(
    mono: list[int], cont: list[int], phase: list[int], s: int, e: int, p: FitParams
) -> Fit:
    """Fit samples [s, e) of a segment (`phase`: each sample's cont − mono, less a constant)."""
    ri = (s + e - 1) // 2
    ref_m, ref_c = mono[ri], cont[ri]
    ms = mono[s:e]
    # (cont − ref_c) − (mono − ref_m), in integers: the phase relative to the reference.
    ref_p = phase[ri]
    ys = [float(x - ref_p) for x in phase[s:e]]
    x0, x1 = (ms[0] - ref_m) / 1e9, (ms[-1] - ref_m) / 1e9
    xc = 0.5 * (x0 + x1)
    half = max(0.5 * (x1 - x0), 1e-3)
    us = [((m - ref_m) / 1e9 - xc) / half for m in ms]
    n = len(us)
    order = 2 if n >= p.quadratic_min_samples else 1

    sol, resid, kept, inl = _robust_fit(us, ys, order, p)
    a, b, c, cov, m, order_used = sol
    ss = sum([r * r for r in kept])
    dof = max(m - max(order_used, 0) - 1, 1)
    if order_used == 2:
        # Keep the drift term only where the data show it: an insignificant one
        # costs variance (9/n instead of 4/n at the window's end) and buys nothing.
        t = abs(c) / (math.sqrt(ss / dof) * math.sqrt(max(cov[5], 1e-300)) + 1e-12)
        if t < p.drift_t:
            a, b, c, cov, m, order_used = _solve(1, us, ys, inl)
            resid = [y - (a + u * b) for u, y in zip(us, ys, strict=True)]
            kept = list(compress(resid, inl))
            ss = sum([r * r for r in kept])
            dof = max(m - 2, 1)

    f = Fit()
    f.ref_mono, f.ref_cont = ref_m, ref_c
    f.xc, f.xs = xc, half
    f.a, f.b, f.c, f.cov = a, b, c, cov
    f.sigma = max(math.sqrt(ss / dof), 1.0)
    f.n, f.n_out, f.order = m, n - m, order_used
    f.runs_ok = _runs_ok(kept, p.runs_z)
    f.first, f.last = mono[s], mono[e - 1]
    f.resid, f.inl, f.start = resid, inl, s
    f.local = {}
    # σ is estimated from the fit's own residuals; a short fit may draw it low.
    f.factor = small_sample_factor(f.n - f.order - 1)
    return f


def _robust_fit(
    us: list[float], ys: list[float], order: int, p: FitParams
) -> tuple[tuple, list[float], list[float], list[bool]]:
    """Least squares over an inlier set iterated at ``outlier_sigmas`` (MAD-based):
    (the `_solve` solution, every residual, the inliers' residuals, the inlier flags)."""
    n = len(us)
    # Robust start: exact polynomial through the medians of thirds (halves for a line),
    # so a burst of late pulses cannot drag the first residuals.
    a0, b0, c0 = _robust_start(us, ys, order)
    resid = [y - (a0 + u * (b0 + u * c0)) for u, y in zip(us, ys, strict=True)]
    dev = list(map(abs, resid))
    sig = 1.4826 * _median(dev)
    thr = max(3 * p.outlier_sigmas * sig, p.outlier_floor_ns)
    inl = [d <= thr for d in dev]

    for _ in range(6):
        sol = _solve(order, us, ys, inl)
        a, b, c = sol[0], sol[1], sol[2]
        resid = [y - (a + u * (b + u * c)) for u, y in zip(us, ys, strict=True)]
        kept = list(compress(resid, inl))
        med = sig = 0.0
        if kept:
            ordered = sorted(kept)
            med = _middle(ordered)
            sig = 1.4826 * _median_distance(ordered, med)
        thr = max(p.outlier_sigmas * sig, p.outlier_floor_ns)
        new = [abs(r - med) <= thr for r in resid]
        if new == inl:
            return sol, resid, kept, inl  # the solution for the final inliers
        inl = new
        if sum(inl) < 3:
            inl = [True] * n
            break
    sol = _solve(order, us, ys, inl)
    a, b, c = sol[0], sol[1], sol[2]
    resid = [y - (a + u * (b + u * c)) for u, y in zip(us, ys, strict=True)]
    return sol, resid, list(compress(resid, inl)), inl
