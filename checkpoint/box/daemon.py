"""The box daemon: wires edges, GPS, the timing pipeline, the store and MQTT.

Threads (see docs/architecture.md): the gpiozero callback thread, the serial
reader and paho's network thread only put items on one queue. The core thread
owns the Store and does everything else, in this order per turn: feed records to
the pipeline, commit raw inputs and events in one transaction, and only then
publish. A passage is on disk before anything is sent.

If the store fails (disk full, read-only card), events stay in memory, are still
published, and the status message carries an alarm saying what to do; the batch is
retried every second, so nothing is lost once the card is writable again.

Seq floor. Events published from memory while the store failed are at HQ but not in
the store; if the process restarts before the store recovers, the store's last seq is
behind what HQ holds, and reusing those seqs for new events would make HQ reject the
new events as conflicts. So before this run publishes any seq above the store's last
seq at start, it learns what the broker knows about this store: the box's own retained
high-water mark (`{"store":S,"last_seq":N}` on `.../hwm`, published before any seq that
is not yet on disk). HQ's retained ack is held until then but never raises the floor:
an ack proves what HQ holds, not that this box wrote it (a forgery under the box's name
is acked too), so an ack beyond what the box numbered, or naming another event's hash
(`head`) than the box's own, is a `conflict` alarm and the box publishes its own events
under those seqs. Seqs up to that floor are never reused: the store gets a `skipped` placeholder
for each seq never assigned here, events this run had already numbered inside the
range are issued again under new seqs (`reissue_of` names the old one; later
corrections that name it are renumbered too), and an alarm says what happened. HQ
asking for a skipped seq gets the placeholder, never different content.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from checkpoint import EVENT_SCHEMA, __version__, capture, hqfix
from checkpoint.box.edges import COARSE_TICK_NS, EdgeSource
from checkpoint.box.fieldkit import FieldKit
from checkpoint.box.gps_serial import SerialReader
from checkpoint.box.store import Store
from checkpoint.config import Config
from checkpoint.contracts import LOST, Topics, event_bytes, is_int, message_bytes
from checkpoint.core import chain
from checkpoint.core.outbox import Outbox
from checkpoint.core.timing import Pipeline, params_for
from checkpoint.errors import CommandError, ConfigError, StoreError
from checkpoint.mqtt import Connected, Disconnected, Link, LinkEvent, Message, PubAck, SubAck

log = logging.getLogger("checkpoint.box.daemon")

_SYSCLOCK_EVERY_NS = 60 * 10**9
_MAX_BATCH = 2000
_HOLDBACK_FLOOR_NS = 2_000_000
_HOLDBACK_MAX_NS = 2_000_000_000
_PAYLOAD_CACHE = 4096
_MAX_RAW_UNSTORED = 100_000
# Raw inputs (PPS ticks, beam edges, clock samples) are replay material, not events: they
# go to disk with the next batch of events (so every stored event has its inputs stored)
# and otherwise at most this long after arriving, or once this many are waiting. This is
# the loss window for raw rows on a power cut; each commit is fsync'd (synchronous=FULL),
# so one a minute instead of two a second is what keeps an idle card quiet.
_RAW_FLUSH_NS = 60 * 10**9
_RAW_FLUSH_ROWS = 5_000
# After a failed commit, retry at most this often: every retry re-serialises the whole
# in-memory batch, and a full card should not cost the core thread its turns.
_STORE_RETRY_NS = 1_000_000_000
# After the broker granted our subscriptions, the retained ack and hwm (if any) follow at
# once; waiting this long for them is generous.
_FLOOR_GRACE_NS = 1_000_000_000
# An ack or hwm more than this far beyond our last seq is not a plausible earlier run of
# this store (a box makes a few thousand events a day): it is refused, not obeyed.
_MAX_SKIP = 10_000
_LOG_REPEAT_NS = 30 * 10**9
_MAX_LOGGED = 200  # characters of a bad command's reason in the log
_RECENT = 50  # passages the marshal page shows
_SNAPSHOT_EVERY_NS = 500_000_000
# Running on a read-only view of the store: try to reopen it for writing this often.
_REOPEN_NS = 5 * 10**9


_SKIPPED = {
    "reason": "seq used by an earlier run of this store (published from memory while the "
    "store failed, then restarted): not reused; HQ has that event, this store does not"
}


def _unwritable_media(path: Path) -> str | None:
    """Why the filesystem holding `path` cannot take writes (read-only, full), or None."""
    try:
        st = os.statvfs(path.absolute().parent)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "the filesystem is read-only"
    if st.f_bavail * st.f_frsize < 64 * 1024:
        return "the filesystem is full"
    return None


def _late(tick: int) -> int:
    """How long after its kernel tick a GPIO record reaches the daemon (callback thread)."""
    return time.monotonic_ns() - tick


def _signing_key(path: str | None) -> Any:
    """The box's Ed25519 key for signing its chain head, or None when not configured."""
    if not path:
        return None
    try:
        return chain.load_signing_key(Path(path).read_bytes())
    except OSError as e:
        raise ConfigError(f"integrity.sign_key {path}: cannot read: {e.strerror}") from None
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"integrity.sign_key {path}: {e}") from None


class BoxDaemon:
    """One box. `run()` blocks in the core loop until `stop()`."""

    def __init__(self, cfg: Config, *, password: str | None = None) -> None:
        self.cfg = cfg
        self.q: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.holdback_ns = _HOLDBACK_FLOOR_NS
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.boot = Store.boot_id()
        self.topics = Topics(cfg.mqtt.prefix, cfg.box)
        self.alarms: dict[str, str] = {}
        # False while running on a read-only view of the store (see _open_read_only).
        self._writable = True
        self._reopen_ns = 0
        try:
            self.store, moved = Store.open_or_replace(
                cfg.store, box=cfg.box, checkpoint=cfg.checkpoint
            )
        except StoreError as e:
            self.store, moved = self._open_read_only(e), None
        if self.store.moved_warning:
            log.warning("%s", self.store.moved_warning)
        if moved is not None:
            # Its own key: a later successful commit must not clear it (the "store" alarm
            # is cleared when the card takes writes again).
            self.alarms["store_replaced"] = (
                f"database was corrupt; moved aside to {moved} (kept for recovery: hand it "
                f"to HQ for salvage) and a new store {self.store.store_id} was started"
            )
            log.error("%s", self.alarms["store_replaced"])
        last = self.store.last_seq()
        self.pipeline = Pipeline(
            box=cfg.box,
            checkpoint=cfg.checkpoint,
            store=self.store.store_id,
            inputs=cfg.inputs,
            convention=cfg.gps.convention,
            next_seq=last + 1,
            clock_params=params_for(cfg.gps.convention, dict(cfg.clock)),
            # The chain continues from the store's last event across restarts.
            chain_head=self.store.chain_head(),
        )
        self.outbox = Outbox(
            store_id=self.store.store_id,
            max_inflight=cfg.mqtt.max_inflight,
            max_ahead=cfg.mqtt.max_ahead,
            redeliver_after_ns=cfg.mqtt.redeliver_after_s * 10**9,
        )
        self.outbox.load(last, self.store.acked_upto())
        self._unstored: list[dict[str, Any]] = []
        self._durable_last = last  # highest seq known to be on disk
        self._store_retry_ns = 0
        self._store_logged_ns: int | None = None
        # Seq floor (module docstring): until checked, seqs above `_start_last` stay unsent.
        self._start_last = last
        self._floor_done = False
        self._floor_due_ns: int | None = None
        self._floor_seen = 0  # highest seq of this store the broker told us about
        self._floor_hwm: tuple[int, str | None] = (0, None)  # the hwm's seq and chain head
        # An HQ ack (upto, head) held back until the check is done.
        self._floor_ack: tuple[int, str | None] | None = None
        self._foreign: list[tuple[int, int]] = []  # seq ranges HQ may hold other content for
        self._placeholders: set[int] = set()  # seqs holding a `skipped` placeholder
        self._remap: dict[int, int] = {}  # reissued seq -> new seq, for ref_seq
        self._hwm_sent = 0
        self.skipped_seqs = 0
        self.reissued = 0
        self._raw_edges: list[tuple[str, int, bool]] = []
        self._raw_pps: list[int] = []
        self._raw_dropped = 0
        self._raw_due_ns = 0  # when the raw rows kept in memory must be written
        self._ack_unstored = False  # an HQ ack not yet written to the store
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._events: list[dict[str, Any]] = []
        self.bad_commands = 0
        # Acks whose head named another event than ours (seq, head): handled once each.
        self._conflicts: set[tuple[int, str]] = set()
        self._signer = _signing_key(cfg.integrity.sign_key)
        self._signed: dict[str, Any] = {}
        self._last_status: dict[str, Any] = {}
        self._next_status_ns = 0
        self._gps_mismatch = False  # the pairing mismatch state last logged
        # Published for the marshal page (checkpoint/web), read from its thread: each is
        # replaced by one assignment, never mutated, so a reader needs no lock. Kept
        # only when the page is enabled: otherwise the core thread does no extra work.
        self._web = cfg.web.enabled
        self.snapshot: dict[str, Any] = {}
        self.hq_fixes: dict[int, dict[str, Any]] = {}  # seq -> HQ's correction (hqfix)
        self.recent: tuple[dict[str, Any], ...] = (
            tuple(self.store.passages(limit=_RECENT)) if self._web else ()
        )
        self._next_snapshot_ns = 0
        self._next_sysclock_ns = 0
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
        # In the capture header only when set, so replay widens the same bounds.
        tick_setting = (
            {"tick_uncertainty_ns": COARSE_TICK_NS} if not self.edges.kernel_ticks else {}
        )
        self.recorder = (
            capture.Writer(
                cfg.capture,
                cfg.box,
                cfg.checkpoint,
                convention=cfg.gps.convention,
                clock=dict(cfg.clock),
                inputs=[dataclasses.asdict(i) for i in cfg.inputs],
                **tick_setting,
            )
            if cfg.capture
            else None
        )
        self.serial = SerialReader(
            cfg.gps.port,
            cfg.gps.baudrate,
            lambda line, mono: self.q.put(("rec", {"type": "nmea", "mono_ns": mono, "line": line})),
        )
        # Threads the pin factory started (lgpio's callback thread, the sim feed): the
        # watchdog starves if one dies, since no edge would ever reach us again.
        gpio_threads = [t for t in threading.enumerate() if t not in threads_before]
        self.field = FieldKit(self, gpio_threads=gpio_threads)

    def _open_read_only(self, err: StoreError) -> Store:
        """The store cannot be opened for writing (a card the kernel remounted read-only,
        a full card that cannot even take the WAL's index): run on a read-only view, so
        the box still times, numbers after the store's last seq and publishes, keeping
        events in memory until the store can be reopened for writing.

        Re-raises `err` when the store cannot be read either, or when its last commits
        sit in a -wal file that cannot be read: numbering would then reuse seqs.
        """
        cfg = self.cfg
        path = Path(cfg.store)
        why = _unwritable_media(path)
        if why is None:
            # Locked by another daemon, a newer schema, a network filesystem...: running
            # beside the problem would be worse than stopping with the error.
            raise err
        log.error("store: %s (%s); trying a read-only view", err, why)
        try:
            store = Store(path, box=cfg.box, checkpoint=cfg.checkpoint, readonly=True)
        except StoreError:
            wal = Path(f"{path}-wal")
            if not path.exists() or (wal.exists() and wal.stat().st_size > 0):
                raise err from None
            try:
                store = Store(
                    path, box=cfg.box, checkpoint=cfg.checkpoint, readonly=True, immutable=True
                )
            except StoreError:
                raise err from None
        self._writable = False
        self.alarms["store"] = (
            f"{err} -- running on a read-only view of store {store.store_id}: events are "
            "kept in memory and still sent to HQ; make the card writable (or free space) "
            "and they are written within seconds (do not switch the box off)"
        )
        return store

    def _reopen(self, now: int) -> bool:
        """Try to swap the read-only view for a writable store; True when writable."""
        if self._writable:
            return True
        if now < self._reopen_ns:
            return False
        self._reopen_ns = now + _REOPEN_NS
        cfg = self.cfg
        try:
            store = Store(cfg.store, box=cfg.box, checkpoint=cfg.checkpoint)
        except StoreError as e:
            log.debug("store still not writable: %s", e)
            return False
        if store.store_id != self.store.store_id:
            # Someone put another store file in its place: never mix numberings.
            self.alarms["store_swapped"] = (
                f"{cfg.store} now holds store {store.store_id}, not {self.store.store_id} "
                "this box is numbering: events stay in memory; restart the daemon to start "
                "on the new file (the events in memory are at HQ)"
            )
            store.close()
            return False
        old, self.store, self._writable = self.store, store, True
        old.close()
        log.warning("store %s is writable again", store.store_id)
        return True

    # -- control from other threads ----------------------------------------
    def stop(self) -> None:
        self._stop.set()
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
        self._reload_samples()
        self._reload_pending()
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

    def _turn(self, block: bool = True) -> None:
        # Every event of this turn, in the order its seq was assigned (an HQ ack can
        # add placeholders between two records' events: see _skip).
        self._events = events = []
        items: list[tuple[str, Any]] = []
        try:
            items.append(self.q.get(timeout=self._timeout()) if block else self.q.get_nowait())
            while len(items) < _MAX_BATCH:
                items.append(self.q.get_nowait())
        except queue.Empty:
            pass
        now = time.monotonic_ns()
        for kind, item in items:
            if kind == "gpio":
                rec, late = item
                self._observe_late(late)
                events += self._record(rec)
            elif kind == "rec":
                events += self._record(item)
            elif kind == "link":
                self._link_event(item, now)
            elif kind == "correction":
                events += self._correction(*item)
        if now >= self._next_sysclock_ns:
            events += self._sysclock()
        self.edges.poll(now)
        decided = self.pipeline.advance(now - self.holdback_ns)
        if decided and self.recorder is not None:
            # When the timer decided is part of the input: replay applies it at
            # the same point, so it sees exactly what the daemon knew.
            self._capture({"type": "advance", "mono_ns": now - self.holdback_ns})
        events += decided
        # Decay the hold-back by 1/64 per turn towards its floor.
        self.holdback_ns = max(_HOLDBACK_FLOOR_NS, self.holdback_ns - self.holdback_ns // 64)
        if not self._floor_done and self._floor_due_ns is not None and now >= self._floor_due_ns:
            self._finish_floor_check()
        self._commit(events, now)
        self._publish(now)
        self._status(now)
        self.field.turn(now, events)
        if self._web:
            self._publish_web(events, now)

    def _publish_web(self, events: list[dict[str, Any]], now: int) -> None:
        """The marshal page's data: latest status twice a second, recent passages."""
        self._publish_recent(events)
        if now >= self._next_snapshot_ns:
            self._next_snapshot_ns = now + _SNAPSHOT_EVERY_NS
            self.snapshot = {**self.status(now), "link": self.link.connected, "mono_ns": now}

    def _capture(self, rec: dict[str, Any]) -> None:
        """Append a record to the capture file, if recording; never raises."""
        if self.recorder is None:
            return
        try:
            self.recorder.write(rec)
        except (OSError, ValueError) as e:
            self._capture_failed(e)

    def _capture_failed(self, e: Exception) -> None:
        if self.recorder is not None:
            # The capture is a diagnostic aid on the same card: a full or read-only
            # card must not stop the timing. A half-written line may end the file.
            self.alarms["capture"] = (
                f"capture recording stopped: {e}; passages are not affected "
                "(free space or fix the card, then restart the daemon to record again)"
            )
            log.error("%s", self.alarms["capture"])
            try:
                self.recorder.close()
            except (OSError, ValueError):
                pass
            self.recorder = None

    def _sync_capture(self) -> None:
        """fsync the capture file; a failure stops recording like a failed write."""
        if self.recorder is None:
            return
        try:
            self.recorder.sync()
        except (OSError, ValueError) as e:
            self._capture_failed(e)

    def _record(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        self._capture(rec)
        if len(self._raw_edges) + len(self._raw_pps) < _MAX_RAW_UNSTORED:
            if rec["type"] == "edge":
                self._raw_edges.append((rec["input"], rec["mono_ns"], rec["active"]))
            elif rec["type"] == "pps":
                self._raw_pps.append(rec["mono_ns"])
        else:
            self._raw_dropped += 1
        return self.pipeline.feed(rec)

    def _reload_samples(self) -> None:
        """Give the clock the samples this boot already paired (a restart, not a reboot)."""
        try:
            samples = self.store.recent_samples(
                self.boot, self.pipeline.clock.params.window_samples
            )
        except StoreError as e:
            log.warning("cannot reload clock samples: %s", e)
            return
        now = time.monotonic_ns()
        for mono_ns, utc_s in samples:
            if mono_ns <= now:
                self._record({"type": "sample", "mono_ns": mono_ns, "utc_s": utc_s})
        if samples:
            log.info("reloaded %d clock samples from this boot", len(samples))

    def _reload_pending(self) -> None:
        """Passages an earlier run of this boot stamped before lock: still to re-stamp.

        Without this a restart would strand them at system-clock or NMEA grade (the
        pipeline that meant to re-stamp them died with the process). A `pending`
        record each, so a capture replays to the same restamps.
        """
        try:
            rows = self.store.unsettled_passages(self.boot)
        except StoreError as e:
            log.warning("cannot reload passages awaiting a restamp: %s", e)
            return
        for seq, mono_ns, unc, clock in rows:
            rec = {
                "type": "pending",
                "mono_ns": mono_ns,
                "ref_seq": seq,
                "uncertainty_ns": unc,
                "clock": clock,
            }
            self._record(rec)
        if rows:
            log.info("%d passages of this boot (not locked) will be re-stamped at lock", len(rows))

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
        changed = None
        for i, ev in enumerate(events):
            ref = ev.get("ref_seq")
            if ref in self._remap:
                # A correction or restamp naming an event that was issued again.
                ev["ref_seq"] = self._remap[ref]
                changed = i if changed is None else changed
        if changed is not None:
            # This turn's events are the newest, none published yet: seal them again.
            self.pipeline.reseal(events[changed:])
        for ev in events:
            self._cache[ev["seq"]] = event_bytes(ev)
            if ev["type"] == "passage":
                log.info(
                    "passage seq %d %s %s (%s ±%d ns)",
                    ev["seq"],
                    ev["input"],
                    ev["utc"],
                    ev["clock"],
                    ev["uncertainty_ns"],
                )
        self._unstored += events
        samples = [(s.mono_ns, s.utc_s) for s in self.pipeline.new_samples]
        raw = len(self._raw_edges) + len(self._raw_pps) + len(samples)
        if not raw and not self._ack_unstored:
            self._raw_due_ns = now + _RAW_FLUSH_NS
        due = raw >= _RAW_FLUSH_ROWS or now >= self._raw_due_ns
        if (self._unstored or due) and now >= self._store_retry_ns:
            self._store_batch(samples, now)
        # Even when the card refuses writes the events are published: HQ having
        # them is better than both copies waiting on a full disk. The hwm published
        # before them keeps a restarted box from numbering new events with their seqs.
        if events:
            self.outbox.committed(events[-1]["seq"])
        while len(self._cache) > _PAYLOAD_CACHE and next(iter(self._cache)) < (
            self._unstored[0]["seq"] if self._unstored else 1 << 62
        ):
            self._cache.popitem(last=False)

    def _store_batch(self, samples: list[tuple[int, int]], now: int) -> None:
        """One attempt to put everything kept in memory on disk, in one transaction."""
        if not self._reopen(now):
            return
        try:
            if self._store_retry_ns and self._unstored:
                # A failed attempt may have committed after all (an I/O error reported
                # after the commit frame was written): never offer those seqs again, or
                # every later batch would be refused as not following the store's last.
                last = self.store.last_seq()
                self._durable_last = max(self._durable_last, last)
                self._unstored = [ev for ev in self._unstored if ev["seq"] > last]
            if self._unstored and self.recorder is not None:
                # The capture is what replays these events: on the card before they are.
                self._sync_capture()
            self.store.record(
                boot=self.boot,
                edges=self._raw_edges,
                pps=self._raw_pps,
                samples=samples,
                events=self._unstored,
                acked=self.outbox.acked_upto if self._ack_unstored else None,
            )
        except StoreError as e:
            self._store_retry_ns = now + _STORE_RETRY_NS
            n = len(self._unstored)
            first = "store" not in self.alarms
            self.alarms["store"] = (
                f"{e} -- {n} events are kept in memory and still sent to HQ; they are "
                "written as soon as the store takes writes again (do not switch the box off)"
            )
            if (
                first
                or self._store_logged_ns is None
                or now - self._store_logged_ns > _LOG_REPEAT_NS
            ):
                log.error("store: %s (keeping %d events in memory)", e, n)
                self._store_logged_ns = now
        else:
            self._store_retry_ns = 0
            if self._unstored:
                self._durable_last = self._unstored[-1]["seq"]
            n = len(self._unstored)
            self._unstored, self._raw_edges, self._raw_pps = [], [], []
            self.pipeline.new_samples.clear()
            self._ack_unstored = False
            self._raw_due_ns = now + _RAW_FLUSH_NS
            self._store_logged_ns = None
            if self.alarms.pop("store", None):
                log.warning("store writable again; the %d events kept in memory are on disk", n)

    def _payload(self, seq: int) -> bytes | None:
        for lo, hi in self._foreign:
            if lo <= seq <= hi and seq not in self._placeholders:
                # HQ may hold other content under this seq (an earlier run's), and this
                # event went out again under a new seq: send a placeholder in its place
                # (sealed on the same prev), never the event twice.
                ev = self._stored_event(seq)
                if ev is None:
                    return None
                body = self._placeholder_body(seq)
                return event_bytes(chain.seal(body, ev[chain.PREV]) if chain.PREV in ev else body)
        data = self._cache.get(seq)
        if data is not None:
            return data
        try:
            rows = self.store.event_payloads(seq, seq + 499)
        except StoreError as e:
            self.alarms["store"] = f"{e} (while reading events to send)"
            return None
        for s, text in rows:
            self._cache[s] = text.encode()
        data = self._cache.get(seq)
        if data is None:
            log.error("event seq %d missing from the store; cannot publish it", seq)
            self.alarms["outbox"] = f"event seq {seq} missing from store"
        return data

    def _stored_event(self, seq: int) -> dict[str, Any] | None:
        self._foreign, foreign = [], self._foreign
        try:
            data = self._payload(seq)
        finally:
            self._foreign = foreign
        return json.loads(data) if data is not None else None

    def _publish(self, now: int) -> None:
        seqs = self.outbox.next_to_send(now)
        if not self._floor_done:
            # Seqs above the store's last at start may collide with what an earlier run
            # published from memory: hold them until the floor is known.
            seqs = [s for s in seqs if s <= self._start_last]
        if seqs and seqs[-1] > max(self._durable_last, self._hwm_sent):
            # About to send seqs that are not on disk: first tell the broker (retained)
            # how far this store's numbering has gone, in the same ordered stream.
            hwm = self.pipeline.next_seq - 1
            # The chain head lets a restarted box chain its next event to the real one.
            body = {"store": self.store.store_id, "last_seq": hwm, "head": self.pipeline.head}
            if self.link.publish(self.topics.hwm, message_bytes(body), qos=1, retain=True) is None:
                return
            self._hwm_sent = hwm
        for seq in seqs:
            data = self._payload(seq)
            if data is None:
                break
            mid = self.link.publish(self.topics.event, data, qos=1)
            if mid is None:
                break
            self.outbox.sent(seq, mid, now)

    # -- seq floor ------------------------------------------------------------
    def _placeholder_body(self, seq: int) -> dict[str, Any]:
        """An unsealed `skipped` event for `seq` (envelope as timing.Pipeline makes it)."""
        return {
            "schema": EVENT_SCHEMA,
            "type": "skipped",
            "box": self.cfg.box,
            "checkpoint": self.cfg.checkpoint,
            "store": self.store.store_id,
            "seq": seq,
            **_SKIPPED,
        }

    def _finish_floor_check(self) -> None:
        """The broker has told us what it knows (or had its chance): settle the floor."""
        self._floor_done = True
        floor = self._floor_seen
        if floor > self._start_last:
            # The hwm's chain head names event `floor` only if nothing went beyond it.
            last, head = self._floor_hwm
            self._skip(floor, self._start_last + 1, head if last == floor else None)
        else:
            log.info("seq floor: nothing beyond seq %d known for this store", self._start_last)
        if self._floor_ack is not None:
            (upto, head), self._floor_ack = self._floor_ack, None
            self._ack(upto, head)

    def _skip(self, floor: int, lo: int, head: str | None = None) -> None:
        """Never use seqs lo..floor here: placeholders, reissues, alarm (module docstring)."""
        top = self.pipeline.next_seq - 1
        if floor - top > _MAX_SKIP:
            return  # refused on arrival (_plausible); top only grows
        events = self._events  # this turn's, committed at its end
        pending = {ev["seq"]: ev for ev in events}
        for _ in range(top + 1, floor + 1):
            ev = self.pipeline.issue("skipped", dict(_SKIPPED))
            self._placeholders.add(ev["seq"])
            events.append(ev)
        reissued = []
        for old in range(lo, min(floor, top) + 1):
            if old in pending:
                fields = dict(pending[old])
            else:
                data = self._cache.get(old) or self._payload(old)
                if data is None:
                    continue
                fields = json.loads(data)
            if fields.get("ref_seq") in self._remap:
                fields["ref_seq"] = self._remap[fields["ref_seq"]]
            ev = self.pipeline.issue(fields["type"], {**fields, "reissue_of": old})
            self._remap[old] = ev["seq"]
            reissued.append(ev)
        if head is not None and not reissued and floor > top:
            # The broker's hwm named the real event `floor` (published by the earlier
            # run): chain on from it, so HQ's chain stays whole. The store's chain
            # shows the break instead, at the placeholders it holds for those events.
            self.pipeline.head = head
        self._foreign.append((lo, floor))
        self.skipped_seqs += floor - lo + 1
        self.reissued += len(reissued)
        events += reissued
        self.outbox.skip(floor)
        msg = (
            f"seqs {lo}..{floor} of store {self.store.store_id} were already used by an earlier "
            "run (published while the store failed); not reused. HQ has those events, this "
            "store does not"
        )
        if reissued:
            msg += (
                f"; {len(reissued)} events numbered {lo}..{min(floor, top)} here were issued "
                f"again as {reissued[0]['seq']}..{reissued[-1]['seq']}"
            )
        self.alarms["seq"] = msg
        log.error("seq floor: %s", msg)

    def _plausible(self, topic: str, seq: int) -> bool:
        """False (counted, alarmed) for a seq of this store far beyond any it numbered."""
        top = self.pipeline.next_seq - 1
        if seq - top <= _MAX_SKIP:
            return True
        self._bad_command(topic, f"seq {seq} is far beyond this store's last {top}")
        self.alarms["seq"] = (
            f"{topic} says seq {seq} of store {self.store.store_id} was used, but this store "
            f"is at {top}: ignored as implausible; check HQ for a copy of this store's card, "
            "and start a fresh store file if in doubt"
        )
        return False

    def _ack(self, upto: int, head: str | None = None) -> None:
        top = self.pipeline.next_seq - 1
        if upto > top:
            # HQ holds seqs this store never numbered. Not skipped: somebody published
            # under this box's name (a stolen credential) or a copy of this card ran
            # elsewhere. This box's own events take those seqs and HQ flags each
            # conflict; an earlier run of this store would have left its hwm.
            self._conflict(
                f"HQ acknowledges seq {upto} of store {self.store.store_id}, but this box "
                f"has numbered only {top}: events under this box's name came from elsewhere "
                "(stolen credentials? a copied card?). This box publishes its own; HQ keeps "
                "both as conflicts for the officials"
            )
            return
        if head is not None and not any(lo <= upto <= hi for lo, hi in self._foreign):
            own = self._stored_event(upto)
            if own is not None and own.get(chain.HASH) not in (None, head):
                self._refute(upto, head)
                return
        if self.outbox.hq_ack(self.store.store_id, upto):
            # Written with the next batch: an ack lost to a power cut only means HQ is
            # offered again events it already has, which it ignores by seq.
            self._ack_unstored = True

    def _conflict(self, msg: str) -> None:
        if self.alarms.get("conflict") != msg:
            log.error("conflict: %s", msg)
        self.alarms["conflict"] = msg

    def _refute(self, upto: int, head: str) -> None:
        """HQ acked `upto` with the hash of another event than ours: someone published
        under this box's name first. Not taken as delivered: ours go out again (once per
        such ack), so HQ holds both and flags the conflict."""
        self._conflict(
            f"HQ holds another event than this box's under seq {upto} of store "
            f"{self.store.store_id} (hash {head[:16]}...): published under this box's name "
            "from elsewhere (stolen credentials?). This box's own events were sent again; "
            "HQ keeps both for the officials"
        )
        if (upto, head) in self._conflicts:
            return
        self._conflicts.add((upto, head))
        lo = self.outbox.acked_upto + 1
        n = self.outbox.resend(lo, upto)
        log.warning("seq %d..%d: %d published again after a conflicting ack", lo, upto, n)

    def _link_event(self, ev: LinkEvent, now: int) -> None:
        if isinstance(ev, Connected):
            log.info("broker connected")
            self.outbox.connected(now)
            self._last_status = {}
        elif isinstance(ev, Disconnected):
            log.warning("broker link lost: %s", ev.reason)
            self.outbox.disconnected()
            self._floor_due_ns = None
        elif isinstance(ev, SubAck):
            if not self._floor_done and self._floor_due_ns is None:
                # Retained ack and hwm follow the SUBACK at once.
                self._floor_due_ns = now + _FLOOR_GRACE_NS
        elif isinstance(ev, PubAck):
            self.outbox.puback(ev.mid, ev.ok, now, reason=ev.reason)
            if not ev.ok:
                self.alarms["publish"] = f"broker refused an event: {ev.reason}"
                log.error("%s", self.alarms["publish"])
            elif self.outbox.alarm is None:
                self.alarms.pop("publish", None)
        elif isinstance(ev, Message):
            self._message(ev)

    def _message(self, msg: Message) -> None:
        if msg.topic == self.topics.hqfix:
            self._hq_fixes(msg.payload)
            return
        if not msg.payload and msg.topic in (self.topics.ack, self.topics.hwm):
            return  # a retained message being cleared
        try:
            data = json.loads(msg.payload)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            self._bad_command(msg.topic, f"not JSON: {str(e)[:100]}")
            return
        if msg.topic == self.topics.ack:
            store, upto = data.get("store"), data.get("upto")
            if not isinstance(store, str) or not is_int(upto) or upto < 0:
                self._bad_command(msg.topic, "ack needs store (string) and upto (integer >= 0)")
                return
            if store != self.store.store_id:
                # A retained ack of an earlier store (replaced card) is normal at start.
                log.info("ack for store %r ignored: this store is %s", store, self.store.store_id)
                return
            if not self._plausible(msg.topic, upto):
                return
            head = data.get("head") if chain.is_hash(data.get("head")) else None
            if not self._floor_done:
                # Held until the floor is known. The floor itself comes only from the
                # box's own hwm: an ack proves what HQ holds, not that this box wrote it.
                if upto >= (self._floor_ack or (0, None))[0]:
                    self._floor_ack = (upto, head)
                return
            self._ack(upto, head)
        elif msg.topic == self.topics.hwm:
            store, last = data.get("store"), data.get("last_seq")
            if not isinstance(store, str) or not is_int(last) or last < 0:
                self._bad_command(msg.topic, "hwm needs store (string) and last_seq (integer)")
                return
            if store != self.store.store_id or not self._plausible(msg.topic, last):
                return
            head = data.get("head") if chain.is_hash(data.get("head")) else None
            if not self._floor_done:
                if last >= self._floor_hwm[0]:
                    self._floor_hwm = (last, head)
                self._floor_seen = max(self._floor_seen, last)
            elif last > self.pipeline.next_seq - 1:
                self._skip(last, self.pipeline.next_seq, head)
        elif msg.topic == self.topics.cmd:
            self._command(data)

    def _hq_fixes(self, payload: bytes) -> None:
        """HQ's corrections, shown on the marshal page; never stored as this box's events."""
        try:
            self.hq_fixes = hqfix.parse(payload, self.store.store_id) if payload else {}
        except (ValueError, RecursionError) as e:
            self._bad_command(self.topics.hqfix, str(e)[:100])
            return
        self.recent = tuple(self._with_hq(r) for r in self.recent)

    def _with_hq(self, row: dict[str, Any]) -> dict[str, Any]:
        fix = self.hq_fixes.get(row["seq"])
        if fix is None:
            return row if "hq" not in row else {k: v for k, v in row.items() if k != "hq"}
        return {**row, "hq": hqfix.label(fix)}

    def _command(self, data: dict[str, Any]) -> None:
        if data.get("cmd") != "resend":
            self._bad_command(self.topics.cmd, f"unknown cmd {data.get('cmd')!r}")
            return
        lo, hi, store = data.get("from"), data.get("to"), data.get("store")
        if store != self.store.store_id:
            # HQ still asks for gaps of an earlier store after a card swap: nothing we
            # can serve; counted so a misaddressed HQ shows.
            self._bad_command(
                self.topics.cmd,
                f"resend for store {str(store)[:40]!r}, this is {self.store.store_id}",
            )
            return
        top = self.pipeline.next_seq - 1
        if not (is_int(lo) and is_int(hi)) or not 1 <= lo <= hi <= top:
            # HQ only asks for seqs it saw or the status named: never beyond our last.
            self._bad_command(self.topics.cmd, f"resend needs integers 1 <= from <= to <= {top}")
            return
        n = self.outbox.resend(lo, hi)
        log.info("HQ asked for seq %d..%d: %d scheduled", lo, hi, n)

    def _bad_command(self, topic: str, why: str) -> None:
        self.bad_commands += 1
        # Rate-limited in effect by the sender; a flood shows in the counter, not the log.
        if self.bad_commands <= 100 or self.bad_commands % 1000 == 0:
            # Bounded: the reason may quote what the sender put in the message.
            if len(why) > _MAX_LOGGED:
                why = f"{why[:_MAX_LOGGED]}... ({len(why)} characters)"
            log.warning("ignored message on %s: %s (%d so far)", topic, why, self.bad_commands)

    # -- status -------------------------------------------------------------
    def status(self, now: int | None = None) -> dict[str, Any]:
        now = time.monotonic_ns() if now is None else now
        pipe = self.pipeline.status()
        clock = pipe["clock_detail"]
        levels = self.edges.levels()
        faults = self.edges.faults(now)
        alarms = self._alarms_now(faults)
        pairer = self.pipeline.pairer
        return {
            "state": "ready",
            "box": self.cfg.box,
            "checkpoint": self.cfg.checkpoint,
            "place": self.cfg.place,
            "store": self.store.store_id,
            "version": __version__,
            "clock": pipe["clock"],
            "uncertainty_ns": clock.get("uncertainty_ns"),
            # Seconds of PPS still needed before the clock can lock (absent once it can).
            "lock_in_s": clock.get("lock_in_s"),
            "fix": self.pipeline.parser.stats(),
            "coarse_passages": pipe["coarse_passages"],
            "ticks": "kernel" if self.edges.kernel_ticks else "callback",
            "gps_port": self.serial.connected,
            "gps_port_waiting": self.serial.waiting,
            "gps_burst": self.pipeline.burst.status(self.cfg.gps.baudrate),
            "pairing": {
                "mismatch": pairer.mismatch,
                "advice": pairer.advice,
                "phase_ns": pairer.phase_ns,
                "tail_ns": pairer.tail_ns,
            },
            "pps_pulses": self.edges.pps_pulses,
            "backlog": self.outbox.backlog,
            "inflight": self.outbox.inflight,
            "last_seq": self.pipeline.next_seq - 1,
            "acked_upto": self.outbox.acked_upto,
            "unstored": len(self._unstored),
            "skipped_seqs": self.skipped_seqs,
            "reissued": self.reissued,
            "inputs": {
                name: {"broken": levels.get(name), "fault": name in faults, **stats}
                for name, stats in pipe["inputs"].items()
            },
            "alarms": alarms,
            "bad_commands": self.bad_commands,
            **self._chain_anchor(),
        }

    def _alarms_now(self, faults: dict[str, int]) -> dict[str, str]:
        alarms = dict(self.alarms)
        for name, dropped in faults.items():
            alarms[f"input:{name}"] = f"sensor fault: {name} chattering ({dropped} edges dropped)"
        port_error = self.serial.last_error
        if not self.serial.connected and port_error:
            # Retried every second: the box goes on timing (system clock) meanwhile.
            alarms["gps_port"] = port_error
        pairer = self.pipeline.pairer
        if pairer.mismatch:
            alarms["gps"] = f"NMEA/PPS convention mismatch: {pairer.advice}"
        if self._raw_dropped:
            alarms["raw"] = (
                f"{self._raw_dropped} raw inputs (edges, PPS ticks) could not be kept while the "
                "store failed; events are not affected, replays of this period will be incomplete"
            )
        return alarms

    def _chain_anchor(self) -> dict[str, Any]:
        """`{"chain": {"seq", "head"[, "sig"]}}`: the head of this store's chain, signed
        with `[integrity] sign_key`; empty before the first event. HQ keeps every one."""
        seq = self.pipeline.next_seq - 1
        if seq < 1:
            return {}
        head = self.pipeline.head
        if self._signer is None:
            return {"chain": {"seq": seq, "head": head}}
        if self._signed.get("seq") != seq or self._signed.get("head") != head:
            box, store = self.cfg.box, self.store.store_id
            self._signed = chain.sign_head(self._signer, box, store, seq, head)
        return {"chain": self._signed}

    def _status(self, now: int) -> None:
        for t_ns, old, new in self.pipeline.transitions:
            log.warning("clock %s -> %s at tick %d", old, new, t_ns)
        self.pipeline.transitions.clear()
        pairer = self.pipeline.pairer
        if pairer.mismatch != self._gps_mismatch:
            self._gps_mismatch = pairer.mismatch
            if pairer.mismatch:
                log.error("GPS time refused: %s", pairer.advice)
            else:
                log.warning("GPS time sentences agree with the pulses again: pairing resumes")
        if not self.link.connected:
            return
        # Publish on what a marshal or HQ must see at once; counters and beam
        # levels ride along with the periodic message (every passage toggles a
        # level twice: publishing on that costs a retained status per edge). The key
        # is made every turn, the whole status (clock fit, counters) only to publish.
        faults = self.edges.faults(now)
        key = {
            "clock": self.pipeline.clock.state(self.pipeline.now_ns or 0).value,
            "alarms": self._alarms_now(faults),
            "faults": {i.name: i.name in faults for i in self.cfg.inputs},
        }
        if key != self._last_status or now >= self._next_status_ns:
            st = self.status(now)
            self.link.publish(self.topics.status, message_bytes(st), qos=1, retain=True)
            self._last_status = key
            self._next_status_ns = now + self.cfg.status_interval_s * 10**9

    def _publish_recent(self, events: list[dict[str, Any]]) -> None:
        """Replace `self.recent` when this turn added passages or corrected one."""
        kinds = ("passage", "assign", "void", "restamp")
        if not any(ev["type"] in kinds for ev in events):
            return
        rows = {r["seq"]: r for r in self.recent}
        for ev in events:
            kind, ref = ev["type"], ev.get("ref_seq")
            if kind == "passage":
                rows[ev["seq"]] = self._with_hq({**ev, "void": False})
            elif kind in kinds and ref in rows:
                row = dict(rows[ref])  # a copy: published rows are never changed
                if kind == "assign":
                    row["car"] = ev["car"]
                elif kind == "void":
                    row["void"], row["void_reason"] = True, ev.get("reason")
                else:
                    for f in ("utc_ns", "utc", "clock", "uncertainty_ns"):
                        row[f] = ev[f]
                rows[ref] = row
        self.recent = tuple(rows[s] for s in sorted(rows)[-_RECENT:])

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
            # The box's last word: HQ keeps this anchor after the box is gone, so an
            # event deleted from HQ later still contradicts it.
            offline = {
                "state": "offline",
                "box": self.cfg.box,
                "store": self.store.store_id,
                "last_seq": self.pipeline.next_seq - 1,
                "backlog": self.outbox.backlog,
                "acked_upto": self.outbox.acked_upto,
                **self._chain_anchor(),
            }
            self.link.publish(self.topics.status, message_bytes(offline), qos=1, retain=True)
        self.link.stop()
        if self.recorder is not None:
            try:
                self.recorder.close()
            except (OSError, ValueError) as e:
                log.warning("closing the capture: %s", e)
        if self._writable and (self._raw_edges or self._raw_pps or self.pipeline.new_samples):
            # The raw rows kept in memory (at most _RAW_FLUSH_NS of them) go down too.
            self._raw_due_ns = 0
            self._commit([], time.monotonic_ns())
        if self._unstored:
            log.error(
                "exiting with %d events not on disk: %s",
                len(self._unstored),
                self.alarms.get("store", "store unavailable"),
            )
        self.store.close()
