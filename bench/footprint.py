"""Footprint of the box daemon: CPU, memory, start-up time, and how its database grows.

* **CPU**: share of one core, (utime + stime) from /proc/PID/stat over a window, all
  threads of the daemon; idle = GPS only (PPS + RMC/GGA once a second, clock locked),
  load = 100 passages a second on four beams.
* **Memory**: VmHWM (peak resident set since the process started) and VmRSS from
  /proc/PID/status.
* **Start-up**: from just before the process is spawned to the arrival, at a bare
  subscriber, of its first retained status with `state: ready` (the daemon has opened
  and checked its store, opened the GPS port and pins, and is connected to the broker).
* **Database growth**: measured with `checkpoint.box.store.Store.record` itself on a
  fresh file (size after closing, which folds the WAL in): per 1,000 passages (the
  event plus its two raw edges) and per 1,000 seconds of idle running (one PPS row and
  one clock sample row a second, which the store keeps for replay), extrapolated to a
  day (86,400 s) and a week. The daemon's own database is also reported.
* **Disk writes**: what the daemon actually writes to storage (/proc/PID/io
  `write_bytes`: WAL frames and checkpoints, fsync'd per commit), idle and under load,
  which is what wears an SD card, as opposed to how much the database grows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    MS,
    NS,
    CpuWindow,
    HQProc,
    Watcher,
    memory_mb,
    wait_until,
    write_bytes,
)
from bench.latency import wait_locked
from bench.rig import BenchBox, GpsFeeder, Truth, passage_event, play, schedule
from checkpoint import capture
from checkpoint.box.store import Store
from checkpoint.contracts import ACK, STATUS, all_boxes
from sim.broker import Mosquitto

SD_CARD_BYTES = 16 * 10**9
DAY_S = 86_400
#: A busy control point: every car of a 300-car field passes a few times a day, plus
#: marshals' corrections; 5,000 a day is far above any real rally day.
PASSAGES_PER_DAY = 5_000


def startup(box: BenchBox, watcher: Watcher, timeout_s: float = 60) -> float:
    """Start the daemon; seconds from spawn to its first `ready` status at the broker."""
    box.start()
    t = wait_until(
        lambda: watcher.first_ready_after(box.box, box.started_ns),
        timeout_s,
        "the box's ready status",
        step_s=0.005,
    )
    return round((t - box.started_ns) / NS, 3)


def _file_size(path: Path) -> int:
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def _grown(path: Path, box: str, fill: Callable[[Store], None]) -> int:
    """Bytes a new store at `path` grows by while `fill` records into it."""
    Store(path, box=box, checkpoint="PC3").close()
    base = _file_size(path)
    store = Store(path, box=box, checkpoint="PC3")
    try:
        fill(store)
    finally:
        store.close()
    return _file_size(path) - base


def _record_passages(store: Store, boot: str, mono0: int, passages: int) -> None:
    """`passages` passages on four beams, 100 to a transaction, with their edges."""
    for lo in range(1, passages + 1, 100):
        events, edges = [], []
        for seq in range(lo, min(lo + 100, passages + 1)):
            mono = mono0 + seq * 3 * NS + seq * 7919
            name = f"beam{seq % 4 + 1}"
            events.append(
                passage_event(
                    box=store.box,
                    store=store.store_id,
                    seq=seq,
                    mono_ns=mono,
                    utc_ns=1_776_000_000 * NS + seq * 3 * NS + seq * 7907,
                    input_name=name,
                )
            )
            edges += [(name, mono, True), (name, mono + 150 * MS + seq * 13, False)]
        store.record(boot=boot, edges=edges, events=events)


def _record_idle(store: Store, boot: str, mono0: int, seconds: int) -> None:
    """`seconds` of an idle box: a pulse and a paired sample a second."""
    for lo in range(0, seconds, 1000):
        secs = range(lo, min(lo + 1000, seconds))
        pps = [mono0 + s * NS + (s * 7919) % 5000 for s in secs]
        samples = [(t, 1_776_000_000 + s) for t, s in zip(pps, secs, strict=True)]
        store.record(boot=boot, pps=pps, samples=samples)


def _capture_bytes_per_1000_s(work: Path, mono0: int) -> int:
    """The optional capture file ([record] capture): PPS + RMC + GGA a second."""
    from boxrig import gga, rmc  # tests/boxrig.py, on the path via bench.rig

    cap = work / "capture.jsonl"
    writer = capture.Writer(cap, "size03", "PC3")
    try:
        for s in range(1000):
            t = mono0 + s * NS
            writer.write({"type": "pps", "mono_ns": t})
            for i, line in enumerate((rmc(1_776_000_000 + s), gga(1_776_000_000 + s))):
                writer.write({"type": "nmea", "mono_ns": t + 80 * MS + i, "line": line.strip()})
            if s % 60 == 0:
                writer.write({"type": "sysclock", "mono_ns": t, "realtime_ns": t + 10**18})
    finally:
        writer.close()
    return cap.stat().st_size


def db_growth(work: Path, *, passages: int, seconds: int) -> dict[str, Any]:
    """Bytes the store grows by per 1,000 passages and per 1,000 idle seconds."""
    work.mkdir(parents=True, exist_ok=True)
    boot = Store.boot_id()
    mono0 = time.monotonic_ns()
    out: dict[str, Any] = {}
    grown = _grown(
        work / "passages.db", "size01", lambda st: _record_passages(st, boot, mono0, passages)
    )
    out["bytes_per_1000_passages"] = round(grown * 1000 / passages)
    grown = _grown(work / "idle.db", "size02", lambda st: _record_idle(st, boot, mono0, seconds))
    per_1000_s = grown * 1000 / seconds
    out["bytes_per_1000_idle_s"] = round(per_1000_s)
    idle_day = per_1000_s * DAY_S / 1000
    out["idle_mb_per_day"] = round(idle_day / 1e6, 2)
    busy_day = idle_day + PASSAGES_PER_DAY * out["bytes_per_1000_passages"] / 1000
    out["passages_per_day_assumed"] = PASSAGES_PER_DAY
    out["busy_mb_per_day"] = round(busy_day / 1e6, 2)
    out["week_mb"] = round(7 * busy_day / 1e6, 1)
    out["week_share_of_16gb_percent"] = round(100 * 7 * busy_day / SD_CARD_BYTES, 3)
    out["days_to_fill_16gb"] = round(SD_CARD_BYTES / busy_day)
    cap = _capture_bytes_per_1000_s(work, mono0)
    out["capture_mb_per_day_if_enabled"] = round(cap * DAY_S / 1000 / 1e6, 1)
    return out


def _writes(pid: int, bytes0: int, t0: float) -> dict[str, float]:
    """Storage writes since (bytes0, t0): what the SD card would take, WAL frames included."""
    rate = (write_bytes(pid) - bytes0) / (time.monotonic() - t0)
    return {
        "disk_write_kb_per_s": round(rate / 1e3, 1),
        "disk_write_mb_per_day": round(rate * DAY_S / 1e6),
    }


def _startups(box: BenchBox, watcher: Watcher, starts: int) -> dict[str, Any]:
    """Seconds to `ready`: the first start on a new store, then restarts on it."""
    times = []
    for k in range(starts):
        times.append(startup(box, watcher))
        if k + 1 < starts:
            box.stop()
            with box.lock:
                box.conn = None
    return {"first_start_new_store": times[0], "restarts": times[1:]}


def _window(cpu: CpuWindow, pid: int, during: Callable[[], object]) -> dict[str, Any]:
    """CPU of every process, the box's memory and its storage writes while `during` runs."""
    cpu.start()
    w0, t0 = write_bytes(pid), time.monotonic()
    during()
    return {"cpu_percent": cpu.stop(), "memory_mb": memory_mb(pid), **_writes(pid, w0, t0)}


def run(work: Path, smoke: bool = False) -> dict[str, Any]:
    """Start-up, idle and load CPU/memory of a real daemon; database growth."""
    starts = 1 if smoke else 3
    # Raw rows are committed at least once a minute: an idle window of several minutes
    # sees those commits (and a WAL checkpoint) in proportion.
    idle_s = 3.0 if smoke else 180.0
    load_s = 2.0 if smoke else 20.0
    out: dict[str, Any] = {}
    with Mosquitto(workdir=work / "broker") as broker:
        hq = HQProc(work / "hq", broker.url).start()
        watcher = Watcher(
            broker.url, [all_boxes("rally", STATUS), all_boxes("rally", ACK)], "footprint"
        ).start()
        box = BenchBox(work / "box", broker.url, box="bench03", status_interval_s=10)
        gps: GpsFeeder | None = None
        try:
            out["startup_s"] = _startups(box, watcher, starts)
            gps = GpsFeeder(box, Truth())
            gps.start()
            # From the first pulse with a fix (the feeder starts with both) to `locked`.
            out["lock_wait_s"] = wait_locked(watcher, box.box, 120)
            time.sleep(0 if smoke else 5)  # let the lock's own work settle
            cpu = CpuWindow({"box": box.pid, "hq": hq.pid, "mosquitto": broker.pid or 0})
            out["idle"] = _window(cpu, box.pid, lambda: time.sleep(idle_s))
            sched = schedule(time.monotonic_ns() + NS // 2, 100, load_s)
            out["load_100_per_s"] = _window(cpu, box.pid, lambda: play(box.send, sched.lines))
            watcher.update()
            st = (watcher.status.get(box.box) or (0, {}))[1]
            out["clock_at_end"] = st.get("clock")
            # The daemon's own CPU per PPS pulse (with its second of NMEA, status and
            # store work) and per passage (what 100 passages a second add to idle).
            idle_share = out["idle"]["cpu_percent"]["box"] / 100
            load_share = out["load_100_per_s"]["cpu_percent"]["box"] / 100
            out["cpu_ms_per_pulse"] = round(idle_share * 1e3, 3)
            out["cpu_ms_per_passage"] = round(max(load_share - idle_share, 0) * 1e3 / 100, 3)
        finally:
            if gps is not None:
                gps.stop()
            box.close()
            hq.stop()
            watcher.stop()
        store = Store(box.db_path, box=box.box, checkpoint="PC3", readonly=True)
        try:
            out["daemon_store"] = {"rows": store.counts(), "bytes": _file_size(box.db_path)}
        finally:
            store.close()
    out["db_growth"] = db_growth(
        work / "size",
        passages=1_000 if smoke else 10_000,
        seconds=10_000 if smoke else 100_000,
    )
    return out
