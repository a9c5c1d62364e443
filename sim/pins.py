"""The simulator's gpiozero pin factory, `checkpoint-sim`.

It plugs into gpiozero exactly where lgpio does (entry point group
`gpiozero_pin_factories`), so a box daemon started with
`GPIOZERO_PIN_FACTORY=checkpoint-sim` (or `gpio.pin_factory = "checkpoint-sim"`)
runs its own edge code unchanged. The only difference from a Pi: edges come from
a feed, each with the kernel tick the simulator chose, instead of from an
interrupt.

Feed grammar (env `CHECKPOINT_SIM_FEED`): a path to a Unix stream socket that the
simulator listens on. The factory connects (retrying while the simulator starts)
and reads JSON Lines::

    {"pin": "GPIO17", "mono_ns": 5123456789, "state": 0}

`state` is the electrical level (0/1), as lgpio would report it; polarity is the
daemon's business. Ticks are CLOCK_MONOTONIC nanoseconds, the clock lgpio stamps
with, so NMEA arrival stamps taken by the daemon line up with them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from gpiozero.pins.mock import MockFactory, MockPin
from gpiozero.pins.pi import PiPin

log = logging.getLogger("sim.pins")
FEED_ENV = "CHECKPOINT_SIM_FEED"


class SimPin(MockPin):
    """A mock pin whose edges carry injected kernel ticks (int ns)."""

    def inject(self, mono_ns: int, state: int) -> None:
        """Set the level and fire `when_changed(mono_ns, state)` if the edge is watched."""
        state = bool(state)
        if state == self._state:
            return
        self._state = state
        watched = self._edges == "both" or self._edges == ("rising" if state else "falling")
        if watched and self._when_changed is not None:
            PiPin._call_when_changed(self, mono_ns, int(state))


class SimFactory(MockFactory):
    """MockFactory with int-ns CLOCK_MONOTONIC ticks and an optional socket feed."""

    # Its ticks stand for the kernel's edge timestamps (checkpoint.box.edges accepts it
    # at µs grade; a plain MockFactory is refused).
    kernel_ticks = True

    def __init__(self, feed: str | None = None) -> None:
        super().__init__(pin_class=SimPin)
        self.feed = feed if feed is not None else os.environ.get(FEED_ENV)
        self.injected = 0
        self.bad_lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.feed:
            self._thread = threading.Thread(target=self._read_feed, name="sim-feed", daemon=True)
            self._thread.start()

    @staticmethod
    def ticks() -> int:
        return time.monotonic_ns()

    @staticmethod
    def ticks_diff(later: int, earlier: int) -> float:
        return (later - earlier) / 1e9

    def inject(self, pin: str, mono_ns: int, state: int) -> None:
        """Drive `pin` to `state` at kernel tick `mono_ns`."""
        p = self.pin(pin)
        assert isinstance(p, SimPin)
        p.inject(mono_ns, state)
        self.injected += 1

    def _read_feed(self) -> None:
        sock = None
        while not self._stop.is_set() and sock is None:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.feed)
            except OSError:
                sock = None
                time.sleep(0.05)
        if sock is None:
            return
        with sock, sock.makefile("rb") as f:
            for raw in f:
                if self._stop.is_set():
                    break
                try:
                    rec = json.loads(raw)
                    self.inject(str(rec["pin"]), int(rec["mono_ns"]), int(rec["state"]))
                except (ValueError, KeyError, TypeError) as e:
                    self.bad_lines += 1
                    log.warning("sim feed: bad line %r: %s", raw[:80], e)

    def close(self) -> None:
        self._stop.set()
        super().close()
