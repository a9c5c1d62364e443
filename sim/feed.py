"""Feeding live box daemons at their hardware edge: pins over a socket, NMEA over a pty.

`BoxFeed` is one box's wiring: a Unix socket that the box's `checkpoint-sim` pin
factory connects to (protocol in sim/pins.py: JSON lines with the electrical
level and the kernel tick) and a pty whose slave is the box's GPS serial port.

`Scheduler` is one thread that performs every timed action of every box in tick
order. The rule that keeps the verdict free of this machine's scheduling noise:
an item is never performed before `time.monotonic_ns()` has reached its tick
(the tick is CLOCK_MONOTONIC, the clock lgpio stamps with); performing it late
is harmless, because the tick it carries is the truth.

One exception to "as soon as due": a break shorter than `COALESCE_NS` (an insect,
chatter) goes out as one write once its *end* is due. Sent separately, a late
trailing edge could let the daemon decide the break had lasted `min_break`
before the edge arrived, and a glitch would become a passage; a real Pi has the
same exposure to its own interrupt latency, but the simulator must not add to it.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import json
import logging
import os
import socket
import termios
import threading
import time
import tty
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sim.gps import GpsReceiver
from sim.world import PPS_PIN, Edge

log = logging.getLogger("sim.feed")

COALESCE_NS = 15_000_000

Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Item:
    """One timed action for one box: pin edges (`pins`) or NMEA bytes (`nmea`)."""

    due: int
    box: str
    pins: tuple[dict[str, object], ...] = ()
    nmea: bytes = b""
    keys: tuple[Key, ...] = ()  # truth passages whose edges these are
    leads: tuple[Key, ...] = ()  # ... whose leading edge is among them


def pin_line(pin: str, tick: int, level: int) -> dict[str, object]:
    return {"pin": pin, "mono_ns": tick, "state": level}


def edge_items(box: str, edges: list[Edge]) -> list[Item]:
    """A box's edges as feed items, short breaks coalesced; sorted by due tick."""
    items: list[Item] = []
    by_input: dict[str, list[Edge]] = {}
    for e in edges:
        by_input.setdefault(e.input, []).append(e)
    for lst in by_input.values():
        i = 0
        while i < len(lst):
            e = lst[i]
            group = [e]
            nxt = lst[i + 1] if i + 1 < len(lst) else None
            if e.broken and nxt is not None and nxt.tick - e.tick < COALESCE_NS:
                group.append(nxt)
            i += len(group)
            items.append(
                Item(
                    due=group[-1].tick,
                    box=box,
                    pins=tuple(pin_line(g.pin, g.tick, g.level) for g in group),
                    keys=tuple(g.key for g in group if g.key is not None),
                    leads=tuple(g.key for g in group if g.key is not None and g.lead),
                )
            )
    items.sort(key=lambda it: it.due)
    return items


def gps_items(box: str, rx: GpsReceiver) -> Iterator[Item]:
    """The receiver's PPS edges and NMEA sentences, forever, in tick order."""

    def pulses() -> Iterator[Item]:
        for p in rx.pulses():
            yield Item(p.rise, box, pins=(pin_line(PPS_PIN, p.rise, 1),))
            yield Item(p.fall, box, pins=(pin_line(PPS_PIN, p.fall, 0),))

    def lines() -> Iterator[Item]:
        for ln in rx.lines():
            yield Item(ln.tick, box, nmea=ln.data)

    return heapq.merge(pulses(), lines(), key=lambda it: it.due)


class BoxFeed:
    """One box's pin socket and GPS pty.

    The pin factory in the box process connects to `sock_path` (and again after a
    restart). While no box is connected, edges are not delivered and the GPS bytes
    go nowhere, as on a real serial port nobody has open.
    """

    def __init__(self, box: str, sock_path: str | Path) -> None:
        self.box = box
        self.sock_path = str(sock_path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        Path(self.sock_path).unlink(missing_ok=True)  # left by a run that was killed
        self._server.bind(self.sock_path)
        self._server.listen(2)
        self.master, self.slave = os.openpty()
        # Raw, no echo: bytes written before the daemon opens the port must not be
        # echoed back or have CR turned into LF.
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)
        self._lock = threading.Lock()
        self._conn: socket.socket | None = None
        self.connects = 0
        self.connected = threading.Event()
        self.dropped = Counter[str]()
        self._closing = False
        self._acceptor = threading.Thread(target=self._accept, name=f"feed-{box}", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                self._conn = conn
                self.connects += 1
            self.connected.set()

    def pins(self, lines: Iterable[dict[str, object]]) -> bool:
        """Send pin edges; False when no box is connected (the edges are lost)."""
        data = "".join(json.dumps(ln, separators=(",", ":")) + "\n" for ln in lines).encode()
        with self._lock:
            if self._conn is None:
                self.dropped["pins"] += 1
                return False
            try:
                self._conn.sendall(data)
                return True
            except OSError:
                self._conn.close()
                self._conn = None
                self.connected.clear()
                self.dropped["pins"] += 1
                return False

    def nmea(self, data: bytes) -> bool:
        """Write GPS bytes to the pty; dropped while the box is down or the port is full."""
        if not self.connected.is_set():
            self.dropped["nmea"] += 1
            return False
        try:
            os.write(self.master, data)
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EIO):
                raise
            self.dropped["nmea"] += 1
            return False

    def down(self) -> None:
        """The box process is gone: stop delivering until it connects again."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self.connected.clear()

    def flush_port(self) -> None:
        """Forget bytes queued on the port: a freshly opened UART starts empty."""
        termios.tcflush(self.slave, termios.TCIFLUSH)

    def close(self) -> None:
        self._closing = True
        self.down()
        self._server.close()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(self.sock_path)
        except OSError:
            pass


@dataclass
class Delivery:
    """What reached the boxes: edges per truth passage and when its lead went out."""

    edges: Counter[Key] = field(default_factory=Counter)
    lead_sent_wall_ns: dict[Key, int] = field(default_factory=dict)
    #: How late car edges went out after their tick (harmless: the tick is the truth).
    lateness_ns: list[int] = field(default_factory=list)


class Scheduler(threading.Thread):
    """Performs every box's timed items in tick order, never before their tick."""

    def __init__(self, feeds: dict[str, BoxFeed]) -> None:
        super().__init__(name="sim-scheduler", daemon=True)
        self.feeds = feeds
        self.delivery = Delivery()
        self._heap: list[tuple[int, int, Item, Iterator[Item]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._halt = False
        self.error: BaseException | None = None
        self.on_error: Callable[[BaseException], None] | None = None

    def add(self, items: Iterable[Item]) -> None:
        """Add a stream of items (sorted by due tick); it may be endless."""
        it = iter(items)
        with self._cond:
            self._push(it)
            self._cond.notify()

    def _push(self, it: Iterator[Item]) -> None:
        nxt = next(it, None)
        if nxt is not None:
            heapq.heappush(self._heap, (nxt.due, next(self._order), nxt, it))

    def stop(self) -> None:
        with self._cond:
            self._halt = True
            self._cond.notify()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # reported to the orchestrator, which stops the run
            self.error = e
            log.exception("scheduler failed")
            if self.on_error is not None:
                self.on_error(e)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._halt:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic_ns()
                        if wait <= 0:
                            break
                        self._cond.wait(min(wait / 1e9, 0.5))
                    else:
                        self._cond.wait(0.5)
                if self._halt:
                    return
                _, _, item, it = heapq.heappop(self._heap)
                self._push(it)
            self._perform(item)

    def _perform(self, item: Item) -> None:
        feed = self.feeds[item.box]
        d = self.delivery
        if item.pins:
            now = time.monotonic_ns()
            ok = feed.pins(item.pins)
            if item.keys:
                d.lateness_ns.append(now - item.due)
            if ok:
                for k in item.keys:
                    d.edges[k] += 1
                wall = time.time_ns()
                for k in item.leads:
                    d.lead_sent_wall_ns[k] = wall
        if item.nmea:
            feed.nmea(item.nmea)
