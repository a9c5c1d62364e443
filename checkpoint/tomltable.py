"""Reading one TOML table key by key, collecting every problem instead of stopping at the
first (the box config's reader; see `checkpoint.config`).
"""

from __future__ import annotations

import difflib
from typing import Any


class TableReader:
    """Pops keys from one TOML table, so leftovers are unknown keys.

    Problems are collected in `errors` (shared by every reader of one file) and the
    reader carries on with the default, so `parse` reports every mistake at once:
    a marshal fixing one line per run at dawn would need a dozen runs.
    """

    def __init__(self, table: Any, where: str, file: str, errors: list[str]) -> None:
        self.errors = errors
        self.where = where
        self.file = file
        self.asked: set[str] = set()
        if not isinstance(table, dict):
            errors.append(f"{file}: [{where}] must be a table")
            table = {}
        self.table = dict(table)

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def bad(self, key: str, why: str) -> None:
        """Record one problem with `key`."""
        self.errors.append(f"{self.file}: {self._name(key)}: {why}")

    def get(self, key: str, kind: type, default: Any = ..., *, choices: tuple = ()) -> Any:
        self.asked.add(key)
        fallback = kind() if default is ... else default
        if key not in self.table:
            if default is ...:
                self.bad(key, "is required")
            return fallback
        value = self.table.pop(key)
        # bool is an int in Python; a marshal writing `port = true` deserves an error.
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            self.bad(key, f"must be an integer, got {value!r}")
            return fallback
        if kind is not int and not isinstance(value, kind):
            self.bad(key, f"must be a {kind.__name__}, got {value!r}")
            return fallback
        if choices and value not in choices:
            self.bad(
                key,
                f"must be one of {', '.join(map(str, choices))}, got {value!r}"
                + did_you_mean(str(value), [str(c) for c in choices]),
            )
            return fallback
        return value

    def positive(self, key: str, default: int, *, lo: int = 1, hi: int = 10**9) -> int:
        value = self.get(key, int, default)
        if not lo <= value <= hi:
            self.bad(key, f"must be between {lo} and {hi}, got {value}")
            return default
        return value

    def done(self) -> None:
        prefix = f"{self.where}." if self.where else ""
        for key in sorted(self.table):
            hint = did_you_mean(key, sorted(self.asked), prefix=prefix)
            self.errors.append(f"{self.file}: unknown key {self._name(key)}{hint}")


def did_you_mean(given: str, known: list[str], *, prefix: str = "") -> str:
    """ " (did you mean X?)" for the closest known spelling, or "" when none is close."""
    close = difflib.get_close_matches(given.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    if not close:
        return ""
    match = next(k for k in known if k.lower() == close[0])
    return f" (did you mean {prefix}{match}?)"
