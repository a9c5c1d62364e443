"""Edge to HQ latency at 1, 10 and 100 passages a second, and the naive way beside it.

What is measured, per passage (all CLOCK_MONOTONIC on this one machine):

* the **tick** is the leading edge's kernel tick as injected through the
  `checkpoint-sim` feed (the bench writes the edge when that tick comes; how late
  its writes were is reported as `feed`, and is part of every figure);
* **edge → HQ commit**: tick → arrival, at a bare subscriber of the bench, of HQ's
  first ack covering the passage's seq. HQ publishes an ack only after the SQLite
  commit (synchronous=FULL) that holds the event has returned, so this is an upper
  bound on the commit time, by one loopback hop (HQ → Mosquitto → bench);
* **edge → HQ received** (lower bound): HQ's own `received_at` (wall clock, µs,
  taken when its core thread handles the message, before the commit) minus the
  tick converted to wall clock with this machine's REALTIME-MONOTONIC offset;
* **edge → event at broker**: tick → arrival of the box's event at the bench's
  subscriber (the box's share: detection at min_break = 1 ms, the box's own commit,
  then the publish);
* **naive**: tick → arrival at the same kind of subscriber of the naive box's
  publish (bench/naive.py: the edge callback publishes at once, no store).
* **disk**: how long a bare SQLite commit (WAL, synchronous=FULL, one row every
  50 ms: bench.common.DiskProbe) took on the box's filesystem over the phase. The
  box publishes each event only after such a commit, so while the disk stalls every
  passage waits: on a shared virtual disk one flush now and then takes 100-300 ms
  while other work writes, and one such stall at 100/s holds some 30 passages, enough
  for the phase's p99. This column tells that from a stall of the box.

The real daemon runs as `python -m checkpoint run`, HQ as `checkpoint hq run`,
Mosquitto on loopback. Four beams (lockout 0, min_break 1 ms) share the load. The
box and HQ stay up across phases; for the last phase the broker is restarted on the
same port with the "tuned" profile (bench.common.BROKER_PROFILES) and both reconnect
by themselves. The naive box then runs the same phases on the same broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    BROKER_PROFILES,
    NS,
    REPO,
    BenchError,
    CpuWindow,
    DiskProbe,
    HQProc,
    Watcher,
    ack_times,
    memory_mb,
    summary_ms,
    wait_until,
    wall_offset_ns,
)
from bench.rig import BenchBox, FeedServer, GpsFeeder, Schedule, Truth, play, schedule
from checkpoint.contracts import ACK, EVENT, STATUS, all_boxes
from sim.broker import Mosquitto

BOX = "bench01"

#: (label, passages per second, seconds, broker profile) in the order run.
FULL = [
    ("1", 1, 20, "defaults"),
    ("10", 10, 15, "defaults"),
    ("100", 100, 15, "defaults"),
    ("100 tuned", 100, 15, "tuned"),
]
SMOKE = [(label, rate, 1, broker) for label, rate, _s, broker in FULL]


def wait_locked(watcher: Watcher, box: str, timeout_s: float) -> float:
    """Wait for the box's status to say `locked`; returns seconds waited."""
    t0 = time.monotonic()

    def locked() -> bool:
        watcher.update()
        st = watcher.status.get(box)
        return bool(st and st[1].get("clock") == "locked")

    wait_until(locked, timeout_s, f"{box} clock to lock", step_s=0.1)
    return round(time.monotonic() - t0, 1)


def _play(
    send: Callable[[bytes], None], rate: int, seconds: float, pids: dict[str, int]
) -> tuple[Schedule, dict[str, Any], dict[str, Any]]:
    """`rate` passages a second for `seconds` through `send`, starting in half a second:
    the schedule, how late the feed was, and the CPU the processes `pids` took."""
    sched = schedule(time.monotonic_ns() + NS // 2, rate, seconds)
    cpu = CpuWindow(pids)
    cpu.start()
    fed = play(send, sched.lines)
    return sched, fed, cpu.stop()


def checkpoint_phase(
    box: BenchBox, watcher: Watcher, rate: int, seconds: float, pids: dict[str, int]
) -> dict[str, Any]:
    """Inject `rate` passages/s for `seconds`; wait for HQ's acks; per-passage timings."""
    sched, feed, cpu_share = _play(box.send, rate, seconds, pids)
    leads = set(sched.leads)

    def all_acked() -> bool:
        watcher.update()
        seqs = [s for s, (m, _t) in watcher.events.get(box.box, {}).items() if m in leads]
        return len(seqs) == len(leads) and watcher.upto.get(box.box, 0) >= max(seqs)

    try:
        wait_until(all_acked, 20, f"HQ acks of {len(leads)} passages", step_s=0.05)
    except BenchError:
        pass  # reported below as lost
    # From the first tick to the last ack: the span the disk probe is read over.
    span = (sched.lines[0][0], time.monotonic_ns())
    return {"sched": sched, "feed": feed, "cpu": cpu_share, "span": span}


def analyse_checkpoint(
    phase: dict[str, Any],
    watcher: Watcher,
    received: dict[tuple[str, int], int],
    offset: int,
    disk: DiskProbe,
) -> dict[str, Any]:
    """Turn one phase's arrivals into the figures (see the module docstring)."""
    events = watcher.events.get(BOX, {})
    by_mono = {m: (seq, t) for seq, (m, t) in events.items() if m is not None}
    first_ack = ack_times(watcher.acks.get(BOX, []))
    commit, at_broker, at_hq = [], [], []
    missing = 0
    for tick in phase["sched"].leads:
        got = by_mono.get(tick)
        if got is None:
            missing += 1
            continue
        seq, t_event = got
        at_broker.append(t_event - tick)
        t_ack = first_ack(seq)
        if t_ack is None:
            missing += 1
        else:
            commit.append(t_ack - tick)
        rec = received.get((BOX, seq))
        if rec is not None:
            at_hq.append(rec - (tick + offset))
    return {
        "passages": len(phase["sched"].leads),
        "missing": missing,
        "edge_to_hq_commit": summary_ms(commit),
        "edge_to_hq_received": summary_ms(at_hq),
        "edge_to_event_at_broker": summary_ms(at_broker),
        "disk_commit": disk.window(*phase["span"]),
        "feed": phase["feed"],
        "cpu_percent": phase["cpu"],
    }


def broker_conf(broker: Mosquitto, profile: str, watchers: list[Watcher]) -> bool:
    """Restart the broker (same port) with a BROKER_PROFILES config; True if it restarted."""
    conf = BROKER_PROFILES[profile]
    if broker.extra_conf == conf:
        return False
    for w in watchers:
        w.expect_resubscribe()
    broker.extra_conf = conf
    broker.restart()
    for w in watchers:
        w.wait_subscribed(30)
    return True


def _naive_phase(
    feed: FeedServer, watcher: Watcher, pid: int, rate: int, seconds: float, log: Path
) -> dict[str, Any]:
    """One phase of the naive box: its publishes' arrival after each passage's tick."""
    sched, fed, share = _play(feed.send, rate, seconds, {"naive": pid})
    leads = set(sched.leads)

    def arrived() -> bool:
        watcher.update()
        got = {m for m, _t in watcher.events.get("naive01", {}).values()}
        return leads <= got

    with contextlib.suppress(BenchError):  # the missing ones are counted below
        wait_until(arrived, 10, "naive publishes")
    by_mono = {m: t for m, t in watcher.events.get("naive01", {}).values()}
    lat = [by_mono[t] - t for t in sched.leads if t in by_mono]
    if not lat:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise BenchError("the naive box published nothing: " + " / ".join(tail))
    return {
        "passages": len(sched.leads),
        "missing": len(sched.leads) - len(lat),
        "edge_to_subscriber": summary_ms(lat),
        "feed": fed,
        "cpu_percent": share,
    }


def naive_run(
    work: Path, broker: Mosquitto, phases: list[tuple[str, int, float, str]]
) -> dict[str, dict[str, Any]]:
    """The naive box through the same phases, measured to a bare subscriber."""
    feed = FeedServer(work / "naive.sock")
    watcher = Watcher(
        broker.url, [all_boxes("naive", EVENT), all_boxes("naive", STATUS)], "naive"
    ).start()
    log = (work / "naive.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.naive", "--broker", broker.url],
        env=dict(os.environ, CHECKPOINT_SIM_FEED=feed.path),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out: dict[str, dict[str, Any]] = {}
    try:
        feed.accept()
        wait_until(lambda: watcher.ready_since("naive01", 0), 15, "the naive box")
        for label, rate, seconds, profile in phases:
            t_restart = time.monotonic_ns()
            if broker_conf(broker, profile, [watcher]):
                wait_until(
                    lambda t=t_restart: watcher.ready_since("naive01", t),
                    30,
                    "the naive box to reconnect",
                )
                time.sleep(1)
            out[label] = _naive_phase(feed, watcher, proc.pid, rate, seconds, work / "naive.log")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        watcher.stop()
        feed.close()
    return out


def _broker_profile(broker: Mosquitto, profile: str, watcher: Watcher) -> None:
    """The broker on `profile`; after a restart, until the box and HQ are back."""
    t_restart = time.monotonic_ns()
    if not broker_conf(broker, profile, [watcher]):
        return
    # The box and HQ reconnect by themselves: wait for both to be back.
    wait_until(lambda: watcher.ready_since(BOX, t_restart), 30, "box back")
    wait_until(lambda: watcher.ack_since(BOX, t_restart), 30, "HQ back (its re-published ack)")
    time.sleep(1)


def _side_by_side(
    plan: list[tuple[str, int, float, str]],
    checkpoint: dict[str, dict[str, Any]],
    naive: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per phase: both boxes' figures and checkpoint's latency over the naive one's."""
    by_label = {}
    for label, rate, seconds, profile in plan:
        cp, nv = checkpoint[label], naive[label]
        c, n = cp["edge_to_hq_commit"], nv["edge_to_subscriber"]
        by_label[label] = {
            "rate": rate,
            "seconds": seconds,
            "broker": profile,
            "checkpoint": cp,
            "naive": nv,
            "ratio_p50": _ratio(c["p50_ms"], n["p50_ms"]),
            "ratio_p99": _ratio(c["p99_ms"], n["p99_ms"]),
        }
    return by_label


def run(work: Path, smoke: bool = False) -> dict[str, Any]:
    """The whole latency benchmark; returns its JSON section."""
    plan = SMOKE if smoke else FULL
    offset = wall_offset_ns()
    phases: dict[str, dict[str, Any]] = {}
    with Mosquitto(workdir=work / "broker", extra_conf=BROKER_PROFILES[plan[0][3]]) as broker:
        hq = HQProc(work / "hq", broker.url).start()
        watcher = Watcher(broker.url, [all_boxes("rally", k) for k in (EVENT, ACK, STATUS)]).start()
        box = BenchBox(work / "box", broker.url, box=BOX)
        # Beside the box's store, on the same filesystem (module docstring).
        disk = DiskProbe(work / "box" / "disk-probe.db")
        gps: GpsFeeder | None = None
        try:
            box.start()
            gps = GpsFeeder(box, Truth())
            gps.start()
            wait_until(lambda: watcher.ready_since(BOX, 0), 30, "the box's ready status")
            lock_s = None if smoke else wait_locked(watcher, BOX, 120)
            # The daemon holds new events for 1 s after its first connect (the seq-floor
            # check, checkpoint/box/daemon.py); the smoke run does not wait for lock, so wait
            # that out here.
            time.sleep(1.5 if smoke else 0)
            disk.start()
            for label, rate, seconds, profile in plan:
                _broker_profile(broker, profile, watcher)
                pids = {"box": box.pid, "hq": hq.pid, "mosquitto": broker.pid or 0}
                phases[label] = checkpoint_phase(box, watcher, rate, seconds, pids)
                time.sleep(0.5)
            box_mem = memory_mb(box.pid)
            clock = (watcher.status.get(BOX) or (0, {}))[1].get("clock")
        finally:
            disk.stop()
            if gps is not None:
                gps.stop()
            box.close()
            hq.stop()
        watcher.update()
        received = hq.received_ns()
        watcher.stop()
        checkpoint = {
            label: analyse_checkpoint(p, watcher, received, offset, disk)
            for label, p in phases.items()
        }
        broker_conf(broker, plan[0][3], [])
        naive = naive_run(work, broker, plan)
    by_label = _side_by_side(plan, checkpoint, naive)
    return {
        "phases": by_label,
        "clock_at_end": clock,
        "lock_wait_s": lock_s,
        "box_memory_mb": box_mem,
        "beams": 4,
        "min_break_ms": 1,
        "measured": "edge tick -> first HQ ack covering the seq at a bare subscriber "
        "(HQ acks only after its synchronous=FULL commit); CLOCK_MONOTONIC, one machine",
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 1)


if __name__ == "__main__":  # pragma: no cover - manual use
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run(Path(d), smoke="--smoke" in sys.argv), indent=1, default=str))
