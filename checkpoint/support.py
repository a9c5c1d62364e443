"""Library helpers every command and daemon shares: logging set-up (journald
priorities), secret files that must be private, the signing key check.

They lived in cli.py, which made doctor, the HQ commands and the web server import
the CLI back; here they sit below every room, so the CLI only registers downward.
"""

from __future__ import annotations

import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from checkpoint.errors import CheckpointError, ConfigError

_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class _JournalFormatter(logging.Formatter):
    """Prefix `<N>` so journald files each line under its syslog priority."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelname, 6)}>{super().format(record)}"


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def check_private(path: str | None, what: str) -> None:
    """Refuse a secret file (password, private key) that group or others can access.

    A box's SD card or HQ's laptop is shared by several accounts and services; a
    readable secret is a stolen identity. The message says what to do, never the content.
    """
    if path is None:
        return
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot read: {e.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{what} {p} is readable by others (mode {oct(mode & 0o777)}): chmod 600")


def check_sign_key(path: str | None) -> None:
    """Refuse to start with a signing key others can read, that is no Ed25519 key, or
    when the optional `cryptography` package is missing (say how to install it)."""
    if path is None:
        return
    # Loaded only when a key is configured: every command imports this module.
    from checkpoint.core import chainsig

    check_private(path, "integrity.sign_key")
    try:
        chainsig.load_signing_key(Path(path).read_bytes())
    except OSError as e:
        raise ConfigError(f"integrity.sign_key {path}: cannot read: {e.strerror}") from None
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"integrity.sign_key {path}: {e}") from None


def read_secret(path: str | None, what: str) -> str | None:
    """Read a password file, refusing one that others can read."""
    if path is None:
        return None
    p = Path(path)
    check_private(path, what)
    try:
        return p.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot read: {e.strerror}") from None


def parse_toml(
    text: str, source: str, error: type[CheckpointError] = ConfigError
) -> dict[str, Any]:
    """The TOML document in `text`; `error` naming `source` if it is not valid TOML.

    Event, stages and scenario files all word a syntax error the same way.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise error(f"{source}: not valid TOML: {err}") from None
