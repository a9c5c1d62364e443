"""The GPS serial port: opens it (any pyserial URL or device path), stamps each chunk
with CLOCK_MONOTONIC right after `read()` returns, hands lines to a callback.

The only module that imports pyserial; the parser it feeds is `core.nmea` (pure).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from checkpoint.box import gpsport
from checkpoint.core.lines import LineSplitter
from checkpoint.errors import NmeaError

log = logging.getLogger("checkpoint.core.nmea")


_READ_TIMEOUT_S = 0.2


class SerialReader(threading.Thread):
    """Reads a GPS serial port forever, handing stamped lines to `on_line`.

    `url` is anything `serial.serial_for_url` takes: a device path (``/dev/gps0``, a
    pty slave) or a URL (``socket://host:port``, ``loop://``). Each chunk is stamped
    with `clock()` right after `read()` returns: that is the arrival tick of the
    chunk's final byte, and every line completed in the chunk gets it.

    When the port cannot be opened or a read fails (unplugged, pty closed) the reader
    logs once per outage, waits `reopen_delay_s` and tries again until `stop()`.
    `on_line` runs on this thread; it should only enqueue.

    For the status message: `connected`, `waiting` (the device does not exist yet: a
    USB receiver not plugged in), `last_error` (the current outage's cause, None
    while connected; see checkpoint.box.gpsport), `bytes_read`, `lines`, `connects`,
    `callback_errors`.
    """

    def __init__(
        self,
        url: str,
        baudrate: int,
        on_line: Callable[[str, int], None],
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        reopen_delay_s: float = 1.0,
        max_line: int = 120,
    ) -> None:
        super().__init__(name=f"nmea-reader {url}", daemon=True)
        self.url = url
        self.baudrate = baudrate
        self.reopen_delay_s = reopen_delay_s
        self.connected = False
        # True while the device path does not exist (not plugged in yet): retried.
        self.waiting = False
        self.last_error: str | None = None
        self.bytes_read = 0
        self.lines = 0
        self.connects = 0
        self.callback_errors = 0
        self.splitter = LineSplitter(max_line)
        self._on_line = on_line
        self._clock = clock
        self._stopping = threading.Event()
        self._in_outage = False

    def stop(self, timeout_s: float = 1.0) -> None:
        """Ask the thread to end and wait for it (reads time out every 0.2 s)."""
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                port = serial.serial_for_url(
                    self.url, baudrate=self.baudrate, timeout=_READ_TIMEOUT_S
                )
            except Exception as e:  # SerialException, OSError, ValueError for a bad URL
                self.waiting = gpsport.missing(self.url)
                self._outage(gpsport.open_failure(self.url, e))
            else:
                self._connected()
                try:
                    self._read_until_error(port)
                except Exception as e:  # SerialException/OSError when the device goes away
                    self._outage(f"read from {self.url} failed: {e}")
                finally:
                    self.connected = False
                    try:
                        port.close()
                    except Exception:
                        pass  # the device is already gone; nothing to release
            self._stopping.wait(self.reopen_delay_s)

    def _read_until_error(self, port: serial.SerialBase) -> None:
        self.splitter.reset()
        while not self._stopping.is_set():
            data = port.read(max(1, port.in_waiting))
            mono_ns = self._clock()
            if not data:
                continue
            self.bytes_read += len(data)
            for line, line_ns in self.splitter.feed(data, mono_ns):
                self.lines += 1
                try:
                    self._on_line(line, line_ns)
                except Exception:
                    # A consumer bug must not silence the GPS; say it once, count the rest.
                    self.callback_errors += 1
                    if self.callback_errors == 1:
                        log.exception("on_line callback failed (further failures counted)")

    def _connected(self) -> None:
        self.waiting = False
        self.connected = True
        self.connects += 1
        if self._in_outage:
            log.info("GPS port %s open again", self.url)
        else:
            log.info("GPS port %s open", self.url)
        self._in_outage = False
        self.last_error = None

    def _outage(self, message: str) -> None:
        self.last_error = message
        if not self._in_outage:
            log.warning("%s; retrying every %g s", message, self.reopen_delay_s)
            self._in_outage = True


def open_port(url: str, baudrate: int, *, timeout_s: float = 0.2) -> Any:
    """Open a GPS port for writing receiver configuration (pyserial URL or path); caller closes."""
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s)
    except (serial.SerialException, OSError, ValueError) as e:
        raise NmeaError("port", f"cannot open {url}: {e}") from None
