"""Capture files: a box's raw inputs as JSON Lines, version 1 (a public contract).

    {"format": "checkpoint-capture", "version": 1, "box": "box07", "checkpoint": "PC3"}
    {"type": "pps", "mono_ns": 5000000123}
    {"type": "nmea", "mono_ns": 5080000000, "line": "$GPRMC,170320.00,A,...*5C"}
    {"type": "edge", "mono_ns": 5123456789, "input": "beam", "active": true}
    {"type": "sysclock", "mono_ns": 5000000000, "realtime_ns": 1713719000000000000}

Records are in arrival order. Extensions within version 1 (readers of the base
format skip them): the header may carry the box's `convention`, `clock` overrides
and `inputs` so replay needs no config; `sysclock` carries a
CLOCK_MONOTONIC/CLOCK_REALTIME pair, the only time an unsynced box has; an edge
may carry `"fault": true` where the rate limiter cut a chattering input;
`correction` is a marshal's assign/void (`kind`, `ref_seq`, `value`); `advance`
marks where the daemon's timer decided pending breaks, so replay decides them at
the same point. Unknown record types are skipped with a warning, so later
versions can add types.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from checkpoint import CAPTURE_FORMAT, CAPTURE_VERSION
from checkpoint.errors import CaptureError

log = logging.getLogger("checkpoint.capture")

_FIELDS: dict[str, dict[str, type]] = {
    "pps": {"mono_ns": int},
    "nmea": {"mono_ns": int, "line": str},
    "edge": {"mono_ns": int, "input": str, "active": bool},
    "sysclock": {"mono_ns": int, "realtime_ns": int},
    "correction": {"mono_ns": int, "kind": str, "ref_seq": int, "value": str},
    "advance": {"mono_ns": int},
    "sample": {"mono_ns": int, "utc_s": int},
    "pending": {"mono_ns": int, "ref_seq": int, "uncertainty_ns": int, "clock": str},
}


# The writer's own spelling of the records that make up most of a capture: a PPS tick,
# and an NMEA line with nothing escaped in it. Such a line is read without the JSON
# decoder (decoding and checking were an eighth of a replay's CPU), into the very dict
# json.loads gives: a JSON integer, a string with no '"', '\\' or control character.
# Any other spelling (spaces, escapes, key order, other types) goes through json.loads.
_INT = r"(-?(?:0|[1-9][0-9]*))"
_PPS_LINE = re.compile(r'\{"type":"pps","mono_ns":' + _INT + r"\}\n?")
_NMEA_LINE = re.compile(r'\{"type":"nmea","mono_ns":' + _INT + r',"line":"([^"\\\x00-\x1f]*)"\}\n?')


def edge_record(name: str, mono_ns: int, active: bool, fault: bool = False) -> dict[str, Any]:
    """An `edge` record; `fault` only when the rate limiter flagged it (chatter)."""
    rec: dict[str, Any] = {"type": "edge", "mono_ns": mono_ns, "input": name, "active": active}
    if fault:
        rec["fault"] = True
    return rec


def header(box: str, checkpoint: str, **settings: Any) -> dict[str, Any]:
    """The first line; `settings` (convention, clock, inputs) let replay run without a config."""
    return {
        "format": CAPTURE_FORMAT,
        "version": CAPTURE_VERSION,
        "box": box,
        "checkpoint": checkpoint,
        **settings,
    }


def check_record(rec: Any, where: str | Callable[[], str]) -> dict[str, Any] | None:
    """The record if well-formed, None for an unknown type; CaptureError if broken.

    `where` names the record in errors (a callable is asked only then: replay reads
    millions of good records).
    """
    if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
        raise CaptureError(f"{_where(where)}: a record must be an object with a string 'type'")
    fields = _FIELDS.get(rec["type"])
    if fields is None:
        return None
    for name, kind in fields.items():
        value = rec.get(name)
        if type(value) is kind:  # the usual case; bool is not an int here
            continue
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            raise CaptureError(
                f"{_where(where)}: {rec['type']} record needs {name} as {kind.__name__}"
            )
    return rec


def _where(where: str | Callable[[], str]) -> str:
    return where if isinstance(where, str) else where()


def read(path: str | Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """Open a capture: (header, iterator over well-formed records)."""
    path = Path(path)
    try:
        f = path.open(encoding="utf-8")
    except OSError as e:
        raise CaptureError(f"{path}: cannot open: {e.strerror}") from None
    first = f.readline()
    try:
        head = json.loads(first)
    except ValueError:
        f.close()
        raise CaptureError(f"{path}:1: not a checkpoint capture (header is not JSON)") from None
    if not isinstance(head, dict) or head.get("format") != CAPTURE_FORMAT:
        f.close()
        raise CaptureError(f"{path}:1: not a checkpoint capture (format is not {CAPTURE_FORMAT})")
    if head.get("version") != CAPTURE_VERSION:
        f.close()
        raise CaptureError(f"{path}:1: capture version {head.get('version')!r} is not supported")

    def records() -> Iterator[dict[str, Any]]:
        with f:
            loads = json.loads
            nmea_line, pps_line = _NMEA_LINE.fullmatch, _PPS_LINE.fullmatch
            for n, line in enumerate(f, start=2):
                plain = nmea_line(line)
                if plain is not None:
                    yield {"type": "nmea", "mono_ns": int(plain[1]), "line": plain[2]}
                    continue
                plain = pps_line(line)
                if plain is not None:
                    yield {"type": "pps", "mono_ns": int(plain[1])}
                    continue
                try:
                    rec = loads(line)
                except ValueError:
                    if not line.strip():
                        continue
                    raise CaptureError(f"{path}:{n}: not JSON") from None
                checked = check_record(rec, lambda n=n: f"{path}:{n}")
                if checked is None:
                    log.warning("%s:%d: skipping unknown record type %r", path, n, rec["type"])
                    continue
                yield checked

    return head, records()


class Writer:
    """Appends records to a capture file, flushed per record.

    Flushing (not fsyncing) each line keeps what the daemon saw up to a crash of
    the process; recording is a diagnostic aid, and fsync per edge would cost the
    SD card more than the store's own commits.
    """

    def __init__(self, path: str | Path, box: str, checkpoint: str, **settings: Any) -> None:
        self.path = Path(path)
        try:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._f: IO[str] = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise CaptureError(f"{self.path}: cannot write capture: {e.strerror}") from None
        if new:
            self.write(header(box, checkpoint, **settings))

    def write(self, rec: dict[str, Any]) -> None:
        self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._f.flush()

    def sync(self) -> None:
        """Make every record written so far survive a power cut (the daemon calls this
        before committing events, so the capture always holds their inputs)."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()
