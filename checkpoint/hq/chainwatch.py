"""HQ's chain checks on ingest: seals, links, anchors and conflicting versions.

A mixin of `checkpoint.hq.ingest.Ingest`, kept apart because it is the integrity half
of ingest (what `hq rejects` calls `chain_break` and `conflict`) and reads best on its
own. It needs from its host: `store` (HQStore), `stats`, `prefix`, `chains` (per
(box, store) `chain.ChainState`), `_dirty` (stores touched this batch) and
`_reject(topic, payload, reason, detail, box)`.

Chain verification (`checkpoint.core.chain`): an event whose seal does not match its own
content is quarantined on arrival (`chain_hash`, in `checkpoint.contracts.parse_event`). Links
(`prev` = hash of the seq before) are checked as each store's contiguous prefix grows, so
out-of-order arrival is fine. A broken link is recorded in `chain_breaks`; the event itself
is kept and not quarantined: which one is wrong is for the officials to judge with the
box's SD card and `checkpoint verify`. A store whose events carry no seal at all (older
box software) is counted as unsealed, not as broken.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from checkpoint.contracts import MAX_SEQ, Parsed, Topics, is_int
from checkpoint.core import chain
from checkpoint.hq import integrity
from checkpoint.hq.store import iso_now

if TYPE_CHECKING:
    from checkpoint.hq.ingest import Stats
    from checkpoint.hq.store import HQStore

log = logging.getLogger("checkpoint.hq.collector")


class ChainChecks:
    """The chain half of Ingest (see the module docstring for what it needs)."""

    store: HQStore
    stats: Stats
    prefix: str
    chains: dict[tuple[str, str], chain.ChainState]
    _dirty: set[tuple[str, str]]

    def _reject(
        self, topic: str, payload: bytes, reason: str, detail: str, box: str | None
    ) -> None:
        raise NotImplementedError

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

    def _check_anchor(self, box: str, store: str, anchor: object, at: str) -> None:
        """Compare the box's own chain head (status `chain`: {"seq", "head"}) with HQ's
        copy of that event: a different hash means HQ holds another event under that
        seq than the box does (a forgery that arrived first, or an edited database)."""
        if not isinstance(anchor, dict):
            return
        seq, head = anchor.get("seq"), anchor.get("head")
        if not is_int(seq) or not 1 <= seq <= MAX_SEQ or not chain.is_hash(head):
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
            Topics(self.prefix, box).event,
            rows[0][1].encode(),
            "chain_break",
            f"seq {seq}: forked: {detail}",
            box,
        )

    # -- after a batch ------------------------------------------------------------

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
                        Topics(self.prefix, box).event,
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
