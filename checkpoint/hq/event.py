"""The event file: controls, schedule, regularity trials, time controls and rules.

Pure: parses TOML text into frozen dataclasses; no I/O. It extends the stages file
(`checkpoint.hq.results`): a stages file (`[scoring]` + `[[stage]]`) is a valid event
file whose stages are trials, with the same scoring and no coefficients.

```toml
[event]
name = "California Mille"
date = "2025-04-27"                 # places the entry list's times of day
timezone = "America/Los_Angeles"    # default UTC

[rules]                   # every key optional; defaults are Mille Miglia style
penalty_per_hundredth = 1 # points per hundredth of deviation at a timed control
rounding = "truncate"     # or "round"
max_penalty = 300         # cap per timed control (default: none)
missed_control = 300      # points for a timed control with no passage (or no trial start)
time_unit_s = 60          # time controls are timed to this unit (the minute)
early_per_unit = 60       # points per unit early at a time control
late_per_unit = 10        # points per unit late
max_late_units = 30       # later than this: out of time limit (OTL)
jokers = 0                # each car's N worst trials are dropped
coefficient = "year"      # "year": 1 + (year - year_base)/100 (1934 -> 1.34) unless the
                          # entry gives one; "entries": the entry's, else 1; "none": 1
year_base = 1900
tie_break = ["year", "best_trials"]  # older car first, then count-back; else shared rank

[identify]                # automatic identification (checkpoint.hq.identify)
sigma_s = 10              # typical crew error on a regularity leg (s)
transfer_sigma_s = 120    # on a leg outside any trial
gate_sigmas = 4           # no car further than this many sigmas from its prediction
min_margin = 2.0          # log-likelihood lead of the best assignment, else "to confirm"
pair_window_s = 1.0       # dual timing: inputs of one control within this are one car
dual_tolerance_s = 0.5    # primary vs backup beyond this (plus bounds): flagged

[[control]]               # in route order
id = "PC1"                # the checkpoint name its boxes publish
name = "La Jolla"
km = 0
due_s = 0                 # ideal offset from the car's start; default: from the trials,
                          # or the previous control's at `avg_kmh`
kind = "passage"          # or "time": a time control timed to the unit
inputs = ["box01:beam", "box01:button"]   # primary first (default: beam, beam2, button)
avg_kmh = 60              # for a default due_s of the next leg

[[trial]]
name = "PS1"
start = "PC1"
finish = "PC2"
target_s = 120.5          # or target_kmh (+ distance_km, default from the controls' km)
secrets = [{control = "PC1a", target_s = 40.0}]  # intermediate secret controls
```
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from checkpoint.errors import ConfigError
from checkpoint.hq.results import NS_PER_S, ROUNDING_MODES, _exact, target_ns_from
from checkpoint.support import parse_toml

DEFAULT_INPUT_ORDER = ("beam", "beam2", "button")
TIE_RULES = ("year", "best_trials")
COEFFICIENT_RULES = ("year", "entries", "none")


@dataclass(frozen=True, slots=True)
class Rules:
    """How deviations, time controls and missed controls become points, and the ranking."""

    penalty_per_hundredth: int = 1
    rounding: str = "truncate"
    max_penalty: int | None = None
    missed_control: int = 300
    time_unit_s: Decimal = Decimal(60)
    early_per_unit: int = 60
    late_per_unit: int = 10
    max_late_units: int = 30
    jokers: int = 0
    coefficient: str = "year"
    year_base: int = 1900
    tie_break: tuple[str, ...] = ("year", "best_trials")


@dataclass(frozen=True, slots=True)
class Identify:
    """Parameters of automatic identification (see checkpoint.hq.identify)."""

    sigma_ns: int = 10 * NS_PER_S
    transfer_sigma_ns: int = 120 * NS_PER_S
    gate_sigmas: float = 4.0
    min_margin: float = 2.0
    pair_window_ns: int = NS_PER_S
    dual_tolerance_ns: int = NS_PER_S // 2


@dataclass(frozen=True, slots=True)
class Control:
    """One control in route order. `due_ns` is the ideal offset from a car's start."""

    id: str
    name: str = ""
    km: Decimal | None = None
    due_ns: int | None = None
    kind: str = "passage"
    inputs: tuple[str, ...] = ()
    sigma_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Trial:
    """A regularity trial: timed from `start`; `points` are (control, target ns) pairs,
    the secret controls then the finish, each target counted from the start."""

    name: str
    start: str
    finish: str
    target_ns: int
    secrets: tuple[tuple[str, int], ...] = ()

    @property
    def points(self) -> tuple[tuple[str, int], ...]:
        """Every timed control of the trial, finish last."""
        return (*self.secrets, (self.finish, self.target_ns))


@dataclass(frozen=True, slots=True)
class Event:
    """A parsed event file."""

    name: str
    date: str | None
    timezone: str
    controls: tuple[Control, ...]
    trials: tuple[Trial, ...]
    rules: Rules
    identify: Identify = field(default_factory=Identify)

    def control(self, cid: str) -> Control | None:
        """The control with id `cid`, or None."""
        return next((c for c in self.controls if c.id == cid), None)

    @property
    def scheduled(self) -> bool:
        """True when every control has a due time (identification can predict)."""
        return bool(self.controls) and all(c.due_ns is not None for c in self.controls)

    def trial_of_leg(self, prev: str, nxt: str) -> Trial | None:
        """The trial whose timed span contains the leg prev → nxt, if any."""
        ids = [c.id for c in self.controls]
        for t in self.trials:
            if t.start in ids and t.finish in ids:
                a, b = ids.index(t.start), ids.index(t.finish)
                if prev in ids and nxt in ids and a <= ids.index(prev) < ids.index(nxt) <= b:
                    return t
        return None


def _err(source: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {msg}")


def _check_keys(tbl: object, allowed: set[str], key: str, source: str) -> dict[str, Any]:
    if not isinstance(tbl, dict):
        raise _err(source, key, "must be a table")
    unknown = set(tbl) - allowed
    if unknown:
        raise _err(source, key, f"unknown key(s): {', '.join(sorted(unknown))}")
    return tbl


def _int(tbl: dict[str, Any], k: str, default: int | None, key: str, source: str) -> int | None:
    v = tbl.get(k, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _err(source, f"{key}.{k}", f"must be an integer >= 0, got {v!r}")
    return v


def _seconds_ns(v: object, key: str, source: str, *, zero: bool = False) -> int:
    if zero and v == 0 and not isinstance(v, bool):
        return 0
    return int(_exact(v, key, source) * NS_PER_S)


def _str(tbl: dict[str, Any], k: str, key: str, source: str, default: str | None = None) -> str:
    v = tbl.get(k, default)
    if not isinstance(v, str) or not v.strip():
        raise _err(source, f"{key}.{k}", "must be a non-empty string")
    return v.strip()


def _rules(doc: dict[str, Any], source: str, legacy: bool) -> Rules:
    if "rules" in doc and "scoring" in doc:
        raise _err(source, "scoring", "give [rules] or the older [scoring], not both")
    key = "rules" if "rules" in doc else "scoring"
    allowed = set(Rules.__slots__)  # type: ignore[attr-defined]
    if key == "scoring":
        allowed = {"penalty_per_hundredth", "rounding", "max_penalty"}
    r = _check_keys(doc.get(key, {}), allowed, key, source)
    d = Rules()
    rounding = r.get("rounding", d.rounding)
    if rounding not in ROUNDING_MODES:
        raise _err(source, f"{key}.rounding", f"must be one of {', '.join(ROUNDING_MODES)}")
    coef = r.get("coefficient", "none" if legacy else d.coefficient)
    if coef not in COEFFICIENT_RULES:
        raise _err(source, f"{key}.coefficient", f"must be one of {', '.join(COEFFICIENT_RULES)}")
    ties = r.get("tie_break", list(d.tie_break))
    if not isinstance(ties, list) or any(t not in TIE_RULES for t in ties):
        raise _err(source, f"{key}.tie_break", f"must be a list of {', '.join(TIE_RULES)}")
    unit = r.get("time_unit_s", 60)
    return Rules(
        penalty_per_hundredth=_int(r, "penalty_per_hundredth", 1, key, source) or 0,
        rounding=rounding,
        max_penalty=_int(r, "max_penalty", None, key, source),
        missed_control=_int(r, "missed_control", d.missed_control, key, source) or 0,
        time_unit_s=_exact(unit, f"{key}.time_unit_s", source),
        early_per_unit=_int(r, "early_per_unit", d.early_per_unit, key, source) or 0,
        late_per_unit=_int(r, "late_per_unit", d.late_per_unit, key, source) or 0,
        max_late_units=_int(r, "max_late_units", d.max_late_units, key, source) or 0,
        jokers=_int(r, "jokers", 0, key, source) or 0,
        coefficient=coef,
        year_base=_int(r, "year_base", d.year_base, key, source) or 0,
        tie_break=tuple(ties),
    )


def _identify(doc: dict[str, Any], source: str) -> Identify:
    allowed = {
        "sigma_s",
        "transfer_sigma_s",
        "gate_sigmas",
        "min_margin",
        "pair_window_s",
        "dual_tolerance_s",
    }
    r = _check_keys(doc.get("identify", {}), allowed, "identify", source)
    d = Identify()

    def ns(k: str, default: int) -> int:
        return _seconds_ns(r[k], f"identify.{k}", source) if k in r else default

    def pos(k: str, default: float) -> float:
        return float(_exact(r[k], f"identify.{k}", source)) if k in r else default

    return Identify(
        sigma_ns=ns("sigma_s", d.sigma_ns),
        transfer_sigma_ns=ns("transfer_sigma_s", d.transfer_sigma_ns),
        gate_sigmas=pos("gate_sigmas", d.gate_sigmas),
        min_margin=pos("min_margin", d.min_margin),
        pair_window_ns=ns("pair_window_s", d.pair_window_ns),
        dual_tolerance_ns=ns("dual_tolerance_s", d.dual_tolerance_ns),
    )


def _target(
    tbl: dict[str, Any], start: str, end: str, km: dict[str, Decimal | None], key: str, source: str
) -> int:
    """target_s, or target_kmh over distance_km (default: the controls' km apart)."""
    dist = tbl.get("distance_km")
    if dist is None and tbl.get("target_kmh") is not None:
        a, b = km.get(start), km.get(end)
        if a is not None and b is not None and b > a:
            dist = float(b - a)
    return target_ns_from(
        target_s=tbl.get("target_s"),
        target_kmh=tbl.get("target_kmh"),
        distance_km=dist,
        key=key,
        source=source,
    )


def _trial(t: object, key: str, source: str, km: dict[str, Decimal | None]) -> Trial:
    allowed = {"name", "start", "finish", "target_s", "target_kmh", "distance_km", "secrets"}
    t = _check_keys(t, allowed, key, source)
    name, start, finish = (_str(t, k, key, source) for k in ("name", "start", "finish"))
    target = _target(t, start, finish, km, key, source)
    secrets: list[tuple[str, int]] = []
    raw = t.get("secrets", [])
    if not isinstance(raw, list):
        raise _err(source, f"{key}.secrets", "must be a list of tables")
    for j, s in enumerate(raw, 1):
        sk = f"{key}.secrets[{j}]"
        s = _check_keys(s, {"control", "target_s", "target_kmh", "distance_km"}, sk, source)
        ctl = _str(s, "control", sk, source)
        st = _target(s, start, ctl, km, sk, source)
        if st >= target:
            raise _err(source, sk, "a secret control's target must be before the finish's")
        secrets.append((ctl, st))
    secrets.sort(key=lambda p: p[1])
    return Trial(name, start, finish, target, tuple(secrets))


def _header(doc: dict[str, Any], source: str) -> tuple[str, str | None, str]:
    """[event]: (name, ISO date or None, time zone name)."""
    ev = _check_keys(doc.get("event", {}), {"name", "date", "timezone"}, "event", source)
    name = ev.get("name", "")
    date = ev.get("date")
    if date is not None:
        try:
            date = _dt.date.fromisoformat(str(date)).isoformat()
        except ValueError:
            raise _err(source, "event.date", f"{date!r} is not a date (YYYY-MM-DD)") from None
    tz = ev.get("timezone", "UTC")
    try:
        zoneinfo.ZoneInfo(tz)
    except Exception:  # noqa: BLE001 - any failure means the name is unusable
        raise _err(source, "event.timezone", f"unknown time zone {tz!r}") from None
    return str(name), date, tz


def _trials(
    doc: dict[str, Any], source: str, legacy: bool, km: dict[str, Decimal | None]
) -> list[Trial]:
    """[[trial]] (or a stages file's [[stage]]), names unique."""
    raw_trials = doc.get("stage" if legacy else "trial", [])
    if not isinstance(raw_trials, list):
        raise _err(source, "trial", "must be an array of tables ([[trial]])")
    trials: list[Trial] = []
    seen: set[str] = set()
    for i, t in enumerate(raw_trials, 1):
        tr = _trial(t, f"{'stage' if legacy else 'trial'}[{i}]", source, km)
        if tr.name in seen:
            raise _err(source, f"trial[{i}].name", f"{tr.name!r} is used twice")
        seen.add(tr.name)
        trials.append(tr)
    return trials


def parse_event(text: str, source: str = "<event>") -> Event:
    """Parse an event (or legacy stages) TOML document; ConfigError names file and key."""
    doc = parse_toml(text, source)
    known = {"event", "rules", "scoring", "identify", "control", "trial", "stage"}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    legacy = "stage" in doc
    if legacy and "trial" in doc:
        raise _err(source, "stage", "give [[trial]] or the older [[stage]], not both")

    name, date, tz = _header(doc, source)
    rules = _rules(doc, source, legacy)
    identify = _identify(doc, source)
    controls = _controls(doc.get("control", []), source)
    km = {c.id: c.km for c in controls}
    trials = _trials(doc, source, legacy, km)
    if not trials and not controls:
        raise ConfigError(f"{source}: needs at least one [[trial]] (or [[control]])")
    if not controls:
        # A stages file: its controls are the stages' checkpoints, unscheduled.
        ids: list[str] = []
        for t in trials:
            for c in (t.start, *(s for s, _ in t.secrets), t.finish):
                if c not in ids:
                    ids.append(c)
        controls = tuple(Control(c) for c in ids)
    ids = [c.id for c in controls]
    for i, t in enumerate(trials, 1):
        for c in (t.start, *(s for s, _ in t.secrets), t.finish):
            if c not in ids:
                raise _err(source, f"trial[{i}]", f"control {c!r} is not a [[control]]")
    controls = _schedule(controls, trials, doc.get("control", []), source)
    return Event(
        name=str(name),
        date=date,
        timezone=tz,
        controls=controls,
        trials=tuple(trials),
        rules=rules,
        identify=identify,
    )


def _controls(raw: object, source: str) -> tuple[Control, ...]:
    if not isinstance(raw, list):
        raise _err(source, "control", "must be an array of tables ([[control]])")
    out: list[Control] = []
    allowed = {"id", "name", "km", "due_s", "kind", "inputs", "sigma_s", "avg_kmh"}
    last_km: Decimal | None = None
    for i, c in enumerate(raw, 1):
        key = f"control[{i}]"
        c = _check_keys(c, allowed, key, source)
        cid = _str(c, "id", key, source)
        if any(o.id == cid for o in out):
            raise _err(source, f"{key}.id", f"{cid!r} is used twice")
        km = None
        if "km" in c:
            v = c["km"]
            km = Decimal(0) if v == 0 else _exact(v, f"{key}.km", source)
            if last_km is not None and km <= last_km:
                raise _err(source, f"{key}.km", "must increase along the route")
            last_km = km
        kind = c.get("kind", "passage")
        if kind not in ("passage", "time"):
            raise _err(source, f"{key}.kind", "must be passage or time")
        inputs = c.get("inputs", [])
        if not isinstance(inputs, list) or not all(isinstance(x, str) and x for x in inputs):
            raise _err(source, f"{key}.inputs", "must be a list of BOX:INPUT or INPUT strings")
        due = _seconds_ns(c["due_s"], f"{key}.due_s", source, zero=True) if "due_s" in c else None
        sigma = _seconds_ns(c["sigma_s"], f"{key}.sigma_s", source) if "sigma_s" in c else None
        out.append(Control(cid, str(c.get("name", "")), km, due, kind, tuple(inputs), sigma))
    return tuple(out)


def _schedule(
    controls: tuple[Control, ...], trials: list[Trial], raw: object, source: str
) -> tuple[Control, ...]:
    """Fill in the due offsets the file leaves out: from trial targets, or avg_kmh."""
    if not controls or not isinstance(raw, list) or not raw:
        return controls
    due: dict[str, int | None] = {c.id: c.due_ns for c in controls}
    if due[controls[0].id] is None:
        due[controls[0].id] = 0
    avg = {c["id"]: c.get("avg_kmh") for c in raw if isinstance(c, dict) and "id" in c}
    for _ in range(len(controls) + 1):
        for t in trials:
            if due.get(t.start) is not None:
                for ctl, target in t.points:
                    if due.get(ctl) is None:
                        due[ctl] = due[t.start] + target  # type: ignore[operator]
        for prev, nxt in zip(controls, controls[1:], strict=False):
            kmh = avg.get(prev.id)
            if due[nxt.id] is None and due[prev.id] is not None and kmh is not None:
                if prev.km is None or nxt.km is None:
                    raise _err(source, f"control {prev.id}", "avg_kmh needs km on both controls")
                t = target_ns_from(
                    target_kmh=kmh,
                    distance_km=float(nxt.km - prev.km),
                    key=f"control {prev.id}",
                    source=source,
                )
                due[nxt.id] = due[prev.id] + t  # type: ignore[operator]
    missing = [c.id for c in controls if due[c.id] is None]
    if missing:
        raise ConfigError(
            f"{source}: control(s) {', '.join(missing)} have no due time: give due_s, put them"
            " in a trial, or give the previous control avg_kmh"
        )
    order = [due[c.id] for c in controls]
    if any(b < a for a, b in zip(order, order[1:], strict=False)):  # type: ignore[operator]
        raise ConfigError(f"{source}: due times must not decrease along the route")
    return tuple(
        Control(c.id, c.name, c.km, due[c.id], c.kind, c.inputs, c.sigma_ns) for c in controls
    )
