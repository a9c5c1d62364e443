"""HQ's corrections come back to the box: `{prefix}/{box}/hqfix` to the marshal page.

A real box daemon (tests/boxrig.py: sim pin factory, pty GPS) with its marshal page, a
real collector on a real Mosquitto: HQ gives a passage a car with `hq assign` and the
marshal's page shows "HQ: car 29" on that row; HQ's unvoid/void are shown the same way.
"""

from __future__ import annotations

import io
import time
from contextlib import closing

from waits import wait_for
from webrig import PIN, Client, read_sse, web_box_rig

from checkpoint import hqfix
from checkpoint.cli.hq import main as hq_main
from checkpoint.hq.collector import Collector
from checkpoint.hq.store import HQStore

NS = 1_000_000_000


def _hq_passages(db):
    with closing(HQStore(db, create=False)) as s:
        return s.passages()


def test_parse_keeps_this_stores_fixes_and_the_last_word():
    doc = {
        "v": 1,
        "fixes": [
            {"store": "S", "seq": 3, "car": "29"},
            {"store": "S", "seq": 4, "void": "photographer"},
            {"store": "OLD", "seq": 3, "car": "1"},
            {"store": "S", "seq": 0, "car": "1"},
        ],
    }
    import json

    got = hqfix.parse(json.dumps(doc).encode(), "S")
    assert got == {3: {"car": "29"}, 4: {"void": "photographer"}}
    assert hqfix.label(got[3]) == "HQ: car 29"
    for bad in (b"[]", b'{"v": 2, "fixes": []}', b"{}"):
        try:
            hqfix.parse(bad, "S")
        except ValueError:
            continue
        raise AssertionError(bad)


def test_an_hq_correction_is_shown_on_the_marshal_page(broker, tmp_path):
    db = tmp_path / "hq.db"
    c = Collector(broker.url, db, heartbeat_s=0.3)
    c.start()
    wait_for(c.subscribed.is_set, 10, "HQ subscribed")
    rig, port = web_box_rig(tmp_path, broker.url)
    try:
        rig.start()
        mono = time.monotonic_ns() + NS // 5
        rig.pin("GPIO17", mono, 0)  # active-low beam: a car breaks it
        rig.pin("GPIO17", mono + 150_000_000, 1)
        wait_for(lambda: len(_hq_passages(db)) == 1, 20, "the passage at HQ")
        out = io.StringIO()
        import sys

        old, sys.stdout = sys.stdout, out
        try:
            assert hq_main(["assign", "--db", str(db), "box07", "1", "29"]) == 0
        finally:
            sys.stdout = old
        client = Client(f"http://127.0.0.1:{port}/")
        wait_for(lambda: client.login(PIN) in (302, 303), 15, "marshal login")

        def shows_hq(events):
            rows = [r for name, m in events if name == "passages" for r in m["rows"]]
            return any(r.get("hq") == "HQ: car 29" for r in rows)

        read_sse(client, "/api/events", shows_hq, timeout=15)
    finally:
        rig.close()
        c.stop()
