"""Regularity results: corrected passages + a stages file → elapsed, deviation, points, ranking.

Pure: no I/O, no clock reads. The CLI reads the stages file and the passages (HQ's
export rows, with assignments, voids and restamps already applied) and hands them here.

Rules (Mille Miglia style regularity trial):

* A stage is timed from a start checkpoint to a finish checkpoint. A car's start is
  its earliest non-void passage at the start checkpoint; its finish is its earliest
  non-void passage at the finish checkpoint strictly after that start (so a
  checkpoint may end one stage and start the next, or start and finish a loop).
* elapsed = finish utc_ns − start utc_ns, integer nanoseconds, never via float.
* target = `target_s`, or `distance_km` / `target_kmh` hours, converted exactly
  (decimal arithmetic on the TOML text, rounded half-even to the nanosecond).
* deviation = elapsed − target (signed); penalty = |deviation| in hundredths of a
  second × `penalty_per_hundredth`, capped at `max_penalty` when given.
* Rounding (`rounding = "truncate"`, the default): the absolute deviation is
  *truncated* to whole hundredths, as a timing display shows it — 0.379 s is
  37 hundredths; a competitor is never charged for a hundredth not fully
  elapsed. `rounding = "round"` rounds half up instead (0.375 s → 38).
* A car with a stage lacking its start or finish passage shows that stage as
  MISSING (never as zero points) and is ranked after every complete car: first
  by number of missing stages (fewer first), then by the points of the stages
  it did complete, then by car number. Equal totals share a rank (1, 2, 2, 4).
* Passages without a car assignment are counted per checkpoint in
  `Results.unassigned`, so a marshal sees what still needs assigning.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from checkpoint.errors import ConfigError
from checkpoint.support import parse_toml

NS_PER_S = 1_000_000_000
NS_PER_HUNDREDTH = 10_000_000
ROUNDING_MODES = ("truncate", "round")


@dataclass(frozen=True, slots=True)
class Scoring:
    """How deviation becomes penalty points."""

    penalty_per_hundredth: int = 1
    rounding: str = "truncate"
    max_penalty: int | None = None


@dataclass(frozen=True, slots=True)
class Stage:
    """One timed stage: start and finish checkpoint ids and the target time in ns."""

    name: str
    start: str
    finish: str
    target_ns: int


@dataclass(frozen=True, slots=True)
class Stages:
    """A parsed stages file."""

    stages: tuple[Stage, ...]
    scoring: Scoring


@dataclass(frozen=True, slots=True)
class StageResult:
    """One car on one stage. `status` is "ok", "missing_start" or "missing_finish".

    Timing fields are None unless status is "ok": a missing passage never
    becomes a zero.
    """

    stage: str
    status: str
    target_ns: int
    start_utc_ns: int | None = None
    finish_utc_ns: int | None = None
    elapsed_ns: int | None = None
    deviation_ns: int | None = None
    points: int | None = None
    # Sum of the two passages' stated clock uncertainties: what the jury should
    # weigh a close call against.
    uncertainty_ns: int | None = None

    @property
    def missing(self) -> bool:
        """True when a start or finish passage is missing."""
        return self.status != "ok"


@dataclass(frozen=True, slots=True)
class CarResult:
    """One car over all stages. `total` is None when any stage is missing."""

    car: str
    rank: int
    stages: tuple[StageResult, ...]
    total: int | None
    partial_points: int
    missing: int


@dataclass(frozen=True, slots=True)
class Results:
    """Ranked results; `unassigned` counts passages without a car, per checkpoint."""

    stages: tuple[Stage, ...]
    cars: tuple[CarResult, ...]
    unassigned: dict[str, int]


# -- stages file ---------------------------------------------------------------


def _exact(value: object, key: str, source: str) -> Decimal:
    """A TOML number as an exact decimal (via its shortest repr, so 120.37 stays 120.37)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation as err:  # pragma: no cover - str() of a float is always valid
        raise ConfigError(f"{source}: {key} is not a number: {value!r}") from err
    if not d.is_finite() or d <= 0:
        raise ConfigError(f"{source}: {key} must be a positive number, got {value!r}")
    return d


def target_ns_from(
    *,
    target_s: object = None,
    target_kmh: object = None,
    distance_km: object = None,
    key: str = "stage",
    source: str = "<stages>",
) -> int:
    """Target time in integer ns from either `target_s` or `distance_km` at `target_kmh`."""
    if target_s is not None:
        if target_kmh is not None or distance_km is not None:
            raise ConfigError(
                f"{source}: {key}: give either target_s or target_kmh + distance_km, not both"
            )
        seconds = _exact(target_s, f"{key}.target_s", source)
    elif target_kmh is not None and distance_km is not None:
        km = _exact(distance_km, f"{key}.distance_km", source)
        kmh = _exact(target_kmh, f"{key}.target_kmh", source)
        seconds = km * 3600 / kmh
    else:
        raise ConfigError(f"{source}: {key}: needs target_s, or target_kmh and distance_km")
    return int((seconds * NS_PER_S).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def parse_stages(text: str, source: str = "<stages>") -> Stages:
    """Parse a stages TOML document; errors are ConfigError naming the key and `source`."""
    doc = parse_toml(text, source)
    unknown = set(doc) - {"scoring", "stage"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s): {', '.join(sorted(unknown))}")

    sc = doc.get("scoring", {})
    if not isinstance(sc, dict):
        raise ConfigError(f"{source}: [scoring] must be a table")
    unknown = set(sc) - {"penalty_per_hundredth", "rounding", "max_penalty"}
    if unknown:
        raise ConfigError(f"{source}: scoring: unknown key(s): {', '.join(sorted(unknown))}")
    per = sc.get("penalty_per_hundredth", 1)
    if isinstance(per, bool) or not isinstance(per, int) or per < 0:
        raise ConfigError(f"{source}: scoring.penalty_per_hundredth must be an integer >= 0")
    rounding = sc.get("rounding", "truncate")
    if rounding not in ROUNDING_MODES:
        raise ConfigError(f"{source}: scoring.rounding must be one of {', '.join(ROUNDING_MODES)}")
    cap = sc.get("max_penalty")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
        raise ConfigError(f"{source}: scoring.max_penalty must be an integer >= 0")
    scoring = Scoring(penalty_per_hundredth=per, rounding=rounding, max_penalty=cap)

    raw = doc.get("stage")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: needs at least one [[stage]]")
    stages: list[Stage] = []
    seen: set[str] = set()
    allowed = {"name", "start", "finish", "target_s", "target_kmh", "distance_km"}
    for i, st in enumerate(raw, 1):
        key = f"stage[{i}]"
        if not isinstance(st, dict):
            raise ConfigError(f"{source}: {key} must be a table")
        unknown = set(st) - allowed
        if unknown:
            raise ConfigError(f"{source}: {key}: unknown key(s): {', '.join(sorted(unknown))}")
        for field in ("name", "start", "finish"):
            if not isinstance(st.get(field), str) or not st[field].strip():
                raise ConfigError(f"{source}: {key}.{field} must be a non-empty string")
        name = st["name"].strip()
        if name in seen:
            raise ConfigError(f"{source}: {key}.name {name!r} is used twice")
        seen.add(name)
        target = target_ns_from(
            target_s=st.get("target_s"),
            target_kmh=st.get("target_kmh"),
            distance_km=st.get("distance_km"),
            key=key,
            source=source,
        )
        stages.append(Stage(name, st["start"].strip(), st["finish"].strip(), target))
    return Stages(tuple(stages), scoring)


# -- scoring -------------------------------------------------------------------


def hundredths(deviation_ns: int, rounding: str = "truncate") -> int:
    """|deviation| in whole hundredths of a second, by the documented rounding rule."""
    a = abs(deviation_ns)
    if rounding == "truncate":
        return a // NS_PER_HUNDREDTH
    if rounding == "round":
        return (a + NS_PER_HUNDREDTH // 2) // NS_PER_HUNDREDTH
    raise ValueError(f"unknown rounding {rounding!r}")


def penalty_points(deviation_ns: int, scoring: Scoring) -> int:
    """Penalty points for one stage's deviation (capped at `max_penalty` if set)."""
    pts = hundredths(deviation_ns, scoring.rounding) * scoring.penalty_per_hundredth
    if scoring.max_penalty is not None:
        pts = min(pts, scoring.max_penalty)
    return pts


def _stage_result(
    stage: Stage, scoring: Scoring, by_cp: Mapping[str, list[tuple[int, int]]]
) -> StageResult:
    starts = by_cp.get(stage.start, [])
    if not starts:
        return StageResult(stage.name, "missing_start", stage.target_ns)
    start_ns, start_unc = starts[0]
    finish = next(((t, u) for t, u in by_cp.get(stage.finish, []) if t > start_ns), None)
    if finish is None:
        return StageResult(stage.name, "missing_finish", stage.target_ns, start_utc_ns=start_ns)
    finish_ns, finish_unc = finish
    elapsed = finish_ns - start_ns
    deviation = elapsed - stage.target_ns
    return StageResult(
        stage.name,
        "ok",
        stage.target_ns,
        start_utc_ns=start_ns,
        finish_utc_ns=finish_ns,
        elapsed_ns=elapsed,
        deviation_ns=deviation,
        points=penalty_points(deviation, scoring),
        uncertainty_ns=start_unc + finish_unc,
    )


def _car_key(car: str) -> tuple[int, int | str]:
    # Numeric car numbers sort numerically (2 before 10); others after, by text.
    return (0, int(car)) if car.isdigit() else (1, car)


def compute(passages: Iterable[Mapping[str, Any]], stages: Stages) -> Results:
    """Score every assigned car on every stage and rank them.

    `passages` are export rows: `car` (None if unassigned), `checkpoint`, `utc_ns`
    (after restamps), `void` (bool) and optionally `uncertainty_ns`.
    """
    relevant = {s.start for s in stages.stages} | {s.finish for s in stages.stages}
    per_car: dict[str, dict[str, list[tuple[int, int]]]] = {}
    unassigned: dict[str, int] = {}
    for p in passages:
        if p.get("void"):
            continue
        cp = p.get("checkpoint")
        car = p.get("car")
        if car is None or car == "":
            if cp in relevant:
                unassigned[cp] = unassigned.get(cp, 0) + 1
            continue
        unc = p.get("uncertainty_ns")
        per_car.setdefault(str(car), {}).setdefault(cp, []).append(
            (int(p["utc_ns"]), int(unc) if isinstance(unc, int) else 0)
        )
    for cps in per_car.values():
        for times in cps.values():
            times.sort()

    rows: list[tuple[tuple, str, tuple[StageResult, ...]]] = []
    for car, cps in per_car.items():
        srs = tuple(_stage_result(st, stages.scoring, cps) for st in stages.stages)
        missing = sum(sr.missing for sr in srs)
        partial = sum(sr.points or 0 for sr in srs)
        rows.append(((missing, partial, _car_key(car)), car, srs))
    rows.sort(key=lambda r: r[0])

    cars: list[CarResult] = []
    prev: tuple[int, int] | None = None
    rank = 0
    for pos, ((missing, partial, _), car, srs) in enumerate(rows, 1):
        # Equal (missing, points) share a rank; the next distinct one skips ahead.
        if (missing, partial) != prev:
            rank, prev = pos, (missing, partial)
        cars.append(
            CarResult(
                car=car,
                rank=rank,
                stages=srs,
                total=None if missing else partial,
                partial_points=partial,
                missing=missing,
            )
        )
    return Results(stages.stages, tuple(cars), dict(sorted(unassigned.items())))


# -- rendering -------------------------------------------------------------------


def fmt_seconds(ns: int | None, *, signed: bool = False) -> str:
    """ns as seconds with millisecond digits (truncated toward zero), exact integer maths."""
    if ns is None:
        return ""
    sign = "-" if ns < 0 else ("+" if signed else "")
    ms = abs(ns) // 1_000_000
    return f"{sign}{ms // 1000}.{ms % 1000:03d}"


def _cell(sr: StageResult) -> str:
    if sr.status == "missing_start":
        return "MISSING start"
    if sr.status == "missing_finish":
        return "MISSING finish"
    return f"{sr.points} ({fmt_seconds(sr.deviation_ns, signed=True)})"


def render_table(results: Results) -> str:
    """Plain-text table: rank, car, per-stage points (deviation), total."""
    header = ["rank", "car", *(s.name for s in results.stages), "total"]
    body = []
    for c in results.cars:
        total = str(c.total) if c.total is not None else f"MISSING ({c.partial_points} so far)"
        body.append([str(c.rank), c.car, *(_cell(sr) for sr in c.stages), total])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in body:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if not body:
        lines.append("(no assigned passages)")
    targets = ", ".join(
        f"{s.name} {s.start}->{s.finish} {fmt_seconds(s.target_ns)} s" for s in results.stages
    )
    lines.append(f"targets: {targets}")
    if results.unassigned:
        un = ", ".join(f"{cp}: {n}" for cp, n in results.unassigned.items())
        lines.append(f"unassigned passages: {un}")
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "rank",
    "car",
    "stage",
    "status",
    "target_ns",
    "start_utc_ns",
    "finish_utc_ns",
    "elapsed_ns",
    "deviation_ns",
    "points",
    "uncertainty_ns",
    "total",
)


def render_csv(results: Results) -> str:
    """CSV, one row per car and stage; `total` is empty while any stage is missing."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for c in results.cars:
        for sr in c.stages:
            d = asdict(sr)
            w.writerow(
                {
                    "rank": c.rank,
                    "car": c.car,
                    **{k: d[k] for k in CSV_FIELDS if k in d},
                    "total": c.total,
                }
            )
    return buf.getvalue()


def car_json(c: CarResult) -> dict[str, Any]:
    """One car's standing as `hq results --format json` names it (README); the board's
    results and car views carry the same keys, with their own per-stage cells."""
    return {
        "rank": c.rank,
        "car": c.car,
        "total": c.total,
        "partial_points": c.partial_points,
        "missing": c.missing,
    }


def render_json(results: Results) -> str:
    """JSON document: stages, cars (with per-stage results) and unassigned counts."""
    doc = {
        "stages": [asdict(s) for s in results.stages],
        "cars": [{**car_json(c), "stages": [asdict(sr) for sr in c.stages]} for c in results.cars],
        "unassigned": results.unassigned,
    }
    return json.dumps(doc, indent=2) + "\n"
