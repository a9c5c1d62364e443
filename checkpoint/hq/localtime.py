"""Passage times as people at a rally read them: local time of day, seconds with decimals.

Events carry integer UTC nanoseconds; a marshal's watch, the road book and a
spreadsheet all use local time of day, and a spreadsheet keeps only 15 digits (an
epoch in ns has 19). Pure: no clock reads; the zone is the machine's unless given.
"""

from __future__ import annotations

import datetime as dt

NS = 1_000_000_000


def local_dt(utc_ns: int, tz: dt.tzinfo | None = None) -> dt.datetime:
    """The wall-clock time (whole seconds) of `utc_ns` in `tz` (default: this machine's)."""
    return dt.datetime.fromtimestamp(utc_ns // NS, dt.UTC).astimezone(tz)


def local_time(utc_ns: int | None, tz: dt.tzinfo | None = None, digits: int = 2) -> str:
    """Local time of day "HH:MM:SS.ff" (truncated, as a timing display shows it)."""
    if utc_ns is None:
        return ""
    base = local_dt(utc_ns, tz).strftime("%H:%M:%S")
    if not digits:
        return base
    frac = (utc_ns % NS) // 10 ** (9 - digits)
    return f"{base}.{frac:0{digits}d}"


def local_date(utc_ns: int | None, tz: dt.tzinfo | None = None) -> str:
    """Local calendar date "YYYY-MM-DD"."""
    return "" if utc_ns is None else local_dt(utc_ns, tz).strftime("%Y-%m-%d")


def seconds(ns: int | None, digits: int = 3) -> str:
    """Signed ns as seconds with `digits` decimals, truncated toward zero, exact."""
    if ns is None:
        return ""
    sign = "-" if ns < 0 else ""
    unit = 10 ** (9 - digits)
    whole, frac = divmod(abs(ns) // unit, 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"
