"""Scenario files: a rally to simulate, TOML → frozen dataclasses.

Every key is checked: an unknown key, a missing required key or a bad value is a
`ScenarioError` naming the file and the key path (``boxes[2].gps.delay_ms``),
because a tester editing a scenario deserves the same care as a marshal editing
a box config. `sim/README.md` documents every key; `sim/scenarios/*.toml` are
worked examples.

Time in a scenario is *as run*: `start_interval_s`, `at_s` and `down_s` are
seconds of the simulation. Only travel between controls is compressed
(`route.travel_speedup`); what happens at a beam (break lengths, lockout, GPS
pulses once per second) is never compressed, because that is what the box times.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from checkpoint.contracts import DEFAULT_PREFIX
from checkpoint.errors import CheckpointError
from checkpoint.support import parse_toml
from sim.receivers import BUILTIN_RECEIVERS, CONSTELLATIONS, SENTENCES, Receiver

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TALKER = re.compile(r"^[A-Z]{2}$")

#: Standard UART rates a receiver can be set to.
BAUD_RATES = (4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
INCIDENT_KINDS = ("broker_outage", "link_cut", "box_kill")
LINK_CUT_MODES = ("drop", "blackhole")

#: The detector's defaults (checkpoint.config.InputConfig) that the world must respect.
LOCKOUT_S = 1.0
MIN_BREAK_S = 0.010


class ScenarioError(CheckpointError):
    """A scenario file is unreadable or a key in it is wrong; the message names the key."""


@dataclass(frozen=True)
class Control:
    """A control point on the route; `checkpoint` id as the boxes there publish it."""

    id: str
    name: str
    km: float
    speed_kmh: float
    lat: float = 0.0
    lon: float = 0.0


@dataclass(frozen=True)
class Cars:
    count: int
    start_interval_s: float
    avg_speed_kmh: float
    first_number: int = 1
    speed_spread_pct: float = 0.0
    leg_spread_pct: float = 0.0
    length_m: float = 4.4
    length_spread_m: float = 0.3
    crossing_spread_pct: float = 10.0
    min_gap_s: float = 1.4


@dataclass(frozen=True)
class Regularity:
    """Crews drive regularity: each aims at its ideal times (start + trial targets)
    and misses by its own skill, a sigma per leg drawn log-uniform between the best
    and the worst crew. HQ gets an event file and an entry list, and identifies cars."""

    skill_min_s: float = 0.005
    skill_max_s: float = 0.2
    identify_sigma_s: float = 0.25
    classes: tuple[str, ...] = ("A", "B", "C")
    service_vehicles: int = 0


@dataclass(frozen=True)
class BeamFaults:
    """What goes wrong at one box's beam."""

    insects_per_min: float = 0.0
    wheel_gaps: float = 0.0
    chatter: tuple[tuple[float, float], ...] = ()
    dead: bool = False
    misaligned: bool = False


@dataclass(frozen=True)
class Box:
    id: str
    control: str
    receiver: Receiver
    clock_ppm: float = 0.0
    clock_drift_ppm_per_h: float = 0.0
    second_beam_m: float = 0.0
    button: bool = False
    beam: BeamFaults = field(default_factory=BeamFaults)


@dataclass(frozen=True)
class Incident:
    """A network or process fault, `at_s` after the rally start, lasting `down_s`."""

    kind: str
    at_s: float
    down_s: float
    box: str | None = None
    mode: str = "drop"


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    controls: tuple[Control, ...]
    cars: Cars
    boxes: tuple[Box, ...]
    travel_speedup: float = 1.0
    epoch_utc_ns: int = 1_745_762_400 * 10**9  # 2025-04-27T14:00:00Z
    lead_s: float = 75.0
    sysclock_error_s: float = 0.0
    wait_for_lock: bool = True
    lock_timeout_s: float = 120.0
    drain_timeout_s: float = 60.0
    prefix: str = DEFAULT_PREFIX
    incidents: tuple[Incident, ...] = ()
    marshal_assign: bool = False
    regularity: Regularity | None = None
    source: str = "<scenario>"

    def control(self, control_id: str) -> Control:
        """The control point with this id."""
        for c in self.controls:
            if c.id == control_id:
                return c
        raise KeyError(control_id)


# -- reading ---------------------------------------------------------------------


class _Table:
    """Pops keys from one TOML table, so what is left over is an unknown key."""

    def __init__(self, table: Any, where: str, file: str) -> None:
        if not isinstance(table, dict):
            raise ScenarioError(f"{file}: {where or 'top level'} must be a table")
        self.table = dict(table)
        self.where = where
        self.file = file

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, why: str) -> ScenarioError:
        return ScenarioError(f"{self.file}: {self.name(key)}: {why}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str, default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        return self.table.pop(key)

    def str(self, key: str, default: Any = ..., *, choices: tuple[str, ...] = ()) -> Any:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {value!r}")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def ident(self, key: str, default: Any = ...) -> Any:
        value = self.str(key, default)
        if value is not default and not _ID.match(value):
            raise self.fail(key, f"must be 1-64 of letters, digits, _ . - (got {value!r})")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def int(self, key: str, default: Any = ..., *, lo: int = 0, hi: int = 10**9) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"must be between {lo} and {hi}, got {value}")
        return value

    def num(self, key: str, default: Any = ..., *, lo: float = 0.0, hi: float = 1e9) -> float:
        value = self.raw(key, default)
        # bool is an int in Python; `speed = true` is a typo, not 1 km/h.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {value!r}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise self.fail(key, f"must be between {lo:g} and {hi:g}, got {value!r}")
        return float(value)

    def windows(self, key: str) -> tuple[tuple[float, float], ...]:
        """A list of [start_s, duration_s] pairs."""
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "must be a list of [start_s, duration_s] pairs")
        out = []
        for i, pair in enumerate(value):
            ok = (
                isinstance(pair, list)
                and len(pair) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
                and all(math.isfinite(v) for v in pair)
            )
            if not ok or pair[0] < 0 or pair[1] <= 0:
                raise self.fail(
                    f"{key}[{i}]", f"must be [start_s >= 0, duration_s > 0], got {pair!r}"
                )
            out.append((float(pair[0]), float(pair[1])))
        return tuple(sorted(out))

    def done(self) -> None:
        if self.table:
            keys = ", ".join(self.name(k) for k in sorted(self.table))
            raise ScenarioError(f"{self.file}: unknown key {keys}")


def _utc_ns(t: _Table, key: str, default: int) -> int:
    text = t.str(key, None)
    if text is None:
        return default
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise t.fail(
            key, f"must be an ISO 8601 UTC time like 2025-04-27T14:00:00Z, got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise t.fail(key, f"needs a time zone (end it with Z), got {text!r}")
    if when.year < 2020 or when.year > 2060:
        raise t.fail(key, f"must be between 2020 and 2060, got {text!r}")
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


_RECEIVER_KEYS = (
    "talker",
    "sentences",
    "convention",
    "delay_ms",
    "delay_jitter_ms",
    "baudrate",
    "decimals",
    "pps_jitter_ns",
    "pps_outlier_rate",
    "pps_outlier_ns",
    "pps_width_ms",
    "cold_start_s",
    "outages",
    "week_rollover",
    "constellations",
    "gsv_every_s",
    "ubx_bytes",
    "tx_buffer",
)


#: The receiver's numeric keys: int or float, and the range each may take.
_RECEIVER_RANGES: dict[str, tuple[type, float, float]] = {
    "delay_ms": (float, 0.0, 990.0),
    "delay_jitter_ms": (float, 0.0, 100.0),
    "pps_outlier_rate": (float, 0.0, 0.5),
    "pps_width_ms": (float, 1.0, 500.0),
    "cold_start_s": (float, 0.0, 3600.0),
    "baudrate": (int, 1200, 921_600),
    "decimals": (int, 0, 3),
    "pps_jitter_ns": (int, 0, 1_000_000),
    "pps_outlier_ns": (int, 0, 1_000_000),
    "gsv_every_s": (int, 1, 60),
    "ubx_bytes": (int, 0, 100_000),
    "tx_buffer": (int, 0, 1_000_000),
}


def _receiver_fields(t: _Table, base: Receiver) -> Receiver:
    """`base` with the receiver keys present in `t` applied (each checked)."""
    changes: dict[str, Any] = {}
    if t.has("talker"):
        talker = t.str("talker")
        if not _TALKER.match(talker):
            raise t.fail("talker", f"must be two capital letters like GP or GN, got {talker!r}")
        changes["talker"] = talker
    if t.has("sentences"):
        changes["sentences"] = _sentences(t)
    if t.has("convention"):
        changes["convention"] = t.str("convention", choices=("after", "before"))
    for key, (kind, lo, hi) in _RECEIVER_RANGES.items():
        if t.has(key):
            read = t.num if kind is float else t.int
            changes[key] = read(key, lo=lo, hi=hi)
    if t.has("outages"):
        changes["outages"] = t.windows("outages")
    if t.has("week_rollover"):
        changes["week_rollover"] = t.bool("week_rollover", False)
    if t.has("constellations"):
        changes["constellations"] = _constellations(t)
    return replace(base, **changes)


def _sentences(t: _Table) -> tuple[str, ...]:
    value = t.raw("sentences")
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise t.fail("sentences", "must be a non-empty list of sentence names")
    bad = [s for s in value if s not in SENTENCES]
    if bad:
        raise t.fail("sentences", f"unknown {bad}; known: {', '.join(SENTENCES)}")
    if not {"RMC", "ZDA"} & set(value):
        raise t.fail("sentences", "needs RMC or ZDA: without a date no second can be named")
    return tuple(value)


def _constellations(t: _Table) -> tuple[str, ...]:
    value = t.raw("constellations")
    if (
        not isinstance(value, list)
        or not value
        or any(c not in CONSTELLATIONS for c in value)
        or len(set(value)) != len(value)
    ):
        raise t.fail("constellations", f"must be a list of distinct {', '.join(CONSTELLATIONS)}")
    return tuple(value)


def burst_ms(rx: Receiver) -> float:
    """How long one second's output takes on the serial line (10 bits a byte), sky full."""
    from sim.gps import second_bytes

    return second_bytes(rx) * 10_000 / rx.baudrate


def _check_timing(rx: Receiver, t: _Table, key: str) -> None:
    """Any burst timing a real receiver has is allowed; a line that never drains is not.

    A receiver sending more than its line carries must drop what does not fit (a
    u-blox drops at its TX buffer); one that never drops would fall behind forever,
    which no receiver does.
    """
    burst = burst_ms(rx)
    if burst >= 1000 and not rx.tx_buffer:
        raise ScenarioError(
            f"{t.file}: {key}: the receiver sends {burst:.0f} ms of bytes a second at "
            f"{rx.baudrate} baud and never drops any, so it would fall behind without end: "
            "set tx_buffer (bytes; a u-blox drops what its buffer cannot hold), a higher "
            "baudrate or fewer sentences"
        )


def _receivers(raw: Any, file: str) -> dict[str, Receiver]:
    found = dict(BUILTIN_RECEIVERS)
    if raw is None:
        return found
    t = _Table(raw, "receivers", file)
    # Profiles may be based on another one defined earlier or built in.
    for name in list(t.table):
        if not _ID.match(name):
            raise t.fail(name, "a receiver name must be letters, digits, _ . -")
        rt = _Table(t.raw(name), f"receivers.{name}", file)
        base_name = rt.str("based_on", None)
        if base_name is not None and base_name not in found:
            raise rt.fail("based_on", f"no receiver {base_name!r} (known: {', '.join(found)})")
        base = found[base_name] if base_name else Receiver(name=name)
        rx = replace(_receiver_fields(rt, base), name=name)
        rt.done()
        _check_timing(rx, rt, f"receivers.{name}")
        found[name] = rx
    return found


def _beam_faults(raw: Any, where: str, file: str) -> BeamFaults:
    if raw is None:
        return BeamFaults()
    t = _Table(raw, where, file)
    faults = BeamFaults(
        insects_per_min=t.num("insects_per_min", 0.0, hi=600),
        wheel_gaps=t.num("wheel_gaps", 0.0, hi=1.0),
        chatter=t.windows("chatter"),
        dead=t.bool("dead", False),
        misaligned=t.bool("misaligned", False),
    )
    for i, (_, dur) in enumerate(faults.chatter):
        if dur > 5:
            raise t.fail(f"chatter[{i}]", f"a chatter burst lasts at most 5 s, got {dur:g}")
    t.done()
    return faults


def _controls(raw: Any, file: str) -> tuple[Control, ...]:
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(
            f"{file}: route.controls must be a non-empty array of tables ([[route.controls]])"
        )
    out: list[Control] = []
    for i, table in enumerate(raw):
        t = _Table(table, f"route.controls[{i}]", file)
        c = Control(
            id=t.ident("id"),
            name=t.str("name", ""),
            km=t.num("km", lo=0, hi=100_000),
            speed_kmh=t.num("speed_kmh", 30.0, lo=5, hi=200),
            lat=t.num("lat", 0.0, lo=-90, hi=90),
            lon=t.num("lon", 0.0, lo=-180, hi=180),
        )
        t.done()
        if out and c.km <= out[-1].km:
            raise t.fail("km", f"must increase along the route ({out[-1].id} is at {out[-1].km:g})")
        if any(o.id == c.id for o in out):
            raise t.fail("id", f"{c.id!r} is used twice")
        out.append(c)
    return tuple(out)


def _cars(raw: Any, file: str) -> Cars:
    t = _Table(raw, "cars", file)
    cars = Cars(
        count=t.int("count", lo=1, hi=10_000),
        start_interval_s=t.num("start_interval_s", lo=0.0, hi=3600),
        avg_speed_kmh=t.num("avg_speed_kmh", lo=1, hi=300),
        first_number=t.int("first_number", 1, lo=0, hi=10**6),
        speed_spread_pct=t.num("speed_spread_pct", 0.0, hi=30),
        leg_spread_pct=t.num("leg_spread_pct", 0.0, hi=30),
        length_m=t.num("length_m", 4.4, lo=2, hi=20),
        length_spread_m=t.num("length_spread_m", 0.3, hi=3),
        crossing_spread_pct=t.num("crossing_spread_pct", 10.0, hi=30),
        min_gap_s=t.num("min_gap_s", 1.4, lo=0, hi=3600),
    )
    t.done()
    if cars.min_gap_s < LOCKOUT_S + 0.1:
        raise t.fail(
            "min_gap_s",
            f"must be at least {LOCKOUT_S + 0.1:g} s: a box merges breaks within its "
            f"{LOCKOUT_S:g} s lockout into one passage",
        )
    return cars


def _regularity(raw: Any, file: str) -> Regularity | None:
    if raw is None:
        return None
    t = _Table(raw, "regularity", file)
    d = Regularity()
    classes = t.raw("classes", list(d.classes))
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c.strip() for c in classes)
    ):
        raise t.fail("classes", "must be a non-empty list of class names")
    r = Regularity(
        skill_min_s=t.num("skill_min_s", d.skill_min_s, lo=1e-4, hi=600),
        skill_max_s=t.num("skill_max_s", d.skill_max_s, lo=1e-4, hi=600),
        identify_sigma_s=t.num("identify_sigma_s", d.identify_sigma_s, lo=1e-3, hi=3600),
        classes=tuple(c.strip() for c in classes),
        service_vehicles=t.int("service_vehicles", 0, lo=0, hi=100),
    )
    if r.skill_max_s < r.skill_min_s:
        raise t.fail("skill_max_s", "must not be below skill_min_s")
    t.done()
    return r


def _check_break_fits_lockout(sc: Scenario) -> None:
    """A whole car must clear the beam inside the lockout, or its tail is a second passage."""
    c = sc.cars
    longest = c.length_m + 3 * c.length_spread_m
    for i, ctl in enumerate(sc.controls):
        slowest = ctl.speed_kmh / 3.6 * max(0.1, 1 - 3 * c.crossing_spread_pct / 100)
        if longest / slowest > 0.8 * LOCKOUT_S:
            raise ScenarioError(
                f"{sc.source}: route.controls[{i}].speed_kmh: at {ctl.speed_kmh:g} km/h a "
                f"{longest:.1f} m car takes {longest / slowest:.2f} s to clear the beam, "
                f"longer than 0.8 x the {LOCKOUT_S:g} s lockout; raise the speed or shorten "
                "cars.length_m"
            )


def _boxes(raw: Any, file: str, receivers: dict[str, Receiver], controls: set[str]) -> list[Box]:
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(f"{file}: boxes must be a non-empty array of tables ([[boxes]])")
    out: list[Box] = []
    for i, table in enumerate(raw):
        where = f"boxes[{i}]"
        t = _Table(table, where, file)
        box_id = t.ident("id")
        if any(b.id == box_id for b in out):
            raise t.fail("id", f"{box_id!r} is used twice")
        control = t.ident("control")
        if control not in controls:
            raise t.fail("control", f"no control {control!r} in route.controls")
        rx_name = t.str("receiver", "ublox-m8")
        if rx_name not in receivers:
            raise t.fail("receiver", f"no receiver {rx_name!r} (known: {', '.join(receivers)})")
        rx = receivers[rx_name]
        gps_raw = t.raw("gps", None)
        if gps_raw is not None:
            gt = _Table(gps_raw, f"{where}.gps", file)
            rx = _receiver_fields(gt, rx)
            gt.done()
            _check_timing(rx, gt, f"{where}.gps")
        box = Box(
            id=box_id,
            control=control,
            receiver=rx,
            clock_ppm=t.num("clock_ppm", 0.0, lo=-45, hi=45),
            clock_drift_ppm_per_h=t.num("clock_drift_ppm_per_h", 0.0, lo=-20, hi=20),
            second_beam_m=t.num("second_beam_m", 0.0, hi=20),
            button=t.bool("button", False),
            beam=_beam_faults(t.raw("beam", None), f"{where}.beam", file),
        )
        t.done()
        out.append(box)
    return out


def _incidents(raw: Any, file: str, boxes: set[str]) -> tuple[Incident, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScenarioError(f"{file}: incidents must be an array of tables ([[incidents]])")
    out = []
    for i, table in enumerate(raw):
        t = _Table(table, f"incidents[{i}]", file)
        kind = t.str("kind", choices=INCIDENT_KINDS)
        inc = Incident(
            kind=kind,
            at_s=t.num("at_s", lo=0, hi=86_400),
            down_s=t.num("down_s", lo=0.1, hi=3600),
            box=t.ident("box", None),
            mode=t.str("mode", "drop", choices=LINK_CUT_MODES),
        )
        if kind == "broker_outage" and inc.box is not None:
            raise t.fail("box", "a broker outage hits every box; remove box")
        if kind != "broker_outage" and inc.box is None:
            raise t.fail("box", f"a {kind} needs the box it hits")
        if inc.box is not None and inc.box not in boxes:
            raise t.fail("box", f"no box {inc.box!r} in boxes")
        if kind != "link_cut" and "mode" in table:
            raise t.fail("mode", "only a link_cut has a mode")
        t.done()
        out.append(inc)
    return tuple(sorted(out, key=lambda x: x.at_s))


def parse(data: dict[str, Any], file: str = "<scenario>") -> Scenario:
    """Turn an already-parsed TOML document into a `Scenario`, checking every key."""
    top = _Table(data, "", file)
    rally = _Table(top.raw("rally"), "rally", file)
    name = rally.str("name")
    seed = rally.int("seed", lo=0, hi=2**63 - 1)
    epoch = _utc_ns(rally, "epoch_utc", Scenario.epoch_utc_ns)
    lead_s = rally.num("lead_s", 75.0, lo=1, hi=3600)
    sysclock_error = rally.num("sysclock_error_s", 0.0, lo=-1e9, hi=1e9)
    wait = rally.bool("wait_for_lock", True)
    lock_timeout = rally.num("lock_timeout_s", 120.0, lo=1, hi=3600)
    drain_timeout = rally.num("drain_timeout_s", 60.0, lo=1, hi=3600)
    prefix = rally.str("prefix", "rally")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", prefix):
        raise rally.fail("prefix", f"must be a plain topic word, got {prefix!r}")
    rally.done()

    route = _Table(top.raw("route"), "route", file)
    speedup = route.num("travel_speedup", 1.0, lo=1e-3, hi=1e6)
    controls = _controls(route.raw("controls", None), file)
    route.done()

    cars = _cars(top.raw("cars"), file)
    receivers = _receivers(top.raw("receivers", None), file)
    boxes = _boxes(top.raw("boxes", None), file, receivers, {c.id for c in controls})
    incidents = _incidents(top.raw("incidents", None), file, {b.id for b in boxes})
    marshal = _Table(top.raw("marshal", {}), "marshal", file)
    assign = marshal.bool("assign", False)
    marshal.done()
    regularity = _regularity(top.raw("regularity", None), file)
    top.done()
    sc = Scenario(
        name=name,
        seed=seed,
        controls=controls,
        cars=cars,
        boxes=tuple(boxes),
        travel_speedup=speedup,
        epoch_utc_ns=epoch,
        lead_s=lead_s,
        sysclock_error_s=sysclock_error,
        wait_for_lock=wait,
        lock_timeout_s=lock_timeout,
        drain_timeout_s=drain_timeout,
        prefix=prefix,
        incidents=incidents,
        marshal_assign=assign,
        regularity=regularity,
        source=file,
    )
    _check_break_fits_lockout(sc)
    return sc


def loads(text: str, file: str = "<scenario>") -> Scenario:
    """Parse scenario TOML text."""
    return parse(parse_toml(text, file, ScenarioError), file)


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    return loads(text, str(path))


def first_cars(sc: Scenario, n: int | None) -> Scenario:
    """The same rally with only its first `n` cars (all when None or more than it has).

    The demo's quick run: the same route, boxes and faults, fewer cars through them.
    """
    if n is None or n >= sc.cars.count:
        return sc
    if n < 1:
        raise ScenarioError(f"--cars must be at least 1, got {n}")
    return replace(sc, cars=replace(sc.cars, count=n))


def faster(sc: Scenario, speed: float) -> Scenario:
    """The same rally with its schedule run `speed` times faster.

    Start interval, travel and the moments of faults shrink; what a box measures
    (break lengths, PPS once a second, outage and down durations) does not.
    """
    if speed == 1:
        return sc
    if not speed > 0:
        raise ScenarioError(f"--speed must be positive, got {speed!r}")

    def at(windows: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        return tuple((a / speed, d) for a, d in windows)

    boxes = tuple(
        replace(
            b,
            receiver=replace(b.receiver, outages=at(b.receiver.outages)),
            beam=replace(b.beam, chatter=at(b.beam.chatter)),
        )
        for b in sc.boxes
    )
    reg = sc.regularity
    if reg is not None:
        # Crews miss by a share of the schedule: a faster schedule, smaller misses.
        reg = replace(
            reg,
            skill_min_s=reg.skill_min_s / speed,
            skill_max_s=reg.skill_max_s / speed,
            identify_sigma_s=reg.identify_sigma_s / speed,
        )
    return replace(
        sc,
        regularity=reg,
        cars=replace(sc.cars, start_interval_s=sc.cars.start_interval_s / speed),
        travel_speedup=sc.travel_speedup * speed,
        boxes=boxes,
        incidents=tuple(replace(i, at_s=i.at_s / speed) for i in sc.incidents),
    )
