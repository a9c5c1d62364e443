"""An emulated box for HQ tests (NOT the real daemon).

It keeps its own events in memory under one store id, publishes them through the
real `checkpoint.mqtt.Link` in whatever order a test says (out of order, twice,
skipping some), answers HQ's resend requests from its own events, and records
every ack and command it receives. The real daemon's outbox logic is tested
elsewhere; here the test decides what the box does, so each HQ behaviour can be
provoked on purpose.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from waits import wait_for

from checkpoint import EVENT_SCHEMA
from checkpoint.mqtt import Connected, Disconnected, Link, LinkEvent, Message, PubAck, SubAck

T0_NS = 1_713_719_000_000_000_000  # 2024-04-21T17:03:20Z


def fmt_utc(utc_ns: int) -> str:
    """The event's `utc` text (same format as checkpoint.core.timing.format_utc)."""
    import datetime as dt

    s, ns = divmod(utc_ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns:09d}Z"


class EmulatedBox:
    """One emulated box on `{prefix}/{box}/...`."""

    def __init__(
        self,
        url: str,
        box: str = "box07",
        *,
        prefix: str = "rally",
        checkpoint: str = "PC1",
        store: str | None = None,
        answer_resends: bool = True,
    ) -> None:
        self.url, self.box, self.prefix, self.checkpoint = url, box, prefix, checkpoint
        self.store = store or uuid.uuid4().hex
        self.events: dict[int, dict[str, Any]] = {}
        self.next_seq = 1
        self.answer_resends = answer_resends
        self.acks: list[dict[str, Any]] = []
        self.commands: list[tuple[float, dict[str, Any]]] = []
        self.resent: list[int] = []
        base = f"{prefix}/{box}"
        self.topic_event, self.topic_status = f"{base}/event", f"{base}/status"
        self.topic_ack, self.topic_cmd = f"{base}/ack", f"{base}/cmd"
        self.subscribed = threading.Event()
        self._q: queue.Queue[LinkEvent | None] = queue.Queue()
        self._lock = threading.Lock()
        self._inflight: set[int] = set()
        self.link = Link(
            url,
            f"emubox-{box}-{uuid.uuid4().hex[:8]}",
            self._q.put,
            will=(self.topic_status, b'{"state":"lost"}', True),
            subscriptions=[(self.topic_ack, 1), (self.topic_cmd, 1)],
        )
        self._worker = threading.Thread(target=self._work, daemon=True)

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 10) -> EmulatedBox:
        """Connect and wait until the ack/cmd subscriptions are granted."""
        self._worker.start()
        self.link.start()
        wait_for(self.subscribed.is_set, timeout, f"{self.box} subscribed")
        return self

    def stop(self) -> None:
        """Disconnect cleanly and end the worker."""
        self.link.stop()
        self._q.put(None)
        self._worker.join(5)

    def _work(self) -> None:
        # Link calls back on paho's thread; answering there is allowed by paho,
        # but a worker keeps the emulation as polite as the real daemon.
        while True:
            ev = self._q.get()
            if ev is None:
                return
            if isinstance(ev, SubAck) and ev.ok:
                self.subscribed.set()
            elif isinstance(ev, Connected | Disconnected):
                self.subscribed.clear()
                with self._lock:
                    self._inflight.clear()  # mids die with their connection
            elif isinstance(ev, PubAck):
                with self._lock:
                    self._inflight.discard(ev.mid)
            elif isinstance(ev, Message):
                self._message(ev)

    def _message(self, msg: Message) -> None:
        if not msg.payload:
            return
        data = json.loads(msg.payload)
        if msg.topic == self.topic_ack:
            with self._lock:
                self.acks.append(data)
        elif msg.topic == self.topic_cmd:
            with self._lock:
                self.commands.append((time.monotonic(), data))
            if (
                self.answer_resends
                and data.get("cmd") == "resend"
                and data.get("store") == self.store
            ):
                for seq in range(data["from"], data["to"] + 1):
                    if seq in self.events:
                        self.resent.append(seq)
                        self.publish(seq)

    # -- making events ---------------------------------------------------------------

    def add(self, kind: str, **fields: Any) -> int:
        """Append one event of type `kind` to the box's store; returns its seq."""
        seq = self.next_seq
        self.next_seq += 1
        self.events[seq] = {
            "schema": EVENT_SCHEMA,
            "type": kind,
            "box": self.box,
            "checkpoint": self.checkpoint,
            "store": self.store,
            "seq": seq,
            **fields,
        }
        return seq

    def passage(self, utc_ns: int | None = None, *, clock: str = "locked", unc: int = 1500) -> int:
        """A passage at `utc_ns` (default: T0 + seq seconds)."""
        utc_ns = T0_NS + self.next_seq * 10**9 if utc_ns is None else utc_ns
        return self.add(
            "passage",
            input="beam",
            source="beam",
            mono_ns=123_456_789_000 + self.next_seq,
            utc_ns=utc_ns,
            utc=fmt_utc(utc_ns),
            clock=clock,
            uncertainty_ns=unc,
        )

    def passages(self, n: int) -> list[int]:
        """`n` passages one second apart."""
        return [self.passage() for _ in range(n)]

    def restamp(self, ref_seq: int, utc_ns: int, unc: int = 900) -> int:
        """A restamp of passage `ref_seq`."""
        return self.add(
            "restamp",
            ref_seq=ref_seq,
            utc_ns=utc_ns,
            utc=fmt_utc(utc_ns),
            clock="locked",
            uncertainty_ns=unc,
        )

    def assign(self, ref_seq: int, car: str, by: str = "marshal") -> int:
        """A marshal's car assignment."""
        return self.add("assign", ref_seq=ref_seq, car=car, by=by)

    def void(self, ref_seq: int, reason: str, by: str = "marshal") -> int:
        """A marshal's void."""
        return self.add("void", ref_seq=ref_seq, reason=reason, by=by)

    # -- publishing ------------------------------------------------------------------

    def payload(self, seq: int) -> bytes:
        """The event as the daemon serialises it."""
        return json.dumps(self.events[seq], separators=(",", ":")).encode()

    def publish_raw(self, payload: bytes, topic: str | None = None, *, retain: bool = False) -> int:
        """Publish any bytes (default on the event topic); waits for a connection."""
        wait_for(lambda: self.link.connected, 10, f"{self.box} connected")
        with self._lock:  # the PubAck must not overtake the bookkeeping
            mid = self.link.publish(topic or self.topic_event, payload, qos=1, retain=retain)
            assert mid is not None, "publish refused while connected"
            self._inflight.add(mid)
        return mid

    def wait_delivered(self, timeout: float = 5) -> None:
        """Wait until the broker has PUBACKed everything published so far.

        Needed where a test depends on the broker having a message *now*: paho
        does not set TCP_NODELAY, so a small publish can sit in Nagle's buffer
        for the peer's delayed ACK (~40 ms on loopback).
        """
        wait_for(lambda: not self._inflight, timeout, f"{self.box} publishes PUBACKed")

    def publish(self, *seqs: int) -> None:
        """Publish these seqs in exactly this order (repeats allowed)."""
        for seq in seqs:
            self.publish_raw(self.payload(seq))

    def try_publish(self, *seqs: int) -> list[int]:
        """Publish without waiting for a connection; returns the seqs that went out."""
        return [s for s in seqs if self.link.publish(self.topic_event, self.payload(s)) is not None]

    def publish_all(self, *, skip: Iterable[int] = ()) -> None:
        """Publish every event in seq order except `skip`."""
        skipped = set(skip)
        self.publish(*(s for s in sorted(self.events) if s not in skipped))

    def republish_unacked(self) -> list[int]:
        """What a box does after reconnecting: every seq above HQ's ack again."""
        seqs = [s for s in sorted(self.events) if s > self.acked_upto]
        self.publish(*seqs)
        return seqs

    def status(self, **fields: Any) -> None:
        """Publish a retained ready status (extra fields merged in)."""
        st = {"state": "ready", "box": self.box, "store": self.store, "clock": "locked"}
        st.update(fields)
        self.publish_raw(json.dumps(st).encode(), self.topic_status, retain=True)

    # -- observing -------------------------------------------------------------------

    @property
    def acked_upto(self) -> int:
        """Highest ack received for this box's store (0 if none)."""
        with self._lock:
            return max((a["upto"] for a in self.acks if a.get("store") == self.store), default=0)

    def wait_acked(self, upto: int, timeout: float = 10) -> None:
        """Wait until HQ has acked at least `upto` of this store."""
        wait_for(lambda: self.acked_upto >= upto, timeout, f"{self.box} ack >= {upto}")

    def resend_requests(self) -> list[dict[str, Any]]:
        """The resend commands received so far."""
        with self._lock:
            return [c for _, c in self.commands if c.get("cmd") == "resend"]
