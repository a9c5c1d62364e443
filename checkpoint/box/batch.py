"""One batch for `Store.record`, checked and turned into table rows before any SQL runs.

Pure: the daemon's inputs (edges, PPS ticks, paired samples) and its numbered events
become the rows of the store's tables, all of OS boot `boot`. Malformed input is a bug
upstream and raises ValueError; event seqs that do not run on without a gap raise
StoreError; either way before anything is written. Each event's row carries the exact
JSON text that is published (`contracts.event_text`), so a resend is byte-identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from checkpoint.contracts import event_text, is_int
from checkpoint.errors import StoreError

#: (seq, type, ref_seq, mono_ns, boot, payload): a row of the `events` table.
EventRow = tuple[int, str, int | None, int | None, str, str]


@dataclass(frozen=True)
class Batch:
    """The rows of one `Store.record` call; `acked` is HQ's ack folded into it, if any."""

    edges: list[tuple[str, str, int, int]]
    pps: list[tuple[str, int]]
    samples: list[tuple[str, int, int]]
    events: list[EventRow]
    acked: int | None

    @property
    def first_seq(self) -> int:
        """The seq of the batch's first event (0 when it has none)."""
        return self.events[0][0] if self.events else 0


def batch(
    boot: str,
    edges: Sequence[tuple[str, int, bool]],
    pps: Sequence[int],
    samples: Sequence[tuple[int, int]],
    events: Sequence[Mapping[str, Any]],
    acked: int | None,
) -> Batch:
    """Check every item (see `Store.record`) and return the rows to insert."""
    if not isinstance(boot, str) or not boot:
        raise ValueError(f"boot must be a non-empty str, got {boot!r}")
    if acked is not None and not is_int(acked):
        raise ValueError(f"acked must be an int, got {acked!r}")
    return Batch(
        edges=[_edge_row(item, boot) for item in edges],
        pps=[_pps_row(mono_ns, boot) for mono_ns in pps],
        samples=[_sample_row(item, boot) for item in samples],
        events=_event_rows(events, boot),
        acked=acked,
    )


def _edge_row(item: tuple[str, int, bool], boot: str) -> tuple[str, str, int, int]:
    name, mono_ns, active = item
    if not isinstance(name, str) or not is_int(mono_ns) or not isinstance(active, bool):
        raise ValueError(f"edge must be (str, int, bool), got {item!r}")
    return boot, name, mono_ns, int(active)


def _pps_row(mono_ns: int, boot: str) -> tuple[str, int]:
    if not is_int(mono_ns):
        raise ValueError(f"pps tick must be int ns, got {mono_ns!r}")
    return boot, mono_ns


def _sample_row(item: tuple[int, int], boot: str) -> tuple[str, int, int]:
    mono_ns, utc_s = item
    if not is_int(mono_ns) or not is_int(utc_s):
        raise ValueError(f"sample must be (int mono_ns, int utc_s), got {item!r}")
    return boot, mono_ns, utc_s


def _event_rows(events: Sequence[Mapping[str, Any]], boot: str) -> list[EventRow]:
    rows = [_event_row(event, boot) for event in events]
    first = rows[0][0] if rows else 0
    for offset, row in enumerate(rows):
        if row[0] != first + offset:
            raise StoreError(
                f"event seqs in a batch must be contiguous: got {row[0]} after "
                f"{first + offset - 1}; nothing was stored (this is a bug upstream)"
            )
    return rows


def _event_row(event: Mapping[str, Any], boot: str) -> EventRow:
    seq = event.get("seq")
    kind = event.get("type")
    ref_seq = event.get("ref_seq")
    mono_ns = event.get("mono_ns")
    if not is_int(seq) or seq < 1:
        raise ValueError(f"event seq must be an int >= 1, got {seq!r}")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"event {seq} has no type")
    if ref_seq is not None and not is_int(ref_seq):
        raise ValueError(f"event {seq}: ref_seq must be an int or absent, got {ref_seq!r}")
    if mono_ns is not None and not is_int(mono_ns):
        raise ValueError(f"event {seq}: mono_ns must be an int or absent, got {mono_ns!r}")
    payload = event_text(event)  # the published bytes (checkpoint.contracts)
    return seq, kind, ref_seq, mono_ns, boot, payload
