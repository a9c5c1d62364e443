"""Storage faults under the real box daemon: a full card, a card the kernel turns
read-only, a corrupt database at start-up.

The promise: no passage is dropped silently. While the store refuses writes the daemon
keeps events in memory, still publishes them, and its retained status carries an alarm
saying what is wrong and what to do. When the store takes writes again everything kept
in memory lands on disk. If the process dies before that, the events it published from
memory are at HQ but not in the store; the restarted daemon learns from the broker (HQ's
retained ack, its own retained high-water mark) how far the numbering had gone, never
reuses those seqs, and records placeholders for them.

Disk full and read-only use real kernel filesystems (a small tmpfs filled with a ballast
file; an ext4 image whose error path remounts it read-only), so they need root; they are
skipped, with the reason, where mounting is not permitted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxrig import BoxRig
from faults import (
    Ext4Image,
    Watcher,
    box_events,
    box_store_id,
    can_mount,
    check_contiguous,
    ext4_error_trigger_available,
    fast_inputs,
    fill,
    hq_box_counters,
    hq_chain_breaks,
    hq_events,
    passage_keys,
    report,
    send_passage,
    tmpfs,
)
from waits import wait_for

from checkpoint.hq.collector import Collector
from sim.proxy import LinkProxy

pytestmark = pytest.mark.slow

PINS = {"beam": "GPIO17"}
TOPICS = ["rally/box07/status", "rally/box07/event"]


def _hq(broker_url: str, db: Path) -> Collector:
    c = Collector(broker_url, db, gap_wait_s=1.0, heartbeat_s=0.5)
    c.start()
    wait_for(c.subscribed.is_set, 10, "HQ subscribed")
    return c


def _feed(rig: BoxRig, n: int, rate: float = 20) -> list[tuple[str, int]]:
    """Send exactly `n` passages on the beam; returns their (input, mono_ns)."""
    out = []
    for _ in range(n):
        lead = send_passage(rig, PINS["beam"])
        assert lead is not None, "daemon not connected to its feed"
        out.append(("beam", lead))
        time.sleep(1 / rate)  # paces the cars (a simulated beam): `rate` passages a second
    return out


def _feed_failing(rig: BoxRig, watch: Watcher, n: int) -> tuple[list[tuple[str, int]], str]:
    """Send `n` passages while the card fails: their keys, and the store alarm of the
    first status that says all `n` are kept in memory."""
    keys = _feed(rig, n)
    st = watch.wait_status(
        lambda s: "store" in s.get("alarms", {}) and s.get("unstored", 0) >= n,
        20,
        f"a store alarm with {n} events kept in memory",
    )
    return keys, st["alarms"]["store"]


def _hq_passages(db: Path, box: str = "box07") -> list[tuple[str, int]]:
    return passage_keys([e for e in hq_events(db, box) if e["type"] == "passage"])


def _wait_at_hq(db: Path, keys: list[tuple[str, int]], timeout: float = 30) -> None:
    want = set(keys)
    wait_for(lambda: want <= set(_hq_passages(db)), timeout, f"{len(want)} passages at HQ")


@contextlib.contextmanager
def _box_and_hq(
    tmp_path: Path, broker_url: str, hq_db: Path, *, url: str | None = None, **rig_kw
) -> Iterator[tuple[Collector, Watcher, BoxRig]]:
    """HQ's collector, a watcher on the box's topics and the box (fast inputs, linked
    to `url` or the broker), all stopped afterwards."""
    hq = _hq(broker_url, hq_db)
    watch = Watcher(broker_url, TOPICS)
    rig = BoxRig(tmp_path, url or broker_url, inputs=fast_inputs(*PINS.items()), **rig_kw)
    try:
        yield hq, watch, rig
    finally:
        hq.stop()
        watch.close()
        rig.close()


def _card_fills_then_frees(
    rig: BoxRig, watch: Watcher, hq_db: Path, ballast: Path, sent: list, figures: dict
) -> list[tuple[str, int]]:
    """The card fills up (logs, a marshal's photos...): passages are published from
    memory, then stored in order once space is freed. Returns those kept in memory."""
    figures["ballast_bytes"] = fill(ballast)
    full, alarm = _feed_failing(rig, watch, 10)
    sent += full
    assert "disk full" in alarm and "free space" in alarm, alarm
    # The capture file on the same card fails too once its last page is full
    # (an alarm of its own, "capture"); timing goes on regardless.
    assert rig.alive()
    # Published from memory all the same: HQ has them although the card has not.
    _wait_at_hq(hq_db, sent)
    assert set(full).isdisjoint(passage_keys(box_events(rig.store_path)))

    # Space is freed: the events kept in memory land on disk, in order.
    ballast.unlink()
    watch.wait_status(
        lambda s: "store" not in s["alarms"] and s.get("unstored") == 0,
        20,
        "the store alarm to clear",
    )
    events = box_events(rig.store_path)
    check_contiguous(events)
    assert passage_keys(events) == sent
    return full


def _full_with_hq_away_then_killed(
    rig: BoxRig, watch: Watcher, hq: Collector, ballast: Path, sent: list
) -> tuple[int, int, list[tuple[str, int]]]:
    """Full again, and this time HQ is away too: events go out from memory to the broker
    (queued in HQ's session), then the box is SIGKILLed before the card recovers. They
    exist only at the broker now. Returns (last stored seq, last seq used, those events)."""
    hq.stop()
    fill(ballast)
    last_stored = len(box_events(rig.store_path))
    lost_from_store = _feed(rig, 10)
    sent += lost_from_store
    st = watch.wait_status(
        lambda s: s.get("unstored", 0) >= 10 and s.get("inflight") == 0,
        20,
        "memory-only events published",
    )
    rig.kill()
    ballast.unlink()
    return last_stored, st["last_seq"], lost_from_store


mount_problem = can_mount()


@pytest.mark.skipif(mount_problem is not None, reason=str(mount_problem))
def test_disk_full_keeps_events_in_memory_publishes_them_and_never_reuses_seqs(tmp_path, broker):
    card = tmp_path / "card"
    hq_db = tmp_path / "hq.db"
    figures: dict = {}
    with tmpfs(card, "1m"):
        sent: list[tuple[str, int]] = []
        with _box_and_hq(
            tmp_path,
            broker.url,
            hq_db,
            store=str(card / "box.db"),
            extra=f'[record]\ncapture = "{card / "capture.jsonl"}"\n',
            redeliver_after_s=5,
        ) as (hq, watch, rig):
            rig.start()
            sent += _feed(rig, 5)
            _wait_at_hq(hq_db, sent)

            ballast = card / "ballast"
            full = _card_fills_then_frees(rig, watch, hq_db, ballast, sent, figures)
            last_stored, top, lost_from_store = _full_with_hq_away_then_killed(
                rig, watch, hq, ballast, sent
            )
            # Restart on the recovered card. The store ends at `last_stored`; the broker
            # knows (hwm) that seqs up to `top` were used. They must not be reused.
            watch.messages.clear()
            rig.start()
            st = watch.wait_status(lambda s: "seq" in s["alarms"], 20, "the seq-floor alarm")
            figures["seq_alarm"] = st["alarms"]["seq"]
            sent += _feed(rig, 5)
            hq_again = _hq(broker.url, hq_db)
            try:
                _wait_at_hq(hq_db, sent, 40)
            finally:
                hq_again.stop()

        events = box_events(rig.store_path)
        check_contiguous(events)
        skipped = [e["seq"] for e in events if e["type"] == "skipped"]
        assert skipped == list(range(last_stored + 1, top + 1))
        at_hq = _hq_passages(hq_db)
        # Every passage the beam saw is at HQ exactly once, and nothing conflicted:
        # no seq was used for two different events.
        assert sorted(at_hq) == sorted(sent)
        counters = hq_box_counters(hq_db, "box07")
        assert counters["conflicts"] == 0
        # The hwm carried the chain head of the last event published from memory: the
        # first new event links to it, so HQ's chain has no break. The store's own
        # chain breaks after the placeholders, which stand for events it never had.
        assert hq_chain_breaks(hq_db, "box07") == 0
        figures.update(
            passages=len(sent),
            kept_in_memory_then_stored=len(full),
            published_from_memory_then_killed=len(lost_from_store),
            skipped_seqs=len(skipped),
            lost_at_hq=0,
            hq_conflicts=counters["conflicts"],
        )
    report("disk_full", figures)


@pytest.mark.skipif(mount_problem is not None, reason=str(mount_problem))
def test_events_numbered_before_the_floor_is_known_are_issued_again(tmp_path, broker):
    """The restarted box cannot reach the broker at first, so it numbers new passages
    from its store's last seq, colliding with seqs it published from memory before the
    kill. They are held back (nothing above the store's last seq at start is published
    before the floor is known); once it is, they are issued again under fresh seqs and
    HQ gets each passage once, without a conflict."""
    card = tmp_path / "card"
    hq_db = tmp_path / "hq.db"
    proxy = LinkProxy("127.0.0.1", broker.port)
    with tmpfs(card, "1m"):
        with (
            contextlib.closing(proxy),
            _box_and_hq(
                tmp_path,
                broker.url,
                hq_db,
                url=proxy.url,
                store=str(card / "box.db"),
                redeliver_after_s=5,
            ) as (hq, watch, rig),
        ):
            rig.start()
            sent = _feed(rig, 3)
            _wait_at_hq(hq_db, sent)
            ballast = card / "ballast"
            fill(ballast)
            memory_only = _feed(rig, 4)
            sent += memory_only
            _wait_at_hq(hq_db, sent)
            wait_for(lambda: (watch.last_status() or {}).get("acked_upto") == 7, 10, "HQ ack of 7")
            rig.kill()
            ballast.unlink()

            proxy.drop()
            rig.start()
            early = _feed(rig, 3)  # numbered 4, 5, 6 here: HQ has other events there
            sent += early
            wait_for(lambda: len(box_events(rig.store_path)) == 6, 10, "early passages stored")
            proxy.restore()
            st = watch.wait_status(lambda s: "seq" in s["alarms"], 30, "the seq-floor alarm")
            assert "issued again" in st["alarms"]["seq"], st["alarms"]["seq"]
            _wait_at_hq(hq_db, sent, 30)
        events = box_events(rig.store_path)
    check_contiguous(events)
    reissued = [e for e in events if "reissue_of" in e]
    assert [e["reissue_of"] for e in reissued] == [4, 5, 6]
    assert [e["seq"] for e in reissued] == [8, 9, 10]
    assert passage_keys(reissued) == early
    at_hq = _hq_passages(hq_db)
    assert sorted(at_hq) == sorted(sent)  # each passage once, the early ones included
    assert hq_box_counters(hq_db, "box07")["conflicts"] == 0
    # The reissued events chain on from the box's own colliding ones, which HQ never
    # got: HQ records the break (loudly, events kept) for the officials.
    assert hq_chain_breaks(hq_db, "box07") >= 1


@pytest.mark.skipif(mount_problem is not None, reason=str(mount_problem))
def test_read_only_card_at_startup_runs_from_memory_until_writable(tmp_path, broker):
    """The box boots with its card mounted read-only (fsck left it so, or the kernel did
    before the reboot). SQLite cannot even open the WAL store for writing; the daemon runs
    on a read-only view of it, numbers on from its last seq, publishes from memory, and
    writes everything once the card is writable again."""
    card = tmp_path / "card"
    hq_db = tmp_path / "hq.db"
    with tmpfs(card, "4m"):
        with _box_and_hq(
            tmp_path, broker.url, hq_db, store=str(card / "box.db"), redeliver_after_s=5
        ) as (hq, watch, rig):
            rig.start()
            sent = _feed(rig, 3)
            _wait_at_hq(hq_db, sent)
            assert rig.stop() == 0
            subprocess.run(["mount", "-o", "remount,ro", str(card)], check=True)

            rig.start()
            st = watch.wait_status(
                lambda s: "read-only view" in s["alarms"].get("store", ""), 20, "read-only alarm"
            )
            during = _feed(rig, 4)
            sent += during
            _wait_at_hq(hq_db, sent)  # published from memory, numbered 4..7
            st = watch.wait_status(lambda s: s.get("unstored") == 4, 10, "4 events in memory")
            assert st["last_seq"] == 7

            subprocess.run(["mount", "-o", "remount,rw", str(card)], check=True)
            watch.wait_status(
                lambda s: "store" not in s["alarms"] and s.get("unstored") == 0,
                20,
                "the store reopened and written",
            )
            after = _feed(rig, 2)
            sent += after
            _wait_at_hq(hq_db, sent)
        events = box_events(rig.store_path)
    check_contiguous(events)
    assert passage_keys(events) == sent
    assert sorted(_hq_passages(hq_db)) == sorted(sent)
    assert hq_box_counters(hq_db, "box07")["conflicts"] == 0
    assert hq_chain_breaks(hq_db, "box07") == 0
    report("read_only_at_start", {"passages": len(sent), "kept_in_memory": len(during)})


ext4_problem = ext4_error_trigger_available()


@pytest.fixture
def ext4_card(tmp_path):
    """An ext4 card image mounted under tmp_path, unmounted whatever happens."""
    card = Ext4Image(tmp_path / "card.img", tmp_path / "card")
    try:
        yield card.mount()
    finally:
        card.unmount()


@pytest.mark.skipif(ext4_problem is not None, reason=str(ext4_problem))
def test_card_remounted_read_only_by_the_kernel(tmp_path, broker, ext4_card):
    """The kernel's own failure path: an ext4 error remounts the card read-only under the
    running daemon (EROFS/EIO on every write of its open files). The card does not come
    back while the daemon runs; it is repaired (fsck) with the daemon stopped."""
    card = ext4_card
    hq_db = tmp_path / "hq.db"
    sent: list[tuple[str, int]] = []
    with _box_and_hq(
        tmp_path, broker.url, hq_db, store=str(card.mountpoint / "box.db"), redeliver_after_s=5
    ) as (hq, watch, rig):
        rig.start()
        sent += _feed(rig, 5)
        _wait_at_hq(hq_db, sent)
        stored_before = box_events(rig.store_path)

        card.fail()
        wait_for(card.read_only, 5, "the kernel to remount the card read-only")
        during, alarm = _feed_failing(rig, watch, 8)
        sent += during
        assert "kept in memory" in alarm and ("card" in alarm or "read-only" in alarm), alarm
        _wait_at_hq(hq_db, sent)  # published from memory
        assert rig.alive()

        # The marshal stops the box and swaps/repairs the card; the daemon says on exit
        # what it could not write.
        assert rig.stop() == 0
        assert "events not on disk" in rig.log_text()
        card.repair()
        events = box_events(rig.store_path)
        assert events == stored_before  # every commit before the failure survived

        rig.start()
        watch.wait_status(lambda s: "seq" in s["alarms"], 20, "the seq-floor alarm")
        after = _feed(rig, 5)
        sent += after
        _wait_at_hq(hq_db, sent, 40)
    at_hq = _hq_passages(hq_db)
    assert sorted(at_hq) == sorted(sent)
    assert hq_box_counters(hq_db, "box07")["conflicts"] == 0
    assert hq_chain_breaks(hq_db, "box07") == 0
    report(
        "read_only",
        {
            "passages": len(sent),
            "published_from_memory_while_read_only": len(during),
            "lost_at_hq": 0,
            "alarm": alarm[:160],
        },
    )


def test_corrupt_store_at_startup_is_moved_aside_and_a_new_store_starts(tmp_path, broker):
    hq_db = tmp_path / "hq.db"
    with _box_and_hq(tmp_path, broker.url, hq_db) as (hq, watch, rig):
        rig.start()
        first = _feed(rig, 5)
        _wait_at_hq(hq_db, first)
        assert rig.stop() == 0
        old_id = box_store_id(rig.store_path)

        # The card mangles the file: the header survives, the pages do not.
        size = rig.store_path.stat().st_size
        with open(rig.store_path, "r+b") as f:
            f.seek(4096)
            f.write(os.urandom(size - 4096))
        saved = rig.store_path.read_bytes()

        rig.start()
        st = watch.wait_status(
            lambda s: "store_replaced" in s.get("alarms", {}), 20, "store_replaced alarm"
        )
        assert st["store"] != old_id and "moved aside" in st["alarms"]["store_replaced"]
        second = _feed(rig, 5)
        _wait_at_hq(hq_db, first + second)
        # The alarm stays while this run lasts, also after commits succeed: the marker is
        # a status published after HQ has every passage, with the box's acks caught up.
        after = watch.wait_status(
            lambda s: s.get("acked_upto", 0) >= s.get("last_seq", 1), 20, "status after commits"
        )
        assert "store_replaced" in after["alarms"]
    moved = sorted(tmp_path.glob("box.db.corrupt-*"))
    assert moved and moved[0].read_bytes() == saved  # kept, unchanged, for salvage
    new_events = box_events(rig.store_path)
    check_contiguous(new_events)
    assert passage_keys(new_events) == second
    assert {e["store"] for e in new_events} == {box_store_id(rig.store_path)}
    at_hq = hq_events(hq_db, "box07")
    assert {e["store"] for e in at_hq} == {old_id, new_events[0]["store"]}
    assert sorted(passage_keys(at_hq)) == sorted(first + second)


def test_junk_file_as_store_at_startup(tmp_path, broker):
    """Not a database at all (a half-written copy, a text file): moved aside too."""
    watch = Watcher(broker.url, TOPICS)
    rig = BoxRig(tmp_path, broker.url, inputs=fast_inputs(*PINS.items()))
    rig.store_path.write_bytes(b"this is not a database\n" * 100)
    try:
        rig.start()
        st = watch.wait_status(
            lambda s: "store_replaced" in s.get("alarms", {}), 20, "store_replaced alarm"
        )
        keys = _feed(rig, 3)
        wait_for(lambda: passage_keys(box_events(rig.store_path)) == keys, 10, "stored")
    finally:
        watch.close()
        rig.close()
    assert st["store"] == box_store_id(rig.store_path)
    assert [p.read_bytes()[:22] for p in tmp_path.glob("box.db.corrupt-*")] == [
        b"this is not a database"
    ]
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)
