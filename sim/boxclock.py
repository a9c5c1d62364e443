"""A box's kernel clock against true UTC, exactly, in integer nanoseconds.

The box clock is CLOCK_MONOTONIC of the box (in a live run: of this machine,
shared by the daemon's NMEA stamps and the injected edge ticks). Its crystal is
off by `ppm` (positive: the box clock runs fast) and that error drifts by
`drift_ppm_per_h` per hour (warming up in the sun). True UTC of a tick is

    utc(mono) = utc0 + d - e(d),  d = mono - mono0,
    e(d) = d·ppm·1e-6 + ½·(drift/3600 s)·1e-6·d²

computed as one rational and rounded once, so no float ever touches a tick.
`tick(utc)` is the exact inverse: the first tick whose true UTC is >= `utc`.
"""

from __future__ import annotations

from dataclasses import dataclass

_PPT = 10**12  # parts per trillion: ppm given to 1e-6 ppm resolution
_HOUR_NS = 3600 * 10**9


def _round_div(num: int, den: int) -> int:
    """num/den rounded half away from zero, in integers (den > 0)."""
    q, r = divmod(abs(num), den)
    if 2 * r >= den:
        q += 1
    return q if num >= 0 else -q


@dataclass(frozen=True)
class BoxClock:
    """mono ↔ true UTC for one box; all arguments and results are int ns."""

    mono0: int
    utc0: int
    ppm: float = 0.0
    drift_ppm_per_h: float = 0.0

    @property
    def _ppt(self) -> int:
        return round(self.ppm * 1_000_000)

    @property
    def _drift_ppt(self) -> int:
        return round(self.drift_ppm_per_h * 1_000_000)

    def error_ns(self, d: int) -> int:
        """How far the box clock has gained on true time after `d` ns of box clock."""
        num = d * self._ppt * 2 * _HOUR_NS + self._drift_ppt * d * d
        return _round_div(num, 2 * _HOUR_NS * _PPT)

    def utc(self, mono: int) -> int:
        """True UTC (ns) at box tick `mono`."""
        d = mono - self.mono0
        return self.utc0 + d - self.error_ns(d)

    def tick(self, utc: int) -> int:
        """The first box tick whose true UTC is at or after `utc`."""
        m = self.mono0 + (utc - self.utc0)
        for _ in range(20):
            r = utc - self.utc(m)
            if r == 0:
                break
            m += r
        # Slope is 1 ± 1e-4, so the fixed point is within a step or two of exact.
        while self.utc(m) < utc:
            m += 1
        while self.utc(m - 1) >= utc:
            m -= 1
        return m

    def as_dict(self) -> dict[str, object]:
        """The parameters, for truth.json."""
        return {
            "mono0_ns": self.mono0,
            "utc0_ns": self.utc0,
            "ppm": self.ppm,
            "drift_ppm_per_h": self.drift_ppm_per_h,
        }
