"""Every passage stamped before a lock is re-stamped once the box locks, also across a
daemon restart in the same boot; the simulator's verdict fails on one left coarse.

The live rally (a cold-start box killed mid-rally, real daemons, broker and HQ) is
`cold_kill` in tests/test_sim.py; these are the parts on their own: the pipeline, the
real SQLite store and the verdict.
"""

from __future__ import annotations

from test_sim import _row, _truth
from test_timing import NS, UTC0, World, pipeline, run

from checkpoint.box.store import Store
from sim import verdict


def test_a_new_pipeline_restamps_the_passages_an_earlier_run_left_coarse():
    w = World()
    # Run 1: cars before any fix (system clock) and before any pulse (NMEA); it dies.
    first = run(w, pipeline(), 18, fix_from=10, pps_from=999, cars=[5 * NS, 14 * NS])
    coarse = [e for e in first if e["type"] == "passage"]
    assert [e["clock"] for e in coarse] == ["unsynced", "nmea"]
    assert not [e for e in first if e["type"] == "restamp"]

    # Run 2 in the same boot: told what is pending, then the GPS locks.
    pipe = pipeline(next_seq=len(first) + 1)
    for e in coarse:
        rec = {"type": "pending", "mono_ns": e["mono_ns"], "ref_seq": e["seq"]}
        assert pipe.feed({**rec, "uncertainty_ns": e["uncertainty_ns"], "clock": e["clock"]}) == []
    assert pipe.status()["coarse_passages"] == 2
    events = run(w, pipe, 70, fix_from=10, pps_from=20, cars=[])
    restamps = {e["ref_seq"]: e for e in events if e["type"] == "restamp"}
    assert sorted(restamps) == [e["seq"] for e in coarse]
    for e, car in zip(coarse, (5 * NS, 14 * NS), strict=True):
        rs = restamps[e["seq"]]
        assert rs["clock"] in ("locked", "holdover")
        assert abs(rs["utc_ns"] - (UTC0 + car)) <= rs["uncertainty_ns"] <= 100_000
    assert pipe.status()["coarse_passages"] == 0


def _ev(seq, kind, clock, unc, mono=None, ref=None):
    ev = {"type": kind, "seq": seq, "clock": clock, "uncertainty_ns": unc}
    if mono is not None:
        ev["mono_ns"] = mono
    if ref is not None:
        ev["ref_seq"] = ref
    return ev


def test_store_lists_this_boots_passages_not_yet_locked(tmp_path):
    with Store(tmp_path / "box.db", box="b", checkpoint="PC1") as store:
        store.record(boot="old", events=[_ev(1, "passage", "nmea", 5 * 10**6, mono=10)])
        store.record(
            boot="now",
            events=[
                _ev(2, "passage", "unsynced", 10**12, mono=20),
                _ev(3, "passage", "locked", 900, mono=30),
                _ev(4, "passage", "nmea", 4 * 10**6, mono=40),
                _ev(5, "restamp", "holdover", 70_000, ref=4),
                _ev(6, "passage", "nmea", 4 * 10**6, mono=60),
                _ev(7, "restamp", "holdover", 80_000, ref=6),
                _ev(8, "restamp", "locked", 1_000, ref=6),
            ],
        )
        # Boot "old"'s tick means nothing now; 3 is locked; 6's latest restamp locked it.
        assert store.unsettled_passages("now") == [
            (2, 20, 10**12, "unsynced"),
            (4, 40, 70_000, "holdover"),
        ]


def test_verdict_fails_a_passage_left_coarse_on_a_box_that_locked():
    truth = [_truth("b", str(i), i * 2 * NS, 1000 * NS + i * 2 * NS) for i in (1, 2)]
    rows = [
        _row("b", 1, 2 * NS, 1002 * NS, clock="nmea", unc=10**7),
        _row("b", 2, 4 * NS, 1004 * NS),
    ]
    v = verdict.judge(truth, rows)  # b has a locked passage: it locked
    assert (v.missing, v.false, v.duplicates, v.coarse) == (0, 0, 0, 1)
    assert not v.ok and v.by_box["b"]["coarse"] == 1
    assert "left at unsynced/nmea grade" in verdict.render(v)
    assert verdict.judge(truth, rows, locked=set()).ok  # a box that never locked
    holdover = [rows[0] | {"clock": "holdover"}, rows[1]]
    assert verdict.judge(truth, holdover, locked={"b"}).ok
