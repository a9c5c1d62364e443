"""Which event seq to publish next: the in-flight window, PUBACKs, HQ acks and resends.

Pure bookkeeping: no I/O, no threads, no clock. The core thread passes every time in as
integer nanoseconds and does the publishing itself::

    for seq in outbox.next_to_send(now_ns):
        mid = link.publish(payload_of(seq))        # paho message id
        outbox.sent(seq, mid, now_ns)

Delivery has two layers. The broker's PUBACK only means the broker took the message; a
broker without persistence loses what it held when it restarts. Only HQ's ack
("store S: I durably have every seq <= N") ends our responsibility for a seq. So seqs that
were PUBACKed but not acked by HQ are published again, from `acked_upto + 1` in order,
when HQ's ack has made no progress for `redeliver_after_ns`. HQ deduplicates by
(box, store, seq), so a duplicate costs bandwidth, never correctness; a lost seq would.

Memory does not grow with the backlog: unsent seqs are a cursor (every seq from `_cursor`
to the last committed one has never been sent) plus a small set of ranges to send again;
only the in-flight window is kept per message.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from checkpoint.errors import require_at_least

#: HQ may ask for at most this many seqs per resend request; it asks again for the rest.
MAX_RESEND = 1000

#: Ranges-to-send-again kept before the closest two are merged (sending a few extra seqs,
#: which HQ drops as duplicates, rather than growing without bound).
_MAX_RANGES = 256


class _Ranges:
    """A set of ints kept as sorted, disjoint, non-adjacent closed ranges."""

    def __init__(self, max_ranges: int = _MAX_RANGES) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        self._max = max_ranges

    def __bool__(self) -> bool:
        return bool(self._lo)

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in zip(self._lo, self._hi, strict=True))

    def __contains__(self, x: int) -> bool:
        i = bisect.bisect_right(self._lo, x) - 1
        return i >= 0 and x <= self._hi[i]

    def __iter__(self) -> Iterator[int]:
        for lo, hi in zip(list(self._lo), list(self._hi), strict=True):
            yield from range(lo, hi + 1)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi, strict=True))

    def add(self, lo: int, hi: int) -> None:
        if lo > hi:
            return
        # Every range touching or adjacent to [lo, hi] is merged into it.
        i = bisect.bisect_left(self._hi, lo - 1)
        j = bisect.bisect_right(self._lo, hi + 1)
        if i < j:
            lo = min(lo, self._lo[i])
            hi = max(hi, self._hi[j - 1])
        self._lo[i:j] = [lo]
        self._hi[i:j] = [hi]
        if len(self._lo) > self._max:
            gaps = [self._lo[k + 1] - self._hi[k] for k in range(len(self._lo) - 1)]
            k = gaps.index(min(gaps))
            self._hi[k] = self._hi[k + 1]
            del self._lo[k + 1], self._hi[k + 1]

    def discard(self, x: int) -> None:
        i = bisect.bisect_right(self._lo, x) - 1
        if i < 0 or x > self._hi[i]:
            return
        lo, hi = self._lo[i], self._hi[i]
        pieces = [(a, b) for a, b in ((lo, x - 1), (x + 1, hi)) if a <= b]
        self._lo[i : i + 1] = [a for a, _ in pieces]
        self._hi[i : i + 1] = [b for _, b in pieces]

    def discard_below(self, x: int) -> None:
        """Remove every member < x."""
        i = bisect.bisect_left(self._hi, x)
        del self._lo[:i], self._hi[:i]
        if self._lo and self._lo[0] < x:
            self._lo[0] = x

    def clear(self) -> None:
        self._lo.clear()
        self._hi.clear()


class Outbox:
    """Publishing bookkeeping for one store's event seqs. See the module docstring.

    Public read-only state: `backlog` (committed but not acked by HQ), `inflight`
    (published, no PUBACK yet), `acked_upto`, `last_committed`, `connected_now`, and
    `alarm` (a message for the marshal, or None).
    """

    def __init__(
        self,
        *,
        store_id: str,
        max_inflight: int = 32,
        max_ahead: int = 0,
        redeliver_after_ns: int = 30_000_000_000,
        backoff_ns: int = 1_000_000_000,
        max_backoff_ns: int = 60_000_000_000,
        max_resend: int = MAX_RESEND,
    ) -> None:
        """`store_id` is the Store's: HQ acks naming another store are ignored.

        `max_inflight` bounds messages published without a PUBACK. `max_ahead` (0: no
        limit) bounds how far past HQ's ack a never-sent seq may go: a broker holds a
        limited queue per subscriber (stock Mosquitto: 1,000 messages) and drops what
        does not fit, which resends then repair slowly; pacing by HQ's acks keeps the
        queue short, so a backlog drains at the speed HQ commits. After a refused
        publish, sending pauses `backoff_ns`, doubling per consecutive refusal up to
        `max_backoff_ns`. Redelivery waits `redeliver_after_ns` without HQ ack progress,
        doubling (up to 8x) per sweep that brought no progress, so a long HQ outage does
        not resend the whole backlog every half minute.
        """
        require_at_least("max_inflight", max_inflight, 1)
        require_at_least("max_ahead", max_ahead, 0)
        self.max_ahead = max_ahead
        self.store_id = store_id
        self.max_inflight = max_inflight
        self.redeliver_after_ns = redeliver_after_ns
        self.backoff_ns = backoff_ns
        self.max_backoff_ns = max_backoff_ns
        self.max_resend = max_resend
        self._committed = 0
        self._acked = 0
        self._cursor = 1  # lowest seq never sent (in this run)
        self._again = _Ranges()  # seqs < _cursor to send again, lowest first
        self._mid_seq: dict[int, int] = {}  # paho mid -> seq, the in-flight window
        self._seq_mid: dict[int, int] = {}
        self._connected = False
        self._hold_until_ns: int | None = None  # back-off after a refused publish
        self._refusals = 0
        self._link_alarm: str | None = None
        self._store_alarm: str | None = None
        # Redelivery timer: when we started waiting for HQ ack progress, or None when
        # nothing sent is outstanding. hq_ack() carries no time, so progress is noted and
        # the timer restarts at the next call that does.
        self._waiting_since_ns: int | None = None
        self._progress = False
        self._sweeps = 0

    # -- state --------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Committed seqs HQ has not acknowledged."""
        return self._committed - self._acked

    @property
    def inflight(self) -> int:
        """Messages published and not yet PUBACKed (or refused)."""
        return len(self._mid_seq)

    @property
    def acked_upto(self) -> int:
        """HQ durably has every seq <= this."""
        return self._acked

    @property
    def last_committed(self) -> int:
        """The highest seq known durable in the store."""
        return self._committed

    @property
    def connected_now(self) -> bool:
        """Whether the link is up, as last reported."""
        return self._connected

    @property
    def alarm(self) -> str | None:
        """What is wrong with delivery, for the marshal; None when all is well."""
        return self._store_alarm or self._link_alarm

    # -- inputs -------------------------------------------------------------------------

    def load(self, last_seq: int, acked_upto: int) -> None:
        """Start from the store's state: everything after `acked_upto` is to be sent.

        Whatever was in flight before a restart is unknown, so it is all sent again.
        """
        self._committed = max(0, last_seq)
        self._acked = max(0, min(acked_upto, self._committed))
        self._cursor = self._acked + 1
        self._again.clear()
        self._mid_seq.clear()
        self._seq_mid.clear()
        self._waiting_since_ns = None
        self._progress = False
        self._sweeps = 0

    def committed(self, seq: int) -> None:
        """Every seq <= `seq` is durable in the store and may be sent."""
        self._committed = max(self._committed, seq)

    def skip(self, upto: int) -> None:
        """Every seq <= `upto` is taken and counts as sent: an earlier run of this store
        published seqs up to `upto` that never reached the store (see daemon: seq floor).

        They are not sent now; only a resend request from HQ or a redelivery sweep sends
        them again (whatever the caller then publishes for them).
        """
        self._committed = max(self._committed, upto)
        self._cursor = max(self._cursor, upto + 1)

    def connected(self, now_ns: int) -> None:
        """The link is up (again)."""
        self._connected = True
        self._hold_until_ns = None
        self._refusals = 0
        # Waiting for HQ while the link was down says nothing about HQ; start over.
        self._waiting_since_ns = now_ns if self._outstanding() else None

    def disconnected(self) -> None:
        """The link is down: whatever was in flight is sent again after reconnecting.

        mids die with the connection (paho reuses them), so the mid map is cleared; a late
        PUBACK for an old mid is then ignored.
        """
        self._connected = False
        for seq in self._seq_mid:
            if seq > self._acked:
                self._again.add(seq, seq)
        self._mid_seq.clear()
        self._seq_mid.clear()

    def next_to_send(self, now_ns: int) -> list[int]:
        """Seqs to publish now, ascending, at most what the in-flight window has room for.

        Seqs to send again (lowest first) come before never-sent ones, so HQ's contiguous
        ack can advance. Returns [] while disconnected or backing off after a refusal.
        Calling it does not claim anything: only `sent()` does.
        """
        if not self._connected:
            return []
        self._tick(now_ns)
        if self._hold_until_ns is not None:
            if now_ns < self._hold_until_ns:
                return []
            self._hold_until_ns = None
        self._maybe_redeliver(now_ns)
        room = self.max_inflight - len(self._mid_seq)
        out: list[int] = []
        if room <= 0:
            return out
        for seq in self._again:
            if len(out) == room:
                return out
            if seq not in self._seq_mid:
                out.append(seq)
        seq = self._cursor
        last = self._committed
        if self.max_ahead:
            last = min(last, self._acked + self.max_ahead)
        while len(out) < room and seq <= last:
            out.append(seq)
            seq += 1
        return out

    def sent(self, seq: int, mid: int, now_ns: int) -> None:
        """`seq` was handed to paho, which named it `mid`.

        Send in the order `next_to_send` gave: skipping past a never-sent seq, exceeding
        the window or sending an uncommitted seq is a bug (ValueError). If `mid` still
        names another in-flight seq (paho reuses 16-bit mids), that seq's fate is unknown,
        so it is scheduled again.
        """
        if seq > self._committed or seq < 1:
            raise ValueError(f"seq {seq} is not committed (last committed {self._committed})")
        if seq > self._cursor:
            raise ValueError(f"seq {seq} sent before seq {self._cursor}: send in order")
        old_seq = self._mid_seq.get(mid)
        old_mid = self._seq_mid.get(seq)
        freed = (old_seq is not None) + (old_mid is not None and old_mid != mid)
        if len(self._mid_seq) - freed >= self.max_inflight:
            raise ValueError(f"in-flight window of {self.max_inflight} is full")
        self._tick(now_ns)
        if old_seq is not None:
            del self._mid_seq[mid], self._seq_mid[old_seq]
            if old_seq != seq and old_seq > self._acked:
                self._again.add(old_seq, old_seq)
        if old_mid is not None and old_mid != mid:
            # Published again while still in flight: track only the newest copy.
            del self._mid_seq[old_mid], self._seq_mid[seq]
        self._mid_seq[mid] = seq
        self._seq_mid[seq] = mid
        if seq == self._cursor:
            self._cursor += 1
        elif seq in self._again:
            self._again.discard(seq)
            if not self._again:
                # A sweep (or reconnect resend) finished: give HQ time to ack it.
                self._waiting_since_ns = now_ns
        if self._waiting_since_ns is None and self._outstanding():
            self._waiting_since_ns = now_ns

    def puback(self, mid: int, ok: bool, now_ns: int, reason: str | None = None) -> int | None:
        """The broker answered the publish `mid`; returns its seq, None for an unknown mid.

        `ok` False (a failure reason code, e.g. not authorised, quota exceeded) is not an
        ack: the seq is sent again after a back-off and `alarm` says why (`reason`).
        """
        self._tick(now_ns)
        seq = self._mid_seq.pop(mid, None)
        if seq is None:
            return None
        del self._seq_mid[seq]
        if ok:
            self._refusals = 0
            self._link_alarm = None
            return seq
        self._refusals += 1
        wait = min(self.backoff_ns << min(self._refusals - 1, 62), self.max_backoff_ns)
        self._hold_until_ns = now_ns + wait
        if seq > self._acked:
            self._again.add(seq, seq)
        self._link_alarm = (
            f"broker refused seq {seq} ({reason or 'failure reason code'}); "
            f"retrying in {wait / 1e9:g} s"
        )
        return seq

    def hq_ack(self, store: str, upto: int) -> bool:
        """HQ durably has every seq <= `upto` of `store`. False (ignored) for another store.

        An ack beyond what this store committed means another file with the same store id
        (a restored copy of the card?) already sent HQ those seqs: HQ would drop new events
        with them as duplicates. That sets a lasting `alarm`; the ack is clamped.
        """
        if store != self.store_id:
            return False
        if upto > self._committed:
            self._store_alarm = (
                f"HQ has seqs up to {upto} of store {store} but this store has only "
                f"{self._committed}: the store file is probably a restored copy; new events "
                "may be taken as duplicates by HQ: start a fresh store file"
            )
            upto = self._committed
        if upto <= self._acked:
            return True
        self._acked = upto
        self._cursor = max(self._cursor, upto + 1)
        self._again.discard_below(upto + 1)
        self._progress = True
        self._sweeps = 0
        return True

    def resend(self, lo: int, hi: int) -> int:
        """HQ asks for seqs lo..hi again; returns how many are now due to be sent.

        Clamped to [1, last committed] and to `max_resend` seqs from `lo`. Seqs in flight
        are not doubled up; never-sent seqs are due anyway and are counted.
        """
        lo = max(lo, 1)
        hi = min(hi, self._committed, lo + self.max_resend - 1)
        if lo > hi:
            return 0
        self._again.add(lo, min(hi, self._cursor - 1))
        in_flight = [seq for seq in self._seq_mid if lo <= seq <= hi]
        for seq in in_flight:
            self._again.discard(seq)
        return hi - lo + 1 - len(in_flight)

    # -- internals ----------------------------------------------------------------------

    def _outstanding(self) -> bool:
        # Something was sent that HQ has not acked.
        return self._cursor - 1 > self._acked

    def _tick(self, now_ns: int) -> None:
        if self._progress:
            self._progress = False
            self._waiting_since_ns = now_ns
        if not self._outstanding():
            self._waiting_since_ns = None

    def _maybe_redeliver(self, now_ns: int) -> None:
        if self._waiting_since_ns is None or self._again:
            return
        wait = self.redeliver_after_ns << min(self._sweeps, 3)
        if now_ns - self._waiting_since_ns < wait:
            return
        self._again.add(self._acked + 1, self._cursor - 1)
        self._sweeps += 1
        self._waiting_since_ns = now_ns
