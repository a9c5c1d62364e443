"""The box's publishing side: each event's bytes, and the high-water mark before them.

Events are published only after their turn's commit attempt (module docstring of
daemon.py); even when the card refuses writes they go out, because HQ having them is
better than both copies waiting on a full disk. Before any seq that is not on disk, the
box's retained high-water mark (`{prefix}/{box}/hwm`) goes out in the same ordered
stream, so a restarted box never numbers new events with their seqs (seqfloor.py).

Core thread only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from checkpoint.box.keeper import CardKeeper
from checkpoint.contracts import Topics, event_bytes, message_bytes
from checkpoint.core.outbox import Outbox
from checkpoint.core.timing import Pipeline
from checkpoint.errors import StoreError
from checkpoint.mqtt import Link

log = logging.getLogger("checkpoint.box.daemon")

PAYLOAD_CACHE = 4096  # events' bytes kept in memory beyond those not on disk yet


class Sender:
    """The payload cache (implements seqfloor.Payloads) and the publish step."""

    def __init__(
        self, keeper: CardKeeper, pipeline: Pipeline, outbox: Outbox, topics: Topics
    ) -> None:
        self.keeper = keeper
        self.pipeline = pipeline
        self.outbox = outbox
        self.topics = topics
        self.hwm_sent = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def keep(self, event: dict[str, Any]) -> None:
        """Serialise a new event once: these bytes are published, stored and resent."""
        self._cache[event["seq"]] = event_bytes(event)

    def trim(self) -> None:
        """Forget cached bytes beyond PAYLOAD_CACHE, never those not on disk yet."""
        unstored = self.keeper.unstored
        keep_from = unstored[0]["seq"] if unstored else 1 << 62
        while len(self._cache) > PAYLOAD_CACHE and next(iter(self._cache)) < keep_from:
            self._cache.popitem(last=False)

    def cached(self, seq: int) -> bytes | None:
        return self._cache.get(seq)

    def plain(self, seq: int) -> bytes | None:
        """The event's bytes from memory or the store (500 read ahead), or None."""
        data = self._cache.get(seq)
        if data is not None:
            return data
        alarms = self.keeper.alarms
        try:
            rows = self.keeper.store.event_payloads(seq, seq + 499)
        except StoreError as e:
            alarms["store"] = f"{e} (while reading events to send)"
            return None
        for s, text in rows:
            self._cache[s] = text.encode()
        data = self._cache.get(seq)
        if data is None:
            log.error("event seq %d missing from the store; cannot publish it", seq)
            alarms["outbox"] = f"event seq {seq} missing from store"
        return data

    def publish(
        self,
        link: Link,
        seqs: list[int],
        now: int,
        payload: Callable[[int], bytes | None],
    ) -> None:
        """Publish `seqs` (the outbox's choice, gated by the floor) as `payload` gives them."""
        if seqs and seqs[-1] > max(self.keeper.durable_last, self.hwm_sent):
            # About to send seqs that are not on disk: first tell the broker (retained)
            # how far this store's numbering has gone, in the same ordered stream.
            hwm = self.pipeline.next_seq - 1
            # The chain head lets a restarted box chain its next event to the real one.
            body = {
                "store": self.keeper.store.store_id,
                "last_seq": hwm,
                "head": self.pipeline.head,
            }
            if link.publish(self.topics.hwm, message_bytes(body), qos=1, retain=True) is None:
                return
            self.hwm_sent = hwm
        for seq in seqs:
            data = payload(seq)
            if data is None:
                break
            mid = link.publish(self.topics.event, data, qos=1)
            if mid is None:
                break
            self.outbox.sent(seq, mid, now)
