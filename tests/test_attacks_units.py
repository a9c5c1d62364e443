"""The forgery defences branch by branch, in process: the box's ack check, HQ's conflicts.

The end-to-end attacks are in test_attacks_chain.py; here a `BoxDaemon` without its
threads and an `Ingest` on a real SQLite file pin down each case exactly.
"""

from __future__ import annotations

import json
from contextlib import closing

from test_reliability_units import _close, _daemon, _msg, _passage

from checkpoint import EVENT_SCHEMA
from checkpoint.core import chain
from checkpoint.hq import integrity
from checkpoint.hq.collector import Ingest
from checkpoint.hq.store import HQStore
from checkpoint.mqtt import PubAck, SubAck

STORE = "9f1c" * 8
T0 = 1_776_000_000 * 10**9


def _floor_done(d) -> None:
    d.q.put(("link", SubAck(1, True, ("granted",))))
    d._turn(block=False)
    d._floor_due_ns = 0
    d._turn(block=False)


def test_box_refuses_an_ack_naming_another_event_and_publishes_its_own_again(tmp_path):
    d, link = _daemon(tmp_path)
    _floor_done(d)
    _passage(d)
    _passage(d)
    assert [e["seq"] for e in link.events()] == [1, 2]
    for mid in range(1, link._mid + 1):  # the broker took everything published
        d.q.put(("link", PubAck(mid, True, "Success")))
    d._turn(block=False)
    own = [json.loads(p) for _, p in d.store.event_payloads(1, 10)]
    # HQ got someone else's seq 2 first and acks it with that event's hash.
    _msg(d, "ack", {"store": d.store.store_id, "upto": 2, "head": "e" * 64})
    d._turn(block=False)
    st = d.status()
    assert st["acked_upto"] == 0 and "conflict" in st["alarms"]
    assert [e["seq"] for e in link.events()] == [1, 2, 1, 2]  # ours, once more
    _msg(d, "ack", {"store": d.store.store_id, "upto": 2, "head": "e" * 64})
    d._turn(block=False)
    assert len(link.events()) == 4  # the same conflicting ack again: not resent again
    # HQ's ack naming our own event is taken.
    _msg(d, "ack", {"store": d.store.store_id, "upto": 2, "head": own[1]["hash"]})
    d._turn(block=False)
    assert d.status()["acked_upto"] == 2
    _close(d)


def test_box_never_skips_a_seq_it_did_not_number_because_hq_acked_it(tmp_path):
    d, _ = _daemon(tmp_path)
    _floor_done(d)
    _passage(d)
    _msg(d, "ack", {"store": d.store.store_id, "upto": 3, "head": "f" * 64})
    d._turn(block=False)
    _passage(d)
    st = d.status()
    assert st["skipped_seqs"] == 0 and st["acked_upto"] == 0
    assert "numbered only 1" in st["alarms"]["conflict"]
    events = [json.loads(p) for _, p in d.store.event_payloads(1, 10)]
    assert [e["type"] for e in events] == ["passage", "passage"]
    # The status carries the head of the box's own chain.
    assert st["chain"] == {"seq": 2, "head": events[1]["hash"]}
    _close(d)


def _event(seq: int, prev: str, utc_ns: int) -> dict:
    ev = {
        "schema": EVENT_SCHEMA,
        "type": "passage",
        "box": "box07",
        "checkpoint": "PC3",
        "store": STORE,
        "seq": seq,
        "input": "beam",
        "source": "beam",
        "mono_ns": seq * 10**9,
        "utc_ns": utc_ns,
        "utc": "2026-04-12T00:00:00.000000000Z",
        "clock": "locked",
        "uncertainty_ns": 1500,
    }
    return chain.seal(ev, prev)


def _feed(ing: Ingest, store: HQStore, topic: str, payload: dict) -> None:
    with store.transaction():
        ing.handle(f"rally/box07/{topic}", json.dumps(payload).encode())
        ing.finish_batch()


def test_hq_keeps_both_versions_in_either_order_and_counts_neither(tmp_path):
    with closing(HQStore(tmp_path / "hq.db")) as store:
        ing = Ingest(store)
        e1 = _event(1, chain.genesis(STORE), T0)
        real = _event(2, e1["hash"], T0 + 10**9)
        forged = _event(2, e1["hash"], T0 - 60 * 10**9)
        e3 = _event(3, real["hash"], T0 + 2 * 10**9)
        for ev in (e1, real, forged, forged, e3):  # the real one first, this time
            _feed(ing, store, "event", ev)
        [row] = integrity.conflict_rows(store.db)
        assert {v["id"] for v in row["versions"]} == {real["hash"], forged["hash"]}
        assert [v["chained"] for v in row["versions"]] == [True, False]  # e3 follows the real one
        assert [p["seq"] for p in store.passages()] == [1, 3]
        breaks = [(b["seq"], b["reason"]) for b in store.chain_breaks()]
        assert breaks == [(2, "conflict")]
        assert store.summaries()[0].conflicts == 1 and store.summaries()[0].duplicates == 1
        # The box's own chain head names the real one: the forgery is the unproven one.
        _feed(
            ing,
            store,
            "status",
            {"state": "ready", "store": STORE, "chain": {"seq": 2, "head": real["hash"]}},
        )
        assert [v["anchored"] for v in integrity.conflict_rows(store.db)[0]["versions"]] == [
            True,
            False,
        ]
        integrity.decide(store, "box07", 2, forged["hash"][:10], by="jury", reason="test")
        # Deciding for the forgery is possible (audited), and the chain says so.
        assert [p["utc_ns"] for p in store.passages()][0] == forged["utc_ns"]
    from checkpoint.hq.verify import verify_path

    res = verify_path(tmp_path / "hq.db")
    assert not res.ok and {b.reason for b in res.breaks} >= {"deleted", "forked"}


def test_hq_audit_trail_is_chained(tmp_path):
    db = tmp_path / "hq.db"
    with closing(HQStore(db)) as store:
        ing = Ingest(store)
        e1 = _event(1, chain.genesis(STORE), T0)
        _feed(ing, store, "event", e1)
        store.correct("box07", 1, "assign", car="42", by="jury")
        store.correct("box07", 1, "void", reason="insect", by="jury")
        assert integrity.audit_problem(store.db) is None
        store.db.execute("UPDATE corrections SET car='43' WHERE id=1")
        assert integrity.audit_problem(store.db) == (
            1,
            "its content does not match its seal: edited after it was written",
        )


def test_concurrent_corrections_keep_the_audit_chain_whole(tmp_path):
    import threading

    db = tmp_path / "hq.db"
    with closing(HQStore(db)) as store:
        _feed(Ingest(store), store, "event", _event(1, chain.genesis(STORE), T0))

    def writer(n: int) -> None:
        with closing(HQStore(db)) as s:
            for i in range(40):
                s.correct("box07", 1, "assign", car=f"{n}-{i}", by=f"desk{n}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with closing(HQStore(db)) as store:
        assert len(store.corrections()) == 120
        assert integrity.audit_problem(store.db) is None


def test_a_decision_names_an_existing_dispute_and_one_version(tmp_path):
    import pytest

    from checkpoint.errors import CommandError

    with closing(HQStore(tmp_path / "hq.db")) as store:
        ing = Ingest(store)
        e1 = _event(1, chain.genesis(STORE), T0)
        _feed(ing, store, "event", e1)
        with pytest.raises(CommandError, match="no conflict"):
            integrity.decide(store, "box07", 1, e1["hash"][:8], by="jury", reason="x")
        _feed(ing, store, "event", _event(1, chain.genesis(STORE), T0 + 5))
        with pytest.raises(CommandError, match="at least 8"):
            integrity.decide(store, "box07", 1, "abc", by="jury", reason="x")
        with pytest.raises(CommandError, match="names none"):
            integrity.decide(store, "box07", 1, "0" * 12, by="jury", reason="x")
        with pytest.raises(CommandError, match="--by"):
            integrity.decide(store, "box07", 1, e1["hash"][:8], by="", reason="x")
        assert [c["action"] for c in store.corrections()] == []


def test_an_event_arriving_after_an_anchor_that_names_another_is_forked(tmp_path):
    with closing(HQStore(tmp_path / "hq.db")) as store:
        ing = Ingest(store)
        e1 = _event(1, chain.genesis(STORE), T0)
        e2 = _event(2, e1["hash"], T0 + 10**9)
        status = {"state": "ready", "store": STORE, "chain": {"seq": 2, "head": "d" * 64}}
        _feed(ing, store, "status", status)  # the box's head first ...
        _feed(ing, store, "event", e1)
        assert store.chain_breaks() == []
        _feed(ing, store, "event", e2)  # ... then a different event under that seq
        assert [(b["seq"], b["reason"]) for b in store.chain_breaks()] == [(2, "forked")]


def test_hq_acks_again_with_the_decided_version_when_the_box_sends_it_again(tmp_path):
    with closing(HQStore(tmp_path / "hq.db")) as store:
        ing = Ingest(store)
        e1 = _event(1, chain.genesis(STORE), T0)
        forged = _event(2, e1["hash"], T0 - 60 * 10**9)
        real = _event(2, e1["hash"], T0 + 10**9)
        for ev in (e1, forged):
            _feed(ing, store, "event", ev)
        [(box, st, upto)] = ing.acks_due()
        assert json.loads(ing.ack_payload(box, st, upto))["head"] == forged["hash"]
        ing.ack_sent(box, st, upto)
        _feed(ing, store, "event", real)  # the box's own: a conflict
        assert ing.acks_due() == []
        integrity.decide(store, "box07", 2, real["hash"][:12], by="jury", reason="card")
        _feed(ing, store, "event", real)  # the box did not take the ack: sends it again
        [(box, st, upto)] = ing.acks_due()
        assert json.loads(ing.ack_payload(box, st, upto)) == {
            "store": STORE,
            "upto": 2,
            "head": real["hash"],
        }


def test_a_status_with_absurd_anchor_numbers_is_still_recorded(tmp_path):
    with closing(HQStore(tmp_path / "hq.db")) as store:
        ing = Ingest(store)
        status = {
            "state": "ready",
            "store": STORE,
            "acked_upto": 10**30,
            "chain": {"seq": 10**30, "head": "d" * 64, "sig": "x" * 10_000},
        }
        _feed(ing, store, "status", status)
        assert store.rejects() == [] and store.summaries()[0].state == "online"
        assert integrity.anchors(store.db) == []
