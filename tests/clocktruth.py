"""Known-truth GPS timing data for the pairing/clock tests and bench/clock_bench.py.

Like chrony's test/unit/regress.c: the truth is known exactly, the data is noisy, a
seeded RNG makes every run identical. Imports nothing from checkpoint except the
`Fix` record, so the bench can put this folder on sys.path and use it as is.

Truth. The box's CLOCK_MONOTONIC runs at fractional rate error ``y(t)`` (positive:
fast): ``offset_ppm + drift·t + random-walk wander + temp_ppm·sin(2πt/period)``.
``mono_at[k]`` is the exact tick at which true UTC is ``start_utc_s + k``; between
seconds the rate is constant, so ``utc_of(mono)`` and ``mono_of(utc)`` are exact
piecewise-linear integer maps. Times are POSIX: with ``leap_at`` the second
``start + leap_at`` is 23:59:60, labelled (as nmea.Fix does) with the POSIX value of
the next midnight, and every later second is labelled one lower than its index.

Observations. PPS tick of second k = ``mono_at[k] + N(0, pps_jitter_ns)`` (+ a late
interrupt of ``outlier_ns`` with probability ``outlier_rate``), minus pulses in
``pps_outages`` (and ``missing_rate``), plus bounce edges (``double_rate``). The
sentences for second k arrive, kind after kind ``kind_gap_ns`` apart, starting
``latency`` after the pulse ("after") or ending ``latency`` before it ("before"),
with latency uniform in ``latency_ns`` each second. Events (beam edges) are exact
ticks at random true times; sysclock readings are truth + ``sysclock_offset_ns``.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field

from checkpoint.core.nmea import Fix

NS = 1_000_000_000
START_UTC_S = 1_767_225_000  # 2025-12-31 23:50:00 UTC: a leap_at of 599 lands on midnight

# A typical crystal: slow drift, random-walk wander, small temperature swings.
# Profile(**WANDER, ...).
WANDER: dict = {"drift_ppm_per_min": 0.01, "wander_ppm_per_sqrt_s": 2e-4, "temp_ppm": 0.02}

# A box in the sun: 1 °C temperature cycles at 0.25 ppm/°C change the frequency faster
# than the clock's default wander allowance (0.05 ppm/min). Profile(**HOT_BOX, ...).
HOT_BOX: dict = {
    "offset_ppm": 35.0,
    "outlier_rate": 0.02,
    "drift_ppm_per_min": 0.03,
    "wander_ppm_per_sqrt_s": 5e-4,
    "temp_ppm": 0.25,
    "temp_period_s": 1200.0,
}


@dataclass(frozen=True)
class Profile:
    """One synthetic run; every field has a default, override what the test is about."""

    name: str = "nominal"
    seconds: int = 900
    seed: int = 1
    offset_ppm: float = 0.0
    drift_ppm_per_min: float = 0.0
    wander_ppm_per_sqrt_s: float = 0.0
    temp_ppm: float = 0.0
    temp_period_s: float = 2400.0
    pps_jitter_ns: float = 1000.0
    outlier_rate: float = 0.0
    outlier_ns: tuple[int, int] = (20_000, 300_000)
    missing_rate: float = 0.0
    double_rate: float = 0.0
    convention: str = "after"
    latency_ns: tuple[int, int] = (50_000_000, 600_000_000)
    kinds: tuple[str, ...] = ("RMC", "GGA")
    kind_gap_ns: int = 15_000_000
    pps_outages: tuple[tuple[int, int], ...] = ()
    nmea_outages: tuple[tuple[int, int], ...] = ()
    pps_start_s: int = 0
    nmea_start_s: int = 0
    leap_at: int | None = None
    label_jumps: tuple[tuple[int, int], ...] = ()  # (from second, +seconds) wrong labels
    event_every_s: float = 2.5
    sysclock_offset_ns: int = 3_217_000_000
    sysclock_every_s: int = 10
    start_utc_s: int = START_UTC_S
    mono0_ns: int = 7_654_321_987_654


@dataclass
class Truth:
    """The generated run: exact maps plus the observation stream, sorted by tick."""

    profile: Profile
    mono_at: list[int]
    stream: list[tuple] = field(default_factory=list)  # (mono, order, kind, payload)

    def utc_of(self, mono: int) -> int:
        """True POSIX UTC (ns) at a monotonic tick; exact, integer."""
        p, at = self.profile, self.mono_at
        k = bisect.bisect_right(at, mono) - 1
        k = min(max(k, 0), len(at) - 2)
        span = at[k + 1] - at[k]
        cont = (p.start_utc_s + k) * NS + (mono - at[k]) * NS // span
        if p.leap_at is not None and k > p.leap_at:
            cont -= NS
        return cont

    def mono_of_index(self, k: int, frac_ns: int) -> int:
        """Tick at continuous second k + frac (k indexes mono_at)."""
        at = self.mono_at
        return at[k] + (at[k + 1] - at[k]) * frac_ns // NS

    def label(self, k: int) -> tuple[int, bool]:
        """(utc_s, leap) a correct receiver names for continuous second k."""
        p = self.profile
        s = p.start_utc_s + k
        if p.leap_at is not None and k > p.leap_at:
            s -= 1
        return s, p.leap_at is not None and k == p.leap_at

    def named(self, k: int) -> tuple[int, bool]:
        """(utc_s, leap) the simulated receiver names for second k, label jumps included."""
        utc_s, leap = self.label(k)
        return utc_s + sum(plus for start, plus in self.profile.label_jumps if k >= start), leap

    def second_of(self, mono: int) -> int:
        """Index of the second whose top is nearest to `mono` (which pulse a tick is)."""
        at = self.mono_at
        k = bisect.bisect_left(at, mono)
        if k > 0 and (k == len(at) or mono - at[k - 1] < at[k] - mono):
            k -= 1
        return k

    def events(self) -> list[int]:
        return [payload for _, _, kind, payload in self.stream if kind == "event"]


def _in(k: int, spans: tuple[tuple[int, int], ...]) -> bool:
    return any(a <= k < a + d for a, d in spans)


def generate(p: Profile) -> Truth:
    """Build the truth and the stream of ('pps'|'fix'|'event'|'sys', payload) items."""
    rng = random.Random(p.seed)
    n = p.seconds + 3
    mono_at: list[int] = []
    phase = 0.0  # ns the box clock has gained on truth; float is fine: < 2^30
    walk = 0.0
    for k in range(n):
        mono_at.append(p.mono0_ns + k * NS + round(phase))
        t = k + 0.5
        y = (
            p.offset_ppm
            + p.drift_ppm_per_min * t / 60.0
            + walk
            + p.temp_ppm * math.sin(2 * math.pi * t / p.temp_period_s)
        )
        phase += 1e3 * y  # 1 ppm = 1000 ns per second
        walk += rng.gauss(0.0, p.wander_ppm_per_sqrt_s)
    truth = Truth(p, mono_at)
    stream = truth.stream

    for k in range(p.seconds):
        at = mono_at[k]
        if k >= p.pps_start_s and not _in(k, p.pps_outages) and rng.random() >= p.missing_rate:
            tick = at + round(rng.gauss(0.0, p.pps_jitter_ns))
            if rng.random() < p.outlier_rate:
                tick += rng.randint(*p.outlier_ns)
            stream.append((tick, 0, "pps", tick))
            if rng.random() < p.double_rate:
                bounce = tick + rng.randint(1_000, 50_000_000)
                stream.append((bounce, 0, "pps", bounce))
        if k >= p.nmea_start_s and not _in(k, p.nmea_outages):
            utc_s, leap = truth.named(k)
            lat = rng.randint(*p.latency_ns)
            nk = len(p.kinds)
            if p.convention == "after":
                first = at + lat
            else:
                first = at - lat - (nk - 1) * p.kind_gap_ns
            for i, kind in enumerate(p.kinds):
                arr = first + i * p.kind_gap_ns
                fix = Fix(arr, utc_s, 0, True, kind, kind != "GGA", leap)
                stream.append((arr, 1, "fix", fix))
        if p.sysclock_every_s and k % p.sysclock_every_s == 0:
            m = at + 123_456
            stream.append((m, 2, "sys", (m, truth.utc_of(m) + p.sysclock_offset_ns)))

    t = rng.uniform(0.5, p.event_every_s)
    while t < p.seconds - 1:
        k = int(t)
        m = truth.mono_of_index(k, round((t - k) * NS))
        stream.append((m, 3, "event", m))
        t += rng.uniform(0.2, 2 * p.event_every_s - 0.2)
    stream.sort(key=lambda item: (item[0], item[1]))
    return truth


@dataclass(frozen=True)
class Stamped:
    """One stamp of an event: when it was made (`now`), what it said, and the truth."""

    mono: int
    now: int
    truth: int
    utc: int
    unc: int
    clock: str
    late: bool  # the re-stamp made `restamp_after_ns` after the event

    @property
    def err(self) -> int:
        return self.utc - self.truth

    @property
    def covered(self) -> bool:
        return abs(self.err) <= self.unc


def replay(
    truth: Truth, pairer, model, restamp_after_ns: int = 2 * NS, probe=None
) -> list[Stamped]:
    """Feed the stream in tick order the way timing.Pipeline does; stamp every event twice.

    `pairer` and `model` are duck-typed (checkpoint.core.pairing.Pairer, clock.ClockModel,
    or the bench's naive baselines). The re-stamp is made at the first input at or
    after `restamp_after_ns` past the event, with that input's tick as `now`.
    `probe(mono)`, if given, is called after every input.
    """
    out: list[Stamped] = []
    due: list[tuple[int, int]] = []
    head = 0

    def stamp(m: int, now: int, late: bool) -> None:
        s = model.stamp(m, now)
        out.append(Stamped(m, now, truth.utc_of(m), s.utc_ns, s.uncertainty_ns, str(s.clock), late))

    for mono, _, kind, payload in truth.stream:
        while head < len(due) and due[head][0] <= mono:
            stamp(due[head][1], mono, True)
            head += 1
        if kind == "pps":
            for s in pairer.pps(payload):
                model.add_sample(s)
        elif kind == "fix":
            model.add_fix(payload)
            for s in pairer.fix(payload):
                model.add_sample(s)
        elif kind == "sys":
            model.add_sysclock(*payload)
        else:
            stamp(mono, mono, False)
            due.append((mono + restamp_after_ns, mono))
        if probe is not None:
            probe(mono)
    return out


def restamp_all(truth: Truth, model, now: int) -> list[Stamped]:
    """Stamp every event again, knowing everything up to `now` (the final answer)."""
    out = []
    for m in truth.events():
        s = model.stamp(m, now)
        out.append(Stamped(m, now, truth.utc_of(m), s.utc_ns, s.uncertainty_ns, str(s.clock), True))
    return out
