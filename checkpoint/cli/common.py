"""What the commands share: argparse types, the error wrapper, writing a result.

The HQ commands' own modules (office, operator corrections) import these instead of
importing `cli.hq`, which registers them: so commands register downward only. Every
`main()` (`checkpoint`, and `python -m checkpoint.cli.hq|field|serve`) runs through
`run`, so the exit codes are the same whichever way a command is started.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from checkpoint.errors import CheckpointError, ConfigError
from checkpoint.hq import results as resultsmod


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse `argv`, run the chosen command's `func(args)`; errors become exit codes.

    0 ok, 1 a CheckpointError (printed as `checkpoint: error: ...`), 2 usage (argparse's
    own), 130 interrupted; a closed pipe (`| head`) is not an error.
    """
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except CheckpointError as e:
        print(f"checkpoint: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


def write_out(text: str, out: str | None) -> None:
    """Write to --out atomically (tmp + rename), or to stdout."""
    if out is None or out == "-":
        sys.stdout.write(text)
        return
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def load_stages(path_text: str) -> resultsmod.Stages:
    """A stages file, read and parsed; ConfigError naming the file if it cannot be."""
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"stages file {path}: cannot read: {err.strerror}") from None
    return resultsmod.parse_stages(text, str(path))


# -- argparse types --------------------------------------------------------------------


def _number(text: str, kind: type[int] | type[float], what: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number > 0."""
    v = _number(text, float, "a number")
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = int(_number(text, int, "an integer"))
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def seconds(text: str) -> float:
    """A wait in seconds, 0 < S <= 3600."""
    v = _number(text, float, "a number of seconds")
    if not 0 < v <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 s, got {v}")
    return v


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: any free one)."""
    v = int(_number(text, int, "a port number"))
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {v}")
    return v
