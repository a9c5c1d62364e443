"""The seq floor and the store-failure paths of the daemon, driven in-process.

The real-process tests (test_reliability_storage.py) show the floor working end to end;
here a `BoxDaemon` is built in this process without starting its threads, and its core
turn is fed records and broker messages directly, so each branch of the logic is pinned
down exactly: placeholders, reissues, renumbered references, the hash chain, the
publishing gate, and the outbox bookkeeping under it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from checkpoint.box.daemon import BoxDaemon
from checkpoint.config import parse
from checkpoint.core import chain
from checkpoint.core.outbox import Outbox
from checkpoint.errors import StoreError
from checkpoint.mqtt import Message, SubAck

MS = 1_000_000


def _cfg(tmp_path: Path) -> object:
    return parse(
        {
            "box": {"id": "box07", "checkpoint": "PC3"},
            "store": {"path": str(tmp_path / "box.db")},
            "gpio": {"pin_factory": "checkpoint-sim"},
            "gps": {"port": str(tmp_path / "no-gps")},
            "mqtt": {"broker": "mqtt://127.0.0.1:1"},
            "inputs": [{"name": "beam", "pin": "GPIO17", "lockout_ms": 0, "min_break_ms": 1}],
        }
    )


class Published:
    """Stands in for the link: records what the daemon publishes, acks nothing."""

    def __init__(self) -> None:
        self.connected = True
        self.out: list[tuple[str, dict]] = []
        self._mid = 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        self._mid += 1
        self.out.append((topic, json.loads(payload)))
        return self._mid

    def events(self) -> list[dict]:
        return [p for t, p in self.out if t.endswith("/event")]


def _daemon(tmp_path: Path) -> tuple[BoxDaemon, Published]:
    d = BoxDaemon(_cfg(tmp_path))
    link = Published()
    d.link = link  # type: ignore[assignment]
    d.outbox.connected(time.monotonic_ns())
    return d, link


def _passage(d: BoxDaemon) -> None:
    lead = time.monotonic_ns() - 5 * MS
    d.q.put(("rec", {"type": "edge", "mono_ns": lead, "input": "beam", "active": True}))
    d.q.put(("rec", {"type": "edge", "mono_ns": lead + 2 * MS, "input": "beam", "active": False}))
    d._turn(block=False)


def _msg(d: BoxDaemon, topic: str, body: dict) -> None:
    d.q.put(("link", Message(f"rally/box07/{topic}", json.dumps(body).encode(), True)))


def _close(d: BoxDaemon) -> None:
    d.edges.close()
    d.store.close()


def test_floor_from_hwm_and_ack_reissues_colliding_events_and_keeps_the_chain(tmp_path):
    d, _ = _daemon(tmp_path)
    for _ in range(2):
        _passage(d)
    assert d.store.last_seq() == 2
    store_id = d.store.store_id
    _close(d)

    # Restart: the broker is not heard yet, two passages get seqs 3 and 4...
    d, link = _daemon(tmp_path)
    _passage(d)
    _passage(d)
    assert d.store.last_seq() == 4
    assert [e["seq"] for e in link.events()] == [1, 2]  # 3, 4 held back: floor unknown
    # ...but an earlier run had published up to 5 from memory (hwm), HQ acked 5.
    d.q.put(("link", SubAck(1, True, ("granted",))))
    _msg(d, "hwm", {"store": store_id, "last_seq": 5, "head": "a" * 64})
    _msg(d, "ack", {"store": store_id, "upto": 5})
    d._turn(block=False)
    d._floor_due_ns = 0  # the grace after SUBACK has passed
    d._turn(block=False)
    # A marshal voids "passage 3" as shown on the box: the reissued one is meant.
    d.correction("void", 3, "test car")
    d._turn(block=False)

    events = [json.loads(p) for _, p in d.store.event_payloads(1, 100)]
    assert [e["type"] for e in events] == ["passage"] * 4 + ["skipped"] + ["passage"] * 2 + ["void"]
    assert [e.get("reissue_of") for e in events[5:7]] == [3, 4]
    assert {
        k: v for k, v in events[5].items() if k not in ("seq", "reissue_of", "prev", "hash")
    } == {k: v for k, v in events[2].items() if k not in ("seq", "prev", "hash")}
    assert events[7]["ref_seq"] == 6  # renumbered, and sealed again
    # The box's own chain is whole (reissues chain on from its placeholder).
    assert chain.verify(events) is None
    st = d.status()
    assert st["skipped_seqs"] == 3 and st["reissued"] == 2 and "issued again" in st["alarms"]["seq"]
    assert st["acked_upto"] == 5
    # Nothing in the foreign range went out; the reissues and the void did.
    sent = [e["seq"] for e in link.events()]
    assert sent == [1, 2, 6, 7, 8]
    # HQ asking for a foreign seq gets a placeholder, never the collided event again.
    assert json.loads(d._payload(3))["type"] == "skipped"
    assert json.loads(d._payload(5))["type"] == "skipped"
    _close(d)


def test_floor_beyond_everything_numbered_links_the_chain_to_the_hwm_head(tmp_path):
    d, _ = _daemon(tmp_path)
    _passage(d)
    store_id = d.store.store_id
    _close(d)
    d, link = _daemon(tmp_path)
    head = "b" * 64
    d.q.put(("link", SubAck(1, True, ("granted",))))
    _msg(d, "hwm", {"store": store_id, "last_seq": 4, "head": head})
    d._turn(block=False)
    d._floor_due_ns = 0
    d._turn(block=False)
    _passage(d)
    events = [json.loads(p) for _, p in d.store.event_payloads(1, 100)]
    assert [e["type"] for e in events] == ["passage", "skipped", "skipped", "skipped", "passage"]
    # The new passage continues the real chain HQ holds, not the placeholders.
    assert events[4]["prev"] == head
    # 1 (never acked) goes out again; the foreign 2..4 do not, unless HQ asks.
    assert [e["seq"] for e in link.events()] == [1, 5]
    _close(d)


def test_no_floor_when_the_broker_knows_nothing(tmp_path):
    d, link = _daemon(tmp_path)
    _passage(d)
    assert link.events() == []  # held until the floor check is done
    d.q.put(("link", SubAck(1, True, ("granted",))))
    d._turn(block=False)
    d._floor_due_ns = 0
    d._turn(block=False)
    assert [e["seq"] for e in link.events()] == [1]
    assert d.status()["skipped_seqs"] == 0 and "seq" not in d.status()["alarms"]
    _close(d)


def test_store_failure_keeps_events_publishes_hwm_first_then_stores_them(tmp_path, monkeypatch):
    d, link = _daemon(tmp_path)
    d.q.put(("link", SubAck(1, True, ("granted",))))
    d._turn(block=False)
    d._floor_due_ns = 0
    d._turn(block=False)
    real = d.store.record

    def full(**kw: object) -> None:
        raise StoreError("disk full: free space on the filesystem holding /card")

    monkeypatch.setattr(d.store, "record", full)
    _passage(d)
    _passage(d)
    st = d.status()
    assert st["unstored"] == 2 and "disk full" in st["alarms"]["store"]
    assert "kept in memory" in st["alarms"]["store"]
    topics = [t.rsplit("/", 1)[1] for t, _ in link.out if not t.endswith("/status")]
    # The high-water mark goes out before any seq that is not on disk.
    assert "hwm" in topics and topics.index("hwm") < topics.index("event"), topics
    hwm = next(p for t, p in link.out if t.endswith("/hwm"))
    assert hwm["store"] == d.store.store_id and hwm["last_seq"] >= 1
    monkeypatch.setattr(d.store, "record", real)
    d._store_retry_ns = 0
    d._turn(block=False)
    assert d.store.last_seq() == 2 and d.status()["unstored"] == 0
    assert "store" not in d.status()["alarms"]
    _close(d)


def test_outbox_skip_counts_seqs_as_sent_and_serves_them_only_on_request():
    ob = Outbox(store_id="s", max_inflight=8, redeliver_after_ns=10**12)
    ob.load(2, 2)
    ob.connected(0)
    ob.skip(5)
    assert ob.last_committed == 5 and ob.next_to_send(1) == []
    ob.committed(7)
    assert ob.next_to_send(2) == [6, 7]
    assert ob.resend(3, 4) == 2
    assert ob.next_to_send(3)[:2] == [3, 4]


@pytest.mark.parametrize("upto", [10**15, 2**63])
def test_implausible_ack_is_refused_not_obeyed(tmp_path, upto):
    d, _ = _daemon(tmp_path)
    _passage(d)
    _msg(d, "ack", {"store": d.store.store_id, "upto": upto})
    d._turn(block=False)
    d._floor_due_ns = 0
    d._turn(block=False)
    st = d.status()
    assert st["bad_commands"] == 1 and st["acked_upto"] == 0 and st["skipped_seqs"] == 0
    assert "implausible" in st["alarms"]["seq"]
    _close(d)


def test_stop_on_the_core_thread_takes_no_queue_lock(tmp_path):
    # SIGTERM's handler runs on the core thread, possibly inside q.get() with the
    # queue's lock held (as here): a put() from stop() waited on it for ever.
    d, _ = _daemon(tmp_path)
    returned = threading.Event()

    def core() -> None:
        d._core = threading.current_thread()
        with d.q.mutex:
            d.stop()
        returned.set()

    threading.Thread(target=core, daemon=True).start()
    assert returned.wait(10), "stop() on the core thread waited for the queue's lock"
    assert d._stop.is_set() and d.q.empty()
    d.stop()  # from another thread (the control socket, a test): the core wakes at once
    assert d.q.get_nowait() == ("wake", None)
