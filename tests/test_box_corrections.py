"""The box folds corrections as the one fold does (checkpoint.core.corrections).

`Store.passages()` (what `checkpoint passages` prints) and the marshal feed (what the
marshal page shows) must give the same rows for one mixed run of sealed events as the
pipeline makes them: a car assigned twice, a passage voided twice, restamped twice,
a correction naming a correction, and the passage keeping its own seal.
"""

from __future__ import annotations

import pytest

from checkpoint.box.marshalfeed import MarshalFeed
from checkpoint.box.store import Store
from checkpoint.core.corrections import Correction, fold
from checkpoint.core.timing import Pipeline

T0 = 1_700_000_000_000_000_000
BOOT = "boot-1"
_BOX_ONLY = ("corrections", "assign_by", "void_by", "restamp_by")


def _stamp(utc_ns: int, clock: str, unc: int) -> dict:
    return {"utc_ns": utc_ns, "utc": f"t{utc_ns - T0}", "clock": clock, "uncertainty_ns": unc}


def _run() -> list[dict]:
    """Sealed events 1..13 as a box makes them, corrections in among the passages."""
    pipe = Pipeline(box="box7", checkpoint="TC3", store="s", inputs=[])

    def passage(mono_ns: int) -> dict:
        fields = {"input": "beam", "source": "gpio", "mono_ns": mono_ns}
        return pipe.issue("passage", {**fields, **_stamp(T0 + mono_ns, "nmea", 50_000_000)})

    def restamp(ref: int, ns: int, unc: int) -> dict:
        return pipe.issue("restamp", {"ref_seq": ref, **_stamp(T0 + ns, "holdover", unc)})

    evs = [passage(1_000), passage(2_000)]  # 1, 2
    evs += pipe.assign(1, "12")  # 3
    evs += pipe.void(2, "photographer")  # 4
    evs += [passage(3_000), restamp(1, 1_001, 900)]  # 5, 6
    evs += pipe.assign(1, "21", by="hq")  # 7: the second assign wins
    evs += pipe.void(2, "test run", by="hq")  # 8: the second void's reason wins
    evs += [restamp(1, 1_002, 400)]  # 9: the second restamp wins
    evs += pipe.assign(6, "99")  # 10: names a restamp, not a passage: ignored
    evs += [passage(4_000)]  # 11
    evs += pipe.assign(5, "7", by="hq") + pipe.void(5, "dup")  # 12, 13
    return evs


def _folded(evs: list[dict]) -> dict[int, dict]:
    passages = {e["seq"]: {**e, "void": False} for e in evs if e["type"] == "passage"}
    cs = [
        Correction(e["ref_seq"], e["type"], (e["seq"],), e) for e in evs if e["type"] != "passage"
    ]
    return fold(passages, cs)  # HQ's shape: `car`, `void_reason` always present


def _box_shape(row: dict) -> dict:
    """A fold row as the box shows it: no `car`/`void_reason` that no correction set."""
    return {k: v for k, v in row.items() if not (k in ("car", "void_reason") and v is None)}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "box.db", box="box7", checkpoint="TC3")
    yield s
    s.close()


def test_box_passages_and_the_marshal_feed_agree_with_the_fold(store):
    evs = _run()
    store.record(boot=BOOT, events=evs)
    want = {seq: _box_shape(r) for seq, r in _folded(evs).items()}

    got = store.passages()
    assert {p["seq"]: {k: v for k, v in p.items() if k not in _BOX_ONLY} for p in got} == want

    one_turn = MarshalFeed([])
    one_turn.turn(evs, 0, dict)
    event_a_turn = MarshalFeed([])
    for i, ev in enumerate(evs):
        event_a_turn.turn([ev], i, dict)
    for feed in (one_turn, event_a_turn):
        assert {r["seq"]: r for r in feed.recent} == want

    # What that is, known independently of the fold:
    p1, p2, p5, p11 = got
    assert (p1["car"], p1["utc_ns"], p1["uncertainty_ns"]) == ("21", T0 + 1_002, 400)
    assert (p1["clock"], p1["mono_ns"], p1["input"]) == ("holdover", 1_000, "beam")
    assert p1["hash"] == evs[0]["hash"] and p1["prev"] == evs[0]["prev"]  # its own seal
    assert (p1["corrections"], p1["assign_by"]) == ([3, 6, 7, 9], "hq")
    assert (p2["void"], p2["void_reason"], p2["void_by"]) == (True, "test run", "hq")
    assert "car" not in p2 and p2["corrections"] == [4, 8]
    assert (p5["car"], p5["void"], p5["void_reason"], p5["assign_by"]) == ("7", True, "dup", "hq")
    assert p11 == {**evs[10], "void": False, "corrections": []}


def test_a_feed_started_from_the_store_continues_as_the_store_folds(store):
    """The daemon seeds the feed with the store's newest passages, then adds its turns."""
    evs = _run()
    store.record(boot=BOOT, events=evs[:6])
    feed = MarshalFeed(store.passages(limit=2))
    feed.turn(evs[6:], 0, dict)
    store.record(boot=BOOT, events=evs[6:])
    shown = {p["seq"]: {k: v for k, v in p.items() if k not in _BOX_ONLY} for p in feed.recent}
    stored = {p["seq"]: p for p in store.passages(limit=3)}
    assert list(shown) == [2, 5, 11]
    for seq, row in shown.items():
        assert row == {k: v for k, v in stored[seq].items() if k not in _BOX_ONLY}
