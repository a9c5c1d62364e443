"""Broker and network faults between a real box daemon and a real Mosquitto.

The box reaches the broker through `sim.proxy.LinkProxy` (a TCP proxy written for these
tests, since tc/netem is not on every machine); HQ (a real `Collector`) and a watcher
talk to the broker directly. Passages stream in all the time. Faults, in turn:

* the broker SIGKILLed and restarted with persistence off (it forgets everything:
  sessions, retained acks, messages it had PUBACKed but not yet delivered);
* the link cut (every connection reset, new ones refused) and restored;
* a half-open link (the stream silently stops; nothing errors): the box must notice
  within its keep-alive bound, reconnect and carry on;
* a half-open link on which even new connections hang, then restored.

Throughout the box keeps recording; afterwards its backlog drains in seq order and HQ
holds every passage the beam saw, once.

The load test fills a backlog far above any real rally with the broker down, then
measures how fast it drains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from boxrig import BoxRig
from faults import (
    PassageFeeder,
    Watcher,
    box_events,
    check_contiguous,
    fast_inputs,
    hq_box_counters,
    hq_event_count,
    hq_events,
    passage_keys,
    report,
)
from waits import wait_for

from checkpoint.hq.collector import Collector
from sim.proxy import LinkProxy

pytestmark = pytest.mark.slow

KEEPALIVE_S = 2
PINS = {"beam": "GPIO17", "beam2": "GPIO27"}


def _hq(broker_url: str, db: Path) -> Collector:
    c = Collector(broker_url, db, gap_wait_s=1.0, heartbeat_s=0.5)
    c.start()
    wait_for(c.subscribed.is_set, 10, "HQ subscribed")
    return c


def _first_arrival_order(watcher: Watcher, above: int = 0) -> list[int]:
    """Seqs above `above`, in the order the watcher first saw each (a copy sent again
    does not count)."""
    seen: dict[int, None] = {}
    for _, payload in watcher.payloads("/event"):
        seq = json.loads(payload)["seq"]
        if seq > above:
            seen.setdefault(seq, None)
    return list(seen)


def _highest_seen(watcher: Watcher) -> int:
    return max((json.loads(p)["seq"] for _, p in watcher.payloads("/event")), default=0)


def _settle(rig: BoxRig, hq_db: Path, passages: int, timeout: float = 60) -> list[dict]:
    """Wait until the box stored `passages` passages and HQ holds exactly the box's
    stored events; return them."""
    final: list[dict] = []

    def same() -> bool:
        nonlocal final
        final = box_events(rig.store_path)
        if len(passage_keys(final)) < passages:
            return False
        return hq_events(hq_db, rig.box) == final

    wait_for(same, timeout, "HQ to hold every event of the box's store", every=0.5)
    return final


def _connected_again(proxy: LinkProxy, since: int, timeout: float, what: str) -> int:
    return wait_for(
        lambda: next((t for t in proxy.accepts if t > since), None), timeout, what, every=0.02
    )


def _flowing(watcher: Watcher, what: str, n: int = 10) -> None:
    """Wait until `n` more events reach the watcher: the link carries new traffic (at
    the feeder's 10 passages/s, about the second the test used to sleep)."""
    seen = len(watcher.payloads("/event"))
    wait_for(lambda: len(watcher.payloads("/event")) >= seen + n, 30, what)


def _broker_killed(broker, hq, proxy: LinkProxy, watcher: Watcher) -> None:
    """1. Broker SIGKILLed, no persistence: sessions, retained acks and anything it held
    are gone. Down for 3 s, then back on the same port."""
    broker.kill()
    time.sleep(3)  # the fault's schedule: the broker stays down 3 s
    t_up = time.monotonic_ns()
    broker.start()
    wait_for(hq.subscribed.is_set, 20, "HQ resubscribed after the broker restart")
    _connected_again(proxy, t_up, 20, "box reconnected after broker restart")
    _flowing(watcher, "passages flowing after the broker restart")


def _link_cut(proxy: LinkProxy, watcher: Watcher) -> float:
    """2. The link cut: every connection reset, new ones refused, for 3 s. Returns the
    seconds from the link's return to the box's reconnect."""
    proxy.drop()
    time.sleep(3)  # the fault's schedule: the link stays cut 3 s
    t_restore = time.monotonic_ns()
    proxy.restore()
    t_back = _connected_again(proxy, t_restore, 20, "box reconnected after the cut")
    _flowing(watcher, "passages flowing after the cut")
    return (t_back - t_restore) / 1e9


def _half_open(proxy: LinkProxy, watcher: Watcher) -> float:
    """3. Half-open: the stream silently stops. Only keep-alive can tell; a new
    connection works (the NAT mapping died, the path did not). Returns the seconds the
    box took to notice."""
    t_hole = time.monotonic_ns()
    proxy.blackhole(new="pass")
    t_new = _connected_again(proxy, t_hole, 4 * KEEPALIVE_S + 10, "dead link noticed")
    proxy.restore()
    _flowing(watcher, "passages flowing after the half-open link")
    return (t_new - t_hole) / 1e9


def _connects_hang(proxy: LinkProxy, watcher: Watcher) -> float:
    """4. Half-open and new connections hang too (no CONNACK ever), for 6 s. Returns the
    seconds from the link's return to the box's reconnect."""
    proxy.blackhole(new="hang")
    time.sleep(6)  # the fault's schedule: connects hang for 6 s
    t_restore = time.monotonic_ns()
    proxy.restore()
    t_back = _connected_again(proxy, t_restore, 30, "box reconnected after the hang")
    _flowing(watcher, "passages flowing after the hang")
    return (t_back - t_restore) / 1e9


def _nothing_lost(final: list[dict], sent: set[tuple[str, int]], hq_db: Path, box: str) -> None:
    check_contiguous(final)
    # The daemon was never killed: every passage that reached it is stored, once...
    assert sorted(passage_keys(final)) == sorted(sent)
    # ...and HQ has each of them once, without a conflict.
    at_hq = passage_keys(hq_events(hq_db, box))
    assert len(at_hq) == len(set(at_hq)) == len(sent)
    assert hq_box_counters(hq_db, box)["conflicts"] == 0


def _network_faults(tmp_path: Path, broker, rounds: int) -> dict:
    """`rounds` times: broker killed, link cut, half-open, half-open with hanging
    connects; passages streaming throughout. Returns the figures."""
    hq_db = tmp_path / "hq.db"
    hq = _hq(broker.url, hq_db)
    proxy = LinkProxy("127.0.0.1", broker.port)
    watcher = Watcher(broker.url, ["rally/box07/event"])
    rig = BoxRig(
        tmp_path,
        proxy.url,
        inputs=fast_inputs(*PINS.items()),
        keepalive_s=KEEPALIVE_S,
        redeliver_after_s=5,
    )
    noticed: list[float] = []
    after_cut: list[float] = []
    after_hang: list[float] = []
    inversions: list[tuple[int, int]] = []
    feeder = PassageFeeder(rig, 10, pins=PINS)
    try:
        rig.start()
        feeder.start()
        _flowing(watcher, "passages flowing")
        for _ in range(rounds):
            _broker_killed(broker, hq, proxy, watcher)
            # The watcher itself missed what was published before it resubscribed, and
            # the broker lost what it held (HQ gets those through resend requests, out
            # of order by nature): order is judged for seqs newer than what is seen now.
            mark = _highest_seen(watcher)
            after_cut.append(_link_cut(proxy, watcher))
            noticed.append(_half_open(proxy, watcher))
            after_hang.append(_connects_hang(proxy, watcher))
            order = _first_arrival_order(watcher, above=mark)
            inversions += [(a, b) for a, b in zip(order, order[1:], strict=False) if b < a]
    finally:
        feeder.stop()
    try:
        final = _settle(rig, hq_db, len(feeder.sent))
    finally:
        hq.stop()
        watcher.close()
        rig.close()
        proxy.close()

    sent = {(s.input, s.mono_ns) for s in feeder.sent}
    _nothing_lost(final, sent, hq_db, rig.box)
    # paho pings after `keepalive` without traffic in and gives up after another
    # `keepalive` without an answer; its loop adds up to a second.
    assert max(noticed) <= 2 * KEEPALIVE_S + 1.5, f"dead link noticed only after {noticed} s"
    # With the broker up, the backlog drains in seq order: seqs are first seen
    # ascending (a copy sent again after a lost PUBACK is not a first sighting).
    assert not inversions, f"backlog not drained in order: {inversions[:5]}"
    return {
        "rounds": rounds,
        "faults_survived": 4 * rounds,
        "keepalive_s": KEEPALIVE_S,
        "half_open_noticed_s_max": round(max(noticed), 2),
        "reconnect_after_cut_s_max": round(max(after_cut), 2),
        "reconnect_after_hang_s_max": round(max(after_hang), 2),
        "passages": len(sent),
        "events": len(final),
        "lost": 0,
        "hq_duplicates_dropped": hq_box_counters(hq_db, rig.box)["duplicates"],
    }


def test_broker_kill_link_cut_and_half_open_lose_nothing(tmp_path, broker):
    report("network", _network_faults(tmp_path, broker, rounds=1))


@pytest.mark.soak
def test_soak_network_faults_ten_rounds(tmp_path, broker):
    report("network_soak", _network_faults(tmp_path, broker, rounds=10))


def _burst(tmp_path: Path, broker, *, rate: float, seconds: float) -> dict:
    """Passages at `rate`/s for `seconds` with the broker down, then the broker up: how
    fast does the backlog reach HQ?"""
    hq_db = tmp_path / "hq.db"
    pins = {"in1": "GPIO17", "in2": "GPIO27", "in3": "GPIO22"}
    rig = BoxRig(tmp_path, broker.url, inputs=fast_inputs(*pins.items()), redeliver_after_s=30)
    rig.start()
    broker.kill()
    feeder = PassageFeeder(rig, rate, pins=pins).start()
    t0 = time.monotonic()
    time.sleep(seconds)  # the fault's schedule: passages for `seconds` with no broker
    feeder.stop()
    fed_s = time.monotonic() - t0
    n = len(feeder.sent)
    # Everything recorded while the broker is down (the store is the queue).
    wait_for(lambda: len(passage_keys(box_events(rig.store_path))) == n, 60, "all passages stored")
    broker.start()
    t_up = time.monotonic()
    hq = _hq(broker.url, hq_db)
    watcher = Watcher(broker.url, ["rally/box07/event"])
    try:
        # Polled cheaply: parsing every event each time would slow HQ (same process).
        wait_for(lambda: hq_event_count(hq_db, rig.box) >= n, 300, "HQ to get the backlog", 0.1)
        t_done = time.monotonic()
        final = _settle(rig, hq_db, n)
    finally:
        hq.stop()
        watcher.close()
        rig.close()
    arrivals = [t for t, _ in watcher.payloads("/event")]
    check_contiguous(final)
    assert sorted(passage_keys(final)) == sorted((s.input, s.mono_ns) for s in feeder.sent)
    at_hq = passage_keys(hq_events(hq_db, rig.box))
    assert len(at_hq) == len(set(at_hq)) == n
    assert hq_box_counters(hq_db, rig.box)["conflicts"] == 0
    return {
        "passages": n,
        "fed_rate_per_s": round(n / fed_s, 1),
        # Broker up -> HQ has every event (includes the box's reconnect back-off and
        # its 1 s seq-floor check after subscribing).
        "broker_up_to_all_at_hq_s": round(t_done - t_up, 2),
        # First to last event on the wire: the box's publishing rate (in-flight window
        # of 32 QoS 1 messages) while HQ stores and acks.
        "drain_rate_events_per_s": round(
            len(arrivals) / max(1e-3, (arrivals[-1] - arrivals[0]) / 1e9), 1
        ),
        "lost": 0,
        "duplicates_at_hq": 0,
    }


def test_burst_with_broker_down_drains_completely(tmp_path, broker):
    report("load", _burst(tmp_path, broker, rate=300, seconds=3))


@pytest.mark.soak
def test_soak_burst_a_minute_at_300_per_s(tmp_path, broker):
    report("load_soak", _burst(tmp_path, broker, rate=300, seconds=60))
