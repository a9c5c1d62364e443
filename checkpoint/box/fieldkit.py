"""The daemon's field extras in one place, so daemon.py needs only a few one-line hooks.

`FieldKit(daemon)` bundles, for a running `BoxDaemon`:

* sd_notify (`checkpoint.box.notify`): READY=1 once the threads run, a STATUS= line that
  `systemctl status checkpoint` shows, STOPPING=1 on shutdown, and WATCHDOG=1 only
  while the GPIO callback thread(s), the serial reader and paho's network thread are
  alive (and the core loop, which is what calls `turn()`);
* the control socket (`checkpoint.box.control`) for `checkpoint assign` / `void`,
  handing requests to `daemon.correction`;
* the status LED and passage buzzer (`checkpoint.box.indicator`), when pins are set;
* the chrony feed (`checkpoint.box.chronysock`), one sample a second while locked.

Hooks in daemon.py (see the README's "Deploying a box" notes):
``__init__`` builds it after the EdgeSource, ``run()`` calls `start()` just before
``self.ready.set()``, ``_turn()`` calls `turn(now, events)` last, ``_shutdown()`` calls
`close()` first. Every part fails soft: a missing LED pin or a control socket that
cannot be created is an alarm in the status, never a daemon that does not start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from checkpoint.box import chronysock, control, notify
from checkpoint.box.edges import EdgeSource
from checkpoint.box.gps_serial import SerialReader
from checkpoint.box.indicator import Chooser, Indicator, LedState
from checkpoint.config import Config
from checkpoint.errors import CheckpointError
from checkpoint.mqtt import Link

log = logging.getLogger("checkpoint.box.fieldkit")

_LED_EVERY_NS = 250_000_000
_CHRONY_EVERY_NS = 1_000_000_000
# A GPS that was sending and went silent with its port still open: restart after
# this long (a wedged UART is fixed by reopening; see the report for the trade-off).
SERIAL_SILENT_S = 120.0


class Box(Protocol):
    """What the field kit needs of the daemon it serves (BoxDaemon implements it).

    Attributes are read on the core thread (`turn`) and at `start`; `correction` is
    called from the control socket's thread.
    """

    cfg: Config
    edges: EdgeSource  # must: its `factory` drives the LED and buzzer pins
    serial: SerialReader  # must: its thread and byte count feed the watchdog
    link: Link  # must: `connected` for the LED, `thread` for the watchdog
    alarms: dict[str, str]  # may be written: the field kit's own failures go here

    def status(self, now: int | None = None) -> dict[str, Any]:
        """Must return the status message the box publishes (README "Status")."""

    def correction(self, kind: str, ref_seq: int, value: str) -> None:
        """Must queue a marshal's assign/void, raising CommandError for a bad seq."""

    def utc_if_locked(self, mono_ns: int) -> int | None:
        """Must return UTC ns for a monotonic instant while the clock is locked, else None."""


class FieldKit:
    """Watchdog, control socket, LED/buzzer and chrony feed for one daemon."""

    def __init__(self, daemon: Box, *, gpio_threads: Sequence[threading.Thread] = ()) -> None:
        self.d = daemon
        cfg = daemon.cfg
        self.watchdog = notify.Watchdog.from_env()
        self.control: control.ControlServer | None = None
        self.chooser = Chooser()
        self.indicator: Indicator | None = None
        try:
            self.indicator = Indicator.from_factory(daemon.edges.factory, cfg.indicator)
        except Exception as e:  # a lamp must never stop the timing
            daemon.alarms["indicator"] = f"LED/buzzer pins unusable: {e}"
            log.error("%s", daemon.alarms["indicator"])
        self.chrony = chronysock.ChronySocket(cfg.chrony.socket) if cfg.chrony.socket else None
        self._gpio_threads = list(gpio_threads)
        self._next_led_ns = 0
        self._next_chrony_ns = 0
        self._shown: str | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Serve the control socket, light the LED, arm the watchdog, send READY=1."""
        path = control.socket_path(self.d.cfg)
        try:
            self.control = control.ControlServer(path, self.d.correction).start()
        except CheckpointError as e:
            self.d.alarms["control"] = f"{e}: marshal corrections unavailable"
            log.error("%s", self.d.alarms["control"])
        if self.indicator is not None:
            self.indicator.start()
        self._register_checks()
        notify.ready(f"box {self.d.cfg.box} at {self.d.cfg.checkpoint}: starting")

    def turn(self, now: int, events: list[dict[str, Any]]) -> None:
        """Once per core-loop turn, after the status: chirp, LED, chrony, watchdog."""
        if self.indicator is not None and any(ev.get("type") == "passage" for ev in events):
            self.indicator.chirp()
        if now >= self._next_led_ns:
            self._next_led_ns = now + _LED_EVERY_NS
            self._show(now)
        if self.chrony is not None and now >= self._next_chrony_ns:
            self._next_chrony_ns = now + _CHRONY_EVERY_NS
            sample = chronysock.measure(self.d.utc_if_locked)
            if sample is not None:
                self.chrony.send(sample)
        self.watchdog.tick()

    def close(self) -> None:
        """Tell systemd we are stopping; close the socket, LED and chrony feed."""
        notify.stopping()
        if self.control is not None:
            self.control.close()
        if self.indicator is not None:
            self.indicator.close()
        if self.chrony is not None:
            self.chrony.close()

    # -- parts -------------------------------------------------------------------

    def _show(self, now: int) -> None:
        st = self.d.status(now)
        state = self.chooser.choose(now / 1e9, st, self.d.link.connected)
        if self.indicator is not None:
            self.indicator.show(state)
        unc = st.get("uncertainty_ns")
        line = (
            f"{_WORDS[state]}: clock {st.get('clock')}"
            + (f" ±{unc / 1000:.1f} µs" if isinstance(unc, int | float) else "")
            + f", broker {'up' if self.d.link.connected else 'down'}, backlog {st.get('backlog')}"
        )
        if line != self._shown:
            self._shown = line
            notify.status(line)

    def _register_checks(self) -> None:
        wd = self.watchdog
        serial = self.d.serial
        wd.register("serial", notify.Watchdog.thread_alive(lambda: serial, "serial reader"))
        wd.register(
            "serial-bytes",
            wd.progressing(
                lambda: serial.bytes_read,
                SERIAL_SILENT_S,
                "GPS bytes",
                # Never connected yet, or in its reopen loop: nothing to expect.
                unless=lambda: not serial.connected or serial.bytes_read == 0,
            ),
        )
        wd.register(
            "mqtt", notify.Watchdog.thread_alive(lambda: self.d.link.thread, "MQTT network")
        )
        wd.register("gpio", self._gpio_alive)
        if self.control is not None:
            ctl = self.control
            wd.register("control", lambda: None if ctl.alive else "control socket thread died")

    def _gpio_alive(self) -> str | None:
        dead = [t.name for t in self._gpio_threads if not t.is_alive()]
        return f"GPIO thread(s) {', '.join(dead)} died" if dead else None


_WORDS = {
    LedState.READY: "ready",
    LedState.NO_GPS: "waiting for GPS lock",
    LedState.NO_BROKER: "broker not connected",
    LedState.FAULT: "sensor fault",
    LedState.OFF: "off",
}
