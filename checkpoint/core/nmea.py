"""GPS NMEA: one line stamped at arrival → a validated `Fix` (pure).

The GPS input has three layers, so the parts that decide what a sentence means are
pure and testable with known-truth data, and the part that touches hardware is thin:

* `core/lines.py` (pure): bytes → complete lines, each stamped with the arrival tick of
  the chunk that completed it.
* `NmeaParser` here (pure): one line → a `Fix` or None, counting why lines were rejected.
* `box/gps_serial.py` (thread): opens the port (any pyserial URL or device path), stamps
  each chunk with CLOCK_MONOTONIC right after `read()` returns, hands lines on; the
  only module that imports `serial` (pyserial).

NMEA sentences are parsed by hand: a box reads about a dozen lines a second for ever,
and a replay millions.
"""

from __future__ import annotations

import collections
import datetime
import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

from checkpoint.errors import NmeaError

log = logging.getLogger("checkpoint.core.nmea")


@dataclass(frozen=True, slots=True)
class Fix:
    """One accepted time-bearing sentence (RMC, ZDA or GGA).

    `utc_s` is the POSIX second the sentence names; `mono_ns` is the arrival
    tick (CLOCK_MONOTONIC ns) of the line's final byte.

    `frac_ns` is the fractional part the sentence states (``hhmmss.ss``), `valid`
    whether the receiver vouches for a fix (never use `valid=False` as time), `kind`
    is ``"RMC"``/``"ZDA"``/``"GGA"``, `dated` is False when the date was borrowed from
    an earlier RMC/ZDA (GGA carries none). `leap` marks a ``23:59:60`` sentence, whose
    `utc_s` is that of the following ``00:00:00`` (POSIX has no number for :60).
    `rollover_fixed` is True when 1024 GPS weeks were added to the receiver's date.
    `talker` is the two-letter talker ID (``GP``, ``GN``, ...).
    """

    mono_ns: int
    utc_s: int
    frac_ns: int
    valid: bool
    kind: str
    dated: bool
    leap: bool = False
    rollover_fixed: bool = False
    talker: str = ""


# --------------------------------------------------------------------------- parsing

# u-blox's rollover rule: firmware that predates the April 2019 GPS week rollover
# reports dates 1024 weeks early, so any date on or before 2019-04-06 gets 1024 weeks
# added. Expressed as the earliest date believed; replays of older logs pass their own.
DEFAULT_NOT_BEFORE = datetime.date(2019, 4, 7)
ROLLOVER_DAYS = 1024 * 7
GPS_EPOCH = datetime.date(1980, 1, 6)
# The day this code was released; dates further than 20 years past it are not believed.
RELEASE_DATE = datetime.date(2026, 11, 25)
DEFAULT_NOT_AFTER = RELEASE_DATE.replace(year=RELEASE_DATE.year + 20)

TIME_KINDS = frozenset({"RMC", "ZDA", "GGA"})
# Fewest data fields of a complete sentence (RMC before NMEA 2.3 has 11, GGA 14,
# ZDA 6 but some receivers stop after the year).
_MIN_FIELDS = {"RMC": 11, "GGA": 14, "ZDA": 4}
# RMC mode indicator (NMEA 2.3+): autonomous, differential, float RTK, RTK, precise.
# E (dead reckoning), M (manual), S (simulator) and N (no fix) are not time.
_RMC_GOOD_MODES = frozenset("ADFRP")
# GGA quality: GPS, DGPS, PPS, RTK fixed, RTK float; 6 DR, 7 manual, 8 simulator are not.
_GGA_GOOD_QUALITY = frozenset({1, 2, 3, 4, 5})

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_DAY_S = 86_400
# A proprietary sentence ("$P" and its id), else a talker and a sentence type.
_HEAD = re.compile(r"\$(?:(P[A-Z0-9]*)|([A-Z]{2})([A-Z]{3}),)")
# The usual line, in one match: a talker sentence (not "$P"), printable ASCII, no other
# '$'. For these `_parse`'s first steps cannot fail or resync; used for the sentences
# we ignore, most of a receiver's output.
_PLAIN = re.compile(r"\$[A-OQ-Z][A-Z]([A-Z]{3}),[\x20-\x23\x25-\x7e]*")
# A well-formed time sentence, in one match: talker, kind, the data fields, checksum.
# `_parse` takes it on this path when the checksum and field count are right too, and
# otherwise goes the long way, which names what is wrong.
_FRAMED = re.compile(
    r"\$([A-OQ-Z][A-Z])(RMC|GGA|ZDA),([\x20-\x23\x25-\x29\x2b-\x7e]*)\*([0-9A-Fa-f]{2})"
)
_CHECKSUM_TAIL = re.compile(r"\*[0-9A-Fa-f]{2}")
_HHMMSS = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})(?:\.([0-9]+))?")
_DDMMYY = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})")
_ONE_OR_TWO_DIGITS = re.compile(r"[0-9]{1,2}")
_FOUR_DIGITS = re.compile(r"[0-9]{4}")
# Where each field used is, counted from the first after the sentence id; a field past
# the end of a short sentence reads as empty.
_RMC_TIME, _RMC_STATUS, _RMC_DATE, _RMC_MODE = 0, 1, 8, 11
_GGA_TIME, _GGA_QUALITY = 0, 5
_ZDA_TIME, _ZDA_DAY, _ZDA_MONTH, _ZDA_YEAR = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class _TimeOfDay:
    second: int  # 0..86400; 86400 is 23:59:60
    frac_ns: int

    @property
    def leap(self) -> bool:
        return self.second == _DAY_S


# Not frozen, unlike `_TimeOfDay` (remembered and shared by `_time_of_day`): a frozen
# dataclass pays an object.__setattr__ per field, and these two are made for every time
# sentence. They are replaced, never changed.


@dataclass(slots=True)
class _Dated:
    """The last RMC/ZDA that gave a date, for GGA to borrow."""

    utc_s: int
    mono_ns: int
    valid: bool
    rollover_fixed: bool


@dataclass(slots=True)
class _Status:
    """The last RMC/GGA fix status, for ZDA (which has none) to borrow."""

    second: int
    mono_ns: int
    valid: bool


class NmeaParser:
    """Validates NMEA lines into `Fix`es; pure, no I/O, never raises on bad input.

    Uses RMC, ZDA and GGA from any talker (GP, GN, GL, GA, GB, BD, ...), checksum
    required. Every line fed ends up in exactly one place:

    * a returned `Fix` (counted in `accepted`; with `valid=False` also in
      ``rejects["no_fix"]``: the receiver is alive but vouches for no fix);
    * ``rejects[tag]`` with None returned, tags: ``garbage`` (no ``$``, non-printable
      bytes, not a sentence header), ``no_checksum``, ``checksum`` (mismatch or spliced
      sentences), ``truncated`` (too few fields or cut-off checksum), ``parse``
      (malformed field), ``no_time`` (empty time, usual before first fix), ``no_date``
      (RMC/ZDA without date, GGA with no recent dated sentence), ``absurd_date``
      (impossible calendar date, before the GPS epoch, after `not_after`, or a :60
      that is not 23:59:60 on a month's last day), ``internal`` (a bug here; never
      expected);
    * ``ignored[type]`` for sentences we do not use (GSV, GSA, VTG, GLL, TXT,
      proprietary ``$P...``); they are not errors and their checksum is not checked.

    Decisions, documented because they shape what the clock sees:

    * Sentences are parsed by hand, fields as text (pynmea2's `timestamp` goes through
      float and silently returns the raw string on errors, e.g. for second 60). Only
      RMC, ZDA and GGA have their checksum computed; every other line costs a look at
      its header.
    * Leap second: ``23:59:60`` gives ``leap=True`` and `utc_s` = POSIX(23:59:59) + 1,
      the same number as the next 00:00:00, since POSIX has no value for :60.
    * Week rollover (u-blox's rule): a date before `not_before` (default 2019-04-07,
      i.e. on or before 2019-04-06) gets 1024 weeks added, repeatedly (a receiver stuck
      in the 1999 epoch), and `rollover_fixed` is set. So 1999-08-22 becomes 2019-04-07
      and a cold-boot garbage 2006-12-16 becomes 2026-08-01: the rule cannot tell those
      apart, and the clock layer refuses dates that jump. Two-digit RMC years 00-79 are
      20xx, 80-99 are 19xx; dates before the GPS epoch (1980-01-06) are
      ``absurd_date``. After correction a date past `not_after` (default
      `RELEASE_DATE` + 20 years) is ``absurd_date``. Replaying a log recorded before
      2019 needs `not_before` set to before its capture date. Old firmware rolls over
      again on 2038-11-21; by then `not_before` must move.
    * A GGA borrows the date of the latest RMC/ZDA if that sentence's time is within
      `carry_s` seconds (across midnight too) and it arrived within `carry_s`; it is
      valid only if its own quality is 1-5 *and* the borrowed date was from a valid
      sentence. A ZDA has no status field: it is valid only if the latest RMC/GGA,
      within `carry_s` in time-of-day and arrival, was valid.
    * A ``$`` inside a line restarts the sentence there (``$`` is reserved as the
      start delimiter); counted in `resynced`. The checksum still has to match.
    """

    def __init__(
        self,
        *,
        not_before: datetime.date = DEFAULT_NOT_BEFORE,
        not_after: datetime.date = DEFAULT_NOT_AFTER,
        carry_s: int = 2,
    ) -> None:
        if not GPS_EPOCH < not_before < not_after:
            raise ValueError(f"need {GPS_EPOCH} < not_before < not_after")
        self.not_before = not_before
        self.not_after = not_after
        self.carry_s = carry_s
        self.accepted = 0
        self.valid = 0
        self.rejects: collections.Counter[str] = collections.Counter()
        self.ignored: dict[str, int] = {}
        self.resynced = 0
        self.last_kind: str | None = None
        self.last_mono_ns: int | None = None
        self.last_valid_mono_ns: int | None = None
        self.last_reject: NmeaError | None = None
        self._dated: _Dated | None = None
        self._status: _Status | None = None

    def stats(self) -> dict[str, Any]:
        """Counters for the box's status message."""
        return {
            "accepted": self.accepted,
            "valid": self.valid,
            "rejects": dict(self.rejects),
            "ignored": sum(self.ignored.values()),
            "resynced": self.resynced,
            "last_kind": self.last_kind,
            "last_valid_mono_ns": self.last_valid_mono_ns,
        }

    def feed(self, line: str, mono_ns: int) -> Fix | None:
        """Parse one line that arrived at `mono_ns`; a `Fix`, or None (reason counted)."""
        self.last_mono_ns = mono_ns
        plain = _PLAIN.fullmatch(line)
        if plain is not None:
            kind = plain[1]
            if kind not in TIME_KINDS:
                # A sentence we do not use (most lines), settled in one match. A plain
                # dict: Counter's `+=` costs twice as much on a dozen lines a second.
                ignored = self.ignored
                ignored[kind] = ignored.get(kind, 0) + 1
                return None
        try:
            fix = self._parse(line, mono_ns)
        except NmeaError as e:
            self.rejects[e.reason] += 1
            self.last_reject = e
            return None
        except Exception as e:  # the contract is "never raises on input": count the bug
            self.rejects["internal"] += 1
            if self.rejects["internal"] == 1:
                log.warning("internal error parsing %r (further ones counted)", line, exc_info=True)
            self.last_reject = NmeaError("internal", repr(e))
            return None
        if fix is None:
            return None
        self.accepted += 1
        self.last_kind = fix.kind
        if fix.valid:
            self.valid += 1
            self.last_valid_mono_ns = mono_ns
        else:
            self.rejects["no_fix"] += 1
        return fix

    # -- framing -------------------------------------------------------------------

    def _parse(self, line: str, mono_ns: int) -> Fix | None:
        framed = _FRAMED.fullmatch(line)
        if framed is not None:
            talker, kind, body, want = framed.groups()
            data = body.split(",")
            if int(want, 16) == _checksum(line[1:-3]) and len(data) >= _MIN_FIELDS[kind]:
                return self._sentence(kind, data, talker, mono_ns)
        s = line.strip()
        start = s.rfind("$")
        if start < 0:
            raise NmeaError("garbage", "no '$'")
        if start > 0:
            self.resynced += 1
            s = s[start:]
        # ASCII and printable: nothing outside 0x20-0x7e.
        if not (s.isascii() and s.isprintable()):
            raise NmeaError("garbage", "non-printable bytes")
        head = _HEAD.match(s)
        if head is None:
            raise NmeaError("garbage", "not a sentence header")
        proprietary, talker, kind = head.groups()
        if proprietary is not None:
            # Truncated so garbage after "$P" cannot grow the counter without bound.
            self.ignored[proprietary[:5]] = self.ignored.get(proprietary[:5], 0) + 1
            return None
        if kind not in TIME_KINDS:
            self.ignored[kind] = self.ignored.get(kind, 0) + 1
            return None
        star = self._check_frame(s, kind)
        # "$TTKKK," then the fields up to the '*'; the checksum covers what lies
        # between '$' and '*'.
        data = s[7:star].split(",")
        want, got = int(s[star + 1 :], 16), _checksum(s[1:star])
        if want != got:
            raise NmeaError("checksum", f"checksum does not match: {want:02X} != {got:02X}")
        if len(data) < _MIN_FIELDS[kind]:
            raise NmeaError("truncated", f"{kind} has {len(data)} fields")
        return self._sentence(kind, data, talker, mono_ns)

    def _sentence(self, kind: str, data: list[str], talker: str, mono_ns: int) -> Fix:
        if kind == "RMC":
            return self._rmc(data, talker, mono_ns)
        if kind == "ZDA":
            return self._zda(data, talker, mono_ns)
        return self._gga(data, talker, mono_ns)

    @staticmethod
    def _check_frame(s: str, kind: str) -> int:
        """Where the '*' is; tells a missing checksum from a cut-off or spliced one."""
        stars = s.count("*")
        if stars == 0:
            if s.count(",") < _MIN_FIELDS[kind]:
                raise NmeaError("truncated", "cut off before checksum")
            raise NmeaError("no_checksum")
        if stars > 1:
            raise NmeaError("checksum", "several '*': spliced sentences")
        star = s.index("*")
        tail = s[star:]
        if len(tail) < 3:
            raise NmeaError("truncated", "cut off in checksum")
        if len(tail) > 3 or not _CHECKSUM_TAIL.fullmatch(tail):
            raise NmeaError("garbage", f"bad checksum field {tail!r}")
        return star

    # -- sentences -----------------------------------------------------------------

    def _rmc(self, data: list[str], talker: str, mono_ns: int) -> Fix:
        tod = _time_of_day(data[_RMC_TIME])
        raw_date = data[_RMC_DATE]
        if not raw_date:
            raise NmeaError("no_date", "RMC date empty")
        date, fixed = _rmc_date(raw_date, self.not_before, self.not_after)
        if tod.leap:
            _check_leap(date)
        mode = _field(data, _RMC_MODE)  # absent before NMEA 2.3
        valid = data[_RMC_STATUS] == "A" and (not mode or mode in _RMC_GOOD_MODES)
        utc_s = _posix(date, tod)
        self._status = _Status(tod.second, mono_ns, valid)
        self._dated = _Dated(utc_s, mono_ns, valid, fixed)
        return Fix(mono_ns, utc_s, tod.frac_ns, valid, "RMC", True, tod.leap, fixed, talker)

    def _zda(self, data: list[str], talker: str, mono_ns: int) -> Fix:
        tod = _time_of_day(data[_ZDA_TIME])
        raw = [data[_ZDA_DAY], data[_ZDA_MONTH], data[_ZDA_YEAR]]
        if not all(raw):
            raise NmeaError("no_date", "ZDA date empty")
        day_s, month_s, year_s = raw
        if not (
            _ONE_OR_TWO_DIGITS.fullmatch(day_s)
            and _ONE_OR_TWO_DIGITS.fullmatch(month_s)
            and _FOUR_DIGITS.fullmatch(year_s)
        ):
            raise NmeaError("parse", f"ZDA date {raw!r}")
        date, fixed = self._calendar(int(year_s), int(month_s), int(day_s), tod)
        status = self._status
        valid = (
            status is not None
            and status.valid
            and _circular_distance(status.second, tod.second) <= self.carry_s
            and abs(mono_ns - status.mono_ns) <= self.carry_s * 1_000_000_000
        )
        utc_s = _posix(date, tod)
        self._dated = _Dated(utc_s, mono_ns, valid, fixed)
        return Fix(mono_ns, utc_s, tod.frac_ns, valid, "ZDA", True, tod.leap, fixed, talker)

    def _gga(self, data: list[str], talker: str, mono_ns: int) -> Fix:
        tod = _time_of_day(data[_GGA_TIME])
        raw_quality = data[_GGA_QUALITY]
        if raw_quality and not raw_quality.isdigit():
            raise NmeaError("parse", f"GGA quality {raw_quality!r}")
        quality_ok = bool(raw_quality) and int(raw_quality) in _GGA_GOOD_QUALITY
        # Status first: a ZDA later in this epoch needs it even if we cannot date this GGA.
        self._status = _Status(tod.second, mono_ns, quality_ok)
        dated = self._dated
        if dated is None or abs(mono_ns - dated.mono_ns) > self.carry_s * 1_000_000_000:
            raise NmeaError("no_date", "no recent RMC/ZDA to take the date from")
        day_start = dated.utc_s - dated.utc_s % _DAY_S
        utc_s = day_start + tod.second
        # Across midnight the borrowed date belongs to the neighbouring day.
        if utc_s - dated.utc_s > _DAY_S // 2:
            utc_s -= _DAY_S
        elif dated.utc_s - utc_s > _DAY_S // 2:
            utc_s += _DAY_S
        if abs(utc_s - dated.utc_s) > self.carry_s:
            raise NmeaError("no_date", "latest RMC/ZDA is too far from this time")
        if tod.leap:
            _check_leap(_date_of(utc_s - 1))
        valid = quality_ok and dated.valid
        return Fix(
            mono_ns, utc_s, tod.frac_ns, valid, "GGA", False, tod.leap, dated.rollover_fixed, talker
        )

    def _calendar(
        self, year: int, month: int, day: int, tod: _TimeOfDay
    ) -> tuple[datetime.date, bool]:
        """Validate a receiver's date, applying the week-rollover rule."""
        date, fixed = _believed_date(year, month, day, self.not_before, self.not_after)
        if tod.leap:
            _check_leap(date)
        return date, fixed


# A receiver names the same date all day and the same time in each second's RMC and
# GGA: the pure conversions below remember their last few answers (errors are raised
# again each time, never remembered).


@functools.lru_cache(maxsize=8)
def _rmc_date(text: str, not_before: datetime.date, not_after: datetime.date) -> tuple:
    """An RMC date field (ddmmyy) → (date, rollover_fixed); raises NmeaError."""
    m = _DDMMYY.fullmatch(text)
    if m is None:
        raise NmeaError("parse", f"RMC date {text!r}")
    day, month, yy = (int(g) for g in m.groups())
    year = 2000 + yy if yy < 80 else 1900 + yy
    return _believed_date(year, month, day, not_before, not_after)


@functools.lru_cache(maxsize=8)
def _believed_date(
    year: int, month: int, day: int, not_before: datetime.date, not_after: datetime.date
) -> tuple[datetime.date, bool]:
    """A receiver's calendar date after the week-rollover rule, and whether it applied."""
    try:
        date = datetime.date(year, month, day)
    except ValueError:
        raise NmeaError("absurd_date", f"{year:04d}-{month:02d}-{day:02d}") from None
    if date < GPS_EPOCH:
        raise NmeaError("absurd_date", f"{date} is before the GPS epoch")
    fixed = False
    while date < not_before:  # ends: the GPS epoch check bounds the rounds
        date += datetime.timedelta(days=ROLLOVER_DAYS)
        fixed = True
    if date > not_after:
        raise NmeaError("absurd_date", f"{date} is after {not_after}")
    return date, fixed


def _field(data: list[str], i: int) -> str:
    """Field i's text; empty when the sentence ends before it (an older NMEA version)."""
    return data[i] if i < len(data) else ""


def _checksum(body: str) -> int:
    """XOR of the bytes between '$' and '*' (the caller checked they are ASCII).

    The bytes as one integer, folded in halves down to one byte: the XOR of all of
    them, in a few big-integer operations instead of a Python step per byte.
    """
    data = body.encode("ascii")
    x = int.from_bytes(data, "little")
    bits = 8 << max(len(data) - 1, 0).bit_length()  # a power-of-two number of bytes
    while bits > 8:
        bits >>= 1
        x = (x >> bits) ^ (x & ((1 << bits) - 1))
    return x


@functools.lru_cache(maxsize=8)
def _time_of_day(text: str) -> _TimeOfDay:
    if not text:
        raise NmeaError("no_time", "time field empty")
    m = _HHMMSS.fullmatch(text)
    if m is None:
        raise NmeaError("parse", f"time {text!r}")
    hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if hh > 23 or mm > 59 or ss > 60:
        raise NmeaError("parse", f"time {text!r}")
    if ss == 60 and (hh, mm) != (23, 59):
        raise NmeaError("absurd_date", f"leap second at {text!r}, not 23:59:60")
    digits = (m.group(4) or "")[:9]
    frac_ns = int(digits.ljust(9, "0"))
    return _TimeOfDay(hh * 3600 + mm * 60 + ss, frac_ns)


def _check_leap(date: datetime.date) -> None:
    """A leap second only ends the last day of a month (ITU-R TF.460)."""
    if (date + datetime.timedelta(days=1)).day != 1:
        raise NmeaError("absurd_date", f"23:59:60 on {date}, not a month's last day")


def _posix(date: datetime.date, tod: _TimeOfDay) -> int:
    return (date.toordinal() - _EPOCH_ORDINAL) * _DAY_S + tod.second


def _date_of(utc_s: int) -> datetime.date:
    return datetime.date.fromordinal(_EPOCH_ORDINAL + utc_s // _DAY_S)


def _circular_distance(a: int, b: int) -> int:
    d = (a - b) % _DAY_S
    return min(d, _DAY_S - d)


# --------------------------------------------------------------------------- serial
