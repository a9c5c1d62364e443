"""The entry list: one row per car (number, crew, car, year, class, start, coefficient).

Pure: parses and validates `entries.csv` text and resolves start times; no I/O.
HQ keeps the imported list in its database (`checkpoint.hq.officestore`) and audits
every later change (withdrawn, retired, start moved).

File format (`entries.csv`, UTF-8, header row, comma separated; column order free):

| column | required | meaning |
|---|---|---|
| `number` | yes | car number as painted on the car (1-16 printable characters) |
| `crew` | yes | driver / co-driver names |
| `car` | no | make and model |
| `year` | yes | year of construction (1885-2100); drives the year coefficient rule |
| `class` | no | class name; each class has its own ranking |
| `start` | yes | scheduled start at the first control: a time of day `HH:MM[:SS[.fff]]` |
|  |  | in the event's time zone on the event's date, or an ISO 8601 UTC/offset |
|  |  | instant `2025-04-27T14:00:00Z` |
| `coefficient` | no | the car's coefficient (overrides the event's year rule) |

Errors name the row (as a spreadsheet numbers it: the header is row 1) and the column.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import re
import zoneinfo
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from checkpoint.errors import ConfigError

NS_PER_S = 1_000_000_000
COLUMNS = ("number", "crew", "car", "year", "class", "start", "coefficient")
REQUIRED = ("number", "crew", "year", "start")
STATUSES = ("entered", "withdrawn", "retired")
MAX_NUMBER = 16

_TOD = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One car of the entry list. `start` is kept as written (resolved with the event)."""

    number: str
    crew: str
    car: str
    year: int
    klass: str
    start: str
    coefficient: Decimal | None = None
    status: str = "entered"

    @property
    def running(self) -> bool:
        """False once the car is withdrawn (never started)."""
        return self.status != "withdrawn"

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly (coefficient as text, exact)."""
        return {
            "number": self.number,
            "crew": self.crew,
            "car": self.car,
            "year": self.year,
            "class": self.klass,
            "start": self.start,
            "coefficient": None if self.coefficient is None else str(self.coefficient),
            "status": self.status,
        }


def check_number(value: object, where: str = "number") -> str:
    """A car number: 1-16 printable characters, trimmed."""
    text = str(value).strip() if value is not None else ""
    if not (1 <= len(text) <= MAX_NUMBER) or not text.isprintable():
        raise ConfigError(f"{where}: car number must be 1-{MAX_NUMBER} printable characters")
    return text


def check_start(value: str, where: str = "start") -> str:
    """A start as written: time of day (`14:02`, `14:02:30.5`) or an ISO instant with zone."""
    text = value.strip()
    m = _TOD.match(text)
    if m:
        h, mi, s = int(m[1]), int(m[2]), int(m[3] or 0)
        if h > 23 or mi > 59 or s > 59:
            raise ConfigError(f"{where}: {text!r} is not a time of day (HH:MM[:SS[.fff]])")
        return text
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{where}: {text!r} is neither a time of day (HH:MM[:SS]) nor an ISO 8601 instant"
        ) from None
    if t.tzinfo is None:
        raise ConfigError(f"{where}: {text!r} has a date but no zone (add Z or +HH:MM)")
    return text


def check_coefficient(value: str, where: str = "coefficient") -> Decimal:
    """A coefficient: an exact decimal in (0, 10]."""
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not d.is_finite() or d <= 0 or d > 10:
        raise ConfigError(f"{where}: {value!r} must be a number above 0 and at most 10")
    return d


def start_ns(start: str, date: str | None, tz: str) -> int:
    """The start as UTC integer ns: a time of day on `date` in `tz`, or an ISO instant."""
    m = _TOD.match(start.strip())
    if not m:
        t = _dt.datetime.fromisoformat(start.strip().replace("Z", "+00:00"))
        frac = t.microsecond * 1000
        return int(t.replace(microsecond=0).timestamp()) * NS_PER_S + frac
    if date is None:
        raise ConfigError(
            f"start {start!r} is a time of day: the event file needs [event] date to place it"
        )
    day = _dt.date.fromisoformat(date)
    frac = int((m[4] or "0").ljust(9, "0"))
    local = _dt.datetime(
        day.year, day.month, day.day, int(m[1]), int(m[2]), int(m[3] or 0),
        tzinfo=zoneinfo.ZoneInfo(tz),
    )  # fmt: skip
    return int(local.timestamp()) * NS_PER_S + frac


def _columns(header: list[str], source: str) -> list[str]:
    """The header's column names, lower-cased; ConfigError for unknown, missing or twice."""
    cols = [h.strip().lower() for h in header]
    unknown = [h for h in cols if h not in COLUMNS]
    if unknown:
        raise ConfigError(
            f"{source}: row 1: unknown column(s) {', '.join(map(repr, unknown))}"
            f" (known: {', '.join(COLUMNS)})"
        )
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise ConfigError(f"{source}: row 1: missing column(s) {', '.join(missing)}")
    dup = {c for c in cols if cols.count(c) > 1}
    if dup:
        raise ConfigError(f"{source}: row 1: column(s) {', '.join(sorted(dup))} given twice")
    return cols


def _entry(val: dict[str, str], where: str, seen: dict[str, int]) -> Entry:
    """One row as an Entry; `where` is "FILE: row N", `seen` the numbers entered so far."""

    def at(col: str) -> str:
        return f"{where}, column {col}"

    for c in REQUIRED:
        if not val.get(c):
            raise ConfigError(f"{at(c)}: required, but empty")
    number = check_number(val["number"], at("number"))
    if number in seen:
        raise ConfigError(f"{at('number')}: car {number} is already entered at row {seen[number]}")
    try:
        year = int(val["year"])
    except ValueError:
        raise ConfigError(f"{at('year')}: {val['year']!r} is not a year") from None
    if not 1885 <= year <= 2100:
        raise ConfigError(f"{at('year')}: {year} is not a plausible year of construction")
    coef = val.get("coefficient") or ""
    return Entry(
        number=number,
        crew=val["crew"],
        car=val.get("car", ""),
        year=year,
        klass=val.get("class", ""),
        start=check_start(val["start"], at("start")),
        coefficient=check_coefficient(coef, at("coefficient")) if coef else None,
    )


def parse_entries(text: str, source: str = "entries.csv") -> list[Entry]:
    """Parse and validate an entry list; ConfigError names the row and column."""
    if text.startswith("\ufeff"):  # a spreadsheet's UTF-8 byte order mark
        text = text[1:]
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError(f"{source}: empty file (needs a header row)") from None
    except csv.Error as err:
        raise ConfigError(f"{source}: row 1: {err}") from None
    cols = _columns(header, source)
    out: list[Entry] = []
    seen: dict[str, int] = {}
    rowno = 1
    try:
        for row in reader:
            rowno += 1
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(cols):
                raise ConfigError(
                    f"{source}: row {rowno}: {len(row)} fields, the header has {len(cols)}"
                )
            val = {c: v.strip() for c, v in zip(cols, row, strict=True)}
            entry = _entry(val, f"{source}: row {rowno}", seen)
            seen[entry.number] = rowno
            out.append(entry)
    except csv.Error as err:
        raise ConfigError(f"{source}: row {rowno}: {err}") from None
    if not out:
        raise ConfigError(f"{source}: no cars (only a header row)")
    return out


def render_entries(entries: list[Entry]) -> str:
    """The entry list as `entries.csv` text (what `parse_entries` reads back)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for e in entries:
        coef = "" if e.coefficient is None else str(e.coefficient)
        w.writerow([e.number, e.crew, e.car, e.year, e.klass, e.start, coef])
    return buf.getvalue()


def edit(entry: Entry, *, start: str | None = None, status: str | None = None) -> Entry:
    """A changed copy (start moved, status changed), validated."""
    if status is not None and status not in STATUSES:
        raise ConfigError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    return replace(
        entry,
        start=entry.start if start is None else check_start(start),
        status=entry.status if status is None else status,
    )
