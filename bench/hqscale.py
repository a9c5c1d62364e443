"""HQ at scale: many boxes publishing at once, one real HQ collector committing them.

The boxes are emulated (bench/fleet.py: one MQTT connection, store id and seq run per
box, in one process per 100 boxes), not 200 daemons: what is measured is HQ. Each box
publishes valid passage events at 5 a second. Per event:

    lag = arrival of HQ's first ack covering (box, seq) - the publish call

(CLOCK_MONOTONIC, in the emulator process; HQ acks only after its synchronous=FULL
commit). HQ's commit rate is events stored / the span of their `received_at`. HQ
keeps up when every event is acked, it commits at least 98 % of the offered rate, and
the lag does not grow: the median lag of the last third of the run is at most twice
the first third's (or 50 ms more). An HQ that falls behind fails all three by far: its
lag grows by the deficit times the run time. The fitted trend (ms per s) is reported
too; on a shared machine a burst of other work near the end tilts it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BROKER_PROFILES,
    NS,
    REPO,
    BenchError,
    CpuWindow,
    HQProc,
    iso_to_ns,
    memory_mb,
    pct,
    slope,
)
from checkpoint.hq.store import HQStore
from sim.broker import Mosquitto

BOXES_PER_PROC = 100
#: (boxes, passages/s per box, seconds, broker profile). The 200-box step runs longest,
#: so a growing lag has time to show. The last step offers twice that, on the tuned
#: broker; more than that and the emulator (2 processes on this 2-core machine) can no
#: longer publish on schedule, which `publish_late_p99_ms` shows.
FULL = [
    (50, 5.0, 15.0, "defaults"),
    (100, 5.0, 15.0, "defaults"),
    (200, 5.0, 45.0, "defaults"),
    (200, 10.0, 15.0, "tuned"),
]
SMOKE = [(10, 5.0, 2.0, "defaults")]


def _fleet(work: Path, url: str, boxes: int, rate: float, seconds: float) -> dict[str, Any]:
    """Run the emulated boxes against a running HQ; merged results of all processes."""
    procs = []
    for k, first in enumerate(range(0, boxes, BOXES_PER_PROC)):
        n = min(BOXES_PER_PROC, boxes - first)
        out = work / f"fleet{k}.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fleet",
                "--broker",
                url,
                "--boxes",
                str(n),
                "--first",
                str(first),
                "--rate",
                str(rate),
                "--seconds",
                str(seconds),
                "--out",
                str(out),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(work / f"fleet{k}.log").open("ab"),
            text=True,
        )
        procs.append((proc, out))
    try:
        for proc, _ in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise BenchError(f"fleet process did not start: see {work}/fleet*.log")
        for proc, _ in procs:
            assert proc.stdin is not None
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        results = []
        for proc, out in procs:
            proc.wait(timeout=seconds + 120)
            if proc.returncode != 0:
                raise BenchError(f"fleet process failed ({proc.returncode}): see {work}")
            results.append(json.loads(out.read_text()))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lags = sorted((x for r in results for x in r["lags"]), key=lambda x: x[0])
    return {
        "published": sum(r["published"] for r in results),
        "refused": sum(r["refused"] for r in results),
        "unacked": sum(r["unacked"] for r in results),
        "resend_commands": sum(r["resend_commands"] for r in results),
        "publish_late_p99_ms": max(r["late_p99_ms"] for r in results),
        "lags": lags,
    }


def _hq_rate(db: Path) -> tuple[int, float | None]:
    store = HQStore(db, create=False)
    try:
        times = [iso_to_ns(r["received_at"]) for r in store.events()]
    finally:
        store.close()
    ts = sorted(t for t in times if t is not None)
    if len(ts) < 2:
        return len(ts), None
    return len(ts), round((len(ts) - 1) / ((ts[-1] - ts[0]) / NS))


def step(work: Path, boxes: int, rate: float, seconds: float, profile: str) -> dict[str, Any]:
    """One fleet size: fresh broker and HQ database."""
    work.mkdir(parents=True, exist_ok=True)
    with Mosquitto(workdir=work / "broker", extra_conf=BROKER_PROFILES[profile]) as broker:
        hq = HQProc(work / "hq", broker.url).start()
        try:
            cpu = CpuWindow({"hq": hq.pid, "mosquitto": broker.pid or 0})
            cpu.start()
            fleet = _fleet(work, broker.url, boxes, rate, seconds)
            share = cpu.stop()
            mem = memory_mb(hq.pid)
        finally:
            hq.stop()
        stored, commit_rate = _hq_rate(hq.db)
    lags = fleet.pop("lags")
    third = seconds / 3
    first = [lag for t, lag in lags if t < third]
    last = [lag for t, lag in lags if t >= 2 * third]
    trend = slope(lags)
    p50_first, p50_last = pct(first, 50), pct(last, 50)
    keeps_up = (
        fleet["unacked"] == 0
        and commit_rate is not None
        and commit_rate >= 0.98 * boxes * rate
        and p50_first is not None
        and p50_last is not None
        and p50_last <= max(2 * p50_first, p50_first + 50)
    )
    values = [lag for _t, lag in lags]
    return {
        "boxes": boxes,
        "rate_per_box": rate,
        "seconds": seconds,
        "broker": profile,
        "offered_per_s": round(boxes * rate),
        "hq_commit_per_s": commit_rate,
        "stored": stored,
        **fleet,
        "lag_ms": {
            "p50": _r(pct(values, 50)),
            "p99": _r(pct(values, 99)),
            "max": _r(max(values, default=None)),
            "p50_first_third": _r(p50_first),
            "p50_last_third": _r(p50_last),
            "p99_last_third": _r(pct(last, 99)),
            "trend_ms_per_s": _r(trend),
        },
        "keeps_up": keeps_up,
        "cpu_percent": share,
        "hq_memory_mb": mem,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def run(work: Path, smoke: bool = False) -> dict[str, Any]:
    """Every fleet size in turn."""
    out = []
    for boxes, rate, seconds, profile in SMOKE if smoke else FULL:
        out.append(step(work / f"boxes{boxes}x{rate:g}", boxes, rate, seconds, profile))
        time.sleep(0.5)
    return {"steps": out}
