"""Feed chrony with the daemon's GPS-disciplined time, through chrony's SOCK refclock.

chrony (firmware_config/chrony-checkpoint.conf) is told::

    refclock SOCK /run/chrony.checkpoint.sock refid GPS ...

chronyd creates and listens on that datagram socket; we send it `struct sock_sample`
(chrony's refclock_sock.c)::

    struct sock_sample {
      struct timeval tv;   /* system time (CLOCK_REALTIME) of the measurement */
      double offset;       /* true time - system time, seconds */
      int pulse;           /* non-zero: PPS-only sample, seconds come from elsewhere */
      int leap;            /* 0 normal, 1 insert, 2 delete a leap second */
      int _pad;
      int magic;           /* 0x534f434b, "SOCK" */
    };

in the machine's native layout: chrony rejects a datagram whose length is not
`sizeof(struct sock_sample)`: 40 bytes on 64-bit Linux, 32 on 32-bit Raspberry Pi OS
(armhf, 32-bit time_t), 40 on a 32-bit userland built with 64-bit time_t.

Why feed chrony at all: a Pi has no RTC (the Pi 5's needs a battery), so at dawn on a
hill with no network the system clock is wrong, and TLS to the broker (certificate
validity) and log times need it. The daemon's own stamps never use the system clock
once locked: its model maps the kernel's CLOCK_MONOTONIC ticks to UTC.

The catch, and why the chrony fragment keeps slewing gentle: chrony corrects the
system clock by changing the kernel's clock frequency, and CLOCK_MONOTONIC runs at
that same adjusted rate (only CLOCK_MONOTONIC_RAW does not). So every slew chrony
makes is a frequency change the daemon's model must track from its PPS samples. The
model measures CLOCK_MONOTONIC against PPS directly, so this is no feedback of its own
output, but a fast frequency change is "wander" to it and widens its bound. Hence in
the fragment: a low `maxslewrate`, big offsets stepped (a step moves CLOCK_REALTIME
only, never CLOCK_MONOTONIC), and a drift file so chrony starts near its final
frequency instead of walking to it after every boot.

Samples are sent only while the daemon's clock is ``locked`` (PPS-disciplined): chrony
is better off with nothing than with the NMEA-grade or unsynced fallbacks.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("checkpoint.box.chronysock")

SOCK_MAGIC = 0x534F434B
DEFAULT_PATH = "/run/chrony.checkpoint.sock"
LEAP_NONE, LEAP_INSERT, LEAP_DELETE = 0, 1, 2


def sample_format(time_bits: int | None = None) -> struct.Struct:
    """The native `struct sock_sample` layout.

    `time_bits` None: the platform's `long` (time_t and suseconds_t are long on Linux
    unless a 32-bit userland was built with 64-bit time_t: then pass 64).
    """
    if time_bits is None:
        return struct.Struct("@lldiiii")
    if time_bits == 64:
        return struct.Struct("@qqdiiii")
    if time_bits == 32:
        return struct.Struct("@iidiiii")
    raise ValueError(f"time_bits must be 32 or 64, got {time_bits}")


@dataclass(frozen=True)
class Sample:
    """One measurement: at system time `realtime_ns`, true UTC was `realtime_ns + offset_ns`."""

    realtime_ns: int
    offset_ns: int
    leap: int = LEAP_NONE
    pulse: bool = False


def pack(sample: Sample, *, time_bits: int | None = None) -> bytes:
    """`sample` as chrony's `struct sock_sample` bytes."""
    if sample.leap not in (LEAP_NONE, LEAP_INSERT, LEAP_DELETE):
        raise ValueError(f"leap must be 0, 1 or 2, got {sample.leap}")
    sec, nsec = divmod(sample.realtime_ns, 1_000_000_000)
    # timeval has µs; the lost sub-µs part is moved into the offset so tv + offset
    # still names the true time to the ns.
    usec, rest_ns = divmod(nsec, 1000)
    offset_s = (sample.offset_ns + rest_ns) / 1e9
    return sample_format(time_bits).pack(
        sec, usec, offset_s, int(bool(sample.pulse)), sample.leap, 0, SOCK_MAGIC
    )


def unpack(data: bytes, *, time_bits: int | None = None) -> Sample:
    """Inverse of `pack` (for tests and debugging); raises ValueError on a bad magic."""
    sec, usec, offset_s, pulse, leap, _pad, magic = sample_format(time_bits).unpack(data)
    if magic != SOCK_MAGIC:
        raise ValueError(f"bad magic {magic:#x}")
    return Sample(sec * 1_000_000_000 + usec * 1000, round(offset_s * 1e9), leap, bool(pulse))


def measure(
    utc_at: Callable[[int], int | None],
    *,
    mono: Callable[[], int] = time.monotonic_ns,
    real: Callable[[], int] = time.time_ns,
) -> Sample | None:
    """Pair the system clock with the daemon's UTC now; None if `utc_at` has no answer.

    `utc_at(mono_ns)` is the daemon's model (UTC ns of a CLOCK_MONOTONIC tick, or None
    unless locked). CLOCK_REALTIME is read between two CLOCK_MONOTONIC reads and paired
    with their midpoint, so the pairing error is half the read gap (~µs on a Pi).
    """
    m1 = mono()
    r = real()
    m2 = mono()
    utc = utc_at((m1 + m2) // 2)
    if utc is None:
        return None
    return Sample(realtime_ns=r, offset_ns=utc - r)


def _name(lookup: Callable[[int], Any], ident: int) -> str:
    """A user or group name for `ident` (from pwd.getpwuid or grp.getgrgid), else the number."""
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


class ChronySocket:
    """Sends samples to chronyd's SOCK refclock; never blocks, never raises on send.

    chronyd not running (no socket, or nobody listening) is normal on a bench box:
    it is logged once per outage (INFO) and `send` returns False. Any other failure is
    a WARNING naming its cause: chiefly EACCES, the socket left as chronyd makes it
    (root, 0755) without the chrony drop-in that `checkpoint install` ships.
    """

    def __init__(self, path: str = DEFAULT_PATH, *, time_bits: int | None = None) -> None:
        self.path = path
        self.time_bits = time_bits
        self.sent = 0
        self.failed = 0
        self._down = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def send(self, sample: Sample) -> bool:
        """Send one sample; True if chronyd's socket took it."""
        try:
            self._sock.sendto(pack(sample, time_bits=self.time_bits), self.path)
        except OSError as e:
            self.failed += 1
            if not self._down:
                quiet = e.errno in (errno.ENOENT, errno.ECONNREFUSED)
                log.log(logging.INFO if quiet else logging.WARNING, "%s", self.why(e))
                self._down = True
            return False
        if self._down:
            log.info("chrony socket %s accepting samples again", self.path)
            self._down = False
        self.sent += 1
        return True

    def why(self, err: OSError) -> str:
        """What a failed send means and what to do, by its errno."""
        where = f"chrony socket {self.path}"
        if err.errno in (errno.EACCES, errno.EPERM):
            try:
                st = os.stat(self.path)
                owner = f"owned by {_name(pwd.getpwuid, st.st_uid)}:"
                owner += f"{_name(grp.getgrgid, st.st_gid)} mode {stat.S_IMODE(st.st_mode):04o}"
            except OSError:
                owner = "owner unknown"
            return (
                f"{where}: permission denied ({owner}); this process runs as "
                f"{_name(pwd.getpwuid, os.geteuid())}. chronyd creates the socket as root "
                "with mode 0755: the drop-in /etc/systemd/system/chrony.service.d/"
                "checkpoint.conf (sudo checkpoint install) gives it group checkpoint, mode "
                "0660; install it, then sudo systemctl restart chrony"
            )
        if err.errno == errno.ENOENT:
            return (
                f"{where}: no such socket: chronyd is not running, or runs without the "
                "checkpoint refclock (/etc/chrony/conf.d/checkpoint.conf; sudo systemctl "
                "restart chrony after installing it)"
            )
        if err.errno == errno.ECONNREFUSED:
            return (
                f"{where}: nobody listening: chronyd stopped and left its socket behind "
                "(sudo systemctl status chrony)"
            )
        return f"{where}: {err.strerror or err}"

    def close(self) -> None:
        self._sock.close()
