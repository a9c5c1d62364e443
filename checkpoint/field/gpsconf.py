"""u-blox receiver settings that matter for timing, as UBX frames (`checkpoint gps configure`).

What and why (u-blox 6/7/8/M8 protocol; M10 still accepts these legacy CFG messages):

* **UBX-CFG-NAV5 dynModel = 2 (stationary)**: the box is bolted to a post. The
  stationary model stops the navigation filter from chasing multipath as motion,
  which keeps the position, and so the time solution behind the PPS, steadier.
* **UBX-CFG-TP5 timepulse only when locked**: by default the receiver emits a PPS
  from power-on, free-running from its own oscillator before it has a fix. The
  daemon treats every pulse as the top of a UTC second, so an unlocked pulse would
  be a lie. We set the "unlocked" pulse length to 0 (no pulse) and the "locked"
  one to 100 ms at 1 Hz, rising edge at the second, aligned to UTC.
* **UBX-CFG-MSG NMEA ZDA on** (rate 1 on the port the message arrives on): ZDA
  carries the full date with the time, so the daemon's parser does not depend on
  RMC alone for the date.
* **UBX-CFG-MSG NMEA GSV, GSA, GLL, VTG off**: at its factory 9600 baud an M8
  sends ~770 bytes a second (RMC VTG GGA 2xGSA 4xGPGSV 3xGLGSV GLL; ~830 with the
  ZDA above), so the burst ends 0.9 s or more after the pulse, and a receiver with
  more constellations (M9: ~1300 bytes) overruns the second and drops sentences.
  The box uses only RMC, GGA and ZDA; without the satellite tables the burst is
  ~190 bytes and ends ~0.25 s after the pulse. Or, to keep the full set (someone
  wants GSV in u-center), `--baud RATE` moves the receiver's UART to a rate that
  carries it (UBX-CFG-PRT) and writes the matching `gps.baudrate` to the config.
* **UBX-CFG-CFG save**: store the above in battery-backed RAM and flash, so a power
  cycle in the field does not bring back the defaults.

Frames: ``B5 62 | class | id | length (u16 LE) | payload | CK_A CK_B``, where the
checksum is the 8-bit Fletcher sum over class, id, length and payload. The receiver
answers each CFG frame with UBX-ACK-ACK (05 01) or UBX-ACK-NAK (05 00) naming the
class and id; a receiver that is not a u-blox (MediaTek MT3339, ...) answers nothing,
and we say so instead of pretending.

This module never opens a serial port itself (only `checkpoint.core.nmea` imports
pyserial): `configure()` takes any already-open object with `write(bytes)` and
`read(n) -> bytes` (returning b"" on timeout), such as a pyserial port, a pty file or
an in-memory fake.
"""

from __future__ import annotations

import logging
import re
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("checkpoint.field.gpsconf")

SYNC = b"\xb5\x62"
CLS_CFG, CLS_ACK = 0x06, 0x05
ID_ACK_NAK, ID_ACK_ACK = 0x00, 0x01
ID_CFG_PRT, ID_CFG_MSG, ID_CFG_CFG, ID_CFG_NAV5, ID_CFG_TP5 = 0x00, 0x01, 0x09, 0x24, 0x31
NMEA_CLASS, NMEA_ZDA = 0xF0, 0x08
#: Standard NMEA message ids (class 0xF0) the box does not use: satellite tables and
#: course/position repeats that only cost serial bytes.
NMEA_UNUSED = {"GSV": 0x03, "GSA": 0x02, "GLL": 0x01, "VTG": 0x05}
#: UART rates a u-blox accepts in CFG-PRT.
BAUD_RATES = (4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
UART1 = 1
PRT_MODE_8N1 = 0x000008D0  # charLen 8 bit, no parity, 1 stop bit
PROTO_UBX_NMEA = 0x0003
DYN_STATIONARY = 2

# CFG-TP5 flags (u-blox 8 receiver description, UBX-CFG-TP5).
TP_ACTIVE = 0x01
TP_LOCK_GPS_FREQ = 0x02  # use the *Lock values once locked to GNSS time
TP_LOCKED_OTHER_SET = 0x04  # ... and the plain values before: length 0 = no pulse
TP_IS_LENGTH = 0x10  # pulseLenRatio is a length in µs, not a duty ratio
TP_ALIGN_TO_TOW = 0x20  # pulses at whole seconds of the time grid
TP_POLARITY_RISING = 0x40  # rising edge at the top of the second
TP_GRID_UTC = 0x000  # bits 7..10 = 0: align to UTC, not GPS time


class Port(Protocol):
    def write(self, data: bytes) -> int | None: ...

    def read(self, n: int) -> bytes: ...


def checksum(body: bytes) -> bytes:
    """UBX 8-bit Fletcher checksum (CK_A, CK_B) over class, id, length and payload."""
    a = b = 0
    for byte in body:
        a = (a + byte) & 0xFF
        b = (b + a) & 0xFF
    return bytes((a, b))


def frame(cls: int, msg_id: int, payload: bytes = b"") -> bytes:
    """One complete UBX frame."""
    body = struct.pack("<BBH", cls, msg_id, len(payload)) + payload
    return SYNC + body + checksum(body)


def cfg_nav5_stationary() -> bytes:
    """UBX-CFG-NAV5 with only the dynamic-model bit in the mask: dynModel = stationary."""
    payload = bytearray(36)
    struct.pack_into("<HB", payload, 0, 0x0001, DYN_STATIONARY)
    return frame(CLS_CFG, ID_CFG_NAV5, bytes(payload))


def cfg_tp5_locked_only(
    *, pulse_len_us: int = 100_000, period_us: int = 1_000_000, cable_delay_ns: int = 50
) -> bytes:
    """UBX-CFG-TP5 for TIMEPULSE (index 0): 1 PPS only while locked to GNSS time."""
    flags = (
        TP_ACTIVE
        | TP_LOCK_GPS_FREQ
        | TP_LOCKED_OTHER_SET
        | TP_IS_LENGTH
        | TP_ALIGN_TO_TOW
        | TP_POLARITY_RISING
        | TP_GRID_UTC
    )
    payload = struct.pack(
        "<BBHhhIIIIiI",
        0,  # tpIdx: TIMEPULSE
        1,  # message version (u-blox 8); older receivers read it as reserved
        0,  # reserved
        cable_delay_ns,  # antCableDelay (u-blox default 50 ns)
        0,  # rfGroupDelay (read-only on the receiver)
        period_us,  # freqPeriod while NOT locked
        period_us,  # freqPeriodLock
        0,  # pulseLenRatio while NOT locked: 0 = no pulse without a fix
        pulse_len_us,  # pulseLenRatioLock
        0,  # userConfigDelay
        flags,
    )
    return frame(CLS_CFG, ID_CFG_TP5, payload)


def cfg_msg_rate(msg_class: int, msg_id: int, rate: int) -> bytes:
    """UBX-CFG-MSG, short form: output rate of one message on the current port."""
    return frame(CLS_CFG, ID_CFG_MSG, bytes((msg_class, msg_id, rate)))


def cfg_prt_uart(baudrate: int, port_id: int = UART1) -> bytes:
    """UBX-CFG-PRT for a UART: 8N1 at `baudrate`, UBX and NMEA in and out."""
    if baudrate not in BAUD_RATES:
        raise ValueError(f"baud rate must be one of {BAUD_RATES}, got {baudrate}")
    payload = struct.pack(
        "<BBHIIHHHH",
        port_id,
        0,  # reserved
        0,  # txReady: off
        PRT_MODE_8N1,
        baudrate,
        PROTO_UBX_NMEA,  # inProtoMask
        PROTO_UBX_NMEA,  # outProtoMask
        0,  # flags
        0,  # reserved
    )
    return frame(CLS_CFG, ID_CFG_PRT, payload)


def cfg_save() -> bytes:
    """UBX-CFG-CFG: save all sections to BBR, flash, EEPROM and SPI flash."""
    return frame(CLS_CFG, ID_CFG_CFG, struct.pack("<IIIB", 0, 0x0000FFFF, 0, 0x17))


@dataclass(frozen=True)
class Setting:
    """One frame to send and what it is for."""

    name: str
    why: str
    data: bytes

    @property
    def cls_id(self) -> tuple[int, int]:
        return self.data[2], self.data[3]


def timing_settings(*, quiet: bool = True) -> list[Setting]:
    """The frames `checkpoint gps configure` sends, in order (save last).

    `quiet`: also turn off the NMEA sentences the box does not use (GSV GSA GLL VTG),
    so the output fits the factory 9600 baud with room to spare.
    """
    out = [
        Setting("CFG-NAV5", "dynamic model stationary", cfg_nav5_stationary()),
        Setting("CFG-TP5", "PPS only when locked, 100 ms, rising, UTC", cfg_tp5_locked_only()),
        Setting("CFG-MSG", "NMEA ZDA on, every fix", cfg_msg_rate(NMEA_CLASS, NMEA_ZDA, 1)),
    ]
    if quiet:
        for name, msg in NMEA_UNUSED.items():
            why = f"NMEA {name} off (not used; costs serial time)"
            out.append(Setting("CFG-MSG", why, cfg_msg_rate(NMEA_CLASS, msg, 0)))
    return out + [save_setting()]


def save_setting() -> Setting:
    """The last frame: keep the settings over a power cycle."""
    return Setting("CFG-CFG", "save to battery-backed RAM and flash", cfg_save())


def baud_setting(baudrate: int) -> Setting:
    """Move the receiver's UART1 to `baudrate` (its ACK may come at either rate)."""
    return Setting("CFG-PRT", f"UART1 at {baudrate} baud, 8N1, UBX+NMEA", cfg_prt_uart(baudrate))


def hexdump(data: bytes) -> str:
    return " ".join(f"{b:02X}" for b in data)


class AckScanner:
    """Finds UBX-ACK-ACK/NAK frames in a byte stream that is mostly NMEA text."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bool, int, int]]:
        """Add bytes; return (acked, class, id) for every complete, valid ACK frame."""
        self._buf += data
        out: list[tuple[bool, int, int]] = []
        while True:
            k = self._buf.find(SYNC)
            if k < 0:
                # Keep a trailing 0xB5: it may be the first half of the next sync.
                del self._buf[: max(0, len(self._buf) - 1)]
                return out
            del self._buf[:k]
            if len(self._buf) < 6:
                return out
            cls, msg_id, length = struct.unpack_from("<BBH", self._buf, 2)
            if length > 512:  # not a frame we sent for: resync past this sync
                del self._buf[:2]
                continue
            total = 6 + length + 2
            if len(self._buf) < total:
                return out
            body = bytes(self._buf[2 : 6 + length])
            ok = checksum(body) == bytes(self._buf[6 + length : total])
            if ok and cls == CLS_ACK and msg_id in (ID_ACK_ACK, ID_ACK_NAK) and length == 2:
                out.append((msg_id == ID_ACK_ACK, body[4], body[5]))
                del self._buf[:total]
            else:
                del self._buf[:2]


@dataclass(frozen=True)
class Result:
    name: str
    outcome: str  # "ack", "nak", "no answer"

    @property
    def ok(self) -> bool:
        return self.outcome == "ack"


def configure(
    port: Port,
    settings: Iterable[Setting] | None = None,
    *,
    timeout_s: float = 1.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Result]:
    """Send each setting and wait up to `timeout_s` for its ACK; one `Result` each.

    Stops waiting early on a NAK. After two frames with no answer at all the
    receiver is taken not to speak UBX and the rest are reported "not sent".
    """
    results: list[Result] = []
    silent = 0
    scanner = AckScanner()
    for setting in timing_settings() if settings is None else settings:
        if silent >= 2:
            results.append(Result(setting.name, "not sent"))
            continue
        port.write(setting.data)
        flush = getattr(port, "flush", None)
        if callable(flush):
            flush()
        outcome = "no answer"
        deadline = clock() + timeout_s
        while outcome == "no answer" and clock() < deadline:
            chunk = port.read(256)
            if not chunk:
                sleep(0.01)  # a port without a read timeout returns at once
                continue
            for acked, cls, msg_id in scanner.feed(chunk):
                if (cls, msg_id) == setting.cls_id:
                    outcome = "ack" if acked else "nak"
        silent = silent + 1 if outcome == "no answer" else 0
        log.info("%s (%s): %s", setting.name, setting.why, outcome)
        results.append(Result(setting.name, outcome))
    return results


_TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")
_BAUD_KEY = re.compile(r"^(\s*baudrate\s*=\s*)([^#\n]*?)(\s*(#.*)?)$")


def with_baudrate(config_text: str, baudrate: int) -> str:
    """The box config text with ``gps.baudrate`` set, everything else left as written."""
    lines = config_text.splitlines(keepends=True)
    table: str | None = None
    header: int | None = None
    for i, line in enumerate(lines):
        m = _TABLE.match(line)
        if m:
            table = m.group(1)
            if table == "gps":
                header = i
            continue
        if table == "gps":
            k = _BAUD_KEY.match(line.rstrip("\n"))
            if k:
                end = "\n" if line.endswith("\n") else ""
                lines[i] = f"{k.group(1)}{baudrate}{k.group(3)}{end}"
                return "".join(lines)
    if header is not None:
        lines.insert(header + 1, f"baudrate = {baudrate}\n")
        return "".join(lines)
    sep = "" if not config_text or config_text.endswith("\n") else "\n"
    return f"{config_text}{sep}\n[gps]\nbaudrate = {baudrate}\n"
