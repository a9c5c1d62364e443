"""Every error checkpoint raises on purpose, under one base class.

Callers catch CheckpointError at the edge (CLI, daemon loop) and print its
message: each message names what is wrong and where, so a marshal can fix it.
"""


class CheckpointError(Exception):
    """Base of all checkpoint errors."""


class ConfigError(CheckpointError):
    """A config file key or value is wrong; the message names the key and file.

    `problems` lists every mistake found (the message is them, one per line).
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class NmeaError(CheckpointError):
    """A GPS line was rejected; `reason` is a short stable tag for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class CaptureError(CheckpointError):
    """A capture file is unreadable or not in the checkpoint-capture format."""


class StoreError(CheckpointError):
    """The SQLite store cannot be opened, migrated or written."""


class CommandError(CheckpointError):
    """An MQTT command or CLI correction is malformed or out of range."""


class LinkError(CheckpointError):
    """The MQTT broker URL or credentials are unusable."""


def require_at_least(name: str, value: int, minimum: int) -> None:
    """ValueError naming the parameter unless `value >= minimum`.

    For constructor arguments set by code, not by a marshal: a wrong one is a bug, so it
    is a ValueError rather than a CheckpointError.
    """
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}")
