"""The box daemon: wires edges, GPS, the timing pipeline, the store and MQTT.

Threads (see docs/architecture.md): the gpiozero callback thread, the serial
reader and paho's network thread only put items on one queue. The core thread
owns the Store and does everything else, in this order per turn: feed records to
the pipeline, commit raw inputs and events in one transaction, and only then
publish. A passage is on disk before anything is sent.

This module wires and delegates; each job is its own module beside it:

* keeper.py: the store, and running on a read-only or full card (events kept in
  memory, still published, written once the card takes writes again);
* seqfloor.py: never reusing a seq an earlier run published from memory (the
  high-water mark, placeholders, reissues, HQ's acks checked against the chain);
* sender.py: each event's bytes, and the high-water mark published before them;
* messages.py: HQ's `ack` and `cmd` and the box's own `hwm`, checked;
* status.py: the status message and its alarms;
* marshalfeed.py: what the marshal page reads (status, recent passages, HQ's fixes);
* fieldkit.py: watchdog, control socket, LED and chrony feed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from checkpoint import capture
from checkpoint.box.edges import COARSE_TICK_NS, EdgeSource
from checkpoint.box.fieldkit import FieldKit
from checkpoint.box.gps_serial import SerialReader
from checkpoint.box.inbox import Inbox
from checkpoint.box.keeper import CardKeeper
from checkpoint.box.marshalfeed import RECENT, MarshalFeed
from checkpoint.box.messages import BadCommands
from checkpoint.box.recording import Recording
from checkpoint.box.sender import Sender
from checkpoint.box.seqfloor import FloorParts, SeqFloor
from checkpoint.box.status import StatusBuilder, StatusParts, signing_key
from checkpoint.box.store import Store
from checkpoint.config import Config
from checkpoint.contracts import LOST, Topics, message_bytes
from checkpoint.core.outbox import Outbox
from checkpoint.core.timing import Pipeline, params_for
from checkpoint.errors import CommandError
from checkpoint.mqtt import Link

log = logging.getLogger("checkpoint.box.daemon")

_SYSCLOCK_EVERY_NS = 60 * 10**9
_MAX_BATCH = 2000
_HOLDBACK_FLOOR_NS = 2_000_000
_HOLDBACK_MAX_NS = 2_000_000_000


def _late(tick: int) -> int:
    """How long after its kernel tick a GPIO record reaches the daemon (callback thread)."""
    return time.monotonic_ns() - tick


class BoxDaemon:
    """One box. `run()` blocks in the core loop until `stop()`."""

    def __init__(self, cfg: Config, *, password: str | None = None) -> None:
        self.cfg = cfg
        self.q: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.holdback_ns = _HOLDBACK_FLOOR_NS
        self._stop = threading.Event()
        self._core: threading.Thread | None = None  # the thread in run(): see stop()
        self.ready = threading.Event()
        self.boot = Store.boot_id()
        self.topics = Topics(cfg.mqtt.prefix, cfg.box)
        self.alarms: dict[str, str] = {}
        self.keeper = CardKeeper(cfg, self.alarms)
        self._wire_pipeline()
        self.link = Link(
            cfg.mqtt.broker,
            f"checkpoint-{cfg.box}",
            lambda ev: self.q.put(("link", ev)),
            will=(self.topics.status, LOST, True),
            username=cfg.mqtt.username,
            password=password,
            ca_file=cfg.mqtt.ca_file,
            keepalive=cfg.mqtt.keepalive_s,
            subscriptions=self.topics.box_subscriptions(),
        )
        self._wire_io()
        self.status_builder = StatusBuilder(
            StatusParts(
                cfg,
                self.pipeline,
                self.edges,
                self.serial,
                self.outbox,
                self.keeper,
                self.floor,
                self.bad,
                self.alarms,
                signing_key(cfg.integrity.sign_key),
            ),
            self.topics,
        )
        self.inbox = Inbox(
            self.topics,
            self.pipeline,
            self.outbox,
            self.floor,
            self.status_builder,
            self.feed,
            self.bad,
            self.alarms,
            store_id=lambda: self.keeper.store.store_id,
        )

    def _wire_pipeline(self) -> None:
        """The pure pipeline and outbox, continued from the store; floor and sender."""
        cfg, store = self.cfg, self.keeper.store
        last = store.last_seq()
        self.pipeline = Pipeline(
            box=cfg.box,
            checkpoint=cfg.checkpoint,
            store=store.store_id,
            inputs=cfg.inputs,
            convention=cfg.gps.convention,
            next_seq=last + 1,
            clock_params=params_for(cfg.gps.convention, dict(cfg.clock)),
            # The chain continues from the store's last event across restarts.
            chain_head=store.chain_head(),
        )
        self.outbox = Outbox(
            store_id=store.store_id,
            max_inflight=cfg.mqtt.max_inflight,
            max_ahead=cfg.mqtt.max_ahead,
            redeliver_after_ns=cfg.mqtt.redeliver_after_s * 10**9,
        )
        self.outbox.load(last, store.acked_upto())
        self.sender = Sender(self.keeper, self.pipeline, self.outbox, self.topics)
        self.bad = BadCommands()
        self.floor = SeqFloor(
            FloorParts(
                self.pipeline,
                self.outbox,
                self.sender,
                self.alarms,
                self.bad,
                cfg.box,
                cfg.checkpoint,
                store_id=lambda: self.keeper.store.store_id,
                ack_taken=self._ack_taken,
            ),
            start_last=last,
        )
        self._next_sysclock_ns = 0
        # Kept only when the page is enabled: otherwise the core thread does no extra work.
        self._web = cfg.web.enabled
        self.feed = MarshalFeed(store.passages(limit=RECENT) if self._web else [])

    def _wire_io(self) -> None:
        """Edges, the capture recording, the serial reader and the field kit."""
        cfg = self.cfg
        threads_before = set(threading.enumerate())
        self.edges = EdgeSource(
            cfg.inputs,
            pps_pin=cfg.gps.pps_pin,
            pps_edge=cfg.gps.pps_edge,
            on_edge=self._on_edge,
            on_pps=self._on_pps,
            pin_factory=cfg.pin_factory,
            allow_coarse_ticks=cfg.allow_coarse_ticks,
        )
        if not self.edges.kernel_ticks:
            # Edges stamped in a Python callback (gpio.allow_coarse_ticks): every bound
            # says so. Before any record is fed: run() starts feeding.
            self.pipeline.tick_uncertainty_ns = COARSE_TICK_NS
        self.recording = Recording(cfg, self.alarms, kernel_ticks=self.edges.kernel_ticks)
        self.serial = SerialReader(
            cfg.gps.port,
            cfg.gps.baudrate,
            lambda line, mono: self.q.put(("rec", {"type": "nmea", "mono_ns": mono, "line": line})),
        )
        # Threads the pin factory started (lgpio's callback thread, the sim feed): the
        # watchdog starves if one dies, since no edge would ever reach us again.
        gpio_threads = [t for t in threading.enumerate() if t not in threads_before]
        self.field = FieldKit(self, gpio_threads=gpio_threads)

    # -- what other rooms and the tests read -----------------------------------------

    @property
    def store(self) -> Store:
        return self.keeper.store

    @property
    def snapshot(self) -> dict[str, Any]:
        """The marshal page's latest status (read from its thread; replaced, never changed)."""
        return self.feed.snapshot

    @property
    def recent(self) -> tuple[dict[str, Any], ...]:
        """The marshal page's recent passages (read from its thread)."""
        return self.feed.recent

    @property
    def _floor_due_ns(self) -> int | None:
        return self.floor.due_ns

    @_floor_due_ns.setter
    def _floor_due_ns(self, value: int | None) -> None:
        self.floor.due_ns = value

    @property
    def _store_retry_ns(self) -> int:
        return self.keeper.retry_ns

    @_store_retry_ns.setter
    def _store_retry_ns(self, value: int) -> None:
        self.keeper.retry_ns = value

    def status(self, now: int | None = None) -> dict[str, Any]:
        return self.status_builder.status(now)

    def utc_if_locked(self, mono_ns: int) -> int | None:
        """UTC ns of a monotonic instant while the clock is locked (the chrony feed)."""
        stamp = self.pipeline.clock.stamp(mono_ns, mono_ns)
        return stamp.utc_ns if str(stamp.clock) == "locked" else None

    # -- control from other threads ----------------------------------------
    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._core:
            # Not on the core thread: SIGTERM's handler runs there, possibly inside
            # q.get() with the queue's lock held, and a put() would wait on that lock
            # for ever (the daemon hung on SIGTERM). The core thread waits at most
            # 0.2 s a turn (_timeout), so it sees the flag without a wake.
            self.q.put(("wake", None))

    def _on_edge(self, name: str, mono: int, active: bool, fault: bool) -> None:
        self.q.put(("gpio", (capture.edge_record(name, mono, active, fault), _late(mono))))

    def _on_pps(self, mono: int) -> None:
        self.q.put(("gpio", ({"type": "pps", "mono_ns": mono}, _late(mono))))

    def _observe_late(self, late: int) -> None:
        """Raise the hold-back to a GPIO delivery delay seen (core thread: its one writer).

        The timer decides a break only once `now - holdback` has passed its
        min_break, so a release edge queued behind a late leading edge is seen
        first. The hold-back jumps to any lateness seen and decays slowly, so a
        stall costs latency for a while rather than a false passage. The callback
        thread only measures the delay (at delivery, the moment that matters) and
        sends it along with the record: were it to write the value itself, the
        core thread's decay could overwrite a raise it never saw.
        """
        if late > self.holdback_ns:
            self.holdback_ns = min(late + _HOLDBACK_FLOOR_NS, _HOLDBACK_MAX_NS)

    def correction(self, kind: str, ref_seq: int, value: str) -> None:
        """Queue a marshal's `assign` (value = car) or `void` (value = reason).

        Called from the control socket's thread. A seq not yet issued is refused here,
        so the marshal hears it at once (next_seq only grows, so this read is safe).
        """
        if not 1 <= ref_seq < self.pipeline.next_seq:
            raise CommandError(f"no event with seq {ref_seq} in this store")
        self.q.put(("correction", (kind, ref_seq, value)))

    # -- the core thread ----------------------------------------------------
    def run(self) -> None:
        self._core = threading.current_thread()
        # A restart, not a reboot: this boot's clock samples and the passages still to
        # re-stamp at lock go through the pipeline again (keeper.restart_records).
        window = self.pipeline.clock.params.window_samples
        for rec in self.keeper.restart_records(self.boot, window, time.monotonic_ns()):
            self._record(rec)
        self._sysclock()
        self.serial.start()
        self.link.start()
        log.info(
            "box %s at %s: store %s, next seq %d, broker %s",
            self.cfg.box,
            self.cfg.checkpoint,
            self.store.store_id,
            self.pipeline.next_seq,
            self.cfg.mqtt.broker,
        )
        self.field.start()
        self.ready.set()
        try:
            while not self._stop.is_set():
                self._turn()
            self._turn(block=False)
        finally:
            self._shutdown()

    def _timeout(self) -> float:
        due = self.pipeline.detector.next_due()
        wait = 0.2
        if due is not None:
            wait = min(wait, max(0.0, (due + self.holdback_ns - time.monotonic_ns()) / 1e9))
        return wait

    def _take(self, block: bool) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        try:
            items.append(self.q.get(timeout=self._timeout()) if block else self.q.get_nowait())
            while len(items) < _MAX_BATCH:
                items.append(self.q.get_nowait())
        except queue.Empty:
            pass
        return items

    def _turn(self, block: bool = True) -> None:
        # This turn's events in the order of their seqs (an hwm can add placeholders
        # between two records' events: seqfloor.py).
        events: list[dict[str, Any]] = []
        items = self._take(block)
        now = time.monotonic_ns()
        for kind, item in items:
            if kind == "gpio":
                rec, late = item
                self._observe_late(late)
                events += self._record(rec)
            elif kind == "rec":
                events += self._record(item)
            elif kind == "link":
                self.inbox.handle(item, now, events)
            elif kind == "correction":
                events += self._correction(*item)
        if now >= self._next_sysclock_ns:
            events += self._sysclock()
        self.edges.poll(now)
        decided = self.pipeline.advance(now - self.holdback_ns)
        if decided and self.recording.active:
            # When the timer decided is part of the input: replay applies it at
            # the same point, so it sees exactly what the daemon knew.
            self.recording.write({"type": "advance", "mono_ns": now - self.holdback_ns})
        events += decided
        # Decay the hold-back by 1/64 per turn towards its floor.
        self.holdback_ns = max(_HOLDBACK_FLOOR_NS, self.holdback_ns - self.holdback_ns // 64)
        self.floor.settle_if_due(now, events)
        self._commit(events, now)
        seqs = self.floor.gate(self.outbox.next_to_send(now))
        self.sender.publish(self.link, seqs, now, self._payload)
        self.status_builder.turn(self.link, now)
        self.field.turn(now, events)
        if self._web:
            self.feed.turn(events, now, lambda: self._snapshot(now))

    def _snapshot(self, now: int) -> dict[str, Any]:
        return {**self.status(now), "link": self.link.connected, "mono_ns": now}

    def _record(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        self.recording.write(rec)
        self.keeper.keep_raw(rec)
        return self.pipeline.feed(rec)

    def _sysclock(self) -> list[dict[str, Any]]:
        rec = {"type": "sysclock", "mono_ns": time.monotonic_ns(), "realtime_ns": time.time_ns()}
        self._next_sysclock_ns = rec["mono_ns"] + _SYSCLOCK_EVERY_NS
        return self._record(rec)

    def _correction(self, kind: str, ref_seq: int, value: str) -> list[dict[str, Any]]:
        # A record like any input, so the capture replays to the same seqs.
        rec = {
            "type": "correction",
            "mono_ns": time.monotonic_ns(),
            "kind": kind,
            "ref_seq": ref_seq,
            "value": value,
        }
        out = self._record(rec)
        if not out and self.pipeline.refused:
            log.warning("correction refused: %s", self.pipeline.refused[-1])
        return out

    def _commit(self, events: list[dict[str, Any]], now: int) -> None:
        self.floor.renumber(events)  # a correction naming an event that was issued again
        for ev in events:
            self.sender.keep(ev)
            if ev["type"] == "passage":
                log.info(
                    "passage seq %d %s %s (%s ±%d ns)",
                    ev["seq"],
                    ev["input"],
                    ev["utc"],
                    ev["clock"],
                    ev["uncertainty_ns"],
                )
        self.keeper.unstored += events
        samples = [(s.mono_ns, s.utc_s) for s in self.pipeline.new_samples]
        if self.keeper.due(len(samples), now) and self.keeper.write(
            self.boot, samples, self.outbox.acked_upto, self.recording.sync, now
        ):
            self.pipeline.new_samples.clear()
        # Even when the card refuses writes the events are published: HQ having
        # them is better than both copies waiting on a full disk. The hwm published
        # before them keeps a restarted box from numbering new events with their seqs.
        if events:
            self.outbox.committed(events[-1]["seq"])
        self.sender.trim()

    def _payload(self, seq: int) -> bytes | None:
        """What HQ gets for `seq` (a placeholder where the floor says so)."""
        return self.floor.payload(seq)

    def _ack_taken(self) -> None:
        # Written with the next batch: an ack lost to a power cut only means HQ is
        # offered again events it already has, which it ignores by seq.
        self.keeper.ack_unstored = True

    def _shutdown(self) -> None:
        try:
            self.field.close()
        except OSError as e:
            # A read-only or full card must not stop the shutdown before the store
            # and the link are closed properly.
            log.warning("closing the field kit: %s", e)
        self.serial.stop()
        self.edges.close()
        if self.link.connected:
            offline = message_bytes(self.status_builder.offline())
            self.link.publish(self.topics.status, offline, qos=1, retain=True)
        self.link.stop()
        self.recording.close()
        keeper = self.keeper
        if keeper.writable and (keeper.raw_edges or keeper.raw_pps or self.pipeline.new_samples):
            # The raw rows kept in memory (at most RAW_FLUSH_NS of them) go down too.
            keeper.raw_due_ns = 0
            self._commit([], time.monotonic_ns())
        keeper.close()
