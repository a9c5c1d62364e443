"""Outbox tests: the window, order, PUBACK and HQ-ack bookkeeping, and that no seq is lost."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from checkpoint.core.outbox import Outbox, _Ranges

S = "store-a"
SEC = 1_000_000_000


def box(**kw) -> Outbox:
    kw.setdefault("store_id", S)
    return Outbox(**kw)


def online(committed: int) -> Outbox:
    """A fresh store's outbox with seqs 1..`committed` committed, connected at t=0."""
    o = box()
    o.load(0, 0)
    o.committed(committed)
    o.connected(0)
    return o


def send_all(o: Outbox, now: int, mids: list[int]) -> list[int]:
    """Publish whatever the outbox offers, taking mids from `mids`; return the seqs."""
    seqs = o.next_to_send(now)
    for seq in seqs:
        o.sent(seq, mids.pop(0), now)
    return seqs


# -- basics ------------------------------------------------------------------------------


def test_nothing_to_send_while_disconnected_or_empty():
    o = box()
    o.load(last_seq=5, acked_upto=0)
    assert o.next_to_send(0) == []
    o.connected(0)
    assert o.next_to_send(0) == [1, 2, 3, 4, 5]
    o.disconnected()
    assert o.next_to_send(0) == []
    empty = box()
    empty.load(0, 0)
    empty.connected(0)
    assert empty.next_to_send(0) == []


def test_window_and_order():
    o = box(max_inflight=3)
    o.load(0, 0)
    o.connected(0)
    o.committed(10)
    assert o.backlog == 10
    assert send_all(o, 0, [1, 2, 3]) == [1, 2, 3]
    assert o.inflight == 3 and o.next_to_send(0) == []
    assert o.puback(2, True, 1) == 2
    assert o.next_to_send(1) == [4]
    assert o.next_to_send(1) == [4]  # asking does not claim
    o.sent(4, 4, 1)
    assert o.inflight == 3


def test_max_ahead_paces_new_seqs_by_hqs_ack_not_by_the_broker():
    # A stock broker queues 1,000 messages per subscriber and drops the rest: never
    # send more than max_ahead seqs past HQ's ack; each ack lets more go.
    o = box(max_inflight=1000, max_ahead=100)
    o.load(0, 0)
    o.connected(0)
    o.committed(1000)
    mids = list(range(1, 2000))
    sent = send_all(o, 0, mids)
    assert sent == list(range(1, 101))
    for mid in range(1, 101):
        o.puback(mid, True, 1)
    assert o.next_to_send(1) == []  # PUBACKs are not HQ's ack
    o.hq_ack(S, 40)
    assert send_all(o, 2, mids) == list(range(101, 141))
    # HQ asking for seqs (a gap) is answered whatever the pace
    o.resend(5, 6)
    assert o.next_to_send(3)[:2] == [5, 6]
    with pytest.raises(ValueError):
        box(max_ahead=-1)


def test_sent_rejects_misuse():
    o = box(max_inflight=2)
    o.load(0, 0)
    o.connected(0)
    o.committed(5)
    with pytest.raises(ValueError, match="not committed"):
        o.sent(6, 1, 0)
    with pytest.raises(ValueError, match="in order"):
        o.sent(2, 1, 0)
    o.sent(1, 1, 0)
    o.sent(2, 2, 0)
    with pytest.raises(ValueError, match="full"):
        o.sent(3, 3, 0)
    assert o.inflight == 2


def test_load_starts_after_hq_ack_and_clamps():
    o = box()
    o.load(last_seq=10, acked_upto=7)
    o.connected(0)
    assert (o.backlog, o.acked_upto) == (3, 7)
    assert o.next_to_send(0) == [8, 9, 10]
    o.load(last_seq=4, acked_upto=9)
    assert (o.backlog, o.acked_upto) == (0, 4)


def test_disconnect_returns_inflight_and_forgets_mids():
    o = online(5)
    send_all(o, 0, [10, 11, 12, 13, 14])
    assert o.puback(11, True, 1) == 2
    o.disconnected()
    assert o.inflight == 0
    assert o.puback(10, True, 2) is None  # late PUBACK from the old connection
    o.connected(3)
    # Only what had no PUBACK goes again, lowest first; seq 2 waits for redelivery.
    assert o.next_to_send(3) == [1, 3, 4, 5]


def test_mid_reuse_reschedules_the_older_seq():
    o = online(3)
    o.sent(1, 7, 0)
    o.sent(2, 7, 0)  # paho handed out mid 7 again while seq 1 was in flight
    assert o.inflight == 1
    assert o.puback(7, True, 1) == 2
    assert o.next_to_send(1) == [1, 3]


def test_sending_again_while_in_flight_tracks_the_newest_mid():
    o = online(1)
    o.sent(1, 1, 0)
    o.resend(1, 1)  # in flight: nothing new scheduled
    assert o.next_to_send(0) == []
    o.sent(1, 2, 0)  # the daemon published it again anyway
    assert o.inflight == 1
    assert o.puback(1, True, 1) is None
    assert o.puback(2, True, 1) == 1


def test_refused_publish_backs_off_raises_alarm_and_retries_in_order():
    o = box(backoff_ns=SEC, max_backoff_ns=4 * SEC)
    o.load(0, 0)
    o.committed(4)
    o.connected(0)
    send_all(o, 0, [1, 2, 3, 4])
    assert o.puback(1, True, 0) == 1
    assert o.puback(2, False, 0, reason="Not authorized") == 2
    assert o.alarm is not None and "Not authorized" in o.alarm and "seq 2" in o.alarm
    assert o.next_to_send(SEC - 1) == []
    assert o.next_to_send(SEC) == [2]
    o.sent(2, 5, SEC)
    assert o.puback(5, False, SEC) == 2
    assert o.next_to_send(3 * SEC - 1) == []  # doubled
    assert o.next_to_send(3 * SEC) == [2]
    o.sent(2, 6, 3 * SEC)
    assert o.puback(6, True, 3 * SEC) == 2
    assert o.alarm is None
    assert o.backlog == 4  # a PUBACK is not an HQ ack


def test_hq_ack_only_for_our_store():
    o = box()
    o.load(5, 0)
    assert o.hq_ack("other-store", 5) is False
    assert o.acked_upto == 0
    assert o.hq_ack(S, 3) is True
    assert o.hq_ack(S, 2) is True  # stale, harmless
    assert (o.acked_upto, o.backlog) == (3, 2)
    assert o.alarm is None


def test_hq_ack_beyond_committed_alarms_and_clamps():
    o = box()
    o.load(5, 0)
    assert o.hq_ack(S, 9) is True
    assert o.acked_upto == 5
    assert "restored copy" in o.alarm


def test_hq_ack_beyond_what_this_run_sent_moves_the_cursor():
    o = box()
    o.load(last_seq=10, acked_upto=0)  # the ack before a restart never reached the store
    o.connected(0)
    o.hq_ack(S, 6)
    assert o.next_to_send(0) == [7, 8, 9, 10]


def test_hq_ack_skips_unsent_and_scheduled_seqs():
    o = online(10)
    send_all(o, 0, list(range(1, 11)))
    o.disconnected()
    o.hq_ack(S, 6)  # arrived before the link dropped
    o.connected(1)
    assert o.next_to_send(1) == [7, 8, 9, 10]


def test_resend_schedules_clamped_ranges_first():
    o = box(max_resend=5)
    o.load(0, 0)
    o.committed(20)
    o.connected(0)
    for mid, seq in enumerate(range(1, 21), 1):
        o.sent(seq, mid, 0)
        o.puback(mid, True, 0)
    assert o.resend(-3, 2) == 2
    assert o.resend(3, 100) == 5  # capped per request
    assert o.resend(19, 100) == 2  # clamped to committed
    assert o.resend(30, 40) == 0
    assert o.resend(5, 4) == 0
    assert o.next_to_send(0) == [1, 2, 3, 4, 5, 6, 7, 19, 20]


def test_resend_counts_never_sent_seqs():
    o = box()
    o.load(10, 0)
    o.connected(0)
    o.sent(1, 1, 0)
    assert o.resend(1, 5) == 4  # 1 is in flight
    assert o.next_to_send(0) == [2, 3, 4, 5, 6, 7, 8, 9, 10]


# -- redelivery --------------------------------------------------------------------------


def test_pubacked_but_not_hq_acked_is_redelivered_after_the_timer():
    o = box(redeliver_after_ns=30 * SEC)
    o.load(0, 0)
    o.committed(5)
    o.connected(0)
    for seq in range(1, 6):
        o.sent(seq, seq, 0)
        o.puback(seq, True, 0)
    o.hq_ack(S, 2)
    assert o.next_to_send(10 * SEC) == []  # progress at 10 s restarts the wait
    assert o.next_to_send(39 * SEC) == []
    assert o.next_to_send(40 * SEC) == [3, 4, 5]  # from acked_upto + 1, in order
    for seq in (3, 4, 5):
        o.sent(seq, 100 + seq, 40 * SEC)
        o.puback(100 + seq, True, 40 * SEC)
    # No progress again: the next sweep waits twice as long.
    assert o.next_to_send(99 * SEC) == []
    assert o.next_to_send(100 * SEC) == [3, 4, 5]
    for seq in (3, 4, 5):
        o.sent(seq, 200 + seq, 100 * SEC)
    o.hq_ack(S, 5)
    assert o.backlog == 0
    assert o.next_to_send(10_000 * SEC) == []


def test_redelivery_waits_for_first_sends_and_goes_through_the_window():
    o = box(max_inflight=2, redeliver_after_ns=SEC)
    o.load(0, 0)
    o.committed(3)
    o.connected(0)
    o.sent(1, 1, 0)
    o.puback(1, True, 0)
    # Idle for a long time with nothing outstanding... then one fresh send.
    o.hq_ack(S, 1)
    assert o.next_to_send(100 * SEC) == [2, 3]
    o.sent(2, 2, 100 * SEC)
    o.sent(3, 3, 100 * SEC)
    o.puback(2, True, 100 * SEC)
    # Not immediately redelivered: the wait starts at the send, not at the old ack.
    assert o.next_to_send(100 * SEC + 1) == []
    # Seq 3 is still in flight: the sweep offers only what fits and is not in flight.
    assert o.next_to_send(101 * SEC) == [2]


def test_reconnect_restarts_the_redelivery_wait():
    o = box(redeliver_after_ns=SEC)
    o.load(0, 0)
    o.committed(1)
    o.connected(0)
    o.sent(1, 1, 0)
    o.puback(1, True, 0)
    o.disconnected()
    o.connected(50 * SEC)
    assert o.next_to_send(50 * SEC) == []
    assert o.next_to_send(51 * SEC) == [1]


# -- memory ------------------------------------------------------------------------------


def test_memory_does_not_grow_with_the_backlog():
    o = box(max_inflight=32)
    o.load(last_seq=100_000, acked_upto=0)
    o.connected(0)
    assert o.next_to_send(0) == list(range(1, 33))
    for seq in range(1, 20_001):
        mid = (seq % 65535) + 1
        o.sent(seq, mid, 0)
        o.puback(mid, True, 0)
    o.disconnected()
    o.connected(0)
    # 80,000 never-sent seqs and 20,000 PUBACKed ones: a cursor, not per-seq state.
    assert o.inflight == 0 and len(o._seq_mid) == 0 and not o._again
    for lo in range(1, 50_000, 7):  # many disjoint resend requests
        o.resend(lo, lo + 2)
    assert len(o._again.ranges()) <= 256
    # Merging kept every requested seq (plus a few extra, harmless for HQ).
    assert all(seq in o._again for seq in range(1, 20_000, 7))
    assert o.next_to_send(0) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] + list(range(11, 33))[:22]


def test_ranges_set_operations():
    r = _Ranges(max_ranges=3)
    r.add(5, 7)
    r.add(1, 2)
    r.add(3, 4)  # adjacent: merged
    assert r.ranges() == [(1, 7)]
    r.discard(4)
    assert r.ranges() == [(1, 3), (5, 7)] and 4 not in r and len(r) == 6
    r.add(10, 10)
    r.add(20, 20)  # a fourth range: the closest two merge
    assert len(r.ranges()) == 3 and all(x in r for x in (1, 3, 5, 7, 10, 20))
    r.discard_below(6)
    assert list(r)[:2] == [6, 7]
    r.discard_below(100)
    assert not r and list(r) == []


# -- never lose a seq --------------------------------------------------------------------

REDELIVER = 1_000
BACKOFF = 100


class DeliveryWorld(RuleBasedStateMachine):
    """The outbox against a paho that reuses mids, a broker that loses what it holds on a
    restart and an HQ that acks the contiguous prefix it has. Whatever happens, once the
    link is good again every committed seq reaches HQ."""

    def __init__(self) -> None:
        super().__init__()
        self.max_inflight = 4
        self.o = Outbox(
            store_id=S,
            max_inflight=self.max_inflight,
            redeliver_after_ns=REDELIVER,
            backoff_ns=BACKOFF,
            max_backoff_ns=8 * BACKOFF,
        )
        self.o.load(0, 0)
        self.now = 0
        self.committed = 0
        self.next_mid = 0
        self.pending: dict[int, int] = {}  # mid -> seq, as paho sees its in-flight
        self.broker: set[int] = set()  # PUBACKed, not yet delivered to HQ
        self.hq: set[int] = set()
        self.hq_acked = 0
        self.first_sent = 0  # highest seq ever sent
        self.pubacked: set[int] = set()  # seqs the outbox saw PUBACKed ok at least once
        self.connected = False

    def mid(self) -> int:
        # A tiny mid space forces reuse of mids still in flight.
        self.next_mid = self.next_mid % 6 + 1
        return self.next_mid

    def publish(self, count: int | None = None, draw_mid=None) -> None:
        seqs = self.o.next_to_send(self.now)
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert len(seqs) <= self.max_inflight - self.o.inflight
        if not self.connected:
            assert seqs == []
        # HQ has these (it only asks again above its ack): sending them is waste.
        assert all(seq > self.hq_acked for seq in seqs)
        for seq in seqs[:count]:
            if seq > self.first_sent:
                assert seq == self.first_sent + 1, "first sends out of order"
                self.first_sent = seq
            mid = draw_mid() if draw_mid else self.mid()
            self.o.sent(seq, mid, self.now)
            self.pending[mid] = seq  # an older message with this mid is lost

    def hq_acks(self) -> None:
        while self.hq_acked + 1 in self.hq:
            self.hq_acked += 1
        assert self.o.hq_ack(S, self.hq_acked) is True

    @rule(k=st.integers(1, 6))
    def commit(self, k):
        self.committed += k
        self.o.committed(self.committed)

    @rule()
    def connect(self):
        self.connected = True
        self.o.connected(self.now)

    @rule(arrived=st.lists(st.booleans(), max_size=8))
    def disconnect(self, arrived):
        # Messages in flight either reached the broker or were lost with the link.
        for (_, seq), ok in zip(sorted(self.pending.items()), arrived, strict=False):
            if ok:
                self.broker.add(seq)
        self.pending.clear()
        self.connected = False
        self.o.disconnected()

    @rule(count=st.none() | st.integers(0, 4))
    def send(self, count):
        self.publish(count)

    @rule(count=st.none() | st.integers(0, 4), data=st.data())
    def send_reusing_mids(self, count, data):
        self.publish(count, lambda: data.draw(st.integers(1, 6)))

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), ok=st.booleans())
    def puback(self, data, ok):
        mid = data.draw(st.sampled_from(sorted(self.pending)))
        seq = self.pending.pop(mid)
        if ok:
            self.broker.add(seq)
            self.pubacked.add(seq)
        assert self.o.puback(mid, ok, self.now, None if ok else "Quota exceeded") == seq
        if not ok:
            assert self.o.alarm is not None

    @rule(mid=st.integers(1, 6))
    def stray_puback(self, mid):
        if mid not in self.pending:
            assert self.o.puback(mid, True, self.now) is None

    @precondition(lambda self: self.broker)
    @rule(data=st.data())
    def broker_delivers(self, data):
        some = data.draw(st.lists(st.sampled_from(sorted(self.broker)), unique=True))
        self.hq.update(some)
        self.broker.difference_update(some)

    @rule()
    def broker_restarts_without_persistence(self):
        self.broker.clear()

    @rule()
    def hq_ack(self):
        self.hq_acks()

    @rule(seq=st.integers(0, 100))
    def foreign_ack(self, seq):
        before = self.o.acked_upto
        assert self.o.hq_ack("another-store", seq) is False
        assert self.o.acked_upto == before

    @rule(lo=st.integers(1, 60), n=st.integers(0, 20))
    def hq_asks_again(self, lo, n):
        lo += self.hq_acked
        got = self.o.resend(lo, lo + n)
        assert 0 <= got <= n + 1

    @rule(lo=st.integers(-5, 0), n=st.integers(0, 20))
    def hq_asks_out_of_range(self, lo, n):
        assert self.o.resend(lo, lo) == 0
        assert self.o.resend(self.committed + 1, self.committed + 1 + n) == 0

    @rule(dt=st.integers(0, 3 * REDELIVER))
    def time_passes(self, dt):
        self.now += dt

    @invariant()
    def bookkeeping_is_consistent(self):
        o = self.o
        assert o.inflight <= self.max_inflight
        assert o.inflight == len(self.pending)
        assert o.acked_upto == self.hq_acked <= self.committed
        assert o.backlog == self.committed - self.hq_acked
        assert o.last_committed == self.committed
        assert len(o._again.ranges()) <= 256

    def teardown(self):
        # The link comes back. Before any redelivery timer could fire, every seq the outbox
        # never saw PUBACKed (lost with a link, refused, its mid reused) goes out again.
        self.connect()
        resent: set[int] = set()
        while True:
            # What is still in flight gets its PUBACK now that the link is good.
            for mid, seq in sorted(self.pending.items()):
                assert self.o.puback(mid, True, self.now) == seq
                self.pubacked.add(seq)
                self.hq.add(seq)
            self.pending.clear()
            self.publish()
            if not self.pending:
                break
            resent.update(self.pending.values())
        unsure = set(range(self.hq_acked + 1, self.committed + 1)) - self.pubacked
        assert unsure <= resent, f"not sent again after reconnect: {sorted(unsure - resent)}"
        # And as time passes everything committed reaches HQ, even what a broker lost.
        for _ in range(2_000):
            if self.hq_acked == self.committed:
                break
            self.now += 10 * REDELIVER
            self.publish()
            for mid, seq in sorted(self.pending.items()):
                assert self.o.puback(mid, True, self.now) == seq
                self.hq.add(seq)
            self.pending.clear()
            self.hq.update(self.broker)
            self.broker.clear()
            self.hq_acks()
        assert self.hq_acked == self.committed, (
            f"lost seqs: HQ acked {self.hq_acked} of {self.committed}"
        )
        assert self.o.backlog == 0


TestDeliveryWorld = DeliveryWorld.TestCase
TestDeliveryWorld.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
