"""Throughput: the highest sustained passage rate, and how fast a backlog drains.

**Sustained rate.** One real box daemon (four beams, lockout 0, min_break 1 ms),
HQ and Mosquitto; the bench steps the passage rate up, each step for a fixed time.
The backlog at any moment is (passages injected so far) - (HQ's ack: every seq
HQ has committed), sampled every 0.2 s from the acks at a bare subscriber. A step
is sustained when the backlog never exceeded half a second's passages (or 50), did
not grow over the step's second half (growth below 5 % of what was injected
meanwhile, or below 20 passages), drained within a minute after the step, and the
feed kept its schedule. Between steps the bench waits for the backlog to drain.

**Drain.** A broker outage leaves N events in the box's store that HQ has not
acknowledged. The bench writes them there directly (`Store.record`, payloads shaped
like real passages, contiguous seqs, two raw edges each), then starts the daemon
with the broker and a fresh HQ up. Drain rate = N / (first HQ ack covering seq N -
the box's first `ready` status, i.e. from the moment it is connected). Each size
runs on stock Mosquitto and on the "tuned" profile (bench.common.BROKER_PROFILES):
stock Mosquitto queues at most 1000 QoS 1 messages per client and drops the rest
("Outgoing messages are being dropped" in its log, reported), which HQ's gap repair
and the box's redelivery then make good, slowly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BROKER_PROFILES,
    NS,
    BenchError,
    CpuWindow,
    HQProc,
    Watcher,
    memory_mb,
    slope,
    wait_until,
)
from bench.rig import BEAM_PINS_8, BenchBox, Schedule, play, prefill, schedule
from checkpoint.contracts import ACK, STATUS, all_boxes
from sim.broker import Mosquitto

FULL_STEPS = [100, 200, 400, 800, 1600, 3200]
FULL_STEP_S = 8.0
SMOKE_STEPS = [50]
SMOKE_STEP_S = 2.0
#: (backlog, broker profile)
FULL_DRAIN = [(10_000, "defaults"), (100_000, "defaults"), (10_000, "tuned"), (100_000, "tuned")]
SMOKE_DRAIN = [(1_000, "defaults")]


def _feed_and_sample(
    box: BenchBox, watcher: Watcher, sched: Schedule, base: int, pids: dict[str, int]
) -> tuple[list[tuple[float, int]], dict[str, Any], dict[str, Any]]:
    """Play `sched` to the box, sampling its backlog (passages due but not yet acked by
    HQ beyond `base`) every 0.2 s: the samples (s since the first passage, backlog), how
    late the feed was, and the CPU the processes took."""
    leads = sched.leads
    result: dict[str, Any] = {}

    def feed() -> None:
        result["feed"] = play(box.send, sched.lines)

    cpu = CpuWindow(pids)
    thread = threading.Thread(target=feed, name="bench-feed", daemon=True)
    thread.start()
    cpu.start()
    samples: list[tuple[float, int]] = []
    i = 0
    while thread.is_alive():
        time.sleep(0.2)
        now = time.monotonic_ns()
        while i < len(leads) and leads[i] <= now:
            i += 1
        watcher.update()
        samples.append(((now - leads[0]) / NS, base + i - watcher.upto.get(box.box, 0)))
    thread.join()
    return samples, result["feed"], cpu.stop()


def _drain_s(box: BenchBox, watcher: Watcher, target: int, rate: int) -> float | None:
    """Seconds until HQ has acked up to `target` (None: not within a minute)."""
    end_ns = time.monotonic_ns()
    try:
        wait_until(
            lambda: watcher.acked(box.box) >= target,
            60,
            f"the backlog after {rate}/s to drain",
            step_s=0.1,
        )
    except BenchError:
        return None
    return round((time.monotonic_ns() - end_ns) / NS, 2)


def _step(
    box: BenchBox, watcher: Watcher, rate: int, seconds: float, pids: dict[str, int]
) -> dict[str, Any]:
    base = watcher.upto.get(box.box, 0)
    sched = schedule(time.monotonic_ns() + NS // 2, rate, seconds, pins=box.pins)
    leads = sched.leads
    samples, fed, share = _feed_and_sample(box, watcher, sched, base, pids)
    drained_s = _drain_s(box, watcher, base + len(leads), rate)
    half = [s for s in samples if s[0] >= seconds / 2 and s[0] <= seconds]
    growth = (half[-1][1] - half[0][1]) if len(half) >= 2 else 0
    injected_meanwhile = rate * seconds / 2
    feed_ok = fed["late_p99_ms"] < 50
    backlog_max = max((s[1] for s in samples), default=0)
    sustained = (
        feed_ok
        and backlog_max <= max(50, rate / 2)
        and growth <= max(20, 0.05 * injected_meanwhile)
        and drained_s is not None
    )
    return {
        "rate": rate,
        "seconds": seconds,
        "passages": len(leads),
        "backlog_max": backlog_max,
        "backlog_end": samples[-1][1] if samples else 0,
        "backlog_growth_2nd_half": growth,
        "backlog_slope_per_s": round(slope(half) or 0.0, 1),
        "drained_after_s": drained_s,
        "feed": fed,
        "cpu_percent": share,
        "sustained": sustained,
    }


def steps(work: Path, smoke: bool) -> dict[str, Any]:
    """Step the passage rate up until the backlog grows."""
    rates = SMOKE_STEPS if smoke else FULL_STEPS
    seconds = SMOKE_STEP_S if smoke else FULL_STEP_S
    out: list[dict[str, Any]] = []
    with Mosquitto(workdir=work / "broker") as broker:
        hq = HQProc(work / "hq", broker.url).start()
        watcher = Watcher(
            broker.url, [all_boxes("rally", ACK), all_boxes("rally", STATUS)], "steps"
        ).start()
        box = BenchBox(
            work / "box", broker.url, box="bench02", pins=BEAM_PINS_8, status_interval_s=10
        )
        try:
            box.start()
            wait_until(lambda: watcher.ready_since(box.box, 0), 30, "the box's ready status")
            # The daemon holds new events for 1 s after its first connect (the seq-floor
            # check in checkpoint/box/daemon.py): start stepping once that is over.
            time.sleep(1.5)
            pids = {"box": box.pid, "hq": hq.pid, "mosquitto": broker.pid or 0}
            for rate in rates:
                step = _step(box, watcher, rate, seconds, pids)
                out.append(step)
                if not step["sustained"]:
                    break
            mem = memory_mb(box.pid)
        finally:
            box.close()
            hq.stop()
            watcher.stop()
    best = max((s["rate"] for s in out if s["sustained"]), default=None)
    return {
        "steps": out,
        "max_sustained_per_s": best,
        "limit_reached": not out[-1]["sustained"] if out else None,
        "box_memory_mb": mem,
    }


def drain(work: Path, n: int, profile: str, timeout_s: float) -> dict[str, Any]:
    """Time HQ taking in an `n`-event backlog from a freshly started box."""
    name = f"drain{n}"
    box_dir = work / f"{name}-{profile}"
    with Mosquitto(workdir=box_dir / "broker", extra_conf=BROKER_PROFILES[profile]) as broker:
        watcher = Watcher(
            broker.url, [all_boxes("rally", ACK), all_boxes("rally", STATUS)], name
        ).start()
        box = BenchBox(box_dir / "box", broker.url, box=name, status_interval_s=10)
        t0 = time.monotonic()
        prefill(box.db_path, box=name, n=n)
        prefill_s = time.monotonic() - t0
        size = box.db_path.stat().st_size
        hq = HQProc(box_dir / "hq", broker.url).start()
        try:
            box.start()
            cpu = CpuWindow({"box": box.pid, "hq": hq.pid, "mosquitto": broker.pid or 0})
            cpu.start()
            ready = wait_until(
                lambda: watcher.ready_since(name, 0), 120, "the box's ready status", step_s=0.01
            )
            done: int | None = None
            try:
                wait_until(
                    lambda: watcher.acked(name) >= n,
                    timeout_s,
                    f"HQ to ack all {n} events",
                    step_s=0.05,
                )
                done = min(t for t, u in watcher.acks[name] if u >= n)
            except BenchError:
                pass
            share = cpu.stop()
            acked = watcher.upto.get(name, 0)
            end = done if done is not None else time.monotonic_ns()
            secs = (end - ready) / NS
            mem = memory_mb(box.pid)
        finally:
            box.close()
            hq.stop()
            watcher.stop()
    return {
        "events": n,
        "broker": profile,
        "broker_dropped": _dropped(broker.log_path),
        "acked": acked,
        "complete": done is not None,
        "store_mb": round(size / 1e6, 1),
        "prefill_s": round(prefill_s, 1),
        "startup_to_ready_s": round((ready - box.started_ns) / NS, 2),
        "drain_s": round(secs, 2),
        "events_per_s": round(acked / secs) if secs > 0 else None,
        "cpu_percent": share,
        "box_memory_mb": mem,
    }


def _dropped(log: Path) -> bool:
    """Whether Mosquitto logged dropping outgoing messages (its queue for a client full)."""
    try:
        return "Outgoing messages are being dropped" in log.read_text(errors="replace")
    except OSError:
        return False


def run(work: Path, smoke: bool = False) -> dict[str, Any]:
    """Both parts; returns the JSON section."""
    result = {"step": steps(work / "steps", smoke)}
    sizes = SMOKE_DRAIN if smoke else FULL_DRAIN
    result["drain"] = [drain(work / "drain", n, p, 30 if smoke else 150) for n, p in sizes]
    return result
