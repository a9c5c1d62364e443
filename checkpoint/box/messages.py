"""What HQ and the broker tell a box: `ack`, `hwm` and `cmd` messages, checked (pure).

Each parser turns one payload into a small typed message or raises `BadMessage` with
words for the log. What depends on the daemon's state (is it this store's? is the seq
plausible?) is the caller's to decide; `BadCommands` counts and logs the refusals, so a
flood shows in the status counter, never as a flooded journal.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from checkpoint.contracts import is_int
from checkpoint.core import chain

log = logging.getLogger("checkpoint.box.daemon")

_MAX_LOGGED = 200  # characters of a bad command's reason in the log


class BadMessage(ValueError):
    """A message that is not what its topic promises; the text says what is wrong."""


@dataclass(frozen=True, slots=True)
class Ack:
    """HQ holds every event of `store` up to `upto`; `head` is the hash of event `upto`."""

    store: str
    upto: int
    head: str | None


@dataclass(frozen=True, slots=True)
class Hwm:
    """The box's own retained high-water mark: it numbered `store` up to `last_seq`."""

    store: str
    last_seq: int
    head: str | None


@dataclass(frozen=True, slots=True)
class Resend:
    """HQ asks for seqs `lo`..`hi` of `store` (unchecked: see `range_for`)."""

    store: object
    lo: object
    hi: object

    def range_for(self, store_id: str, top: int) -> tuple[int, int]:
        """(lo, hi) when asked of `store_id` with 1 <= lo <= hi <= top: HQ only asks for
        seqs it saw or the status named, never beyond the box's last."""
        if self.store != store_id:
            # HQ still asks for gaps of an earlier store after a card swap: nothing we
            # can serve; counted so a misaddressed HQ shows.
            raise BadMessage(f"resend for store {str(self.store)[:40]!r}, this is {store_id}")
        lo, hi = self.lo, self.hi
        if not (is_int(lo) and is_int(hi)) or not 1 <= lo <= hi <= top:  # type: ignore[operator]
            raise BadMessage(f"resend needs integers 1 <= from <= to <= {top}")
        return lo, hi  # type: ignore[return-value]


def _object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BadMessage(f"not JSON: {str(e)[:100]}") from None
    return data


def _head(data: dict[str, Any]) -> str | None:
    head = data.get("head")
    return head if chain.is_hash(head) else None


def _store_seq(payload: bytes, key: str, needs: str) -> tuple[str, int, str | None]:
    data = _object(payload)
    store, seq = data.get("store"), data.get(key)
    if not isinstance(store, str) or not is_int(seq) or seq < 0:
        raise BadMessage(needs)
    return store, seq, _head(data)


def parse_ack(payload: bytes) -> Ack:
    return Ack(*_store_seq(payload, "upto", "ack needs store (string) and upto (integer >= 0)"))


def parse_hwm(payload: bytes) -> Hwm:
    return Hwm(*_store_seq(payload, "last_seq", "hwm needs store (string) and last_seq (integer)"))


def parse_cmd(payload: bytes) -> Resend:
    data = _object(payload)
    if data.get("cmd") != "resend":
        raise BadMessage(f"unknown cmd {data.get('cmd')!r}")
    return Resend(data.get("store"), data.get("from"), data.get("to"))


class BadCommands:
    """Counts the messages a box ignored and logs them, bounded."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, topic: str, why: str) -> None:
        self.count += 1
        # Rate-limited in effect by the sender; a flood shows in the counter, not the log.
        if self.count <= 100 or self.count % 1000 == 0:
            # Bounded: the reason may quote what the sender put in the message.
            if len(why) > _MAX_LOGGED:
                why = f"{why[:_MAX_LOGGED]}... ({len(why)} characters)"
            log.warning("ignored message on %s: %s (%d so far)", topic, why, self.count)
