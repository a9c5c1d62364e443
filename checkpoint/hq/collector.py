"""HQ collector: box events from MQTT into HQ's SQLite store, exactly once, acked.

Threads::

    paho network thread ── LinkEvent ──► queue.Queue ──► core thread (owns HQStore)
                                                          Ingest: validate, store, count
                                                          commit (synchronous=FULL)
                                                          then publish acks / resend cmds

The paho callback only enqueues. The core thread takes everything queued (up to
`batch_max`), stores it in ONE transaction, commits, and only then publishes one
retained ack per box whose acknowledged position moved: an ack is a promise that
the events are on HQ's disk. paho has already PUBACKed a message when its callback
returns, so a crash between PUBACK and commit loses it at HQ; the application-level
ack is what makes delivery reliable: the box keeps re-publishing what HQ has not acked.

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

Chain verification (`checkpoint.core.chain`): an event whose seal does not match its own
content is quarantined on arrival (`chain_hash`): it is not what the box made. Links
(`prev` = hash of the seq before) are checked as each store's contiguous prefix
grows, so out-of-order arrival is fine. A broken link is recorded in `chain_breaks`,
counted in `hq status` and listed in `hq rejects` (`chain_break`); the event itself
is kept and not quarantined: both events are self-consistent, so which one is wrong
(or whether the box itself lost its chain head in a crash) is for the officials to
judge with the box's SD card and `checkpoint verify`. A store whose events carry no
seal at all (older box software) is counted as unsealed, not as broken.

Forgery (`checkpoint.hq.integrity`): a second version of a (box, store, seq) is a conflict:
both are kept, a `conflict` break is recorded and neither counts in the results until an
audited `keep` decision (`hq conflict`). Every chain head a box publishes in its status
is kept (`anchors`) and compared with the event HQ holds under that seq, whichever
arrives first (`forked`). Acks carry the hash of the event HQ holds at `upto`, so the
real box notices when HQ holds somebody else's event and publishes its own again.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkpoint import EVENT_SCHEMA
from checkpoint.core import chain
from checkpoint.errors import CommandError, StoreError
from checkpoint.hq import fixes, integrity
from checkpoint.hq.store import MAX_CAR, HQStore, iso_now
from checkpoint.mqtt import Connected, Disconnected, Link, LinkEvent, Message, SubAck

log = logging.getLogger("checkpoint.hq.collector")

DEFAULT_PREFIX = "rally"
DEFAULT_GAP_WAIT_S = 3.0
DEFAULT_GAP_BACKOFF_MAX_S = 60.0
DEFAULT_SESSION_EXPIRY_S = 3600
MAX_SEQ = 2**53  # beyond this JSON numbers stop being exact integers
MAX_STORE_ID = 128
UTC_MIN_NS = int(_dt.datetime(2019, 1, 1, tzinfo=_dt.UTC).timestamp()) * 10**9
UTC_MAX_NS = int(_dt.datetime(2080, 1, 1, tzinfo=_dt.UTC).timestamp()) * 10**9
GAPS_SHOWN = 8


def default_client_id(db_path: str | Path) -> str:
    """A stable MQTT client id per HQ database, so a restarted HQ resumes its session."""
    digest = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:12]
    return f"checkpoint-hq-{digest}"


def check_prefix(prefix: str) -> str:
    """A topic prefix: non-empty, no wildcards, no leading or trailing slash."""
    if not prefix or any(c in prefix for c in "+#\0") or prefix[0] == "/" or prefix[-1] == "/":
        raise CommandError(f"topic prefix {prefix!r} is not usable (e.g. rally or rally/2024)")
    return prefix


# -- validation ------------------------------------------------------------------


class Rejected(Exception):
    """An input that cannot be stored as an event; `reason` is a short stable tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Parsed:
    """An event whose identity (box, store, seq) is sound.

    `quarantine` is set (a reason tag) when its content is not: it is still
    stored, because it holds its seq and the box would otherwise resend it
    forever, but it never enters export or results, and it is also a reject.
    """

    event: dict[str, Any]
    text: str
    quarantine: str | None = None
    detail: str = ""


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_object(payload: bytes) -> tuple[dict[str, Any], str]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Rejected("bad_utf8", str(err)) from None
    try:
        obj = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as err:
        raise Rejected("bad_json", str(err)[:200]) from None
    if not isinstance(obj, dict):
        raise Rejected("not_object", f"JSON {type(obj).__name__}, expected an object")
    return obj, text


def _content_problem(ev: dict[str, Any]) -> tuple[str, str] | None:
    """Why a known event type's content is unusable, or None. Unknown types pass."""
    kind = ev["type"]
    required: dict[str, type] = {}
    if kind == "passage":
        required = {
            "checkpoint": str,
            "input": str,
            "source": str,
            "mono_ns": int,
            "utc_ns": int,
            "utc": str,
            "clock": str,
            "uncertainty_ns": int,
        }
    elif kind == "restamp":
        required = {"ref_seq": int, "utc_ns": int, "utc": str, "clock": str, "uncertainty_ns": int}
    elif kind == "assign":
        required = {"ref_seq": int, "car": str}
    elif kind == "void":
        required = {"ref_seq": int, "reason": str}
    else:
        return None
    for name, typ in required.items():
        if name not in ev or ev[name] is None:
            return "missing_field", name
        v = ev[name]
        ok = _is_int(v) if typ is int else isinstance(v, typ)
        if not ok:
            return "bad_type", f"{name}={v!r}"
    if "by" in ev and not isinstance(ev["by"], str):
        return "bad_type", f"by={ev['by']!r}"
    if "utc_ns" in required and not UTC_MIN_NS <= ev["utc_ns"] < UTC_MAX_NS:
        return "bad_time", f"utc_ns={ev['utc_ns']} outside 2019..2080"
    if "uncertainty_ns" in required and ev["uncertainty_ns"] < 0:
        return "bad_type", f"uncertainty_ns={ev['uncertainty_ns']} is negative"
    if "ref_seq" in required and not 1 <= ev["ref_seq"] < ev["seq"]:
        return "bad_ref", f"ref_seq={ev['ref_seq']} must be 1..seq-1"
    if kind == "assign":
        car = ev["car"].strip()
        if not (1 <= len(car) <= MAX_CAR) or not car.isprintable():
            return "bad_type", f"car={ev['car']!r}"
    return None


def parse_event(topic_box: str, payload: bytes) -> Parsed:
    """Validate one event payload published on `{prefix}/{topic_box}/event`.

    Raises Rejected when the identity cannot be trusted (not JSON, unknown
    schema, box differs from the topic, store/seq/type missing or ill-typed,
    seq < 1); such input is only a reject. Otherwise returns Parsed, with
    `quarantine` set if the content is bad (absurd time, missing field).
    """
    ev, text = _load_object(payload)
    schema = ev.get("schema")
    if schema != EVENT_SCHEMA:
        raise Rejected("unknown_schema", f"schema={schema!r}")
    for name in ("box", "store", "type"):
        if name not in ev or ev[name] is None:
            raise Rejected("missing_field", name)
        if not isinstance(ev[name], str) or not ev[name]:
            raise Rejected("bad_type", f"{name}={ev[name]!r}")
    if ev["box"] != topic_box:
        raise Rejected("box_mismatch", f"payload box {ev['box']!r} on topic of {topic_box!r}")
    if len(ev["store"]) > MAX_STORE_ID:
        raise Rejected("bad_type", f"store id longer than {MAX_STORE_ID}")
    seq = ev.get("seq")
    if seq is None:
        raise Rejected("missing_field", "seq")
    if not _is_int(seq):
        raise Rejected("bad_type", f"seq={seq!r}")
    if not 1 <= seq <= MAX_SEQ:
        raise Rejected("bad_seq", f"seq={seq}")
    problem = _content_problem(ev)
    if problem is not None:
        return Parsed(ev, text, quarantine=problem[0], detail=problem[1])
    if chain.is_sealed(ev):
        bad_seal = chain.seal_problem(ev)
        if bad_seal is not None:
            return Parsed(ev, text, quarantine="chain_hash", detail=bad_seal)
    return Parsed(ev, text)


# -- contiguity and gaps -------------------------------------------------------------


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


class Ingest:
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

    def split_topic(self, topic: str) -> tuple[str, str] | None:
        """(box, kind) of `{prefix}/{box}/{kind}`, or None for a topic not ours."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 2 or not parts[0]:
            return None
        return parts[0], parts[1]

    def handle(self, topic: str, payload: bytes) -> None:
        """Process one message; never raises for bad input (it becomes a reject)."""
        self.stats.messages += 1
        at = iso_now()
        parts = self.split_topic(topic)
        if parts is None or parts[1] not in ("event", "status"):
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
        elif ev["type"] in ("assign", "void"):
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
            detail = {k: ev[k] for k in ("utc_ns", "utc", "clock", "uncertainty_ns")}
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

    def _conflict(self, topic: str, box: str, store: str, seq: int, p: Parsed, at: str) -> None:
        """Another version of an event HQ holds: keep it, flag the seq, count nothing yet.

        A forgery sent with a stolen credential and the real box's event end up here in
        either order. Both are kept; until HQ decides (`hq conflict`, audited) neither
        counts in the results. A version with a broken seal is kept as evidence only.
        """
        self.stats.conflicts += 1
        integrity.add_conflict(
            self.store.db,
            box=box,
            store=store,
            seq=seq,
            payload=p.text,
            quarantine=p.quarantine,
            topic=topic,
            at=at,
        )
        what = "a version with a broken seal" if p.quarantine else "another sealed version"
        detail = (
            f"{what} of seq {seq} ({integrity.version_id(p.text)[:16]}...) arrived; HQ holds "
            "both and counts neither until decided (checkpoint hq conflict)"
        )
        self._reject(topic, p.text.encode(), "conflict", f"{store[:8]}/{seq}: {detail}", box)
        if p.quarantine or self.store.has_chain_break(box, store, seq, "conflict"):
            return
        self._anchor_break(box, store, seq, "conflict", detail, at)

    def _anchor_break(
        self, box: str, store: str, seq: int, reason: str, detail: str, at: str
    ) -> None:
        """Record a break found outside the chain walk (conflict, forked)."""
        c = self.chains.setdefault((box, store), chain.ChainState(store))
        c.breaks += 1
        self._dirty.add((box, store))
        self.stats.chain_breaks += 1
        self.store.add_chain_break(
            box=box, store=store, seq=seq, reason=reason, detail=detail, at=at
        )
        log.warning("box %s store %s seq %d: CHAIN BREAK %s: %s", box, store, seq, reason, detail)

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
            st, text = _load_object(payload)
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
            if _is_int(last) and _is_int(backlog) and backlog == 0 and last <= MAX_SEQ:
                t = self.trackers[(box, store)]
                if last > t.hint:
                    t.hint = last
                    self._dirty.add((box, store))
            integrity.record_anchor(self.store.db, box, store, st, at)
            self._check_anchor(box, store, st.get("chain"), at)

    def _check_anchor(self, box: str, store: str, anchor: object, at: str) -> None:
        """Compare the box's own chain head (status `chain`: {"seq", "head"}) with HQ's
        copy of that event: a different hash means HQ holds another event under that
        seq than the box does (a forgery that arrived first, or an edited database)."""
        if not isinstance(anchor, dict):
            return
        seq, head = anchor.get("seq"), anchor.get("head")
        if not _is_int(seq) or not 1 <= seq <= MAX_SEQ or not chain.is_hash(head):
            return
        rows = self.store.event_payloads(box, store, seq, seq, limit=1)
        if not rows:
            return  # not arrived yet: checked against every anchor when it does
        try:
            ours = json.loads(rows[0][1]).get(chain.HASH)
        except (ValueError, AttributeError):  # pragma: no cover - parsed on arrival
            ours = None
        # Every head the box ever published for this seq, not only this status's.
        heads = integrity.anchor_heads(self.store.db, box, store, seq) | {head}
        head = next((h for h in sorted(heads) if h != ours), ours)
        if ours == head or self.store.has_chain_break(box, store, seq, "forked"):
            return
        detail = (
            f"the box's chain head at seq {seq} is {head[:16]}..., HQ's event has "
            f"{str(ours)[:16]}...: HQ holds a different event than the box"
        )
        self._anchor_break(box, store, seq, "forked", detail, at)
        self._reject(
            f"{self.prefix}/{box}/event",
            rows[0][1].encode(),
            "chain_break",
            f"seq {seq}: forked: {detail}",
            box,
        )

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

    def _walk_chain(self, key: tuple[str, str], upto: int) -> None:
        """Verify the links of the store's events up to its contiguous `upto`."""
        box, store = key
        c = self.chains.get(key)
        if c is None:
            c = self.chains[key] = chain.ChainState(store)
        at = iso_now()
        while c.upto < upto:
            rows = self.store.event_payloads(box, store, c.upto + 1, upto)
            if not rows or rows[0][0] != c.upto + 1:  # pragma: no cover - upto says contiguous
                log.error("box %s store %s: seq %d not in the database", box, store, c.upto + 1)
                return
            for seq, text in rows:
                try:
                    ev = json.loads(text)
                except ValueError:  # pragma: no cover - stored payloads parsed on arrival
                    ev = {"seq": seq}
                problem = c.step(ev)
                if problem is None:
                    continue
                reason, detail = problem
                if reason == "unsealed" and c.sealed == 0:
                    continue  # a store of box software before the chain: counted, not broken
                if reason == "deleted" and ev.get(chain.PREV) in integrity.conflict_versions(
                    self.store.db, box, store, seq - 1
                ):
                    # It follows the other version of seq - 1: that conflict is the break
                    # (recorded and counted when it arrived).
                    continue
                c.breaks += 1
                self.stats.chain_breaks += 1
                self.store.add_chain_break(
                    box=box, store=store, seq=seq, reason=reason, detail=detail, at=at
                )
                log.warning(
                    "box %s store %s seq %d: CHAIN BREAK %s: %s", box, store, seq, reason, detail
                )
                if reason not in ("edited", "malformed"):  # those were quarantined on arrival
                    self._reject(
                        f"{self.prefix}/{box}/event",
                        text.encode(),
                        "chain_break",
                        f"seq {seq}: {reason}: {detail} (event kept)",
                        box,
                    )
        self.store.update_chain(
            box,
            store,
            upto=c.upto,
            head=c.head,
            sealed=c.sealed,
            unsealed=c.unsealed,
            breaks=c.breaks,
        )

    def ack_topic(self, box: str) -> str:
        """`{prefix}/{box}/ack`."""
        return f"{self.prefix}/{box}/ack"

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
        return json.dumps(ack, separators=(",", ":")).encode()

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


class Collector:
    """HQ's collector: subscribes, stores, acks, repairs gaps. Library first.

    `start()` opens the database on the core thread (errors re-raised here) and
    then starts the MQTT link; `stop()` stops the link, drains what was queued
    and closes the database. `run()` does both around a wait for `request_stop()`.
    """

    def __init__(
        self,
        broker_url: str,
        db_path: str | Path,
        *,
        prefix: str = DEFAULT_PREFIX,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        client_id: str | None = None,
        gap_wait_s: float = DEFAULT_GAP_WAIT_S,
        gap_backoff_max_s: float = DEFAULT_GAP_BACKOFF_MAX_S,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        keepalive: int = 15,
        batch_max: int = 500,
        tick_s: float = 0.05,
        heartbeat_s: float = 5.0,
    ) -> None:
        if not (gap_wait_s > 0 and math.isfinite(gap_wait_s)):
            raise CommandError(f"gap_wait_s must be a positive number, got {gap_wait_s}")
        check_prefix(prefix)
        self.db_path = Path(db_path)
        self.prefix = prefix
        self.broker_url = broker_url
        self.client_id = client_id or default_client_id(db_path)
        self.gap_wait_s = gap_wait_s
        self.gap_backoff_max_s = gap_backoff_max_s
        self.batch_max = batch_max
        self.tick_s = tick_s
        self.heartbeat_s = heartbeat_s
        self._fixes = fixes.Publisher(prefix)
        self._queue: queue.Queue[LinkEvent] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._done = threading.Event()
        # Set once the broker granted our subscriptions (after the first batch
        # that saw the SubAck), cleared on disconnect: tests and the CLI wait on it.
        self.subscribed = threading.Event()
        self._start_error: BaseException | None = None
        self._core_error: BaseException | None = None
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None
        self.ingest: Ingest | None = None
        # Link validates URL and credentials now, so a typo fails before any thread.
        self.link = Link(
            broker_url,
            self.client_id,
            self._queue.put,
            username=username,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            keepalive=keepalive,
            session_expiry_s=session_expiry_s,
            subscriptions=[(f"{prefix}/+/event", 1), (f"{prefix}/+/status", 1)],
        )

    @property
    def stats(self) -> Stats:
        """Counters since start (read from any thread; values are plain ints)."""
        return self.ingest.stats if self.ingest else Stats()

    def _lock(self) -> None:
        # Two collectors on one database would share a client id (and steal
        # each other's MQTT session) and interleave acks: refuse the second.
        # A lock file, not the database: closing any other descriptor of the
        # database file would drop SQLite's own POSIX locks.
        path = self.db_path.with_name(self.db_path.name + ".lock")
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(f"cannot create lock file {path}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StoreError(
                f"another HQ collector (pid {other or '?'}) is using {self.db_path}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def start(self, timeout_s: float = 30) -> None:
        """Open the database (migrating it) and start collecting in the background."""
        if self._thread is not None:
            return
        self._lock()
        self._thread = threading.Thread(target=self._core, name="hq-core", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise StoreError(f"HQ database {self.db_path} did not open within {timeout_s} s")
        if self._start_error is not None:
            self._thread.join()
            self._unlock()
            raise self._start_error
        self.link.start()
        log.info(
            "HQ collecting %s/+/event from %s into %s (client id %s)",
            self.prefix,
            self.broker_url,
            self.db_path,
            self.client_id,
        )

    def request_stop(self) -> None:
        """Ask `run()` to return (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout_s: float = 10) -> None:
        """Stop the link, store what was already queued, close the database."""
        self.link.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if not self._thread.is_alive():
                self._unlock()

    def run(self) -> None:
        """Collect until `request_stop()` (the CLI wires SIGTERM/SIGINT to it)."""
        self.start()
        try:
            while not self._stop.wait(0.5):
                if self._done.is_set():
                    break
        finally:
            self.stop()
        if self._core_error is not None:
            raise StoreError(f"HQ collector stopped: {self._core_error}") from self._core_error

    # -- core thread ---------------------------------------------------------------

    def _core(self) -> None:
        try:
            store = HQStore(self.db_path)
            self.ingest = Ingest(
                store,
                prefix=self.prefix,
                gap_wait_s=self.gap_wait_s,
                gap_backoff_max_s=self.gap_backoff_max_s,
            )
            with store.transaction():
                store.set_state("client_id", self.client_id)
                store.set_state("broker", self.broker_url)
                store.set_state("started_at", iso_now())
                store.set_state("pid", str(os.getpid()))
                store.set_state("link", "starting")
        except BaseException as err:  # re-raised by start() on the caller's thread
            self._start_error = err
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(store, self.ingest)
        except BaseException as err:
            self._core_error = err
            log.exception("HQ core thread failed")
        finally:
            self._done.set()
            store.close()

    def _loop(self, store: HQStore, ingest: Ingest) -> None:
        next_beat = 0.0
        while True:
            stopping = self._stop.is_set()
            items = self._drain(0 if stopping else self.tick_s)
            if items:
                self._batch(store, ingest, items)
            if stopping and not items:
                with store.transaction():
                    store.set_state("link", "stopped")
                    store.set_state("heartbeat_at", iso_now())
                return
            if self.link.connected:
                self._resends(store, ingest)
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.heartbeat_s
                try:
                    with store.transaction():
                        store.set_state("heartbeat_at", iso_now())
                except StoreError as err:
                    log.error("heartbeat: %s", err)
                self._publish_fixes(store)

    def _publish_fixes(self, store: HQStore) -> None:
        """HQ's corrections back to the boxes (checkpoint.hqfix), on the heartbeat."""
        if not self.link.connected:
            return
        try:
            due = self._fixes.due(store)
        except (StoreError, sqlite3.DatabaseError) as err:
            log.error("hqfix: %s", err)
            return
        for box, topic, payload in due:
            if self.link.publish(topic, payload, qos=1, retain=True) is not None:
                self._fixes.sent(box, payload)

    def _drain(self, timeout_s: float) -> list[LinkEvent]:
        items: list[LinkEvent] = []
        try:
            items.append(
                self._queue.get(timeout=timeout_s) if timeout_s else self._queue.get_nowait()
            )
        except queue.Empty:
            return items
        while len(items) < self.batch_max:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _batch(self, store: HQStore, ingest: Ingest, items: list[LinkEvent]) -> None:
        reack_all = False
        link_state: str | None = None
        subscribed: bool | None = None
        try:
            with store.transaction():
                for item in items:
                    if isinstance(item, Message):
                        ingest.handle(item.topic, item.payload)
                    elif isinstance(item, Connected):
                        # Retained acks die with a broker that has no persistence:
                        # every (re)connect re-publishes all of them.
                        reack_all = True
                        self._fixes.forget()
                        subscribed = False
                        ingest.stats.connects += 1
                        link_state = f"connected (session present: {item.session_present})"
                    elif isinstance(item, Disconnected):
                        link_state = f"disconnected: {item.reason}"
                        subscribed = False
                    elif isinstance(item, SubAck):
                        if item.ok:
                            subscribed = True
                            store.set_state("subscribed_at", iso_now())
                        else:
                            link_state = f"subscription refused: {', '.join(item.reasons)}"
                            log.error("HQ %s", link_state)
                ingest.finish_batch()
                if link_state is not None:
                    store.set_state("link", link_state)
                    store.set_state("link_at", iso_now())
        except StoreError as err:
            # Nothing of this batch is on disk: no ack goes out, so boxes resend.
            ingest.stats.errors += 1
            log.error("batch of %d not stored: %s", len(items), err)
            ingest.load()
            time.sleep(0.2)  # a full disk should not spin the CPU
            return
        ingest.stats.batches += 1
        if subscribed is True:
            self.subscribed.set()
        elif subscribed is False:
            self.subscribed.clear()
        for box, s, upto in ingest.acks_due(everything=reack_all):
            payload = ingest.ack_payload(box, s, upto)
            if self.link.publish(ingest.ack_topic(box), payload, qos=1, retain=True) is not None:
                ingest.ack_sent(box, s, upto)

    def _resends(self, store: HQStore, ingest: Ingest) -> None:
        due = ingest.resends_due()
        if not due:
            return
        sent = []
        for box, s, lo, hi in due:
            cmd = {"cmd": "resend", "store": s, "from": lo, "to": hi}
            payload = json.dumps(cmd, separators=(",", ":")).encode()
            if self.link.publish(f"{self.prefix}/{box}/cmd", payload, qos=1) is not None:
                ingest.stats.resends += 1
                sent.append((box, s))
                log.info("box %s store %s: asked to resend %d..%d", box, s[:8], lo, hi)
        try:
            with store.transaction():
                at = iso_now()
                for box, s in sent:
                    store.note_resend(box, s, at)
        except StoreError as err:
            log.error("resend bookkeeping: %s", err)
