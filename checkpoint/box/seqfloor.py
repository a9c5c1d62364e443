"""The seq floor: never reuse a seq an earlier run of this store published from memory.

Events published from memory while the store failed are at HQ but not in the store; if
the process restarts before the store recovers, the store's last seq is behind what HQ
holds, and reusing those seqs for new events would make HQ reject the new events as
conflicts. So before this run publishes any seq above the store's last seq at start, it
learns what the broker knows about this store: the box's own retained high-water mark
(`{"store":S,"last_seq":N}` on `.../hwm`, published before any seq that is not yet on
disk). HQ's retained ack is held until then but never raises the floor: an ack proves
what HQ holds, not that this box wrote it (a forgery under the box's name is acked too),
so an ack beyond what the box numbered, or naming another event's hash (`head`) than the
box's own, is a `conflict` alarm and the box publishes its own events under those seqs.
Seqs up to that floor are never reused: the store gets a `skipped` placeholder for each
seq never assigned here, events this run had already numbered inside the range are
issued again under new seqs (`reissue_of` names the old one; later corrections that
name it are renumbered too), and an alarm says what happened. HQ asking for a skipped
seq gets the placeholder, never different content.

Runs on the daemon's core thread only; it owns no I/O, and reads stored events through
the `Payloads` it is given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from checkpoint import EVENT_SCHEMA
from checkpoint.box.messages import Ack, Hwm
from checkpoint.contracts import event_bytes
from checkpoint.core import chain
from checkpoint.core.outbox import Outbox
from checkpoint.core.timing import Pipeline

log = logging.getLogger("checkpoint.box.daemon")

# After the broker granted our subscriptions, the retained ack and hwm (if any) follow at
# once; waiting this long for them is generous.
FLOOR_GRACE_NS = 1_000_000_000
# An ack or hwm more than this far beyond our last seq is not a plausible earlier run of
# this store (a box makes a few thousand events a day): it is refused, not obeyed.
MAX_SKIP = 10_000

SKIPPED = {
    "reason": "seq used by an earlier run of this store (published from memory while the "
    "store failed, then restarted): not reused; HQ has that event, this store does not"
}


class Payloads(Protocol):
    """The bytes of this store's events as first published (the daemon's sender)."""

    def cached(self, seq: int) -> bytes | None:
        """Must return the bytes if in memory, else None; never reads the store."""

    def plain(self, seq: int) -> bytes | None:
        """Must return the event's bytes from memory or the store, or None (alarmed)."""


@dataclass
class FloorParts:
    """What the floor works on: the daemon's pipeline, outbox and alarms, its sender's
    payloads, and how to count a refused message."""

    pipeline: Pipeline
    outbox: Outbox
    payloads: Payloads
    alarms: dict[str, str]
    bad_command: Callable[[str, str], None]
    box: str
    checkpoint: str
    store_id: Callable[[], str]
    ack_taken: Callable[[], None]  # an HQ ack to write to the store with the next batch


@dataclass
class SeqFloor:
    """The floor protocol's state for one run (module docstring)."""

    parts: FloorParts
    start_last: int  # the store's last seq at start: seqs above it wait for the check
    done: bool = False
    due_ns: int | None = None  # when to settle, once the SUBACK came
    seen: int = 0  # highest seq of this store the broker told us about
    hwm: tuple[int, str | None] = (0, None)  # the hwm's seq and chain head
    held_ack: tuple[int, str | None] | None = None  # an HQ ack held until the check is done
    foreign: list[tuple[int, int]] = field(default_factory=list)  # HQ may hold other content
    placeholders: set[int] = field(default_factory=set)  # seqs holding a `skipped` event
    remap: dict[int, int] = field(default_factory=dict)  # reissued seq -> new seq
    skipped_seqs: int = 0
    reissued: int = 0
    conflicts: set[tuple[int, str]] = field(default_factory=set)  # refuted (seq, head)

    # -- what the daemon asks --------------------------------------------------------

    def subscribed(self, now: int) -> None:
        if not self.done and self.due_ns is None:
            self.due_ns = now + FLOOR_GRACE_NS  # retained ack and hwm follow at once

    def disconnected(self) -> None:
        self.due_ns = None

    def gate(self, seqs: list[int]) -> list[int]:
        """Seqs above the store's last at start may collide with what an earlier run
        published from memory: held until the floor is known."""
        return seqs if self.done else [s for s in seqs if s <= self.start_last]

    def payload(self, seq: int) -> bytes | None:
        """What HQ gets for `seq`: a placeholder (sealed on the same prev) where HQ may
        hold an earlier run's content under it and the event went out again under a new
        seq, never the event twice; otherwise the event as first published."""
        pay = self.parts.payloads
        if not any(lo <= seq <= hi for lo, hi in self.foreign) or seq in self.placeholders:
            return pay.plain(seq)
        data = pay.plain(seq)
        if data is None:
            return None
        ev = json.loads(data)
        body = self.placeholder(seq)
        return event_bytes(chain.seal(body, ev[chain.PREV]) if chain.PREV in ev else body)

    def renumber(self, events: list[dict[str, Any]]) -> None:
        """Point this turn's corrections and restamps at reissued events; seal again."""
        changed = None
        for i, ev in enumerate(events):
            ref = ev.get("ref_seq")
            if ref in self.remap:
                ev["ref_seq"] = self.remap[ref]
                changed = i if changed is None else changed
        if changed is not None:
            # This turn's events are the newest, none published yet: seal them again.
            self.parts.pipeline.reseal(events[changed:])

    def placeholder(self, seq: int) -> dict[str, Any]:
        """An unsealed `skipped` event for `seq` (envelope as timing.Pipeline makes it)."""
        p = self.parts
        return {
            "schema": EVENT_SCHEMA,
            "type": "skipped",
            "box": p.box,
            "checkpoint": p.checkpoint,
            "store": p.store_id(),
            "seq": seq,
            **SKIPPED,
        }

    # -- messages ----------------------------------------------------------------------

    def on_ack(self, topic: str, ack: Ack) -> None:
        if not self._plausible(topic, ack.upto):
            return
        if not self.done:
            # Held until the floor is known. The floor itself comes only from the
            # box's own hwm: an ack proves what HQ holds, not that this box wrote it.
            if ack.upto >= (self.held_ack or (0, None))[0]:
                self.held_ack = (ack.upto, ack.head)
            return
        self._ack(ack.upto, ack.head)

    def on_hwm(self, topic: str, hwm: Hwm, events: list[dict[str, Any]]) -> None:
        if not self._plausible(topic, hwm.last_seq):
            return
        if not self.done:
            if hwm.last_seq >= self.hwm[0]:
                self.hwm = (hwm.last_seq, hwm.head)
            self.seen = max(self.seen, hwm.last_seq)
        elif hwm.last_seq > self.parts.pipeline.next_seq - 1:
            self._skip(hwm.last_seq, self.parts.pipeline.next_seq, hwm.head, events)

    def settle_if_due(self, now: int, events: list[dict[str, Any]]) -> None:
        """The broker has told us what it knows (or had its chance): settle the floor."""
        if self.done or self.due_ns is None or now < self.due_ns:
            return
        self.done = True
        if self.seen > self.start_last:
            # The hwm's chain head names event `seen` only if nothing went beyond it.
            last, head = self.hwm
            self._skip(self.seen, self.start_last + 1, head if last == self.seen else None, events)
        else:
            log.info("seq floor: nothing beyond seq %d known for this store", self.start_last)
        if self.held_ack is not None:
            (upto, head), self.held_ack = self.held_ack, None
            self._ack(upto, head)

    # -- internals -----------------------------------------------------------------------

    def _skip(self, floor: int, lo: int, head: str | None, events: list[dict[str, Any]]) -> None:
        """Never use seqs lo..floor here: placeholders, reissues, alarm (module docstring)."""
        pipeline = self.parts.pipeline
        top = pipeline.next_seq - 1
        if floor - top > MAX_SKIP:
            return  # refused on arrival (_plausible); top only grows
        pending = {ev["seq"]: ev for ev in events}  # this turn's, committed at its end
        for _ in range(top + 1, floor + 1):
            ev = pipeline.issue("skipped", dict(SKIPPED))
            self.placeholders.add(ev["seq"])
            events.append(ev)
        reissued = self._reissue(lo, min(floor, top), pending)
        if head is not None and not reissued and floor > top:
            # The broker's hwm named the real event `floor` (published by the earlier
            # run): chain on from it, so HQ's chain stays whole. The store's chain
            # shows the break instead, at the placeholders it holds for those events.
            pipeline.head = head
        self.foreign.append((lo, floor))
        self.skipped_seqs += floor - lo + 1
        self.reissued += len(reissued)
        events += reissued
        self.parts.outbox.skip(floor)
        msg = (
            f"seqs {lo}..{floor} of store {self.parts.store_id()} were already used by an "
            "earlier run (published while the store failed); not reused. HQ has those "
            "events, this store does not"
        )
        if reissued:
            msg += (
                f"; {len(reissued)} events numbered {lo}..{min(floor, top)} here were issued "
                f"again as {reissued[0]['seq']}..{reissued[-1]['seq']}"
            )
        self.parts.alarms["seq"] = msg
        log.error("seq floor: %s", msg)

    def _reissue(
        self, lo: int, hi: int, pending: dict[int, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Events this run numbered lo..hi, issued again under new seqs."""
        out = []
        for old in range(lo, hi + 1):
            if old in pending:
                fields = dict(pending[old])
            else:
                data = self.parts.payloads.cached(old) or self.payload(old)
                if data is None:
                    continue
                fields = json.loads(data)
            if fields.get("ref_seq") in self.remap:
                fields["ref_seq"] = self.remap[fields["ref_seq"]]
            ev = self.parts.pipeline.issue(fields["type"], {**fields, "reissue_of": old})
            self.remap[old] = ev["seq"]
            out.append(ev)
        return out

    def _plausible(self, topic: str, seq: int) -> bool:
        """False (counted, alarmed) for a seq of this store far beyond any it numbered."""
        top = self.parts.pipeline.next_seq - 1
        if seq - top <= MAX_SKIP:
            return True
        self.parts.bad_command(topic, f"seq {seq} is far beyond this store's last {top}")
        self.parts.alarms["seq"] = (
            f"{topic} says seq {seq} of store {self.parts.store_id()} was used, but this "
            f"store is at {top}: ignored as implausible; check HQ for a copy of this store's "
            "card, and start a fresh store file if in doubt"
        )
        return False

    def _ack(self, upto: int, head: str | None) -> None:
        p = self.parts
        top = p.pipeline.next_seq - 1
        if upto > top:
            # HQ holds seqs this store never numbered. Not skipped: somebody published
            # under this box's name (a stolen credential) or a copy of this card ran
            # elsewhere. This box's own events take those seqs and HQ flags each
            # conflict; an earlier run of this store would have left its hwm.
            self._conflict(
                f"HQ acknowledges seq {upto} of store {p.store_id()}, but this box "
                f"has numbered only {top}: events under this box's name came from elsewhere "
                "(stolen credentials? a copied card?). This box publishes its own; HQ keeps "
                "both as conflicts for the officials"
            )
            return
        if head is not None and not any(lo <= upto <= hi for lo, hi in self.foreign):
            data = p.payloads.plain(upto)
            own = json.loads(data) if data is not None else None
            if own is not None and own.get(chain.HASH) not in (None, head):
                self._refute(upto, head)
                return
        if p.outbox.hq_ack(p.store_id(), upto):
            p.ack_taken()

    def _conflict(self, msg: str) -> None:
        if self.parts.alarms.get("conflict") != msg:
            log.error("conflict: %s", msg)
        self.parts.alarms["conflict"] = msg

    def _refute(self, upto: int, head: str) -> None:
        """HQ acked `upto` with the hash of another event than ours: someone published
        under this box's name first. Not taken as delivered: ours go out again (once per
        such ack), so HQ holds both and flags the conflict."""
        store = self.parts.store_id()
        self._conflict(
            f"HQ holds another event than this box's under seq {upto} of store "
            f"{store} (hash {head[:16]}...): published under this box's name "
            "from elsewhere (stolen credentials?). This box's own events were sent again; "
            "HQ keeps both for the officials"
        )
        if (upto, head) in self.conflicts:
            return
        self.conflicts.add((upto, head))
        lo = self.parts.outbox.acked_upto + 1
        n = self.parts.outbox.resend(lo, upto)
        log.warning("seq %d..%d: %d published again after a conflicting ack", lo, upto, n)
