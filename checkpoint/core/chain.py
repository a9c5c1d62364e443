"""Tamper-evident event log: every box event is sealed into a hash chain per store.

Pure: no I/O. The contract (public, version 1; see README "Event chain"):

* ``genesis(store)`` = SHA-256 hex of ``"checkpoint/chain/1:" + store`` (UTF-8): the
  `prev` of a store's seq 1. Tying it to the store id means a chain cannot be moved
  to another store, and two stores never share a chain.
* ``canonical(event)`` = the event as JSON with keys sorted (by code point), no
  whitespace (separators ``,`` and ``:``), non-ASCII escaped as ``\\uXXXX`` (UTF-16
  surrogate pairs beyond the BMP, lowercase hex), no NaN/Infinity, encoded ASCII:
  exactly ``json.dumps(event, sort_keys=True, separators=(",", ":"),
  ensure_ascii=True, allow_nan=False)``. Events hold only strings, integers (exact,
  any size: `utc_ns` exceeds 2**53, so a verifier must parse JSON integers exactly),
  booleans, null, objects and arrays; floats are not used (their text differs
  between languages).
* ``hash`` = SHA-256 hex (lowercase) of ``canonical(event without "hash")``. The
  event includes ``prev``, the previous event's ``hash`` (or the genesis), so each
  hash covers the whole history of its store.

A chain is valid when, in seq order, seq runs 1, 2, 3... without gaps, every
event's `hash` matches its content, and every `prev` is the `hash` before it.
`verify` reports the first place where that fails and why:

``edited``     the content does not match its own hash (changed after sealing)
``deleted``    a seq is missing, or `prev` matches no event present (one was
               removed or replaced; also a missing seq 1 / wrong genesis)
``reordered``  events out of seq order, or `prev` names an event present elsewhere
``duplicate``  one seq twice
``unsealed``   an event without `prev`/`hash` (older software, or seals stripped)
``malformed``  not an event: no integer seq, `prev`/`hash` not 64 hex digits
``forked``     (HQ only) the box's own chain head for a seq, from its status,
               differs from the event HQ holds under that seq
``badsig``     (HQ only) the box's signed chain head does not verify with its key
``conflict``   (HQ only) two versions of one seq arrived (a forgery under the box's
               name, and the box's own): both kept, undecided

What the chain proves, and what it does not: the hash is not a secret, so anyone
who can rewrite a record can rewrite every later one too. An edit is evident when
the chain is compared with a copy made before it (the box's SD card against HQ's
database, a chain head published in a status message, printed or signed). See
the README's threat model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

#: Version tag of this chain format; also the genesis domain.
CHAIN_VERSION = "checkpoint/chain/1"
HASH = "hash"
PREV = "prev"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

REASONS = (
    "edited",
    "deleted",
    "reordered",
    "duplicate",
    "unsealed",
    "malformed",
    "forked",
    "badsig",
    "conflict",
)


def genesis(store_id: str) -> str:
    """The `prev` of seq 1 of store `store_id`."""
    return hashlib.sha256(f"{CHAIN_VERSION}:{store_id}".encode()).hexdigest()


def canonical(event: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an event (see the module docstring): the hashed form.

    Raises ValueError for NaN/Infinity and TypeError for values JSON cannot hold.
    """
    return json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def digest(event: Mapping[str, Any]) -> str:
    """SHA-256 hex of the event's canonical form without its `hash` (with `prev`)."""
    body = {k: v for k, v in event.items() if k != HASH}
    return hashlib.sha256(canonical(body)).hexdigest()


def seal(event: Mapping[str, Any], prev: str) -> dict[str, Any]:
    """A copy of `event` with `prev` set and `hash` computed (any old seal replaced).

    `prev` and `hash` go last, so a payload reads envelope, fields, seal.
    """
    if not is_hash(prev):
        raise ValueError(f"prev must be 64 lowercase hex digits, got {prev!r}")
    out = {k: v for k, v in event.items() if k not in (HASH, PREV)}
    out[PREV] = prev
    out[HASH] = digest(out)
    return out


def is_hash(value: object) -> bool:
    """True for a 64-digit lowercase hex string (a SHA-256 hex digest)."""
    return isinstance(value, str) and _HEX64.match(value) is not None


def is_sealed(event: Mapping[str, Any]) -> bool:
    """True if the event carries a seal (`prev` or `hash`), well-formed or not."""
    return HASH in event or PREV in event


def seal_problem(event: Mapping[str, Any]) -> str | None:
    """Why a sealed event's own seal is bad (malformed or not matching), else None.

    Checks only the event itself, not its link to the one before: HQ runs this on
    arrival, whatever order events come in.
    """
    h, p = event.get(HASH), event.get(PREV)
    if not is_hash(h) or not is_hash(p):
        return f"prev/hash must be 64 lowercase hex digits, got prev={p!r} hash={h!r}"
    try:
        ok = digest(event) == h
    except (TypeError, ValueError) as err:
        return f"cannot be serialised canonically: {err}"
    if not ok:
        return "content does not match its hash: changed after the box sealed it"
    return None


def is_int(v: object) -> TypeGuard[int]:
    """An integer and not a bool (checkpoint.contracts.is_int: defined here, below the
    contracts, which build on the chain)."""
    return isinstance(v, int) and not isinstance(v, bool)


# -- verification ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link of one store's chain."""

    box: str
    store: str
    seq: int | None
    reason: str
    detail: str
    #: Position of the offending event in the input (0-based), None for a missing one.
    index: int | None = None

    def __str__(self) -> str:
        where = f"box {self.box} store {self.store}" + (
            f" seq {self.seq}" if self.seq is not None else ""
        )
        return f"{where}: {self.reason}: {self.detail}"


@dataclass(slots=True)
class ChainState:
    """Incremental verification of one store's chain, fed events in seq order.

    `upto` is the last seq walked and `head` the `hash` that the next event's
    `prev` must equal (the genesis at the start). `head` is None after an unsealed
    event: the next sealed event is then taken as the new anchor (its break was
    reported at the unsealed one). HQ keeps one per store and walks each store's
    contiguous prefix as it grows; `verify` uses the same steps.
    """

    store: str
    upto: int = 0
    head: str | None = None
    sealed: int = 0
    unsealed: int = 0
    breaks: int = 0

    def __post_init__(self) -> None:
        if self.upto == 0 and self.head is None:
            self.head = genesis(self.store)

    def step(
        self, event: Mapping[str, Any], known: Mapping[str, int] | None = None
    ) -> tuple[str, str] | None:
        """Walk the event with seq `upto + 1`; return (reason, detail) if it breaks the chain.

        `known` maps hashes of other events present to their seqs, to tell a
        reordered chain from a deleted event. The caller checks seq order.
        """
        seq = event.get("seq")
        self.upto = seq if is_int(seq) else self.upto + 1
        if not is_sealed(event):
            self.unsealed += 1
            self.head = None
            return "unsealed", "no prev/hash: not sealed, its content cannot be verified"
        self.sealed += 1
        problem = seal_problem(event)
        claimed = event.get(HASH)
        prev = event.get(PREV)
        expected, self.head = self.head, claimed if is_hash(claimed) else None
        if problem is not None:
            reason = "malformed" if problem.startswith("prev/hash") else "edited"
            return reason, problem
        if expected is None or prev == expected:
            return None
        if known and prev in known:
            return "reordered", (
                f"chained after seq {known[prev]}, not after seq {self.upto - 1}: "
                "events were reordered"
            )
        if self.upto == 1:
            return "deleted", (
                f"prev is not the genesis of store {self.store}: the chain does not start here"
            )
        return "deleted", (
            f"prev does not match the hash of seq {self.upto - 1}: "
            "an event before it was removed or replaced"
        )


@dataclass(slots=True)
class StoreReport:
    """Verification result of one (box, store)."""

    box: str
    store: str
    events: int = 0
    sealed: int = 0
    unsealed: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    breaks: list[Break] = field(default_factory=list)


@dataclass(slots=True)
class Report:
    """Verification result of a set of events, possibly of several boxes and stores."""

    stores: list[StoreReport] = field(default_factory=list)
    malformed: list[Break] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Events checked."""
        return sum(s.events for s in self.stores)

    @property
    def breaks(self) -> list[Break]:
        """Every break found (at most one per store: the first), then malformed input."""
        return [b for s in self.stores for b in s.breaks] + self.malformed

    @property
    def first_break(self) -> Break | None:
        """The first break, or None when every chain verifies."""
        found = self.breaks
        return found[0] if found else None

    @property
    def ok(self) -> bool:
        """True when every chain verifies."""
        return not self.breaks


def _verify_store(rep: StoreReport, items: list[tuple[int, Mapping[str, Any]]]) -> None:
    """Verify one store's events (`(position, event)` in input order) into `rep`."""
    seqs = [ev.get("seq") for _, ev in items]
    present = {s for s in seqs if is_int(s)}
    known = {
        ev[HASH]: ev["seq"] for _, ev in items if is_hash(ev.get(HASH)) and is_int(ev.get("seq"))
    }
    state = ChainState(rep.store)
    rep.events = len(items)
    ints = [s for s in seqs if is_int(s)]
    rep.first_seq = min(ints) if ints else None
    rep.last_seq = max(ints) if ints else None

    def brk(seq: int | None, reason: str, detail: str, index: int | None) -> None:
        rep.breaks.append(Break(rep.box, rep.store, seq, reason, detail, index))

    last: int | None = None
    for pos, ev in items:
        seq = ev.get("seq")
        if not is_int(seq) or seq < 1:
            brk(None, "malformed", f"seq {seq!r} is not a positive integer", pos)
            break
        own = seal_problem(ev) if is_sealed(ev) else None
        if own is not None:
            # Its own content is changed (perhaps its seq): say that, not what the
            # changed seq would suggest.
            brk(seq, "malformed" if own.startswith("prev/hash") else "edited", own, pos)
            break
        if last is not None and seq == last:
            brk(seq, "duplicate", f"seq {seq} appears twice", pos)
            break
        if last is not None and seq < last:
            brk(seq, "reordered", f"seq {seq} comes after seq {last}", pos)
            break
        expected = state.upto + 1
        if seq > expected:
            if any(s in present for s in range(expected, min(seq, expected + 10_000))):
                brk(seq, "reordered", f"seq {seq} comes before seq {expected}", pos)
            else:
                missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                brk(expected, "deleted", f"seq {missing} missing before seq {seq}", None)
            break
        last = seq
        problem = state.step(ev, known)
        if problem is not None:
            brk(seq, problem[0], problem[1], pos)
            break
    rep.sealed = sum(1 for _, ev in items if is_sealed(ev))
    rep.unsealed = rep.events - rep.sealed
    rep.head = state.head


def verify_report(events: Iterable[Mapping[str, Any]]) -> Report:
    """Verify every store's chain in `events` (input order matters: it is the order
    read from the file or database). Events are grouped by (box, store), each group
    keeping its input order; every group is checked up to its first break."""
    groups: dict[tuple[str, str], list[tuple[int, Mapping[str, Any]]]] = {}
    report = Report()
    for pos, ev in enumerate(events):
        if not isinstance(ev, Mapping):
            report.malformed.append(
                Break("?", "?", None, "malformed", f"item {pos} is not a JSON object", pos)
            )
            continue
        box, store = ev.get("box"), ev.get("store")
        if not isinstance(box, str) or not isinstance(store, str) or not store:
            report.malformed.append(
                Break(str(box), str(store), None, "malformed", f"item {pos}: no box/store", pos)
            )
            continue
        groups.setdefault((box, store), []).append((pos, ev))
    for (box, store), items in groups.items():
        rep = StoreReport(box, store)
        _verify_store(rep, items)
        report.stores.append(rep)
    return report


def verify(events: Iterable[Mapping[str, Any]]) -> Break | None:
    """The first broken link in `events` (see `verify_report`), or None if all verify."""
    return verify_report(events).first_break
