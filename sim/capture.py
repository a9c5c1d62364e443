"""Offline mode: a whole rally written as capture files, no processes, no broker.

`write(scenario, out_dir)` writes, per box, `BOX.jsonl` (checkpoint capture format
v1: a `sysclock` record at power-on and every 60 s, PPS rising edges, NMEA lines
stamped with the tick their last byte arrived, beam edges) and `BOX.toml` (the box
config to replay it with), plus `truth.json`: every truth passage (true UTC, box
tick) and each box's clock parameters. `judge(out_dir)` replays every capture
through the box's own pipeline (`checkpoint.box.replay.replay_events`) and judges it.

Box clocks start at an arbitrary uptime (10-30 s); everything is a pure function
of the scenario and its seed, so the same seed writes the same files.
"""

from __future__ import annotations

import heapq
import json
import random
from pathlib import Path
from typing import Any

from checkpoint import capture as capfmt
from checkpoint import config as configmod
from checkpoint.box.replay import replay_events
from checkpoint.hq import office, posting
from sim import boxconfig, rallyoffice, verdict
from sim.boxclock import BoxClock
from sim.gps import GpsReceiver
from sim.scenario import Scenario, ScenarioError
from sim.world import Rally

NS = 1_000_000_000
TRUTH_FORMAT = "checkpoint-sim-truth"
_SYSCLOCK_EVERY_NS = 60 * NS


def clocks_and_receivers(
    sc: Scenario,
) -> tuple[dict[str, BoxClock], dict[str, GpsReceiver]]:
    """Each box's clock and receiver for an offline rally, drawn from the seed."""
    clocks, receivers = {}, {}
    for b in sc.boxes:
        rng = random.Random(f"{sc.seed}/{b.id}/boot")
        power_on = sc.epoch_utc_ns + rng.randrange(0, 5 * NS)
        clock = BoxClock(
            mono0=10 * NS + rng.randrange(0, 20 * NS),
            utc0=power_on,
            ppm=b.clock_ppm,
            drift_ppm_per_h=b.clock_drift_ppm_per_h,
        )
        cp = sc.control(b.control)
        receivers[b.id] = GpsReceiver(
            b.receiver,
            clock,
            seed=f"{sc.seed}/{b.id}",
            power_on_utc_ns=power_on,
            lat=cp.lat,
            lon=cp.lon,
        )
        clocks[b.id] = clock
    return clocks, receivers


def records(
    sc: Scenario, rally: Rally, box_id: str, rx: GpsReceiver, end_utc_ns: int
) -> list[dict[str, Any]]:
    """One box's capture records in arrival order."""
    br = rally.boxes[box_id]
    clock = br.clock
    end_s = end_utc_ns // NS
    error = round(sc.sysclock_error_s * NS)
    streams: list[list[tuple[int, int, dict[str, Any]]]] = []
    first = clock.tick(rx.power_on_utc_ns)
    last = clock.tick(end_utc_ns)
    streams.append(
        [
            (m, 0, {"type": "sysclock", "mono_ns": m, "realtime_ns": clock.utc(m) + error})
            for m in range(first, last, _SYSCLOCK_EVERY_NS)
        ]
    )
    streams.append([(p.rise, 1, {"type": "pps", "mono_ns": p.rise}) for p in rx.pulses(end_s)])
    streams.append(
        [
            (ln.tick, 2, {"type": "nmea", "mono_ns": ln.tick, "line": ln.text.rstrip("\r\n")})
            for ln in rx.lines(end_s)
            if not ln.binary  # UBX frames: no line the box's splitter would keep
        ]
    )
    streams.append(
        [
            (e.tick, 3, {"type": "edge", "mono_ns": e.tick, "input": e.input, "active": e.broken})
            for e in br.edges
        ]
    )
    return [rec for _, _, rec in heapq.merge(*streams, key=lambda x: (x[0], x[1]))]


def write(sc: Scenario, out: str | Path) -> dict[str, Any]:
    """Write the rally's captures, box configs and truth.json into `out`; returns the truth."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if sc.incidents:
        kinds = ", ".join(sorted({i.kind for i in sc.incidents}))
        print(f"note: offline capture ignores the network/process incidents ({kinds})")
    clocks, receivers = clocks_and_receivers(sc)
    start = sc.epoch_utc_ns + round(sc.lead_s * NS)
    for rx in receivers.values():
        rx.rally_start_utc_ns = start
    rally = Rally(sc, start, clocks)
    end = rally.end_utc_ns() + 3 * NS
    boxes: dict[str, Any] = {}
    for b in sc.boxes:
        cap = out / f"{b.id}.jsonl"
        cap.unlink(missing_ok=True)
        writer = capfmt.Writer(cap, b.id, b.control)
        try:
            for rec in records(sc, rally, b.id, receivers[b.id], end):
                writer.write(rec)
        finally:
            writer.close()
        cfg = out / f"{b.id}.toml"
        cfg.write_text(
            boxconfig.render(sc, b, gps_port="/dev/null", broker="mqtt://127.0.0.1:1883")
        )
        boxes[b.id] = {
            "checkpoint": b.control,
            "receiver": b.receiver.name,
            "clock": clocks[b.id].as_dict(),
            "capture": cap.name,
            "config": cfg.name,
        }
    truth = {
        "format": TRUTH_FORMAT,
        "version": 1,
        "scenario": sc.name,
        "seed": sc.seed,
        "rally_start_utc_ns": start,
        "boxes": boxes,
        "passages": [t.as_dict() for t in rally.truth],
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    for stale in ("event.toml", "entries.csv"):
        (out / stale).unlink(missing_ok=True)
    if sc.regularity is not None:
        rallyoffice.write(sc, out, start)
    return truth


def load_truth(out: str | Path) -> dict[str, Any]:
    """Read truth.json from a capture directory."""
    path = Path(out) / "truth.json"
    try:
        truth = json.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no truth.json here (write one with `sim capture`)") from None
    except ValueError as e:
        raise ScenarioError(f"{path}: not JSON: {e}") from None
    if truth.get("format") != TRUTH_FORMAT or truth.get("version") != 1:
        raise ScenarioError(f"{path}: not a {TRUTH_FORMAT} v1 file")
    return truth


def replay_rows(out: str | Path, truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Every box's capture replayed through the box pipeline, as passage rows."""
    out = Path(out)
    rows: list[dict[str, Any]] = []
    for box_id, info in truth["boxes"].items():
        cfg = configmod.load(out / info["config"])
        events = replay_events(str(out / info["capture"]), cfg, store=f"replay-{box_id}")
        rows += verdict.fold_events(events)
    return rows


def judge(out: str | Path) -> verdict.Verdict:
    """Replay a capture directory and judge it against its truth.json."""
    truth = load_truth(out)
    rows = replay_rows(out, truth)
    office_files = rallyoffice.read(Path(out))
    if office_files is None:
        return verdict.judge(truth["passages"], rows)
    # A regularity rally: HQ's rally office identifies the cars, as `hq export` does.
    event, entries = office_files
    off = office.build(rows, event, entries)
    v = verdict.judge(truth["passages"], off.rows)
    top = posting.render_table(off.classification, "replay", top=10)
    rallyoffice.judge(v, off.rows, truth["passages"], event, entries, top)
    return v
