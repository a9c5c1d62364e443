"""Validation of what a browser sends. Pure; every error is a `FormError` a person can read.

The limits are the box's own (`checkpoint.box.control`, `timing.Pipeline.assign/void`), so
a value the page accepts is never refused later for its shape.
"""

from __future__ import annotations

import re

from checkpoint.box.control import MAX_CAR, MAX_REASON, MAX_SEQ
from checkpoint.errors import CommandError

_BOX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # as config's box id


class FormError(CommandError):
    """A request field is missing or out of range; the message names it."""


def seq(value: object) -> int:
    """A passage's seq: an integer (or its decimal text) in 1..2**53."""
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 16:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEQ:
        raise FormError(f"seq must be an integer from 1 to {MAX_SEQ}")
    return value


def _text(value: object, name: str, hi: int) -> str:
    if not isinstance(value, str):
        raise FormError(f"{name} must be text")
    text = value.strip()
    # isprintable() refuses control characters (newlines, NUL, escapes) that would
    # corrupt the CSV export or a terminal showing `hq status`.
    if not 1 <= len(text) <= hi or not text.isprintable():
        raise FormError(f"{name} must be 1-{hi} printable characters")
    return text


def car(value: object) -> str:
    """A car number: 1-16 printable characters (surrounding blanks dropped)."""
    return _text(value, "car number", MAX_CAR)


def reason(value: object) -> str:
    """A void reason: 1-200 printable characters."""
    return _text(value, "reason", MAX_REASON)


def box(value: object) -> str:
    """A box id as the config allows it: 1-64 letters, digits, `_.-`."""
    if not isinstance(value, str) or not _BOX.match(value):
        raise FormError("box must be 1-64 letters, digits or _.-")
    return value


def store_prefix(value: object) -> str | None:
    """An optional store id prefix (hex), for a seq that exists in several stores."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{1,64}", value):
        raise FormError("store must be a store id (hex) or its prefix")
    return value
