"""A real box daemon for benchmarks, fed at the hardware edge (tests/boxrig.py's rig).

`BenchBox` is tests/boxrig.py's `BoxRig` (the daemon as `python -m checkpoint run`,
the `checkpoint-sim` pin factory's feed socket, the GPS pty) with the config a
benchmark needs: several beams with `lockout_ms = 0` and `min_break_ms = 1`, so one
box can take 100+ passages a second, and a feed that sends every edge due at once
in one write. `GpsFeeder` and `Truth` are reused from the rig as they are.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import MS, NS, REPO, pct
from checkpoint import EVENT_SCHEMA
from checkpoint.box.store import Store
from checkpoint.core.timing import format_utc

sys.path.insert(0, str(REPO / "tests"))
from boxrig import BoxRig, GpsFeeder, Truth  # noqa: E402

__all__ = [
    "BEAM_PINS",
    "BEAM_PINS_8",
    "BenchBox",
    "FeedServer",
    "GpsFeeder",
    "Schedule",
    "Truth",
    "passage_event",
    "play",
    "prefill",
    "schedule",
]

#: The benchmark box's beams (active-low, like the field wiring); PPS stays on GPIO18.
BEAM_PINS = ("GPIO17", "GPIO22", "GPIO23", "GPIO24")
#: Eight beams, for rates where four would overlap their own breaks.
BEAM_PINS_8 = (*BEAM_PINS, "GPIO25", "GPIO5", "GPIO6", "GPIO12")


def box_config(
    *,
    box: str,
    tty: str,
    broker_url: str,
    pins: Sequence[str] = BEAM_PINS,
    status_interval_s: int = 10,
    min_lock_samples: int = 10,
    redeliver_after_s: int = 30,
    max_inflight: int = 32,
) -> str:
    """The TOML of a benchmark box: like examples/box.toml but N fast beams."""
    beams = "".join(
        f"""
[[inputs]]
name = "beam{i + 1}"
pin = "{pin}"
min_break_ms = 1
lockout_ms = 0
max_edges_per_s = 100000
"""
        for i, pin in enumerate(pins)
    )
    return f"""
[box]
id = "{box}"
checkpoint = "PC3"
status_interval_s = {status_interval_s}
[store]
path = "box.db"
[gpio]
pin_factory = "checkpoint-sim"
[gps]
port = "{tty}"
[mqtt]
broker = "{broker_url}"
max_inflight = {max_inflight}
redeliver_after_s = {redeliver_after_s}
[clock]
min_lock_samples = {min_lock_samples}
{beams}"""


class BenchBox(BoxRig):
    """tests/boxrig.py's rig with a benchmark config and batched feed writes."""

    def __init__(
        self,
        tmp: Path,
        broker_url: str,
        *,
        box: str = "bench01",
        pins: Sequence[str] = BEAM_PINS,
        **config: Any,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp, broker_url, box=box)
        self.pins = tuple(pins)
        self.config.write_text(
            box_config(box=box, tty=self.tty, broker_url=broker_url, pins=pins, **config)
        )
        self.started_ns = 0

    @property
    def db_path(self) -> Path:
        return self.tmp / "box.db"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start the daemon; `started_ns` is the tick just before the process is spawned."""
        self.started_ns = time.monotonic_ns()
        super().start()

    def send(self, data: bytes) -> None:
        """Write feed lines (already encoded) in one go."""
        with self.lock:
            if self.conn is not None:
                self.conn.sendall(data)


class FeedServer:
    """The listening end of a `checkpoint-sim` feed, for a process that is not a BoxRig."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(1)
        self.conn: socket.socket | None = None
        self.lock = threading.Lock()

    def accept(self, timeout_s: float = 20) -> None:
        self._server.settimeout(timeout_s)
        conn, _ = self._server.accept()
        with self.lock:
            self.conn = conn

    def send(self, data: bytes) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.sendall(data)

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
        self._server.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


# -- passage schedules -----------------------------------------------------------------


@dataclass
class Schedule:
    """Feed lines in tick order, and the leading-edge tick of every passage."""

    lines: list[tuple[int, bytes]]
    leads: list[int]


def _line(pin: str, mono_ns: int, state: int) -> bytes:
    return (json.dumps({"pin": pin, "mono_ns": mono_ns, "state": state}) + "\n").encode()


def schedule(
    start_ns: int,
    rate: float,
    seconds: float,
    *,
    pins: Sequence[str] = BEAM_PINS,
    hold_ns: int = 20 * MS,
) -> Schedule:
    """Passages at `rate` per second for `seconds`, round-robin over `pins`.

    Each passage breaks its (active-low) beam at its tick and releases it `hold_ns`
    later; `hold_ns` is shortened when a beam's own passages come faster than that.
    """
    n = max(1, round(rate * seconds))
    period = NS / rate
    per_pin = period * len(pins)
    hold = int(min(hold_ns, max(per_pin / 2, 1.2 * MS)))
    lines: list[tuple[int, bytes]] = []
    leads = []
    for i in range(n):
        t = start_ns + int(i * period)
        pin = pins[i % len(pins)]
        leads.append(t)
        lines.append((t, _line(pin, t, 0)))
        lines.append((t + hold, _line(pin, t + hold, 1)))
    lines.sort(key=lambda x: x[0])
    return Schedule(lines, leads)


def play(
    send: Callable[[bytes], None],
    lines: Sequence[tuple[int, bytes]],
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Send each line when its tick comes (all lines due at once in one write).

    Returns how late the writes were against their ticks (the bench's own delay,
    which is part of every latency measured from the tick).
    """
    late: list[int] = []
    i, n = 0, len(lines)
    while i < n:
        if stop is not None and stop.is_set():
            break
        now = time.monotonic_ns()
        due = lines[i][0]
        if due > now:
            time.sleep((due - now) / NS)
            continue
        j = i
        while j < n and lines[j][0] <= now:
            j += 1
        send(b"".join(line for _, line in lines[i:j]))
        late.append(time.monotonic_ns() - due)
        i = j
    return {
        "writes": len(late),
        "late_p50_ms": round((pct(late, 50) or 0) / MS, 3),
        "late_p99_ms": round((pct(late, 99) or 0) / MS, 3),
        "late_max_ms": round(max(late, default=0) / MS, 3),
    }


# -- a pre-filled store ------------------------------------------------------------------


def passage_event(
    *, box: str, store: str, seq: int, mono_ns: int, utc_ns: int, input_name: str = "beam1"
) -> dict[str, Any]:
    """A passage event shaped exactly like timing.Pipeline's (same keys, same order)."""
    return {
        "schema": EVENT_SCHEMA,
        "type": "passage",
        "box": box,
        "checkpoint": "PC3",
        "store": store,
        "seq": seq,
        "input": input_name,
        "source": "beam",
        "mono_ns": mono_ns,
        "utc_ns": utc_ns,
        "utc": format_utc(utc_ns),
        "clock": "locked",
        "uncertainty_ns": 1523,
    }


def prefill(path: Path, *, box: str, n: int, batch: int = 5000) -> str:
    """Write `n` passages (seq 1..n, with their two raw edges each) into a new store.

    What a box holds after `n` passages during a broker outage. Returns the store id.
    """
    store = Store(path, box=box, checkpoint="PC3")
    try:
        boot = Store.boot_id()
        mono0 = time.monotonic_ns() - n * 50 * MS
        utc0 = 1_776_000_000 * NS
        for lo in range(1, n + 1, batch):
            events, edges = [], []
            for seq in range(lo, min(lo + batch, n + 1)):
                mono = mono0 + seq * 50 * MS + seq * 137
                name = f"beam{seq % 4 + 1}"
                events.append(
                    passage_event(
                        box=box,
                        store=store.store_id,
                        seq=seq,
                        mono_ns=mono,
                        utc_ns=utc0 + seq * 50 * MS + seq * 131,
                        input_name=name,
                    )
                )
                edges += [(name, mono, True), (name, mono + 20 * MS, False)]
            store.record(boot=boot, edges=edges, events=events)
        return store.store_id
    finally:
        store.close()
