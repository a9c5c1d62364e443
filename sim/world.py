"""The rally as it truly happened: every car at every beam, in exact integer ns.

`plan(scenario)` draws the cars' schedule from the seed (relative to the rally
start, so a live run can start it whenever the boxes are ready and still get the
same rally). `Rally(scenario, start_utc_ns, clocks)` places it in true UTC and
turns it, per box, into the sensor edges the box's pins will see, each stamped
with the box tick at which it happens (`BoxClock.tick`), plus the truth the
verdict judges against: one `TruthPassage` per input that a perfect detector
would report, keyed by the tick of its leading edge.

Random draws come from streams named by seed and purpose (`seed/cars`,
`seed/box07/beam`, ...), so changing one box's faults never changes another
box's rally, and the same seed always gives the same truth and ticks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sim.boxclock import BoxClock
from sim.scenario import MIN_BREAK_S, Box, Scenario

NS = 1_000_000_000
MS = 1_000_000

#: Box pins (BCM names), as wired in the README; the PPS pin is the box default.
PINS = {"beam": "GPIO17", "beam2": "GPIO22", "button": "GPIO27"}
PPS_PIN = "GPIO18"

#: Insects keep this far from a car's edges, so a glitch never straddles one.
_CLEAR_NS = 60 * MS
#: After a chatter burst the beam stays quiet this long: the box's rate limiter
#: counts edges per 1 s window and would drop a car's edge inside a full window.
_CHATTER_CLEAR_NS = 1_200 * MS


@dataclass(frozen=True, slots=True)
class CarPlan:
    """One car at one control: nose at the beam `offset_ns` after the rally start."""

    car: str
    control: str
    offset_ns: int
    speed_mps: float
    length_m: float


@dataclass(frozen=True, slots=True)
class Edge:
    """A level change on a box pin at box tick `tick`.

    `key` names the truth passage the edge belongs to (None for noise: insects,
    chatter); `lead` marks that passage's leading edge.
    """

    tick: int
    input: str
    broken: bool
    key: tuple[str, str, str] | None = None
    lead: bool = False

    @property
    def pin(self) -> str:
        return PINS[self.input]

    @property
    def level(self) -> int:
        """Electrical level: inputs are active-low (a broken beam pulls the line to 0)."""
        return 0 if self.broken else 1


@dataclass(frozen=True, slots=True)
class TruthPassage:
    """What a perfect box reports: the leading edge of one car on one input."""

    box: str
    checkpoint: str
    input: str
    car: str
    utc_ns: int
    tick: int
    nose_utc_ns: int
    end_tick: int
    detectable: bool = True

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.box, self.input, self.car)

    def as_dict(self) -> dict[str, object]:
        """Every field by its name (truth.json, the verdict's input)."""
        return asdict(self)


def _clip(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


class _Crews:
    """[regularity]: each crew's skill (a sigma per leg, s) and the service vehicles,
    which join the field in `at` and `length` as they are made.

    Own random stream, so a scenario without [regularity] draws exactly as before.
    """

    def __init__(
        self, sc: Scenario, names: list[str], at: dict[str, int], length: dict[str, float]
    ) -> None:
        reg = sc.regularity
        assert reg is not None
        self.rng = random.Random(f"{sc.seed}/crews")
        lo, hi = math.log(reg.skill_min_s), math.log(reg.skill_max_s)
        self.skill = {n: math.exp(self.rng.uniform(lo, hi)) for n in names}
        self.legs = leg_targets_ns(sc)
        self.service = service_names(sc)
        for j, sv in enumerate(self.service):
            # Service vehicles drive the route at the cars' pace: the course
            # opener two start intervals before the first car, the sweeper two
            # after the last, then further out. Their passages are no car's.
            k = j // 2 + 2
            slot = -k if j % 2 == 0 else len(names) - 1 + k
            at[sv] = round(slot * sc.cars.start_interval_s * NS)
            self.skill[sv] = reg.skill_min_s
            length[sv] = 5.0

    def leg(self, i: int, name: str) -> int:
        """A regularity crew aims at its ideal time: leg `i`'s target after its own
        passage at the previous control, missed by its skill."""
        return self.legs[i] + round(self.rng.gauss(0, self.skill[name]) * NS)


def plan(sc: Scenario) -> list[CarPlan]:
    """Every car at every control, offsets from the rally start (same seed, same plan).

    Cars start `start_interval_s` apart at the first control and drive each leg at
    their own average speed (spread) varied per leg; travel is compressed by
    `travel_speedup`. A car that catches the one ahead at a control is held
    `min_gap_s` behind it (there is no overtaking in a control zone), which is also
    what keeps two cars at one beam further apart than the lockout.
    """
    c = sc.cars
    rng = random.Random(f"{sc.seed}/cars")
    names = [str(c.first_number + i) for i in range(c.count)]
    speed = {
        n: c.avg_speed_kmh * _clip(1 + rng.gauss(0, c.speed_spread_pct / 100), 0.5, 1.5)
        for n in names
    }
    length = {
        n: _clip(rng.gauss(c.length_m, c.length_spread_m), 2.5, c.length_m + 3 * c.length_spread_m)
        for n in names
    }
    at = {n: round(i * c.start_interval_s * NS) for i, n in enumerate(names)}
    crews = _Crews(sc, names, at, length) if sc.regularity is not None else None
    if crews is not None:
        names = names + crews.service
    out: list[CarPlan] = []
    min_gap = round(c.min_gap_s * NS)
    for k, ctl in enumerate(sc.controls):
        if k > 0:
            km = ctl.km - sc.controls[k - 1].km
            for n in names:
                if crews is not None and n in crews.skill:
                    at[n] += crews.leg(k - 1, n)
                    continue
                v = speed[n] * _clip(1 + rng.gauss(0, c.leg_spread_pct / 100), 0.5, 1.5)
                at[n] += round(km / v * 3600 / sc.travel_speedup * NS)
        prev: int | None = None
        for n in sorted(names, key=lambda n: (at[n], int(n) if n.isdigit() else 0)):
            if prev is not None and at[n] < prev + min_gap:
                at[n] = prev + min_gap + round(rng.uniform(0, 0.3) * NS)
            prev = at[n]
        for n in names:
            v_cross = (
                ctl.speed_kmh / 3.6 * _clip(1 + rng.gauss(0, c.crossing_spread_pct / 100), 0.7, 1.3)
            )
            out.append(CarPlan(n, ctl.id, at[n], v_cross, length[n]))
    return sorted(out, key=lambda p: (p.offset_ns, p.control))


def leg_targets_ns(sc: Scenario) -> list[int]:
    """Each leg's target time as run (compressed like the travel), to the millisecond:
    the leg's km at the cars' average speed. The event file HQ gets says the same."""
    out = []
    for a, b in zip(sc.controls, sc.controls[1:], strict=False):
        s = (b.km - a.km) / sc.cars.avg_speed_kmh * 3600 / sc.travel_speedup
        out.append(round(s * 1000) * 1_000_000)
    return out


def service_names(sc: Scenario) -> list[str]:
    """The service vehicles' names (not on the entry list)."""
    n = sc.regularity.service_vehicles if sc.regularity else 0
    return [f"SV{i + 1}" for i in range(n)]


@dataclass
class BoxRally:
    """One box's share of the rally: its pin edges (sorted) and its truth."""

    box: Box
    clock: BoxClock
    edges: list[Edge]
    truth: list[TruthPassage]


class Rally:
    """The rally placed in true UTC from `start_utc_ns`, per box."""

    def __init__(self, sc: Scenario, start_utc_ns: int, clocks: dict[str, BoxClock]) -> None:
        self.scenario = sc
        self.start_utc_ns = start_utc_ns
        self.plans = plan(sc)
        self.boxes: dict[str, BoxRally] = {
            b.id: _box_rally(sc, b, clocks[b.id], start_utc_ns, self.plans) for b in sc.boxes
        }

    @property
    def truth(self) -> list[TruthPassage]:
        return sorted(
            (t for br in self.boxes.values() for t in br.truth), key=lambda t: (t.utc_ns, t.box)
        )

    def end_utc_ns(self) -> int:
        """True UTC of the last thing that happens at any beam."""
        ends = [br.clock.utc(br.edges[-1].tick) for br in self.boxes.values() if br.edges]
        return max(ends, default=self.start_utc_ns)


def _beam_breaks(box: Box, p: CarPlan, nose: int, rng: random.Random) -> list[tuple[int, int]]:
    """The (start, end) UTC of each time car `p`, nose at `nose`, breaks the main beam."""
    v = p.speed_mps
    t_len = round(p.length_m / v * NS)
    if box.beam.misaligned:
        # Aimed low, the beam sees the wheels: it is cut first by the front tyre,
        # an overhang behind the nose, and again by the rear tyre.
        overhang = rng.uniform(0.7, 0.95)
        wheelbase = p.length_m - overhang - rng.uniform(0.6, 0.9)
        tyre = round(0.55 / v * NS)
        front = nose + round(overhang / v * NS)
        rear = nose + round((overhang + wheelbase) / v * NS)
        return [(front, front + tyre), (rear, rear + tyre)]
    if rng.random() < box.beam.wheel_gaps:
        # A gap in the body (high clearance, a towbar): two breaks within the lockout.
        cut = nose + round(t_len * rng.uniform(0.35, 0.65))
        gap = round(rng.uniform(0.02, 0.12) * NS)
        # A short fast car: the gap must still end inside the car.
        gap = min(gap, (nose + t_len - cut) // 2)
        return [(nose, cut), (cut + gap, nose + t_len)]
    return [(nose, nose + t_len)]


def _box_rally(
    sc: Scenario, box: Box, clock: BoxClock, start: int, plans: list[CarPlan]
) -> BoxRally:
    rng = random.Random(f"{sc.seed}/{box.id}/beam")
    cp = sc.control(box.control)
    edges: list[Edge] = []
    truth: list[TruthPassage] = []
    busy: list[tuple[int, int]] = []  # tick spans where car edges happen

    def add_break(inp: str, key: tuple[str, str, str] | None, spans: list[tuple[int, int]]) -> None:
        for i, (lo, hi) in enumerate(spans):
            edges.append(Edge(lo, inp, True, key, lead=i == 0))
            edges.append(Edge(hi, inp, False, key))

    def passage(inp: str, car: str, spans: list[tuple[int, int]], nose: int, ok: bool) -> None:
        key = (box.id, inp, car)
        if ok:
            add_break(inp, key, spans)
        lead = spans[0][0]
        truth.append(
            TruthPassage(
                box.id, cp.id, inp, car, clock.utc(lead), lead, nose, spans[-1][1], detectable=ok
            )
        )
        busy.append((spans[0][0], spans[-1][1]))

    for p in (p for p in plans if p.control == box.control):
        nose = start + p.offset_ns
        v = p.speed_mps
        t_len = round(p.length_m / v * NS)
        spans = [(clock.tick(a), clock.tick(b)) for a, b in _beam_breaks(box, p, nose, rng)]
        passage("beam", p.car, spans, nose, not box.beam.dead)
        if box.second_beam_m > 0:
            d = round(box.second_beam_m / v * NS)
            passage(
                "beam2", p.car, [(clock.tick(nose + d), clock.tick(nose + d + t_len))], nose, True
            )
        if box.button:
            # The marshal sees the car and presses: human reaction, held briefly.
            press = nose + round(_clip(rng.gauss(0.25, 0.05), 0.15, 0.35) * NS)
            hold = round(_clip(rng.gauss(0.15, 0.03), 0.08, 0.3) * NS)
            passage("button", p.car, [(clock.tick(press), clock.tick(press + hold))], nose, True)

    busy.sort()
    _add_chatter(box, clock, start, rng, edges, busy)
    _add_insects(box, rng, edges, busy)
    edges.sort(key=lambda e: (e.tick, e.input, not e.broken))
    truth.sort(key=lambda t: t.tick)
    return BoxRally(box, clock, edges, truth)


def _idle(busy: list[tuple[int, int]], lo: int, hi: int) -> bool:
    """True when no busy span comes within `_CLEAR_NS` of [lo, hi]."""
    return all(b_hi + _CLEAR_NS < lo or b_lo - _CLEAR_NS > hi for b_lo, b_hi in busy)


def _add_chatter(
    box: Box,
    clock: BoxClock,
    start: int,
    rng: random.Random,
    edges: list[Edge],
    busy: list[tuple[int, int]],
) -> None:
    """A loose connector: ~1 kHz toggles, every break far shorter than min_break."""
    for at, dur in box.beam.chatter:
        want = clock.tick(start + round(at * NS))
        length = round(dur * NS)
        # Moved to the first quiet stretch at or after `at`, so the burst measures
        # how the box contains chatter, not the known cost of its rate limiter (a car
        # inside a full 1 s window loses its edges).
        t0 = _first_idle(busy, want, length + _CHATTER_CLEAR_NS)
        t, end = t0, t0 + length
        max_half = round(MIN_BREAK_S * NS) // 5
        while t < end:
            on = rng.randint(300_000, max_half)
            off = rng.randint(300_000, 1_500_000)
            edges.append(Edge(t, "beam", True))
            edges.append(Edge(t + on, "beam", False))
            t += on + off
        busy.append((t0, t + _CHATTER_CLEAR_NS))
        busy.sort()


def _first_idle(busy: list[tuple[int, int]], want: int, length: int) -> int:
    """The first tick >= want where [t, t + length] is clear of every busy span."""
    t = want
    while True:
        clash = [hi for lo, hi in busy if not (hi + _CLEAR_NS < t or lo - _CLEAR_NS > t + length)]
        if not clash:
            return t
        t = max(clash) + _CLEAR_NS + 1


def _add_insects(
    box: Box, rng: random.Random, edges: list[Edge], busy: list[tuple[int, int]]
) -> None:
    """Insects and rain drops: breaks of 1-6 ms, Poisson in time, clear of the cars."""
    rate = box.beam.insects_per_min / 60 / NS
    if rate <= 0 or not busy:
        return
    lo, hi = busy[0][0] - 5 * NS, busy[-1][1] + 2 * NS
    t = lo
    while True:
        t += math.ceil(rng.expovariate(rate))
        if t >= hi:
            return
        dur = rng.randint(1 * MS, 6 * MS)
        if _idle(busy, t, t + dur):
            edges.append(Edge(t, "beam", True))
            edges.append(Edge(t + dur, "beam", False))


def check_order(edges: Iterable[Edge]) -> None:
    """Assert every input alternates broken/clear (a bug in the world otherwise)."""
    level: dict[str, bool] = {}
    for e in edges:
        if level.get(e.input, False) == e.broken:
            raise AssertionError(f"{e.input}: two {'breaks' if e.broken else 'clears'} in a row")
        level[e.input] = e.broken
