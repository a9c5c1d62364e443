"""The card keeper: the box's store, and running on when the card will not take writes.

If the store fails (disk full, read-only card), events stay in memory, are still
published, and the status message carries an alarm saying what to do; the batch is
retried every second, so nothing is lost once the card is writable again. A store that
cannot even be opened for writing is run on a read-only view, reopened for writing
every few seconds.

Raw inputs (PPS ticks, beam edges, clock samples) are replay material, not events: they
go to disk with the next batch of events (so every stored event has its inputs stored)
and otherwise at most `RAW_FLUSH_NS` after arriving, or once `RAW_FLUSH_ROWS` are
waiting. This is the loss window for raw rows on a power cut; each commit is fsync'd
(synchronous=FULL), so one a minute instead of two a second keeps an idle card quiet.

One owner: the daemon's core thread, the only thread that touches the store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from checkpoint.box.store import Store
from checkpoint.config import Config
from checkpoint.errors import StoreError

log = logging.getLogger("checkpoint.box.daemon")

MAX_RAW_UNSTORED = 100_000
RAW_FLUSH_NS = 60 * 10**9
RAW_FLUSH_ROWS = 5_000
# After a failed commit, retry at most this often: every retry re-serialises the whole
# in-memory batch, and a full card should not cost the core thread its turns.
STORE_RETRY_NS = 1_000_000_000
# Running on a read-only view of the store: try to reopen it for writing this often.
REOPEN_NS = 5 * 10**9
_LOG_REPEAT_NS = 30 * 10**9


def unwritable_media(path: Path) -> str | None:
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


class CardKeeper:
    """The store and what is kept in memory until it is on disk."""

    def __init__(self, cfg: Config, alarms: dict[str, str]) -> None:
        self.cfg = cfg
        self.alarms = alarms  # the daemon's: published in every status
        self.writable = True  # False while running on a read-only view
        self._reopen_ns = 0
        self.unstored: list[dict[str, Any]] = []  # events not on disk yet, in seq order
        self.raw_edges: list[tuple[str, int, bool]] = []
        self.raw_pps: list[int] = []
        self.raw_dropped = 0
        self.raw_due_ns = 0  # when the raw rows kept in memory must be written
        self.ack_unstored = False  # an HQ ack not yet written to the store
        self.retry_ns = 0
        self._logged_ns: int | None = None
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
            alarms["store_replaced"] = (
                f"database was corrupt; moved aside to {moved} (kept for recovery: hand it "
                f"to HQ for salvage) and a new store {self.store.store_id} was started"
            )
            log.error("%s", alarms["store_replaced"])
        self.durable_last = self.store.last_seq()  # highest seq known to be on disk

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
        why = unwritable_media(path)
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
        self.writable = False
        self.alarms["store"] = (
            f"{err} -- running on a read-only view of store {store.store_id}: events are "
            "kept in memory and still sent to HQ; make the card writable (or free space) "
            "and they are written within seconds (do not switch the box off)"
        )
        return store

    def _reopen(self, now: int) -> bool:
        """Try to swap the read-only view for a writable store; True when writable."""
        if self.writable:
            return True
        if now < self._reopen_ns:
            return False
        self._reopen_ns = now + REOPEN_NS
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
        old, self.store, self.writable = self.store, store, True
        old.close()
        log.warning("store %s is writable again", store.store_id)
        return True

    # -- the core thread's turn ------------------------------------------------------------

    def keep_raw(self, rec: dict[str, Any]) -> None:
        """Keep an edge or PPS tick for the next batch (bounded while the store fails)."""
        if len(self.raw_edges) + len(self.raw_pps) < MAX_RAW_UNSTORED:
            if rec["type"] == "edge":
                self.raw_edges.append((rec["input"], rec["mono_ns"], rec["active"]))
            elif rec["type"] == "pps":
                self.raw_pps.append(rec["mono_ns"])
        else:
            self.raw_dropped += 1

    def due(self, samples: int, now: int) -> bool:
        """Whether to write now: events wait, or the raw rows' time or count is up."""
        raw = len(self.raw_edges) + len(self.raw_pps) + samples
        if not raw and not self.ack_unstored:
            self.raw_due_ns = now + RAW_FLUSH_NS
        due = raw >= RAW_FLUSH_ROWS or now >= self.raw_due_ns
        return bool(self.unstored or due) and now >= self.retry_ns

    def write(
        self,
        boot: str,
        samples: list[tuple[int, int]],
        acked_upto: int,
        sync_capture: Callable[[], None],
        now: int,
    ) -> bool:
        """One attempt to put everything kept in memory on disk, in one transaction;
        True when it is there (the caller then forgets its samples)."""
        if not self._reopen(now):
            return False
        try:
            if self.retry_ns and self.unstored:
                # A failed attempt may have committed after all (an I/O error reported
                # after the commit frame was written): never offer those seqs again, or
                # every later batch would be refused as not following the store's last.
                last = self.store.last_seq()
                self.durable_last = max(self.durable_last, last)
                self.unstored = [ev for ev in self.unstored if ev["seq"] > last]
            if self.unstored:
                sync_capture()  # the capture is what replays these events: on the card first
            self.store.record(
                boot=boot,
                edges=self.raw_edges,
                pps=self.raw_pps,
                samples=samples,
                events=self.unstored,
                acked=acked_upto if self.ack_unstored else None,
            )
        except StoreError as e:
            self._failed(e, now)
            return False
        self.retry_ns = 0
        if self.unstored:
            self.durable_last = self.unstored[-1]["seq"]
        n = len(self.unstored)
        self.unstored, self.raw_edges, self.raw_pps = [], [], []
        self.ack_unstored = False
        self.raw_due_ns = now + RAW_FLUSH_NS
        self._logged_ns = None
        if self.alarms.pop("store", None):
            log.warning("store writable again; the %d events kept in memory are on disk", n)
        return True

    def _failed(self, e: StoreError, now: int) -> None:
        self.retry_ns = now + STORE_RETRY_NS
        n = len(self.unstored)
        first = "store" not in self.alarms
        self.alarms["store"] = (
            f"{e} -- {n} events are kept in memory and still sent to HQ; they are "
            "written as soon as the store takes writes again (do not switch the box off)"
        )
        if first or self._logged_ns is None or now - self._logged_ns > _LOG_REPEAT_NS:
            log.error("store: %s (keeping %d events in memory)", e, n)
            self._logged_ns = now

    def restart_records(self, boot: str, window: int, now: int) -> list[dict[str, Any]]:
        """What an earlier run of this boot leaves the pipeline: its last `window` clock
        samples (`sample` records), then the passages it stamped before lock, still to
        re-stamp (`pending` records). Without the latter a restart would strand them at
        system-clock or NMEA grade; as records, a capture replays to the same restamps."""
        out: list[dict[str, Any]] = []
        try:
            samples = self.store.recent_samples(boot, window)
        except StoreError as e:
            log.warning("cannot reload clock samples: %s", e)
            samples = []
        for mono_ns, utc_s in samples:
            if mono_ns <= now:
                out.append({"type": "sample", "mono_ns": mono_ns, "utc_s": utc_s})
        if samples:
            log.info("reloaded %d clock samples from this boot", len(samples))
        try:
            rows = self.store.unsettled_passages(boot)
        except StoreError as e:
            log.warning("cannot reload passages awaiting a restamp: %s", e)
            return out
        for seq, mono_ns, unc, clock in rows:
            out.append(
                {
                    "type": "pending",
                    "mono_ns": mono_ns,
                    "ref_seq": seq,
                    "uncertainty_ns": unc,
                    "clock": clock,
                }
            )
        if rows:
            log.info("%d passages of this boot (not locked) will be re-stamped at lock", len(rows))
        return out

    def raw_alarm(self) -> str | None:
        """The status alarm for raw inputs dropped while the store failed, if any."""
        if not self.raw_dropped:
            return None
        return (
            f"{self.raw_dropped} raw inputs (edges, PPS ticks) could not be kept while the "
            "store failed; events are not affected, replays of this period will be incomplete"
        )

    def close(self) -> None:
        if self.unstored:
            log.error(
                "exiting with %d events not on disk: %s",
                len(self.unstored),
                self.alarms.get("store", "store unavailable"),
            )
        self.store.close()
