"""Which seqs of each box store HQ holds, and the missing ranges it asks for again.

Pure bookkeeping for the collector's gap repair: a `SeqTracker` per (box, store),
`Gap` timers with back-off, and the short text `hq status` shows.
"""

from __future__ import annotations

from dataclasses import dataclass

GAPS_SHOWN = 8


class SeqTracker:
    """Which seqs of one store HQ holds: `upto` (all of 1..upto) plus those above it."""

    def __init__(self) -> None:
        self.upto = 0
        self.above: set[int] = set()
        self.max_seq = 0
        self.events = 0
        # Highest seq the box says it has written (status last_seq, backlog 0):
        # lets HQ see a missing tail that no later event would reveal.
        self.hint = 0

    def add(self, seq: int) -> None:
        """Record a newly stored seq."""
        self.events += 1
        self.max_seq = max(self.max_seq, seq)
        if seq == self.upto + 1:
            self.upto = seq
            while self.upto + 1 in self.above:
                self.upto += 1
                self.above.discard(self.upto)
        elif seq > self.upto:
            self.above.add(seq)

    def missing(self) -> list[tuple[int, int]]:
        """Missing seq ranges (inclusive), ascending."""
        out = []
        nxt = self.upto + 1
        for s in sorted(self.above):
            if s > nxt:
                out.append((nxt, s - 1))
            nxt = s + 1
        top = max(self.max_seq, self.hint)
        if top >= nxt:
            out.append((nxt, top))
        return out


@dataclass(slots=True)
class Gap:
    """One missing range and when to ask for it next."""

    lo: int
    hi: int
    next_at: float
    attempts: int = 0


def merge_gaps(
    old: list[Gap], ranges: list[tuple[int, int]], now: float, wait_s: float
) -> list[Gap]:
    """New gap list for `ranges`: a range overlapping old gaps keeps their timer and
    attempts (so back-off survives a partial fill); a new range waits `wait_s`."""
    out = []
    for lo, hi in ranges:
        overlap = [g for g in old if g.lo <= hi and lo <= g.hi]
        if overlap:
            out.append(
                Gap(lo, hi, min(g.next_at for g in overlap), max(g.attempts for g in overlap))
            )
        else:
            out.append(Gap(lo, hi, now + wait_s))
    return out


def gaps_text(ranges: list[tuple[int, int]]) -> str:
    """Missing ranges as "5-7,12" (the first few; "+N more" after)."""
    parts = [f"{a}-{b}" if b > a else str(a) for a, b in ranges[:GAPS_SHOWN]]
    if len(ranges) > GAPS_SHOWN:
        parts.append(f"+{len(ranges) - GAPS_SHOWN} more")
    return ",".join(parts)
