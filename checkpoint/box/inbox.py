"""The box's side of the broker link: connection changes, PUBACKs and HQ's messages.

Each message is checked by `messages.py` and handed to the part that owns its state:
acks and high-water marks to the seq floor, resend requests to the outbox, HQ's
corrections to the marshal feed. A message that is not what its topic promises is
counted (`bad_commands` in the status), never obeyed. Core thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from checkpoint.box.marshalfeed import MarshalFeed
from checkpoint.box.messages import BadCommands, BadMessage, parse_ack, parse_cmd, parse_hwm
from checkpoint.box.seqfloor import SeqFloor
from checkpoint.box.status import StatusBuilder
from checkpoint.contracts import Topics
from checkpoint.core.outbox import Outbox
from checkpoint.core.timing import Pipeline
from checkpoint.mqtt import Connected, Disconnected, LinkEvent, Message, PubAck, SubAck

log = logging.getLogger("checkpoint.box.daemon")


@dataclass
class Inbox:
    """Routes what the link reports to the daemon's parts (typed, no daemon reference)."""

    topics: Topics
    pipeline: Pipeline
    outbox: Outbox
    floor: SeqFloor
    status: StatusBuilder
    feed: MarshalFeed
    bad: BadCommands
    alarms: dict[str, str]
    store_id: Callable[[], str]

    def handle(self, ev: LinkEvent, now: int, events: list[dict[str, Any]]) -> None:
        """One event from the link; `events` is this turn's (an hwm may add to it)."""
        if isinstance(ev, Connected):
            log.info("broker connected")
            self.outbox.connected(now)
            self.status.reconnected()
        elif isinstance(ev, Disconnected):
            log.warning("broker link lost: %s", ev.reason)
            self.outbox.disconnected()
            self.floor.disconnected()
        elif isinstance(ev, SubAck):
            self.floor.subscribed(now)
        elif isinstance(ev, PubAck):
            self.outbox.puback(ev.mid, ev.ok, now, reason=ev.reason)
            if not ev.ok:
                self.alarms["publish"] = f"broker refused an event: {ev.reason}"
                log.error("%s", self.alarms["publish"])
            elif self.outbox.alarm is None:
                self.alarms.pop("publish", None)
        elif isinstance(ev, Message):
            self._message(ev, events)

    def _message(self, msg: Message, events: list[dict[str, Any]]) -> None:
        topic, store_id = msg.topic, self.store_id()
        if topic == self.topics.hqfix:
            try:
                self.feed.set_hq_fixes(msg.payload, store_id)
            except (ValueError, RecursionError) as e:
                self.bad(topic, str(e)[:100])
            return
        if not msg.payload and topic in (self.topics.ack, self.topics.hwm):
            return  # a retained message being cleared
        try:
            if topic == self.topics.ack:
                ack = parse_ack(msg.payload)
                if ack.store != store_id:
                    # A retained ack of an earlier store (replaced card) is normal at start.
                    log.info("ack for store %r ignored: this store is %s", ack.store, store_id)
                    return
                self.floor.on_ack(topic, ack)
            elif topic == self.topics.hwm:
                hwm = parse_hwm(msg.payload)
                if hwm.store == store_id:
                    self.floor.on_hwm(topic, hwm, events)
            elif topic == self.topics.cmd:
                top = self.pipeline.next_seq - 1
                self._resend(*parse_cmd(msg.payload).range_for(store_id, top))
        except BadMessage as e:
            self.bad(topic, str(e))

    def _resend(self, lo: int, hi: int) -> None:
        n = self.outbox.resend(lo, hi)
        log.info("HQ asked for seq %d..%d: %d scheduled", lo, hi, n)
