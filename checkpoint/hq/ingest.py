"""HQ ingest: each box message into HQ's store, exactly once, without MQTT or threads.

Call order (the collector's core thread): `handle()` per message inside one transaction,
`finish_batch()`, commit, and only then publish what `acks_due()` and `resends_due()`
return: an ack is a promise that the events are on HQ's disk.

Identity of an event is (box, store, seq). The *current store* of a box is the
store named in its latest status message (`"store"`, the box's own word); for a
box whose status never named one, it is the store HQ saw first most recently. Acks
are for the current store only; events of other stores are stored under their own
store, never mixed, and their gaps are still reported and requested.

Gap repair: a missing seq range of any store that stays open for `gap_wait_s` is
requested with `{"cmd": "resend", ...}` on `{prefix}/{box}/cmd`, again after
2x, 4x ... the wait (capped at `gap_backoff_max_s`) until it is filled. A missing
*tail* (the box's last events never arrived, while the box thinks they were
delivered) is invisible from events alone; it is detected from the box's status
when that carries `store`, `last_seq` and `backlog: 0`.

Chain checks and forgery evidence are the mixin `checkpoint.hq.chainwatch.ChainChecks`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from checkpoint.contracts import (
    DEFAULT_PREFIX,
    EVENT,
    MAX_SEQ,
    MAX_STORE_ID,
    STATUS,
    Rejected,
    Topics,
    check_prefix,
    is_int,
    load_object,
    message_bytes,
    parse_event,
    split_topic,
)
from checkpoint.core import chain
from checkpoint.core.corrections import STAMP_FIELDS
from checkpoint.errors import StoreError
from checkpoint.hq import integrity
from checkpoint.hq.chainwatch import ChainChecks
from checkpoint.hq.seqs import Gap, SeqTracker, gaps_text, merge_gaps
from checkpoint.hq.store import HQStore, iso_now

log = logging.getLogger("checkpoint.hq.collector")

DEFAULT_GAP_WAIT_S = 3.0
DEFAULT_GAP_BACKOFF_MAX_S = 60.0


@dataclass
class Stats:
    """Counters since the collector started (the database has the lasting ones)."""

    messages: int = 0
    events: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    rejects: int = 0
    statuses: int = 0
    acks: int = 0
    resends: int = 0
    connects: int = 0
    batches: int = 0
    errors: int = 0
    chain_breaks: int = 0
    new_stores: list[tuple[str, str]] = field(default_factory=list)


# -- the core logic (core thread only) ---------------------------------------------


class Ingest(ChainChecks):
    """Everything the core thread does with messages, without MQTT or threads.

    Call `handle()` for each message inside `store.transaction()`, then
    `finish_batch()` (still inside), commit, then publish what `acks_due()` and
    `resends_due()` return. After a failed commit call `load()` to forget what
    the rolled-back transaction had changed in memory.
    """

    def __init__(
        self,
        store: HQStore,
        *,
        prefix: str = DEFAULT_PREFIX,
        gap_wait_s: float = DEFAULT_GAP_WAIT_S,
        gap_backoff_max_s: float = DEFAULT_GAP_BACKOFF_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_prefix(prefix)
        self.store = store
        self.prefix = prefix
        self.gap_wait_s = gap_wait_s
        self.gap_backoff_max_s = max(gap_backoff_max_s, gap_wait_s)
        self.clock = clock
        self.stats = Stats()
        self.acked: dict[str, tuple[str, int]] = {}
        self.load()

    def load(self) -> None:
        """(Re)build the in-memory state from the database."""
        self.trackers: dict[tuple[str, str], SeqTracker] = {}
        self.chains: dict[tuple[str, str], chain.ChainState] = {}
        self.gaps: dict[tuple[str, str], list[Gap]] = {}
        self.current: dict[str, str] = {}
        self.status_store: dict[str, str] = {}
        self.box_state: dict[str, str] = {}
        self._dirty: set[tuple[str, str]] = set()
        now = self.clock()
        for row in self.store.known_stores():
            key = (row["box"], row["store"])
            t = SeqTracker()
            for s in self.store.seqs(*key):
                t.add(s)
            self.trackers[key] = t
            self.chains[key] = chain.ChainState(
                row["store"],
                upto=row.get("chain_upto") or 0,
                head=row.get("chain_head"),
                sealed=row.get("chain_sealed") or 0,
                unsealed=row.get("chain_unsealed") or 0,
                breaks=row.get("chain_breaks") or 0,
            )
            self.current[row["box"]] = row["store"]  # rows in first-seen order: latest wins
            self.gaps[key] = merge_gaps([], t.missing(), now, self.gap_wait_s)
        for b in self.store.box_rows():
            if b["current_store"]:
                self.current[b["box"]] = b["current_store"]
            if b["status_store"]:
                self.status_store[b["box"]] = b["status_store"]
            if b["state"]:
                self.box_state[b["box"]] = b["state"]
        # Acks published before a reload may not match the database any more.
        self.acked = {}

    # -- messages --------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """Process one message; never raises for bad input (it becomes a reject)."""
        self.stats.messages += 1
        at = iso_now()
        parts = split_topic(self.prefix, topic)
        if parts is None or parts[1] not in (EVENT, STATUS):
            self._reject(topic, payload, "bad_topic", f"not {self.prefix}/BOX/event|status", None)
            return
        box, kind = parts
        try:
            with self.store.transaction():  # a savepoint: one bad message undoes only itself
                if kind == "event":
                    self._event(topic, box, payload, at)
                else:
                    self._status(topic, box, payload, at)
        except StoreError as err:
            if isinstance(err.__cause__, sqlite3.OperationalError):
                raise  # locked, disk full, I/O: the whole batch fails and is not acked
            self._internal_error(topic, payload, box, err)
        except Exception as err:  # a bug must not stop collection; keep the evidence
            self._internal_error(topic, payload, box, err)

    def _internal_error(self, topic: str, payload: bytes, box: str, err: Exception) -> None:
        self.stats.errors += 1
        log.error("internal error on %s: %r", topic, err, exc_info=err)
        self._reject(topic, payload, "internal_error", repr(err)[:200], box)

    def _reject(
        self, topic: str, payload: bytes, reason: str, detail: str, box: str | None
    ) -> None:
        self.stats.rejects += 1
        log.warning("reject %s on %s: %s", reason, topic, detail)
        self.store.add_reject(topic=topic, payload=payload, reason=reason, detail=detail, box=box)

    def _event(self, topic: str, box: str, payload: bytes, at: str) -> None:
        try:
            p = parse_event(box, payload)
        except Rejected as r:
            self._reject(topic, payload, r.reason, r.detail, box)
            return
        ev = p.event
        store, seq = ev["store"], ev["seq"]
        key = (box, store)
        self.store.ensure_box(box, at)
        new_store = self.store.ensure_store(box, store, at)
        result = self.store.insert_event(
            box=box,
            store=store,
            seq=seq,
            event=ev,
            payload=p.text,
            topic=topic,
            quarantine=p.quarantine,
            received_at=at,
        )
        if result == "duplicate":
            self.stats.duplicates += 1
            t = self.trackers.get(key)
            if t is not None and seq <= t.upto:
                # The box sends again what HQ acked: it did not take that ack (lost, or
                # naming another version than its own). Ack again, as HQ holds it now.
                self.acked.pop(box, None)
            return
        if result == "conflict":
            self._conflict(topic, box, store, seq, p, at)
            return
        self.stats.events += 1
        self.store.note_event(box, at)
        if p.quarantine:
            self.stats.quarantined += 1
            self._reject(topic, payload, p.quarantine, f"{p.detail} (kept for seq {seq})", box)
        else:
            self._box_correction(box, store, seq, ev, at)
        own = ev.get(chain.HASH)
        if not p.quarantine and integrity.anchor_heads(self.store.db, box, store, seq) - {own}:
            # The box published another chain head for this seq before it arrived.
            self._check_anchor(box, store, {"seq": seq, "head": own}, at)
        # Memory last: if anything above raised, the savepoint undid the rows
        # and memory must not claim them.
        if new_store:
            self._new_store(box, store)
        self.trackers.setdefault(key, SeqTracker()).add(seq)
        self._dirty.add(key)

    def _box_correction(self, box: str, store: str, seq: int, ev: dict[str, Any], at: str) -> None:
        """A box's assign, void or restamp event, also written to the audit trail."""
        if ev["type"] in ("assign", "void"):
            self.store.add_correction(
                box=box,
                store=store,
                ref_seq=ev["ref_seq"],
                action=ev["type"],
                source="box",
                car=ev["car"].strip() if ev["type"] == "assign" else None,
                reason=ev.get("reason"),
                by=ev.get("by"),
                event_seq=seq,
                at=at,
            )
        elif ev["type"] == "restamp":
            detail = {k: ev[k] for k in STAMP_FIELDS}
            self.store.add_correction(
                box=box,
                store=store,
                ref_seq=ev["ref_seq"],
                action="restamp",
                source="box",
                by=ev.get("by") if isinstance(ev.get("by"), str) else None,
                event_seq=seq,
                detail=json.dumps(detail),
                at=at,
            )

    def _new_store(self, box: str, store: str) -> None:
        self.stats.new_stores.append((box, store))
        self.trackers.setdefault((box, store), SeqTracker())
        old = self.current.get(box)
        if box in self.status_store and self.status_store[box] != store:
            # The box's own status names another store: this one is old (or not
            # yet announced); keep it apart, do not switch.
            log.warning(
                "box %s: events of store %s arrive, but its status says store %s",
                box,
                store,
                self.status_store[box],
            )
            return
        self._switch(box, store, old)

    def _switch(self, box: str, store: str, old: str | None) -> None:
        self.current[box] = store
        self.store.set_current_store(box, store, changed=old is not None and old != store)
        if old is not None and old != store:
            log.warning("box %s: NEW STORE %s (was %s): a new sequence starts", box, store, old)
        else:
            log.info("box %s: store %s", box, store)

    def _status(self, topic: str, box: str, payload: bytes, at: str) -> None:
        if not payload:
            return  # a retained status being cleared
        try:
            st, text = load_object(payload)
        except Rejected as r:
            self._reject(topic, payload, "bad_status", f"{r.reason}: {r.detail}", box)
            return
        if not isinstance(st.get("state"), str):
            self._reject(topic, payload, "bad_status", "no state string", box)
            return
        if "box" in st and st["box"] != box:
            self._reject(topic, payload, "box_mismatch", f"status box {st['box']!r}", box)
            return
        self.stats.statuses += 1
        self.store.record_status(box, st, text, at)
        was = self.box_state.get(box)
        self.box_state[box] = st["state"]
        if st["state"] == "ready" and was is not None and was != "ready":
            # Back from lost/offline: requests made meanwhile went nowhere, and
            # back-off may have grown to a minute; ask again soon.
            soon = self.clock() + self.gap_wait_s
            for (b, _s), gaps in self.gaps.items():
                if b == box:
                    for g in gaps:
                        g.next_at = min(g.next_at, soon)
        store = st.get("store")
        if isinstance(store, str) and store and len(store) <= MAX_STORE_ID:
            if self.store.ensure_store(box, store, at):
                self.trackers.setdefault((box, store), SeqTracker())
                self.stats.new_stores.append((box, store))
            self.status_store[box] = store
            old = self.current.get(box)
            if old != store:
                self._switch(box, store, old)
            last, backlog = st.get("last_seq"), st.get("backlog")
            if is_int(last) and is_int(backlog) and backlog == 0 and last <= MAX_SEQ:
                t = self.trackers[(box, store)]
                if last > t.hint:
                    t.hint = last
                    self._dirty.add((box, store))
            integrity.record_anchor(self.store.db, box, store, st, at)
            self._check_anchor(box, store, st.get("chain"), at)

    # -- after a batch ------------------------------------------------------------

    def finish_batch(self) -> None:
        """Refresh gaps and persist progress of the stores this batch touched."""
        now = self.clock()
        for key in self._dirty:
            t = self.trackers[key]
            self._walk_chain(key, t.upto)
            ranges = t.missing()
            self.gaps[key] = merge_gaps(self.gaps.get(key, []), ranges, now, self.gap_wait_s)
            self.store.update_store_progress(
                *key,
                upto=t.upto,
                max_seq=t.max_seq,
                events=t.events,
                missing=sum(b - a + 1 for a, b in ranges),
                gaps=gaps_text(ranges),
            )
        self._dirty.clear()

    def ack_topic(self, box: str) -> str:
        """`{prefix}/{box}/ack`."""
        return Topics(self.prefix, box).ack

    def acks_due(self, everything: bool = False) -> list[tuple[str, str, int]]:
        """(box, store, upto) whose ack moved since last published (all if `everything`).

        Only the current store is acked, and only once seq 1 is in: `upto` 0
        acknowledges nothing.
        """
        out = []
        for box, store in sorted(self.current.items()):
            t = self.trackers.get((box, store))
            if t is None or t.upto < 1:
                continue
            if everything or self.acked.get(box) != (store, t.upto):
                out.append((box, store, t.upto))
        return out

    def ack_payload(self, box: str, store: str, upto: int) -> bytes:
        """The ack: `store`, `upto` and `head`, the hash of the event HQ holds at `upto`.

        With `head` the box checks that HQ holds *its* event there, not one somebody
        else published under its name first (it then publishes its own again).
        """
        ack: dict[str, Any] = {"store": store, "upto": upto}
        rows = self.store.event_payloads(box, store, upto, upto, limit=1)
        head = json.loads(rows[0][1]).get(chain.HASH) if rows else None
        # A disputed seq decided for its other version: that one is what HQ holds.
        head = integrity.kept_version(self.store.db, box, store, upto) or head
        if chain.is_hash(head):
            ack["head"] = head
        return message_bytes(ack)

    def ack_sent(self, box: str, store: str, upto: int) -> None:
        """Remember a published ack."""
        self.acked[box] = (store, upto)
        self.stats.acks += 1

    def resends_due(self) -> list[tuple[str, str, int, int]]:
        """(box, store, from, to) to request now; advances each gap's back-off."""
        now = self.clock()
        out = []
        for (box, store), gaps in self.gaps.items():
            for g in gaps:
                if g.next_at <= now:
                    g.attempts += 1
                    delay = min(self.gap_wait_s * 2**g.attempts, self.gap_backoff_max_s)
                    g.next_at = now + delay
                    out.append((box, store, g.lo, g.hi))
        return out


# -- the collector (threads and MQTT) ------------------------------------------------
