"""Replay speed and the pipeline's CPU per PPS pulse and per passage.

A capture is written the way the simulator writes one (`sim.capture.records`): box01 of
the California Mille (a u-blox M8 at factory settings: RMC, VTG, GGA, GSA, GSV, GLL,
ZDA, about 8 sentences a second, plus PPS), its cars in the first minutes and then
idle running, for `HOURS` of capture (`--smoke`: 5 minutes). It is replayed through
`checkpoint.box.replay.replay_events`, the same `timing.Pipeline` the daemon runs, timed with
the process's CPU clock: capture seconds per CPU second is the replay speed.

CPU per PPS pulse: a capture of the same span with no cars (same receiver) over its
pulses, every record of that second included (the pulse, its sentences, the clock
model's work): a box's cost all day. Beside it, the first `PASSAGE_S` after power-up
(lock, then a young window refitted more often). CPU per passage: a capture with a car
every 2 s over `PASSAGE_S` (300 cars), less that very capture with its beam edges left
out, per passage.

This virtual machine's speed swings by half from one minute to the next, while the
instructions a replay takes do not (valgrind). So the four captures are replayed in
`RUNS` passes `GAP_S` apart, each capture once a pass; each figure is the least CPU
over the passes (the replay's own cost; the rest is the machine's neighbours), and the
per-passage figure the median over passes of busy − quiet, two replays of the same
moment. The report keeps every pass's CPU for the long capture. All are this machine's;
a Pi Zero 2 W core is roughly a tenth of one, so multiply by ~10 for it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from checkpoint import capture as capfmt
from checkpoint.box.replay import replay_events
from checkpoint.config import InputConfig
from sim import scenario
from sim.capture import NS, clocks_and_receivers, records
from sim.world import Rally

HOURS = 1.0
SMOKE_S = 300
PASSAGE_S = 600  # the per-passage capture: this long, a car every 2 s
RUNS = 9  # passes over the four captures; the least CPU of each counts
GAP_S = 5.0  # between passes: they sample some 45 s of this machine, not 5
MILLE = Path(__file__).resolve().parent.parent / "sim" / "scenarios" / "california_mille.toml"


def write_capture(path: Path, seconds: int, *, cars: bool, car_every_s: float | None = None) -> int:
    """One box's capture of `seconds`; the number of records. With `car_every_s`, the
    field grows to fill the span with a car that often (the Mille has 70)."""
    sc = scenario.load(MILLE)
    if car_every_s is not None:
        sc = scenario.faster(sc, sc.cars.start_interval_s / car_every_s)
        count = max(sc.cars.count, int(seconds / car_every_s))
        sc = dataclasses.replace(sc, cars=dataclasses.replace(sc.cars, count=count))
    if not cars:
        sc = scenario.first_cars(sc, 1)
    clocks, rx = clocks_and_receivers(sc)
    start = sc.epoch_utc_ns + round(sc.lead_s * NS)
    for r in rx.values():
        r.rally_start_utc_ns = start
    rally = Rally(sc, start, clocks)
    box = sc.boxes[0]
    if not cars:
        rally.boxes[box.id].edges.clear()
    path.unlink(missing_ok=True)
    # The header carries the inputs, as a daemon's capture does (replay needs no config).
    names = sorted({e.input for e in rally.boxes[box.id].edges} | {"beam"})
    inputs = [
        dataclasses.asdict(
            InputConfig(name=n, pin=f"capture:{n}", source="manual" if "button" in n else "beam")
        )
        for n in names
    ]
    writer = capfmt.Writer(
        path, box.id, box.control, convention=box.receiver.convention, inputs=inputs
    )
    n = 0
    try:
        for rec in records(sc, rally, box.id, rx[box.id], start + seconds * NS):
            writer.write(rec)
            n += 1
    finally:
        writer.close()
    return n


def _replay_once(path: Path) -> tuple[float, dict[str, int]]:
    """CPU seconds to replay `path` once, and its events by type."""
    kinds: dict[str, int] = {}
    t0 = time.process_time()
    for ev in replay_events(str(path)):
        kinds[ev["type"]] = kinds.get(ev["type"], 0) + 1
    return time.process_time() - t0, kinds


def _passes(paths: dict[str, Path], runs: int, gap_s: float) -> dict[str, list[float]]:
    """CPU of each capture over `runs` passes, every capture replayed once a pass and the
    passes `gap_s` apart: a slow spell of this machine then costs every capture the same
    pass, and the passes sample more than one minute of it."""
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(runs):
        if i:
            time.sleep(gap_s)
        for name, path in paths.items():
            cpu[name].append(_replay_once(path)[0])
    return cpu


def _without_edges(src: Path, dst: Path) -> None:
    """Copy a capture, leaving out its edge records (the header and every other record kept)."""
    with src.open(encoding="utf-8") as f, dst.open("w", encoding="utf-8") as out:
        for line in f:
            if '"type":"edge"' not in line:
                out.write(line)


def _pulses(path: Path) -> int:
    _, recs = capfmt.read(path)
    return sum(1 for r in recs if r["type"] == "pps")


def run(work: Path, smoke: bool = False) -> dict[str, Any]:
    """Replay speed over a long capture; CPU per pulse and per passage."""
    work.mkdir(parents=True, exist_ok=True)
    seconds = SMOKE_S if smoke else round(HOURS * 3600)
    out: dict[str, Any] = {}

    runs = 1 if smoke else RUNS
    long = work / "long.jsonl"
    n = write_capture(long, seconds, cars=True)
    # Per pulse over the whole span with no cars: what a box pays all day. The first
    # minutes after power-up cost more (lock, then a growing window refitted more
    # often); that figure comes from the per-passage capture without its edges below.
    idle = work / "idle.jsonl"
    write_capture(idle, seconds, cars=False)
    pulses = _pulses(idle)
    span = min(seconds, PASSAGE_S)
    busy = work / "busy.jsonl"
    write_capture(busy, span, cars=True, car_every_s=2.0)
    # The same capture without its beam edges: the difference is the passages' own cost.
    quiet = work / "busy_without_edges.jsonl"
    _without_edges(busy, quiet)
    first_pulses = _pulses(quiet)
    _, kinds = _replay_once(long)
    _, busy_kinds = _replay_once(busy)
    passages = busy_kinds.get("passage", 0)

    paths = {"long": long, "idle": idle, "busy": busy, "quiet": quiet}
    cpu = _passes(paths, runs, 0 if smoke else GAP_S)
    best = {name: min(v) for name, v in cpu.items()}
    # A pass's two replays come from the same moment; the least of each could come from
    # different minutes (once, with 72 passages, that gave -12 us a passage).
    passage_cpu = statistics.median(b - q for b, q in zip(cpu["busy"], cpu["quiet"], strict=True))
    out["replay"] = {
        "capture_s": seconds,
        "records": n,
        "runs": runs,
        "events": kinds,
        "cpu_s": round(best["long"], 3),
        "x_real_time": round(seconds / best["long"]) if best["long"] > 0 else None,
        "day_s": round(best["long"] * 86_400 / seconds, 1),
        "us_per_record": round(best["long"] / n * 1e6, 1),
        # Every pass, to show how much this machine's speed moved meanwhile.
        "cpu_s_per_pass": [round(x, 3) for x in cpu["long"]],
    }
    idle_cpu, quiet_cpu = best["idle"], best["quiet"]
    out["cpu"] = {
        "idle_s": seconds,
        "pulses": pulses,
        "us_per_pulse": round(idle_cpu / pulses * 1e6, 1) if pulses else None,
        "span_s": span,
        "us_per_pulse_first": (round(quiet_cpu / first_pulses * 1e6, 1) if first_pulses else None),
        "passages": passages,
        "us_per_passage": round(passage_cpu / passages * 1e6, 1) if passages else None,
    }
    return out
