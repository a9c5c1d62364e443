"""A simulated box for end-to-end tests: the real daemon process, fed at the hardware edge.

Edges go in through the `checkpoint-sim` gpiozero pin factory (a Unix socket the
rig listens on), NMEA through a real pty. The box clock is this machine's
CLOCK_MONOTONIC; the rig's truth maps it to UTC with a chosen oscillator error,
so every injected tick has an exact true UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from waits import wait_for

from sim.boxclock import BoxClock
from sim.gps import sentence

NS = 1_000_000_000


def rmc(utc_s: int, valid: bool = True) -> str:
    t = dt.datetime.fromtimestamp(utc_s, dt.UTC)
    return sentence(
        f"GPRMC,{t:%H%M%S}.00,{'A' if valid else 'V'},3251.0000,N,11716.0000,W,0.0,0.0,"
        f"{t:%d%m%y},,,A"
    )


def gga(utc_s: int, valid: bool = True) -> str:
    t = dt.datetime.fromtimestamp(utc_s, dt.UTC)
    q = 1 if valid else 0
    return sentence(f"GPGGA,{t:%H%M%S}.00,3251.0000,N,11716.0000,W,{q},08,0.9,100.0,M,-30.0,M,,")


def truth_now(ppm: float = 20, utc0_ns: int = 1_776_000_000 * NS) -> BoxClock:
    """True UTC of this machine's CLOCK_MONOTONIC from now on, for an oscillator `ppm`
    fast: the simulator's exact integer clock (`sim.boxclock`), anchored at this moment."""
    return BoxClock(mono0=time.monotonic_ns(), utc0=utc0_ns + 123_456_789, ppm=ppm)


# The old name, which bench/rig.py (and the benchmarks through it) still imports.
Truth = truth_now


DEFAULT_INPUTS = """[[inputs]]
name = "beam"
pin = "GPIO17"
"""


class BoxRig:
    """Builds a config, starts `python -m checkpoint run`, feeds it, stops it."""

    def __init__(
        self,
        tmp: Path,
        broker_url: str,
        *,
        box: str = "box07",
        redeliver_after_s: int = 600,
        extra: str = "",
        keepalive_s: int = 5,
        store: str = "box.db",
        inputs: str | None = None,
        mqtt_extra: str = "",
    ) -> None:
        """`extra` is appended to the config. The reliability tests also set the MQTT
        `keepalive_s`, the `store` path (relative to `tmp`, or absolute) and `inputs`
        (TOML ``[[inputs]]`` tables replacing the one beam on GPIO17). `mqtt_extra`
        adds keys to the ``[mqtt]`` table (credentials, TLS files)."""
        self.tmp = tmp
        self.box = box
        self.store_path = tmp / store
        self.sock_path = str(tmp / "feed.sock")
        self.master, slave = os.openpty()
        # Raw from the start: a fresh pty echoes what the GPS writes back into the
        # master, which nobody reads, until writes block and the GPS "goes silent".
        tty.setraw(slave)
        self.tty = os.ttyname(slave)
        self._slave = slave
        self.config = tmp / "box.toml"
        self.config.write_text(
            f"""
[box]
id = "{box}"
checkpoint = "PC3"
status_interval_s = 1
[store]
path = "{store}"
[gpio]
pin_factory = "checkpoint-sim"
[gps]
port = "{self.tty}"
[mqtt]
broker = "{broker_url}"
keepalive_s = {keepalive_s}
redeliver_after_s = {redeliver_after_s}
{mqtt_extra}
[clock]
min_lock_samples = 10
{inputs if inputs is not None else DEFAULT_INPUTS}
{extra}
"""
        )
        self.proc: subprocess.Popen | None = None
        self.conn: socket.socket | None = None
        self._server: socket.socket | None = None
        self.log = tmp / "daemon.log"
        self.lock = threading.Lock()

    def start(self) -> None:
        if self._server is None:
            self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._server.bind(self.sock_path)
            self._server.listen(1)
        env = dict(os.environ, CHECKPOINT_SIM_FEED=self.sock_path)
        started = self._starts()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "checkpoint", "run", "--config", str(self.config)],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self._server.settimeout(20)
        conn, _ = self._server.accept()
        with self.lock:
            self.conn = conn
        # The pin factory connects to the feed before the daemon has set up its pins:
        # an edge sent now could find no callback and vanish. The daemon logs its
        # start line once inputs, GPS and MQTT are wired; wait for it.
        wait_for(
            lambda: self._starts() != started or self.proc.poll() is not None,
            20,
            "the daemon's start line",
            every=0.01,
            detail=lambda: self.log_text()[-2000:],
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon did not start:\n{self.log_text()[-2000:]}")

    def _starts(self) -> int:
        try:
            return self.log_text().count(f"box {self.box} at ")
        except OSError:
            return 0

    def pin(self, pin: str, mono_ns: int, state: int) -> None:
        wait = (mono_ns - time.monotonic_ns()) / NS
        if wait > 0:
            time.sleep(wait)  # paces the wire: an edge goes out when its tick has come
        line = json.dumps({"pin": pin, "mono_ns": mono_ns, "state": state}) + "\n"
        with self.lock:
            assert self.conn is not None
            try:
                self.conn.sendall(line.encode())
            except OSError:
                pass  # the daemon was killed; the test knows

    def nmea(self, text: str) -> None:
        os.write(self.master, text.encode())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=20)
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.conn is not None:
                self.conn.close()

    def close(self) -> None:
        self.stop()
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._server is not None:
            self._server.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def pid(self) -> int:
        """The running daemon's process id."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """True while the daemon process runs."""
        return self.proc is not None and self.proc.poll() is None


class GpsFeeder(threading.Thread):
    """PPS on GPIO18 once per true second, RMC+GGA 80 ms after it ('after' convention)."""

    def __init__(
        self, rig: BoxRig, truth: BoxClock, *, delay_ms: int = 80, valid: bool = True
    ) -> None:
        super().__init__(daemon=True)
        self.rig, self.truth, self.delay_ms, self.valid = rig, truth, delay_ms, valid
        self.pps_on = True
        self.stop_event = threading.Event()

    def run(self) -> None:
        s = self.truth.utc(time.monotonic_ns()) // NS + 1
        while not self.stop_event.is_set():
            tick = self.truth.tick(s * NS)
            if self.pps_on:
                self.rig.pin("GPIO18", tick, 1)
                self.rig.pin("GPIO18", tick + 20_000_000, 0)
            arrive = tick + self.delay_ms * 1_000_000
            wait = (arrive - time.monotonic_ns()) / NS
            if wait > 0:
                time.sleep(wait)  # paces the receiver: its burst arrives after the pulse
            try:
                self.rig.nmea(rmc(s, self.valid) + gga(s, self.valid))
            except OSError:
                return
            s += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=3)
