"""HQ collector against a real Mosquitto and real SQLite files.

An emulated box (tests/hq_box.py) publishes out of order, twice, with gaps and
garbage; HQ must end with every event exactly once, the right acks and the right
resend requests, across HQ and broker restarts.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from hq_box import T0_NS, EmulatedBox, fmt_utc
from waits import wait_for

from checkpoint.cli.hq import main as hq_main
from checkpoint.errors import CommandError, StoreError
from checkpoint.hq import integrity
from checkpoint.hq.collector import (
    Collector,
    Ingest,
    Rejected,
    SeqTracker,
    default_client_id,
    gaps_text,
    parse_event,
)
from checkpoint.hq.store import HQStore

GAP_WAIT = 0.3
REPO = Path(__file__).resolve().parents[1]


# -- helpers -----------------------------------------------------------------------


@pytest.fixture
def db(tmp_path):
    return tmp_path / "hq.db"


@pytest.fixture
def hq(broker, db):
    c = Collector(broker.url, db, gap_wait_s=GAP_WAIT, gap_backoff_max_s=2.0, heartbeat_s=0.5)
    c.start()
    wait_for(c.subscribed.is_set, 10, "HQ subscribed")
    yield c
    c.stop()


@pytest.fixture
def boxes():
    started: list[EmulatedBox] = []

    def make(url, box="box07", **kw):
        b = EmulatedBox(url, box, **kw).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def read(db, fn):
    with closing(HQStore(db, create=False)) as s:
        return fn(s)


def export_keys(db):
    return [(r["box"], r["store"], r["seq"]) for r in read(db, lambda s: s.passages())]


def event_keys(db):
    return sorted((r["box"], r["store"], r["seq"]) for r in read(db, lambda s: s.events()))


def summary(db, box="box07"):
    return next((b for b in read(db, lambda s: s.summaries()) if b.box == box), None)


def box_state(db, box="box07"):
    s = summary(db, box)
    return s.state if s else None


def event(seq, **over):
    ev = {
        "schema": "checkpoint/event/1",
        "type": "passage",
        "box": "box07",
        "checkpoint": "PC3",
        "store": "s1",
        "seq": seq,
        "input": "beam",
        "source": "beam",
        "mono_ns": 123,
        "utc_ns": T0_NS,
        "utc": fmt_utc(T0_NS),
        "clock": "locked",
        "uncertainty_ns": 1500,
    }
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not ...}


def raw(ev):
    return json.dumps(ev).encode()


# -- validation and contiguity (no broker) -------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "bad_utf8"),
        (b"{not json", "bad_json"),
        (b'{"seq": NaN}', "bad_json"),
        (b"[1,2]", "not_object"),
        (raw(event(1, schema="checkpoint/event/2")), "unknown_schema"),
        (raw(event(1, box="box08")), "box_mismatch"),
        (raw(event(1, store=...)), "missing_field"),
        (raw(event(1, store=7)), "bad_type"),
        (raw(event(0)), "bad_seq"),
        (raw(event(-3)), "bad_seq"),
        (raw(event("4")), "bad_type"),
        (raw(event(True)), "bad_type"),
        (raw(event(2**60)), "bad_seq"),
    ],
)
def test_identity_rejects(payload, reason):
    with pytest.raises(Rejected) as err:
        parse_event("box07", payload)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("ev", "reason"),
    [
        (event(2, utc_ns=4_000_000_000_000_000_000), "bad_time"),  # year 2096
        (event(2, utc_ns=1_500_000_000_000_000_000), "bad_time"),  # 2017
        (event(2, utc_ns=1.7e18), "bad_type"),
        (event(2, utc_ns=None), "missing_field"),
        (event(2, checkpoint=...), "missing_field"),
        (event(2, uncertainty_ns=-1), "bad_type"),
        ({**event(2, type="assign"), "ref_seq": 1, "car": 42}, "bad_type"),
        ({**event(2, type="void"), "ref_seq": 2, "reason": "x"}, "bad_ref"),
    ],
)
def test_content_problems_are_quarantined(ev, reason):
    p = parse_event("box07", raw(ev))
    assert p.quarantine == reason


def test_unknown_type_is_kept_clean():
    p = parse_event("box07", raw({**event(5, type="heartbeat"), "whatever": [1]}))
    assert p.quarantine is None and p.event["seq"] == 5


def test_seq_tracker_and_gap_text():
    t = SeqTracker()
    for s in (1, 2, 5, 9, 3):
        t.add(s)
    assert t.upto == 3 and t.missing() == [(4, 4), (6, 8)]
    t.hint = 11
    assert t.missing() == [(4, 4), (6, 8), (10, 11)]
    assert gaps_text(t.missing()) == "4,6-8,10-11"
    assert gaps_text([(i, i) for i in range(1, 40, 2)]).endswith("+12 more")


def test_ingest_backoff_with_fake_clock(db):
    """Resend requests: first after gap_wait, then 2x, 4x ... capped; partial fills keep it."""
    now = [100.0]
    store = HQStore(db)
    ing = Ingest(store, gap_wait_s=1.0, gap_backoff_max_s=3.0, clock=lambda: now[0])

    def feed(*seqs):
        with store.transaction():
            for s in seqs:
                ing.handle("rally/box07/event", raw(event(s)))
            ing.finish_batch()

    feed(1, 2, 6)
    assert ing.resends_due() == []
    now[0] += 1.0
    assert ing.resends_due() == [("box07", "s1", 3, 5)]
    assert ing.resends_due() == []
    now[0] += 1.9
    assert ing.resends_due() == []
    now[0] += 0.1  # 2 s after the first request
    assert ing.resends_due() == [("box07", "s1", 3, 5)]
    feed(4)  # partial fill: two ranges, same back-off (next in 3 s, the cap)
    now[0] += 2.9
    assert ing.resends_due() == []
    now[0] += 0.1
    assert ing.resends_due() == [("box07", "s1", 3, 3), ("box07", "s1", 5, 5)]
    feed(3, 5)
    now[0] += 10
    assert ing.resends_due() == []
    assert ing.acks_due() == [("box07", "s1", 6)]
    store.close()


def test_box_back_from_lost_is_asked_again_soon(db):
    now = [0.0]
    store = HQStore(db)
    ing = Ingest(store, gap_wait_s=1.0, gap_backoff_max_s=60.0, clock=lambda: now[0])

    def feed(topic, *payloads):
        with store.transaction():
            for p in payloads:
                ing.handle(topic, p)
            ing.finish_batch()

    feed("rally/box07/event", raw(event(1)), raw(event(3)))
    for _ in range(5):  # five requests: back-off has grown to 32 s
        now[0] += 32
        ing.resends_due()
    feed("rally/box07/status", b'{"state":"lost"}')
    now[0] += 1
    feed("rally/box07/status", b'{"state":"ready"}')
    now[0] += 1.0
    assert ing.resends_due() == [("box07", "s1", 2, 2)]
    store.close()


def test_refuses_foreign_database(tmp_path):
    import sqlite3

    other = tmp_path / "box.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE events (seq INTEGER)")
    conn.close()
    with pytest.raises(StoreError, match="not a checkpoint HQ database"):
        HQStore(other)
    with pytest.raises(StoreError, match="does not exist"):
        HQStore(tmp_path / "missing.db", create=False)


def test_client_id_is_stable_per_db(tmp_path):
    a = default_client_id(tmp_path / "hq.db")
    assert a == default_client_id(tmp_path / "." / "hq.db")
    assert a != default_client_id(tmp_path / "other.db") and a.startswith("checkpoint-hq-")


# -- with a real broker ------------------------------------------------------------


def test_out_of_order_is_acked_only_contiguously(broker, hq, db, boxes):
    box = boxes(broker.url)
    box.passages(5)
    box.publish(3, 1, 5, 2, 4)
    box.wait_acked(5)
    # Each ack is a contiguous prefix that existed at some point: 1, then 3, then 5.
    assert {a["upto"] for a in box.acks} <= {1, 3, 5}
    assert [a["upto"] for a in box.acks] == sorted(a["upto"] for a in box.acks)
    rows = read(db, lambda s: s.passages())
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    r = rows[0]
    assert r["box"] == "box07" and r["store"] == box.store and r["checkpoint"] == "PC1"
    assert r["utc_ns"] == r["orig_utc_ns"] == T0_NS + 10**9 and r["restamped"] is False
    assert r["car"] is None and r["void"] is False


def test_duplicates_counted_and_stored_once(broker, hq, db, boxes):
    box = boxes(broker.url)
    box.passages(4)
    box.publish(1, 2, 2, 3, 1, 4, 4, 4)
    box.wait_acked(4)
    wait_for(lambda: summary(db).duplicates == 4, 5, "4 duplicates counted")
    # same key, different content: a conflict; both kept, neither counts until decided
    forged = dict(box.events[2], utc_ns=T0_NS + 99 * 10**9)
    box.publish_raw(raw(forged))
    wait_for(lambda: summary(db).conflicts == 1, 5, "conflict counted")
    assert export_keys(db) == [("box07", box.store, s) for s in (1, 3, 4)]
    assert [r["reason"] for r in read(db, lambda s: s.rejects())] == ["conflict"]
    box.publish_raw(raw(forged))  # the same other version again: a duplicate
    wait_for(lambda: summary(db).duplicates == 5, 5, "5 duplicates counted")
    [dispute] = read(db, lambda s: integrity.conflict_rows(s.db))
    first = dispute["versions"][0]["id"]
    read(db, lambda s: integrity.decide(s, "box07", 2, first[:12], by="chief", reason="card"))
    assert export_keys(db) == [("box07", box.store, s) for s in (1, 2, 3, 4)]
    assert read(db, lambda s: s.passages())[1]["utc_ns"] == T0_NS + 2 * 10**9


def test_gap_repaired_by_resend(broker, hq, db, boxes):
    box = boxes(broker.url)
    box.passages(10)
    box.publish_all(skip={5, 6, 7})
    box.wait_acked(10, timeout=10)
    assert box.resend_requests()[0] == {"cmd": "resend", "store": box.store, "from": 5, "to": 7}
    assert sorted(box.resent) == [5, 6, 7]
    # seqs 8-10 were in before 5-7: an ack can never stop at 8 or 9
    ups = [a["upto"] for a in box.acks]
    assert ups == sorted(ups) and not {8, 9} & set(ups)
    assert export_keys(db) == [("box07", box.store, s) for s in range(1, 11)]
    s = summary(db)
    assert s.missing == 0 and s.gaps == "" and s.resend_requests >= 1 and s.upto == 10


def test_resend_repeats_with_backoff_until_filled(broker, hq, db, boxes):
    box = boxes(broker.url, answer_resends=False)
    box.passages(4)
    box.publish(1, 3, 4)
    wait_for(lambda: len(box.resend_requests()) >= 3, 10, "three resend requests")
    times = [t for t, c in box.commands if c.get("cmd") == "resend"][:3]
    first, second = times[1] - times[0], times[2] - times[1]
    assert first >= GAP_WAIT * 2 * 0.8 and second > first * 1.3  # 0.6 s, then 1.2 s
    assert summary(db).gaps == "2"
    box.publish(2)  # found at last (answering the next request would take 1.2 s more)
    box.wait_acked(4, timeout=10)
    assert export_keys(db) == [("box07", box.store, s) for s in (1, 2, 3, 4)]


def test_malformed_payloads_go_to_rejects_and_collection_goes_on(broker, hq, db, boxes):
    box = boxes(broker.url)
    box.passages(3)
    bad_time = dict(box.events[2], utc_ns=4_000_000_000_000_000_000)
    garbage = [
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        raw(dict(box.events[1], schema="other/1")),
        raw(dict(box.events[1], box="box99")),
        raw(dict(box.events[1], seq=0)),
        raw({k: v for k, v in box.events[1].items() if k != "store"}),
        raw(bad_time),  # identity fine, time absurd: kept for seq 2, out of results
    ]
    for g in garbage:
        box.publish_raw(g)
    box.publish_raw(b"not json", "rally/box07/status")
    box.publish(1, 3)
    box.wait_acked(3)  # seq 2 is quarantined yet holds its place: no endless gap
    reasons = sorted(r["reason"] for r in read(db, lambda s: s.rejects()))
    assert reasons == sorted(
        [
            "bad_json",
            "bad_utf8",
            "not_object",
            "unknown_schema",
            "box_mismatch",
            "bad_seq",
            "missing_field",
            "bad_time",
            "bad_status",
        ]
    )
    assert export_keys(db) == [("box07", box.store, 1), ("box07", box.store, 3)]
    assert hq.stats.quarantined == 1 and hq.stats.errors == 0
    # the box resending the same bad event is a plain duplicate, not a new reject
    box.publish_raw(raw(bad_time))
    wait_for(lambda: summary(db).duplicates == 1, 5, "duplicate of quarantined event")
    assert summary(db).rejects == 9
    out = io.StringIO()
    assert _cli(["rejects", "--db", str(db)], out) == 0
    assert "bad_time" in out.getvalue()


def test_new_store_starts_a_new_sequence(broker, hq, db, boxes):
    old = boxes(broker.url, store="aaaa1111")
    old.passages(3)
    old.publish_all()
    old.wait_acked(3)
    old.stop()
    new = boxes(broker.url, store="bbbb2222")  # SD card replaced: same box, new store
    new.passages(2)
    new.publish_all()
    new.wait_acked(2)
    assert new.acks[-1] == {"store": "bbbb2222", "upto": 2}
    # a late event of the old store is kept under the old store, acks stay on the new
    late = EmulatedBox(broker.url, store="aaaa1111")
    late.passages(4)
    late.start()
    try:
        late.publish(4)
        wait_for(lambda: len(event_keys(db)) == 6, 5, "late old-store event")
    finally:
        late.stop()
    assert event_keys(db) == sorted(
        [("box07", "aaaa1111", s) for s in (1, 2, 3, 4)]
        + [("box07", "bbbb2222", 1), ("box07", "bbbb2222", 2)]
    )
    s = summary(db)
    assert s.current_store == "bbbb2222" and s.stores == 2 and s.upto == 2
    assert ("box07", "bbbb2222") in hq.stats.new_stores
    # the status names the box's store: it wins over "latest first seen"
    new.status(backlog=0)
    wait_for(lambda: box_state(db) == "online", 5, "status stored")
    assert summary(db).current_store == "bbbb2222"
    out = io.StringIO()
    _cli(["status", "--db", str(db)], out)
    assert "bbbb2222 (2 stores)" in out.getvalue()


def test_missing_tail_found_through_status(broker, hq, db, boxes):
    box = boxes(broker.url)
    box.passages(5)
    box.publish(1, 2, 3)  # 4 and 5 "lost"; the box believes all was delivered
    box.wait_acked(3)
    box.status(last_seq=5, backlog=0)
    box.wait_acked(5, timeout=10)
    assert {"cmd": "resend", "store": box.store, "from": 4, "to": 5} in box.resend_requests()


def test_broker_restart_hq_reacks_and_resubscribes(broker, hq, db, boxes):
    box = boxes(broker.url)
    box.passages(5)
    box.publish(1, 2, 3)
    box.wait_acked(3)
    n_acks = len(box.acks)
    broker.restart()  # persistence off: sessions and retained acks are gone
    box.try_publish(4)  # into a dying connection, or refused: either way unacked
    wait_for(lambda: box.subscribed.is_set() and hq.subscribed.is_set(), 15, "reconnect")
    # HQ re-publishes its acks on reconnect; the box hears upto 3 again
    wait_for(lambda: len(box.acks) > n_acks, 5, "re-ack after broker restart")
    assert box.acks[-1] == {"store": box.store, "upto": 3}
    assert box.republish_unacked() == [4, 5]
    box.wait_acked(5)
    assert export_keys(db) == [("box07", box.store, s) for s in range(1, 6)]
    assert hq.stats.connects >= 2


def test_corrections_restamp_and_export(broker, hq, db, boxes, tmp_path):
    box = boxes(broker.url, checkpoint="PC1")
    box.passages(4)
    box.restamp(1, T0_NS + 777_000_000)  # 5
    box.assign(2, "42")  # 6
    box.assign(3, "7")  # 7
    box.void(4, "insect")  # 8
    box.publish(8, 7, 6, 5, 4, 3, 2, 1)  # corrections before their passages
    box.wait_acked(8)

    def cli(*argv):
        return _cli([*argv], io.StringIO())

    # Cars 8 and 12 are new to HQ (no passage carries them): --new-car says so.
    assert cli("assign", "--db", str(db), "box07", "3", "8", "--by", "jury", "--new-car") == 0
    assert cli("assign", "--db", str(db), "box07", "1", "12", "--new-car") == 0
    assert cli("void", "--db", str(db), "box07", "2", "--reason", "double beam") == 0
    assert cli("unvoid", "--db", str(db), "box07", "2") == 0
    assert cli("assign", "--db", str(db), "box07", "6", "1") == 2  # an assign event
    assert cli("assign", "--db", str(db), "box07", "99", "1") == 2
    assert cli("assign", "--db", str(db), "box07", "1", "x" * 17) == 2

    out = tmp_path / "pc1.jsonl"
    assert (
        cli(
            "export", "--db", str(db), "--format", "jsonl", "--checkpoint", "PC1", "--out", str(out)
        )
        == 0
    )
    rows = {r["seq"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {1, 2, 3, 4}
    assert rows[1]["restamped"] is True and rows[1]["orig_utc_ns"] == T0_NS + 10**9
    assert rows[1]["utc_ns"] == T0_NS + 777_000_000 and rows[1]["uncertainty_ns"] == 900
    assert rows[1]["utc"] == fmt_utc(T0_NS + 777_000_000) and rows[1]["car"] == "12"
    assert rows[2]["car"] == "42" and rows[2]["void"] is False  # voided, then unvoided
    assert rows[3]["car"] == "8"  # HQ's assignment overrides the box's
    assert rows[3]["car_source"] == "hq" and rows[2]["car_source"] == "marshal"
    assert rows[4]["void"] is True and rows[4]["void_reason"] == "insect"
    trail = read(db, lambda s: s.corrections())
    assert {(c["source"], c["action"]) for c in trail} >= {
        ("box", "restamp"),
        ("box", "assign"),
        ("box", "void"),
        ("hq", "assign"),
        ("hq", "void"),
        ("hq", "unvoid"),
    }
    assert any(c["by"] == "jury" for c in trail)

    buf = io.StringIO()
    assert _cli(["export", "--db", str(db)], buf) == 0
    table = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [int(r["seq"]) for r in table] == [1, 2, 3, 4]  # restamped seq 1 sorts first
    assert table[0]["restamped"] == "true" and table[3]["void"] == "true"
    assert list(table[0])[:17] == [
        "box", "store", "seq", "checkpoint", "input", "source", "mono_ns", "utc_ns", "utc",
        "clock", "uncertainty_ns", "car", "void", "void_reason", "restamped", "orig_utc_ns",
        "car_source",
    ]  # fmt: skip


def test_results_cli_from_hq_database(broker, hq, db, boxes, tmp_path):
    start = boxes(broker.url, "box01", checkpoint="PC1")
    finish = boxes(broker.url, "box02", checkpoint="PC2")
    t = T0_NS
    s7 = start.passage(t)
    s9 = start.passage(t + 30 * 10**9)
    start.assign(s7, "7")
    start.assign(s9, "9")
    f7 = finish.passage(t + 120_370_000_000)  # 120.37 s -> 37 points
    finish.assign(f7, "7")
    start.publish_all()
    finish.publish_all()
    start.wait_acked(4)
    finish.wait_acked(2)
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stage]]\nname = "A"\nstart = "PC1"\nfinish = "PC2"\ntarget_s = 120\n')
    buf = io.StringIO()
    assert _cli(["results", "--db", str(db), "--stages", str(stages), "--format", "json"], buf) == 0
    doc = json.loads(buf.getvalue())
    assert [(c["rank"], c["car"], c["total"]) for c in doc["cars"]] == [
        (1, "7", 37),
        (2, "9", None),
    ]
    buf = io.StringIO()
    assert _cli(["results", "--db", str(db), "--stages", str(stages)], buf) == 0
    assert "MISSING finish" in buf.getvalue()
    assert _cli(["results", "--db", str(db), "--stages", str(tmp_path / "nope.toml")], buf) == 1


def test_status_and_watch(broker, hq, db, boxes):
    box = boxes(broker.url)
    box.passages(2)
    box.publish_all()
    box.status(backlog=0, uncertainty_ns=1500)
    box.wait_acked(2)
    wait_for(lambda: box_state(db) == "online", 5, "status")
    buf = io.StringIO()
    assert _cli(["status", "--db", str(db)], buf) == 0
    text = buf.getvalue()
    assert "box07" in text and "online" in text and "locked" in text and "1.5" in text
    assert "connected" in text
    buf = io.StringIO()
    assert _cli(["status", "--db", str(db), "--json"], buf) == 0
    (b,) = json.loads(buf.getvalue())["boxes"]
    assert b["events"] == 2 and b["backlog"] == 0 and b["upto"] == 2
    buf = io.StringIO()
    assert _cli(["watch", "--db", str(db), "--count", "2", "--interval", "0.05"], buf) == 0
    assert buf.getvalue().count("\x1b[H\x1b[2J") == 2


def test_lost_and_offline_states(broker, hq, db, boxes):
    box = boxes(broker.url, "box09")
    box.status()
    wait_for(lambda: box_state(db, "box09") == "online", 5, "online")
    # what the broker publishes from the box's will when its connection dies
    # (the will itself is Link's business and tested with it)
    box.publish_raw(b'{"state":"lost"}', box.topic_status, retain=True)
    wait_for(lambda: box_state(db, "box09") == "lost", 5, "lost")
    box.publish_raw(b'{"state":"offline","box":"box09"}', box.topic_status, retain=True)
    wait_for(lambda: box_state(db, "box09") == "offline", 5, "offline")


def test_cli_usage_errors(tmp_path, capsys):
    assert _cli(["run", "--broker", "http://x", "--db", str(tmp_path / "a.db")], io.StringIO()) == 2
    assert "scheme" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        hq_main(["export"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        hq_main(["assign", "--db", "x.db", "box07", "zero", "42"])
    assert err.value.code == 2
    assert hq_main(["status", "--db", str(tmp_path / "missing.db")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(CommandError):
        HQStore(tmp_path / "c.db").correct("box07", 1, "assign", car="1")


def test_hq_restart_without_session_gap_and_unacked(broker, db, boxes):
    """HQ restarted with its MQTT session gone (new client id): the open gap is
    rebuilt from the database and requested; what the broker did not keep, the
    box re-publishes because HQ never acked it."""
    box = boxes(broker.url, answer_resends=False)
    box.passages(5)
    hq1 = Collector(broker.url, db, gap_wait_s=GAP_WAIT, client_id="hq-first")
    hq1.start()
    wait_for(hq1.subscribed.is_set, 10, "HQ subscribed")
    box.publish(1, 2, 4)
    box.wait_acked(2)
    hq1.stop()
    box.publish(5)  # nobody subscribed and no session for the next HQ: gone
    box.wait_delivered()
    hq2 = Collector(broker.url, db, gap_wait_s=GAP_WAIT, client_id="hq-second")
    box.answer_resends = True
    hq2.start()
    try:
        wait_for(lambda: {"cmd": "resend", "store": box.store, "from": 3, "to": 3}
                   in box.resend_requests(), 10, "resend of 3 after restart")  # fmt: skip
        box.wait_acked(4)
        assert box.republish_unacked() == [5]
        box.wait_acked(5)
    finally:
        hq2.stop()
    assert export_keys(db) == [("box07", box.store, s) for s in range(1, 6)]


def test_second_collector_on_same_db_is_refused(broker, hq, db):
    other = Collector(broker.url, db)
    with pytest.raises(StoreError, match="another HQ collector"):
        other.start()


def test_hq_subprocess_sigkill_and_restart(broker, db, boxes):
    """A real `python -m checkpoint.cli.hq run`, SIGKILLed; events published while it is
    down wait in its persistent session and arrive after the restart."""
    box = boxes(broker.url)
    box.passages(6)
    proc = _spawn_hq(broker.url, db)
    try:
        box.publish(1, 2, 3)
        box.wait_acked(3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        box.publish(4, 5, 6)  # HQ is down; the broker queues them in HQ's session
        proc = _spawn_hq(broker.url, db)
        box.wait_acked(6)
        assert export_keys(db) == [("box07", box.store, s) for s in range(1, 7)]
        assert summary(db).duplicates == 0  # nothing needed resending
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


# -- plumbing ----------------------------------------------------------------------


def _cli(argv, out):
    old = sys.stdout
    sys.stdout = out
    try:
        return hq_main(argv)
    finally:
        sys.stdout = old


def _spawn_hq(url, db):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logfile = db.with_suffix(".log")
    argv = ["run", "--broker", url, "--db", str(db), "--gap-wait", "0.3"]
    with open(logfile, "ab") as log:  # a file, not a pipe: a full pipe would block HQ
        proc = subprocess.Popen(
            [sys.executable, "-m", "checkpoint.cli.hq", *argv],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def subscribed():
        if proc.poll() is not None:
            raise AssertionError(f"hq exited: {logfile.read_text()}")
        if not db.exists():
            return False
        try:
            st = read(db, lambda s: s.state())
        except StoreError:
            return False
        return st.get("pid") == str(proc.pid) and st.get("subscribed_at", "") >= st["started_at"]

    wait_for(subscribed, 15, "HQ subprocess subscribed")
    return proc
