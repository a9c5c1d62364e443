"""The NMEA side of the clock: which sentences give time, their learnt latency, doubts (pure).

A sentence kind gives time once ``nmea_min_consistent`` sentences of it in a row agree
with elapsed mono. While the PPS is locked, every sentence is checked against the
PPS labels with its kind's learnt latency (arrival − start of the named second); the
range learnt while they agree, plus margins, is what an NMEA-grade stamp later
claims. A whole-second disagreement opens a *doubt* (see clock.py, "Steps") until a
sentence agrees again.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter, deque

from checkpoint.core.clockparams import NS_PER_S, ClockParams, ClockState, Est, ceil_ns


class NmeaTime:
    """Trusted sentences, per-kind latency ranges and open doubts; one per clock model."""

    def __init__(self, params: ClockParams, counters: Counter[str]) -> None:
        self.params = params
        self.counters = counters  # the clock model's, shared so status has one set
        self.fix_mono: list[int] = []
        self._fix_utc: list[int] = []
        self._fix_kind: list[str] = []
        self._kind_last: dict[str, tuple[int, int, bool]] = {}
        self._kind_streak: Counter[str] = Counter()
        self._lat: dict[str, deque[int]] = {}
        self.lat_range: dict[str, tuple[int, int]] = {}
        self._lat_span: dict[str, tuple[int, int]] = {}  # min, max of each _lat window
        self._last_agree_mono: int | None = None
        self._doubts: list[list[int | None]] = []  # [start, end | None, k]

    def out_of_order(self, m: int) -> bool:
        """Is a sentence at mono m older than the last trusted one?"""
        return bool(self.fix_mono) and m < self.fix_mono[-1]

    def follow(self, kind: str, m: int, utc: int, leap: bool) -> None:
        """Count how many sentences of `kind` in a row agree with elapsed mono."""
        p = self.params
        last = self._kind_last.get(kind)
        if last is not None:
            lm, lu, lleap = last
            expect = (m - lm) - (NS_PER_S if lleap else 0)
            tol = p.nmea_jump_tolerance_ns + (m - lm) * p.max_freq_ppm * 1e-6
            if abs((utc - lu) - expect) <= tol:
                self._kind_streak[kind] += 1
            else:
                self._kind_streak[kind] = 1
                self.counters["nmea_jump"] += 1
        else:
            self._kind_streak[kind] = 1
        self._kind_last[kind] = (m, utc, leap)

    def keep(self, kind: str, m: int, utc: int) -> None:
        """Trust the sentence for NMEA-grade time if its kind has been consistent."""
        p = self.params
        if self._kind_streak[kind] >= p.nmea_min_consistent:
            self.fix_mono.append(m)
            self._fix_utc.append(utc)
            self._fix_kind.append(kind)
            if len(self.fix_mono) > 4096 and m - self.fix_mono[0] > p.history_ns:
                k = bisect_left(self.fix_mono, m - p.history_ns)
                del self.fix_mono[:k], self._fix_utc[:k], self._fix_kind[:k]

    def check(self, kind: str, m: int, latency: int) -> bool:
        """A sentence whose named second began `latency` before it arrived, by the locked
        PPS: learn the latency if it agrees to the second, else open or move a doubt."""
        p = self.params
        rng = self.lat_range.get(kind)
        if rng is not None:
            mid = (rng[0] + rng[1]) // 2
            k = round((latency - mid) / NS_PER_S)
        else:
            k = round(latency / NS_PER_S) if abs(latency) > 3 * NS_PER_S // 2 else 0
        if k:
            self.counters["nmea_pps_disagree"] += 1
            open_doubt = self._doubts[-1] if self._doubts and self._doubts[-1][1] is None else None
            if open_doubt is None or open_doubt[2] != k:
                if open_doubt is not None:
                    open_doubt[1] = m
                start = self._last_agree_mono if self._last_agree_mono is not None else m
                self._doubts.append([start, None, k])
                del self._doubts[:-16]
            return False
        self._last_agree_mono = m
        if self._doubts and self._doubts[-1][1] is None:
            self._doubts[-1][1] = m
        lat = self._lat.get(kind)
        if lat is None:
            lat = self._lat[kind] = deque(maxlen=p.nmea_learn_window)
        old = lat[0] if len(lat) == lat.maxlen else None
        lat.append(latency)
        if len(lat) >= p.nmea_learn_min:
            span = self._lat_span.get(kind)
            if span is None or old in span:  # the extreme left the window: look again
                lo, hi = min(lat), max(lat)
            else:
                lo, hi = min(span[0], latency), max(span[1], latency)
            if span != (lo, hi):  # else the learnt range stands as it is
                self._lat_span[kind] = (lo, hi)
                margin = p.nmea_latency_margin_ns + p.nmea_latency_margin_frac * (hi - lo)
                self.lat_range[kind] = (round(lo - margin), round(hi + margin))
        return True

    def doubt_ns(self, m: int, now: int) -> int:
        """Whole seconds in dispute for a tick at m, as known at `now` (0: none)."""
        for start, end, k in reversed(self._doubts):
            assert start is not None and k is not None
            if start <= now and (end is None or end > now) and m >= start:
                return abs(k) * NS_PER_S
        return 0

    def narrowest_half_ns(self) -> float:
        """Half the narrowest latency range any kind could give: NMEA's best bound."""
        p = self.params
        half = (p.nmea_latency_max_ns - p.nmea_latency_min_ns) / 2
        for lo, hi in self.lat_range.values():
            half = min(half, (hi - lo) / 2)
        return half

    def estimate(self, m: int, now: int, freq_ppm: float | None) -> Est | None:
        """The nearest trusted sentence's time for a tick at m (known at `now`), or None."""
        p = self.params
        known = bisect_right(self.fix_mono, now)
        if not known:
            return None
        i = bisect_left(self.fix_mono, m, 0, known)
        if freq_ppm is None:
            rate = p.max_freq_ppm * 1e-6
        else:
            rate = (abs(freq_ppm) + p.learnt_freq_margin_ppm) * 1e-6
        best: int | None = None
        best_unc = 0
        prior = (p.nmea_latency_min_ns, p.nmea_latency_max_ns)
        for j in range(max(0, i - 4), min(known, i + 4)):
            d = m - self.fix_mono[j]
            if abs(d) > p.nmea_timeout_ns:
                continue
            lo, hi = self.lat_range.get(self._fix_kind[j], prior)
            unc = ceil_ns((hi - lo) / 2 + abs(d) * rate + p.nmea_floor_ns)
            if best is None or unc < best_unc:
                # The sentence left the receiver `latency` after the second it names began.
                best, best_unc = self._fix_utc[j] + d + (lo + hi) // 2, unc
        return None if best is None else Est(best, best_unc, ClockState.NMEA)
