"""What the commands share: argparse types and writing a result to a file or stdout.

The HQ commands' own modules (office, operator corrections) import these instead of
importing `cli.hq`, which registers them: so commands register downward only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _write_out(text: str, out: str | None) -> None:
    """Write to --out atomically (tmp + rename), or to stdout."""
    if out is None or out == "-":
        sys.stdout.write(text)
        return
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v
