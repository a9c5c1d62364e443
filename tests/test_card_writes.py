"""Light on the card: raw inputs are batched, events are not, and nothing replay needs is lost.

The real daemon process, a real Mosquitto, a real pty and real signals. The raw rows
(PPS ticks, beam edges, clock samples) go to disk with the next events or within a
minute; every stored event goes down with its own inputs in the same transaction, and
the capture file is fsync'd before it, so a SIGKILL (or a power cut) at any moment
leaves a capture that replays to every stored event.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from boxrig import NS, BoxRig, GpsFeeder, truth_now
from faults import Watcher
from waits import wait_for

from checkpoint.box.store import Store

pytestmark = pytest.mark.slow


def _rows(db, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _events(db) -> list[dict]:
    return [json.loads(p) for (p,) in _rows(db, "SELECT payload FROM events ORDER BY seq")]


def test_sigkill_leaves_every_stored_event_with_its_inputs_and_a_capture_that_replays_it(
    tmp_path, broker
):
    rig = BoxRig(tmp_path, broker.url, extra='[record]\ncapture = "capture.jsonl"\n')
    truth = truth_now(ppm=-15)
    gps = GpsFeeder(rig, truth)
    watch = Watcher(broker.url, ["rally/box07/status"])
    try:
        rig.start()
        gps.start()
        # Cars from the first seconds: passages before lock, at lock (restamps), after.
        t0 = time.monotonic_ns() + NS // 2
        cars = [t0 + round(i * 1.7 * NS) for i in range(12)]
        for mono in cars:
            rig.pin("GPIO17", mono, 0)
            rig.pin("GPIO17", mono + 150_000_000, 1)
        db = rig.store_path
        passages = wait_for(
            lambda: [e for e in _events(db) if e["type"] == "passage"] if db.exists() else [],
            60,
            "passages in the store",
        )
        twelve = lambda: len([e for e in _events(db) if e["type"] == "passage"]) == 12  # noqa: E731
        wait_for(twelve, 30, "all 12")
        # Every stored passage's leading edge is stored too (same transaction).
        edges = {m for (m,) in _rows(db, "SELECT mono_ns FROM edges WHERE active = 1")}
        assert {e["mono_ns"] for e in _events(db) if e["type"] == "passage"} <= edges
        # Idle raw rows are not committed one by one: well under one PPS row per pulse.
        gps_pulses = len(_rows(db, "SELECT id FROM pps"))
        # The marker: a status saying the daemon has taken in three more pulses since.
        taken = watch.wait_status(lambda s: "pps_pulses" in s, 10, "a status")["pps_pulses"]
        watch.wait_status(lambda s: s.get("pps_pulses", 0) >= taken + 3, 15, "three more pulses")
        assert len(_rows(db, "SELECT id FROM pps")) - gps_pulses <= 1
        assert passages
        gps.stop()
        rig.kill(signal.SIGKILL)
    finally:
        gps.stop()
        watch.close()
        rig.close()

    stored = _events(db)
    assert len([e for e in stored if e["type"] == "passage"]) == 12
    assert any(e["type"] == "restamp" for e in stored) or all(
        e["clock"] == "locked" for e in stored if e["type"] == "passage"
    )
    replay = subprocess.run(
        [sys.executable, "-m", "checkpoint", "replay", str(tmp_path / "capture.jsonl")]
        + ["--store", stored[0]["store"]],
        capture_output=True,
        text=True,
        check=True,
    )
    replayed = [json.loads(line) for line in replay.stdout.splitlines()]
    # Replay runs on to the end of the capture (and flushes open breaks): every stored
    # event is reproduced exactly, in order, as its prefix.
    assert replayed[: len(stored)] == stored


def test_sigterm_writes_the_raw_rows_kept_in_memory(tmp_path, broker):
    rig = BoxRig(tmp_path, broker.url)
    gps = GpsFeeder(rig, truth_now())
    watch = Watcher(broker.url, ["rally/box07/status"])
    try:
        rig.start()
        gps.start()
        # Six pulses in: well past the batch written at start, still within the minute.
        st = watch.wait_status(lambda s: s.get("pps_pulses", 0) >= 6, 20, "six pulses")
        sent = st["pps_pulses"]
        gps.stop()
        assert rig.stop() == 0
    finally:
        gps.stop()
        watch.close()
        rig.close()
    store = Store(rig.store_path, box="box07", checkpoint="PC3", readonly=True)
    try:
        counts = store.counts()
    finally:
        store.close()
    # The first batch went down at start; the rest waited in memory until the stop.
    assert counts["pps"] >= sent - 1
