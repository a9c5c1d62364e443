"""Clock bench: this estimator vs two naive ones on the same known-truth data.

    python bench/clock_bench.py [--quick] [--json OUT]

Profiles (tests/clocktruth.py generates them; seeded, so every run is identical):
crystal offsets up to ±50 ppm, drift 0.01 ppm/min with random-walk and temperature
wander, 1 µs PPS jitter, 2 % late interrupts (+20..300 µs), NMEA "after" and
"before" 50–600 ms, a 10-minute PPS outage, a cold start, a hot box (1 °C cycles),
and a glitchy PPS line (missing, doubled and late pulses).

Methods, side by side on each profile's one stream:

* ``checkpoint``: `Pairer` + `ClockModel`.
* ``nmea-arrival``: UTC = second named by the latest valid sentence + time since it
  arrived (what a GPS-less-PPS box does); claims no bound.
* ``last-pps``: UTC = second of the latest paired pulse + ticks since it, taking
  1 s = 1e9 ticks (PPS without a frequency model); claims no bound.

Every event (a beam edge, exact tick) is stamped immediately (now = the edge) and
again 2 s later; at the end every event is stamped once more knowing everything
(``final``). Errors are against the truth; coverage is |error| ≤ claimed bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clocktruth import (  # noqa: E402
    HOT_BOX,
    NS,
    WANDER,
    Profile,
    Stamped,
    Truth,
    generate,
    replay,
    restamp_all,
)

from checkpoint.core.clock import UNKNOWN_UNCERTAINTY_NS, ClockModel, ClockState  # noqa: E402
from checkpoint.core.pairing import Pairer  # noqa: E402

PROFILES = [
    Profile(name="nominal", seconds=1800, offset_ppm=12.0, seed=11),
    Profile(
        name="+50ppm drift 2%out after",
        seconds=1800,
        offset_ppm=50.0,
        outlier_rate=0.02,
        seed=12,
        **WANDER,
    ),
    Profile(
        name="-50ppm drift 2%out before",
        seconds=1800,
        offset_ppm=-50.0,
        outlier_rate=0.02,
        convention="before",
        seed=13,
        **{**WANDER, "drift_ppm_per_min": -0.01},
    ),
    Profile(
        name="10-min PPS outage",
        seconds=2700,
        offset_ppm=20.0,
        outlier_rate=0.02,
        pps_outages=((1200, 600),),
        seed=14,
        **WANDER,
    ),
    Profile(
        name="cold start",
        seconds=420,
        offset_ppm=-31.0,
        outlier_rate=0.02,
        nmea_start_s=12,
        pps_start_s=40,
        seed=15,
        **WANDER,
    ),
    Profile(
        name="hot box (1 °C cycles)",
        seconds=2400,
        seed=16,
        **HOT_BOX,
    ),
    Profile(
        name="hot box + 10-min outage",
        seconds=2700,
        pps_outages=((1500, 600),),
        seed=3,
        **HOT_BOX,
    ),
    Profile(
        name="wrong second at start",
        seconds=900,
        offset_ppm=27.0,
        outlier_rate=0.02,
        label_jumps=((0, 1), (6, -1)),
        seed=18,
        **WANDER,
    ),
    Profile(
        name="glitchy PPS line",
        seconds=1800,
        offset_ppm=-8.0,
        outlier_rate=0.05,
        missing_rate=0.01,
        double_rate=0.01,
        seed=17,
        **WANDER,
    ),
]


@dataclass(frozen=True)
class _NaiveStamp:
    utc_ns: int
    uncertainty_ns: int | None
    clock: str


class _LatestPoint:
    """UTC = the latest (mono_ns, utc_s) point's second + ticks since it (1 s = 1e9
    ticks): the naive models differ only in which points they keep."""

    label = "none"

    def __init__(self) -> None:
        self.points: list[tuple[int, int]] = []

    def add_sample(self, s: object) -> None:
        pass

    def add_fix(self, fix: object) -> None:
        pass

    def add_sysclock(self, mono: int, rt: int) -> None:
        pass

    def stamp(self, m: int, now: int) -> _NaiveStamp:
        for mono, utc_s in reversed(self.points):
            if mono <= m and mono <= now:
                return _NaiveStamp(utc_s * NS + (m - mono), None, self.label)
        return _NaiveStamp(0, None, "none")


class NmeaArrival(_LatestPoint):
    """UTC = latest valid sentence's second + time since its arrival (nominal rate)."""

    label = "nmea"

    def add_fix(self, fix: object) -> None:
        pts = self.points
        if fix.valid and fix.frac_ns == 0 and (not pts or fix.mono_ns > pts[-1][0]):
            # The first sentence of a burst is the one a naive reader would use.
            if not pts or fix.utc_s != pts[-1][1]:
                pts.append((fix.mono_ns, fix.utc_s))


class LastPps(_LatestPoint):
    """UTC = latest paired pulse's second + ticks since it (1 s = 1e9 ticks)."""

    label = "pps"

    def add_sample(self, s: object) -> None:
        self.points.append((s.mono_ns, s.utc_s))


class _Tee:
    """One pairer feeding several models, so every method sees the very same samples."""

    def __init__(self, models: list) -> None:
        self.models = models

    def add_sample(self, s: object) -> None:
        for m in self.models:
            m.add_sample(s)

    def add_fix(self, fix: object) -> None:
        for m in self.models:
            m.add_fix(fix)

    def add_sysclock(self, mono: int, rt: int) -> None:
        for m in self.models:
            m.add_sysclock(mono, rt)

    def stamp(self, m: int, now: int) -> object:
        return self.models[0].stamp(m, now)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _stats(recs: list[Stamped]) -> dict:
    errs = [abs(r.err) / 1e3 for r in recs]  # µs
    claimed = [r for r in recs if r.unc is not None]
    return {
        "n": len(recs),
        "err_p50_us": _pct(errs, 0.5),
        "err_p99_us": _pct(errs, 0.99),
        "err_max_us": max(errs) if errs else float("nan"),
        "err_rms_us": (sum(e * e for e in errs) / len(errs)) ** 0.5 if errs else float("nan"),
        "coverage": (sum(abs(r.err) <= r.unc for r in claimed) / len(claimed)) if claimed else None,
        "unc_p50_us": statistics.median(r.unc / 1e3 for r in claimed) if claimed else None,
        "unc_max_us": max(r.unc / 1e3 for r in claimed) if claimed else None,
    }


def _stamp_with(model, truth, m: int, now: int, late: bool) -> Stamped:
    s = model.stamp(m, now)
    return Stamped(m, now, truth.utc_of(m), s.utc_ns, s.uncertainty_ns, str(s.clock), late)


def _by_state(recs: list[Stamped], final: list[Stamped]) -> dict[str, dict]:
    """checkpoint's figures per stamp (immediate, 2 s later, final) and clock state."""
    by_state: dict[str, dict] = {}
    for kind, rs in (
        ("immediate", [r for r in recs if not r.late]),
        ("+2 s", [r for r in recs if r.late]),
        ("final", final),
    ):
        for state in ("locked", "holdover", "nmea", "unsynced"):
            sub = [r for r in rs if r.clock == state]
            if sub:
                by_state[f"{kind}/{state}"] = _stats(sub)
    return by_state


def _outage_end(p: Profile, truth: Truth, recs: list[Stamped]) -> dict | None:
    """The last immediate stamp inside the first PPS outage, and the outage's worst."""
    a, d = p.pps_outages[0]
    lo, hi = truth.mono_at[a], truth.mono_at[a + d]
    inside = [r for r in recs if not r.late and lo <= r.mono < hi]
    if not inside:
        return None
    last = inside[-1]
    return {
        "after_s": round((last.mono - lo) / 1e9, 1),
        "clock": last.clock,
        "err_us": round(abs(last.err) / 1e3, 2),
        "unc_us": round(last.unc / 1e3, 2),
        "max_err_us": round(max(abs(r.err) for r in inside) / 1e3, 2),
        "coverage": sum(r.covered for r in inside) / len(inside),
    }


def run_profile(p: Profile) -> dict:
    truth = generate(p)
    t_start = truth.mono_at[0]
    est = ClockModel()
    nmea, pps = NmeaArrival(), LastPps()
    pairer = Pairer(p.convention)
    first: dict[str, float | None] = {"checkpoint": None, "nmea-arrival": None, "last-pps": None}
    step = [0]

    def probe(mono: int) -> None:
        step[0] += 1
        if first["checkpoint"] is None and step[0] % 5 == 0:
            if est.state(mono) is ClockState.LOCKED:
                first["checkpoint"] = (mono - t_start) / 1e9
        if first["nmea-arrival"] is None and nmea.points:
            first["nmea-arrival"] = max(0.0, (nmea.points[0][0] - t_start) / 1e9)
        if first["last-pps"] is None and pps.points:
            first["last-pps"] = max(0.0, (pps.points[0][0] - t_start) / 1e9)

    tee = _Tee([est, nmea, pps])
    t0 = time.perf_counter()
    recs = replay(truth, pairer, tee, probe=probe)
    elapsed = time.perf_counter() - t0
    end = truth.mono_at[p.seconds]
    lock_mono = (
        t_start + round(first["checkpoint"] * 1e9) if first["checkpoint"] is not None else end
    )

    # The naive methods on the same events: immediate and 2 s later, like the estimator.
    naive: dict[str, list[Stamped]] = {"nmea-arrival": [], "last-pps": []}
    for r in recs:
        naive["nmea-arrival"].append(_stamp_with(nmea, truth, r.mono, r.now, r.late))
        naive["last-pps"].append(_stamp_with(pps, truth, r.mono, r.now, r.late))
    for key, model in (("nmea-arrival", nmea), ("last-pps", pps)):
        naive[key] = [
            replace(r, unc=None) for r in naive[key] if model.stamp(r.mono, r.now).clock != "none"
        ]

    final = restamp_all(truth, est, end)
    out = {"profile": p.name, "seconds": p.seconds, "replay_s": round(elapsed, 2), "methods": {}}
    for name, rs in (("checkpoint", recs), *naive.items()):
        steady = [r for r in rs if not r.late and r.mono >= lock_mono]
        row = _stats(steady)
        row["coverage_all"] = _stats(rs)["coverage"]
        row["unc_p50_all_us"] = _stats(rs)["unc_p50_us"]
        row["lock_s"] = first[name]
        out["methods"][name] = row
    # Time to lock counted from the first pulse the receiver can label (PPS and a fix).
    since = max(p.pps_start_s, p.nmea_start_s)
    lock_s = first["checkpoint"]
    out["lock_after_first_pps_s"] = None if lock_s is None else round(lock_s - since, 1)
    out["checkpoint_by_state"] = _by_state(recs, final)
    if p.pps_outages:
        outage = _outage_end(p, truth, recs)
        if outage is not None:
            out["outage_end"] = outage
    out["status_end"] = est.status(end)
    return out


def _f(x: float | None, digits: int = 2) -> str:
    if x is None or x != x:
        return "—"
    if x >= UNKNOWN_UNCERTAINTY_NS / 1e3:
        return "unknown"
    if x >= 1e6:
        return f"{x / 1e6:.2f} s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} ms"
    return f"{x:.{digits}f}"


def _cov(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def render(results: list[dict]) -> str:
    lines = [
        "### Side by side (immediate stamps after checkpoint first locked; errors in µs)",
        "",
        "| profile | method | n | err p50 | err p99 | err max | coverage (all stamps) "
        "| median bound (all) | time to lock |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for name, row in res["methods"].items():
            lock = "—" if row["lock_s"] is None else f"{row['lock_s']:.0f} s"
            lines.append(
                f"| {res['profile']} | {name} | {row['n']} | {_f(row['err_p50_us'])} "
                f"| {_f(row['err_p99_us'])} | {_f(row['err_max_us'])} "
                f"| {_cov(row['coverage_all'])} | {_f(row['unc_p50_all_us'])} | {lock} |"
            )
    lines += [
        "",
        "### checkpoint by clock state (all stamps: immediate, 2 s later, final; µs)",
        "",
        "| profile | stamp/state | n | err rms | err p99 | err max | coverage "
        "| median bound | max bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for key, row in res["checkpoint_by_state"].items():
            lines.append(
                f"| {res['profile']} | {key} | {row['n']} | {_f(row['err_rms_us'])} "
                f"| {_f(row['err_p99_us'])} | {_f(row['err_max_us'])} | {_cov(row['coverage'])} "
                f"| {_f(row['unc_p50_us'])} | {_f(row['unc_max_us'])} |"
            )
    outages = [r for r in results if "outage_end" in r]
    if outages:
        lines += [
            "",
            "### Holdover (immediate stamps inside the PPS outage)",
            "",
            "| profile | last stamp at | clock | error | bound | max error in outage | coverage |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for res in outages:
            o = res["outage_end"]
            lines.append(
                f"| {res['profile']} | {o['after_s']} s | {o['clock']} | {o['err_us']} µs "
                f"| {o['unc_us']} µs | {o['max_err_us']} µs | {_cov(o['coverage'])} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="shorter profiles (about a third)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    profiles = PROFILES
    if args.quick:
        profiles = [_quick(p) for p in PROFILES]
    results = []
    for p in profiles:
        t0 = time.perf_counter()
        results.append(run_profile(p))
        print(f"# {p.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(render(results))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"profiles": [asdict(p) for p in profiles], "results": results}, indent=1)
        )
    return 0


def _quick(p: Profile) -> Profile:
    if p.pps_outages:
        return replace(p, seconds=1500, pps_outages=((700, 600),))
    return replace(p, seconds=min(p.seconds, 600))


if __name__ == "__main__":
    raise SystemExit(main())
