"""Real receiver logs (gpsd's corpus) replayed as a serial line would deliver them.

A log is a byte stream with no timing. It is cut into the receiver's seconds (one
*cycle* per named second: from just after the last time sentence of one second to
the last time sentence of the next, binary bytes included where they were) and
replayed with a PPS pulse per second and each record written when its last byte has
crossed a line at `baud` (10 bits a byte), the burst starting `start_ms` after the
pulse. Repeats continue the time: every time field (and date) is moved on by the
log's length, and the whole log is moved so its first second is a chosen UTC second,
so the box's stamps can be checked against the truth. A checksum that was wrong in
the log stays wrong.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sim.gps import checksum

NS = 1_000_000_000
BAUD_RATES = (4800, 9600, 19200, 38400, 57600, 115200)
# Next to the checkout (as tests/test_nmea.py finds it), or the shared machine path.
CORPUS = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[2] / "shared" / "nmea-corpus",
            Path("/work/shared/nmea-corpus"),
        )
        if p.is_dir()
    ),
    Path("/work/shared/nmea-corpus"),
)

_TIME = re.compile(r"\$([A-Z]{2})(RMC|GGA|ZDA|GLL|GNS),")
_TIME_FIELD = {"RMC": 1, "GGA": 1, "ZDA": 1, "GNS": 1, "GLL": 5}


def log_bytes(path: Path) -> bytes:
    """The bytes the receiver sent: the log without its leading '#' comment lines."""
    data = path.read_bytes()
    while data.startswith(b"#"):
        data = data.split(b"\n", 1)[1]
    return data


def _sentence(record: bytes) -> tuple[int, str] | None:
    k = record.rfind(b"$")
    if k < 0:
        return None
    return k, record[k:].decode("latin-1").rstrip("\r\n")


def _xor(text: str) -> int:
    return int(checksum(text), 16)


def _tod(field: str) -> int | None:
    if len(field) < 6 or not field[:6].isdigit():
        return None
    h, m, s = int(field[:2]), int(field[2:4]), int(field[4:6])
    return h * 3600 + m * 60 + s if h < 24 and m < 60 and s < 61 else None


def _date(kind: str, f: list[str]) -> dt.date | None:
    try:
        if kind == "RMC" and len(f) > 9 and len(f[9]) == 6:
            yy = int(f[9][4:])
            return dt.date(2000 + yy if yy < 80 else 1900 + yy, int(f[9][2:4]), int(f[9][:2]))
        if kind == "ZDA" and len(f) > 4 and f[4]:
            return dt.date(int(f[4]), int(f[3]), int(f[2]))
    except ValueError:
        return None
    return None


def label(record: bytes) -> tuple[int, dt.date | None] | None:
    """(second of day, date or None) a time-bearing record names, or None."""
    found = _sentence(record)
    if found is None:
        return None
    m = _TIME.match(found[1])
    if m is None:
        return None
    f = found[1].split("*")[0].split(",")
    kind = m.group(2)
    idx = _TIME_FIELD[kind]
    tod = _tod(f[idx]) if len(f) > idx else None
    return None if tod is None else (tod, _date(kind, f))


def shift(record: bytes, seconds: int) -> bytes:
    """The record with its sentence's time (and date) moved by `seconds`."""
    found = _sentence(record)
    if found is None or not seconds:
        return record
    k, text = found
    m = _TIME.match(text)
    if m is None:
        return record
    body, star, tail = text[1:].partition("*")
    f = body.split(",")
    kind = m.group(2)
    idx = _TIME_FIELD[kind]
    tod = _tod(f[idx]) if len(f) > idx else None
    if tod is None:
        return record
    date = _date(kind, f)
    if date is not None:
        when = dt.datetime.combine(date, dt.time()) + dt.timedelta(seconds=tod + seconds)
        new_tod = when.hour * 3600 + when.minute * 60 + when.second
        if kind == "RMC":
            f[9] = f"{when:%d%m%y}"
        else:
            f[2], f[3], f[4] = f"{when:%d}", f"{when:%m}", f"{when:%Y}"
    else:
        new_tod = (tod + seconds) % 86_400
    h, rest = divmod(new_tod, 3600)
    f[idx] = f"{h:02d}{rest // 60:02d}{rest % 60:02d}" + f[idx][6:]
    new_body = ",".join(f)
    if star and len(tail) >= 2 and all(c in "0123456789ABCDEFabcdef" for c in tail[:2]):
        # Keep a wrong checksum wrong: change it by exactly what the edit changed.
        cs = int(tail[:2], 16) ^ _xor(body) ^ _xor(new_body)
        tail = f"{cs:02X}" + tail[2:]
    end = record[len(record.rstrip(b"\r\n")) :]
    return record[:k] + f"${new_body}{star}{tail}".encode("latin-1") + end


@dataclass
class Cycle:
    """One second of the receiver's output: the second it names (offset from the
    log's first) and its records."""

    second: int
    records: list[bytes]

    @property
    def size(self) -> int:
        return sum(len(r) for r in self.records)


def cycles(data: bytes) -> tuple[int, list[Cycle]]:
    """Cut a log into the receiver's seconds (see the module docstring).

    Returns the POSIX second the first cycle names and the cycles.
    """
    records = re.findall(rb"[^\n]*\n|[^\n]+$", data)
    groups: list[tuple[int | None, list[bytes]]] = []
    current: int | None = None
    date: dt.date | None = None
    first_date = next(
        (lab[1] for r in records if (lab := label(r)) is not None and lab[1] is not None),
        dt.date(2000, 1, 1),
    )
    body: list[bytes] = []
    pending: list[bytes] = []
    for rec in records:
        lab = label(rec)
        if lab is None:
            pending.append(rec)
            continue
        tod, d = lab
        date = d or date or first_date
        second = int(dt.datetime.combine(date, dt.time(), dt.UTC).timestamp()) + tod
        if current is not None and second != current:
            groups.append((current, body))
            body = []
        body += pending + [rec]
        pending = []
        current = second
    groups.append((current, body + pending))
    # Seconds relative to the first; a garbage date (a cold boot) must not make a
    # cycle jump hours: anything off the expected sequence just follows its neighbour.
    out: list[Cycle] = []
    base = groups[0][0] or 0
    for sec, recs in groups:
        rel = (sec - base) if sec is not None else None
        prev = out[-1].second if out else -1
        if rel is None or not prev < rel <= prev + 10:
            rel = prev + 1
        out.append(Cycle(rel, recs))
    return base, out


def lowest_baud(cyc: list[Cycle]) -> int:
    """The lowest standard rate that carries every second's output within the second.

    The first and last cycles are left out: a capture starts with whatever the
    receiver had queued (ublox-8.log: a UBX start-up blob) and may end mid-sentence.
    """
    steady = cyc[1:-1] or cyc
    worst = max(c.size for c in steady)
    for baud in BAUD_RATES:
        if worst * 10 / baud < 1.0:
            return baud
    raise ValueError(f"{worst} bytes a second fit no standard baud rate")


class Replay:
    """One log, replayed forever as the receiver's serial line and PPS would deliver it.

    `t0` is the true UTC second the log's first second is moved to; `pulse(tick, level)`
    and `write(tick, data)` do the delivery (each called once its tick is due, in tick
    order). `passes` counts whole replays of the log.
    """

    def __init__(self, data: bytes, baud: int, t0: int, *, start_ms: int = 50) -> None:
        self.base, self.cycles = cycles(data)
        self.baud, self.t0, self.start_ns = baud, t0, start_ms * 1_000_000
        self.span = self.cycles[-1].second + 1
        self.passes = 0

    def events(self, mono_of_utc: Callable[[int], int]) -> Iterator[tuple[int, int, object]]:
        """(tick, order, what) forever: what is 1/0 (PPS level) or bytes."""
        free = 0
        r = 0
        while True:
            first = self.t0 + r * self.span
            delta = first - self.base
            out: list[tuple[int, int, object]] = []
            for s in range(self.span):
                tick = mono_of_utc((first + s) * NS)
                out += [(tick, 0, 1), (tick + 100_000_000, 0, 0)]
            for c in self.cycles:
                at = max(mono_of_utc((first + c.second) * NS) + self.start_ns, free)
                for rec in c.records:
                    data = shift(rec, delta)
                    at += len(data) * 10 * NS // self.baud
                    out.append((at, 1, data))
                free = at
            out.sort(key=lambda e: (e[0], e[1]))
            yield from out
            r += 1
            self.passes = r
