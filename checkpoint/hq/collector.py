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


What happens to each message (validation, exactly-once storage, gaps, chain checks)
is `checkpoint.hq.ingest.Ingest`; this module is the threads and the MQTT link around
it. The names tests and tools import from here (`Ingest`, `parse_event`, ...) are
re-exported.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path

from checkpoint.contracts import (
    MAX_SEQ,
    Parsed,
    Rejected,
    Topics,
    check_prefix,
    hq_subscriptions,
    message_bytes,
    parse_event,
)
from checkpoint.errors import CommandError, StoreError
from checkpoint.hq import fixes
from checkpoint.hq.ingest import (
    DEFAULT_GAP_BACKOFF_MAX_S,
    DEFAULT_GAP_WAIT_S,
    DEFAULT_PREFIX,
    Ingest,
    Stats,
)
from checkpoint.hq.seqs import Gap, SeqTracker, gaps_text, merge_gaps
from checkpoint.hq.store import HQStore, iso_now
from checkpoint.mqtt import Connected, Disconnected, Link, LinkEvent, Message, SubAck

__all__ = [
    "DEFAULT_GAP_BACKOFF_MAX_S",
    "DEFAULT_GAP_WAIT_S",
    "DEFAULT_PREFIX",
    "DEFAULT_SESSION_EXPIRY_S",
    "MAX_SEQ",
    "Collector",
    "Gap",
    "Ingest",
    "Parsed",
    "Rejected",
    "SeqTracker",
    "Stats",
    "check_prefix",
    "default_client_id",
    "gaps_text",
    "merge_gaps",
    "parse_event",
]

log = logging.getLogger("checkpoint.hq.collector")

DEFAULT_SESSION_EXPIRY_S = 3600


def default_client_id(db_path: str | Path) -> str:
    """A stable MQTT client id per HQ database, so a restarted HQ resumes its session."""
    digest = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:12]
    return f"checkpoint-hq-{digest}"


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
            subscriptions=hq_subscriptions(prefix),
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
            payload = message_bytes(cmd)
            if self.link.publish(Topics(self.prefix, box).cmd, payload, qos=1) is not None:
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
