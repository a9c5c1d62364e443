"""The clock's regression maths: a robust polynomial fit of PPS samples (pure).

`fit_window` fits phase(u) = a + b·u + c·u² to a window of samples (mono tick →
continuous UTC ns), robustly: it starts from medians of thirds, iterates the inlier set
at `outlier_sigmas`, drops an insignificant drift term, and checks the residuals' runs.
`Fit.predict` gives the phase and its σ anywhere; `small_sample_factor` widens a σ
estimated from few residuals. clock.py decides *which* windows to fit and what bound
to promise (see its docstring); this module only fits.
"""

from __future__ import annotations

import math
from typing import Protocol


class FitParams(Protocol):
    """What a fit needs of the clock's parameters (ClockParams has them)."""

    quadratic_min_samples: int  # fit a parabola from this many samples on
    drift_t: float  # keep the drift term only at this t-value or more
    runs_z: float  # residual runs test threshold
    outlier_sigmas: float
    outlier_floor_ns: int


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
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


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
    )

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
    s0 = s1 = s2 = s3 = s4 = t0 = t1 = t2 = 0.0
    n = 0
    for u, y, ok in zip(us, ys, inl, strict=True):
        if ok:
            u2 = u * u
            s0 += 1.0
            s1 += u
            s2 += u2
            t0 += y
            t1 += u * y
            if order == 2:
                s3 += u2 * u
                s4 += u2 * u2
                t2 += u2 * y
            n += 1
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


def _runs_ok(resid: list[float], inl: list[bool], z_crit: float) -> bool:
    """Wald–Wolfowitz runs test on residual signs: too few runs = systematic misfit."""
    runs = n1 = n2 = 0
    prev = 0
    for r, ok in zip(resid, inl, strict=True):
        if not ok or r == 0.0:
            continue
        sign = 1 if r > 0 else -1
        if sign > 0:
            n1 += 1
        else:
            n2 += 1
        if sign != prev:
            runs += 1
            prev = sign
    n = n1 + n2
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
    slopes = [(ys[i + h] - ys[i]) / (us[i + h] - us[i]) for i in range(n - h) if us[i + h] > us[i]]
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


def fit_window(mono: list[int], cont: list[int], s: int, e: int, p: FitParams) -> Fit:
    """The robust fit of samples s..e-1 (mono ticks → continuous UTC ns): a line, or a
    parabola from `quadratic_min_samples` on when its drift term is significant; outliers
    beyond `outlier_sigmas` (at least `outlier_floor_ns`) are left out."""
    ri = (s + e - 1) // 2
    ref_m, ref_c = mono[ri], cont[ri]
    xs = [(mono[i] - ref_m) / 1e9 for i in range(s, e)]
    ys = [float((cont[i] - ref_c) - (mono[i] - ref_m)) for i in range(s, e)]
    x0, x1 = xs[0], xs[-1]
    xc = 0.5 * (x0 + x1)
    half = max(0.5 * (x1 - x0), 1e-3)
    us = [(x - xc) / half for x in xs]
    n = len(us)
    order = 2 if n >= p.quadratic_min_samples else 1

    # Robust start: exact polynomial through the medians of thirds (halves for a line),
    # so a burst of late pulses cannot drag the first residuals.
    a0, b0, c0 = _robust_start(us, ys, order)
    resid = [y - (a0 + u * (b0 + u * c0)) for u, y in zip(us, ys, strict=True)]
    sig = 1.4826 * _median([abs(r) for r in resid])
    thr = max(3 * p.outlier_sigmas * sig, p.outlier_floor_ns)
    inl = [abs(r) <= thr for r in resid]

    for _ in range(6):
        a, b, c, cov, m, order_used = _solve(order, us, ys, inl)
        resid = [y - (a + u * (b + u * c)) for u, y in zip(us, ys, strict=True)]
        kept = [r for r, ok in zip(resid, inl, strict=True) if ok]
        med = _median(kept) if kept else 0.0
        sig = 1.4826 * _median([abs(r - med) for r in kept]) if kept else 0.0
        thr = max(p.outlier_sigmas * sig, p.outlier_floor_ns)
        new = [abs(r - med) <= thr for r in resid]
        if new == inl:
            break
        inl = new
        if sum(inl) < 3:
            inl = [True] * n
            break
    a, b, c, cov, m, order_used = _solve(order, us, ys, inl)
    resid = [y - (a + u * (b + u * c)) for u, y in zip(us, ys, strict=True)]
    ss = sum(r * r for r, ok in zip(resid, inl, strict=True) if ok)
    dof = max(m - max(order_used, 0) - 1, 1)
    if order_used == 2:
        # Keep the drift term only where the data show it: an insignificant one
        # costs variance (9/n instead of 4/n at the window's end) and buys nothing.
        t = abs(c) / (math.sqrt(ss / dof) * math.sqrt(max(cov[5], 1e-300)) + 1e-12)
        if t < p.drift_t:
            a, b, c, cov, m, order_used = _solve(1, us, ys, inl)
            resid = [y - (a + u * b) for u, y in zip(us, ys, strict=True)]
            ss = sum(r * r for r, ok in zip(resid, inl, strict=True) if ok)
            dof = max(m - 2, 1)

    f = Fit()
    f.ref_mono, f.ref_cont = ref_m, ref_c
    f.xc, f.xs = xc, half
    f.a, f.b, f.c, f.cov = a, b, c, cov
    f.sigma = max(math.sqrt(ss / dof), 1.0)
    f.n, f.n_out, f.order = m, n - m, order_used
    f.runs_ok = _runs_ok(resid, inl, p.runs_z)
    f.first, f.last = mono[s], mono[e - 1]
    f.resid, f.inl, f.start = resid, inl, s
    f.local = {}
    return f
