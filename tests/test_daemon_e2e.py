"""End to end: the real daemon process, a real Mosquitto, a real pty, real signals.

Only the hardware edge is simulated (the checkpoint-sim pin factory and the pty
feed); every injected tick has an exact true UTC, so the published stamps are
checked against the truth.
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
from faults import Watcher, box_events
from waits import wait_for

pytestmark = pytest.mark.slow


def car(rig: BoxRig, mono: int, hold_ms: int = 150) -> None:
    rig.pin("GPIO17", mono, 0)  # active-low beam: broken
    rig.pin("GPIO17", mono + hold_ms * 1_000_000, 1)


@pytest.fixture
def rig(tmp_path, broker):
    r = BoxRig(tmp_path, broker.url, extra='[record]\ncapture = "capture.jsonl"\n')
    yield r
    r.close()


def test_passages_reach_a_subscriber_locked_in_seq_order_within_10us(rig, broker):
    truth = truth_now(ppm=20)
    sub = Watcher(broker.url, ["rally/box07/event", "rally/box07/status"])
    rig.start()
    gps = GpsFeeder(rig, truth)
    gps.start()
    try:
        st = sub.wait_status(lambda s: s.get("clock") == "locked", 60, "lock", since=0)
        assert st["state"] == "ready" and st["box"] == "box07"
        sent = []
        t0 = time.monotonic_ns() + NS // 3
        for i in range(8):
            mono = t0 + i * 1_300_000_000 + 137 * i
            car(rig, mono)
            sent.append(mono)
        events = sub.take("/event", 8, timeout=30)
    finally:
        gps.stop()
        sub.close()
    assert [e["seq"] for e in events] == list(range(1, 9))
    for ev, mono in zip(events, sent, strict=True):
        assert ev["schema"] == "checkpoint/event/1" and ev["type"] == "passage"
        assert ev["box"] == "box07" and ev["checkpoint"] == "PC3" and ev["input"] == "beam"
        assert ev["source"] == "beam" and ev["mono_ns"] == mono
        assert ev["clock"] == "locked"
        err = ev["utc_ns"] - truth.utc(mono)
        assert abs(err) <= 10_000, f"error {err} ns"
        assert abs(err) <= ev["uncertainty_ns"]
        assert ev["utc"].endswith("Z") and len(ev["utc"]) == 30
    assert rig.stop() == 0

    # The capture the daemon recorded replays to exactly the events it published,
    # with its config or, from the settings in the capture's header, without.
    for config in (["--config", str(rig.config)], []):
        replay = subprocess.run(
            [sys.executable, "-m", "checkpoint", "replay", str(rig.tmp / "capture.jsonl")]
            + config
            + ["--store", events[0]["store"]],
            capture_output=True,
            text=True,
            check=True,
        )
        replayed = [json.loads(line) for line in replay.stdout.splitlines()]
        assert replayed == events


def test_broker_down_at_startup_loses_nothing(tmp_path, broker):
    broker.stop()
    rig = BoxRig(tmp_path, broker.url)
    truth = truth_now()
    try:
        rig.start()
        gps = GpsFeeder(rig, truth)
        gps.start()
        sent = []
        t0 = time.monotonic_ns() + NS // 2
        for i in range(3):
            sent.append(t0 + i * 1_200_000_000)
            car(rig, sent[-1])
        # The marker: all three are in the box's store while the broker is still down.
        stored = lambda: rig.store_path.exists() and len(box_events(rig.store_path)) >= 3  # noqa: E731
        wait_for(stored, 20, "3 passages stored", swallow=(sqlite3.Error,))
        broker.start()
        sub = Watcher(broker.url, ["rally/box07/event"])
        try:
            events = sub.take("/event", 3, timeout=30)
        finally:
            gps.stop()
            sub.close()
        # Published before any lock: stamped from NMEA or the system clock, flagged so.
        assert [e["mono_ns"] for e in events] == sent
        assert all(e["clock"] in ("nmea", "unsynced", "locked") for e in events)
        assert all(
            abs(e["utc_ns"] - truth.utc(m)) <= e["uncertainty_ns"]
            for e, m in zip(events, sent, strict=True)
            if e["clock"] != "unsynced"
        )
    finally:
        rig.close()


def test_sigkill_keeps_committed_passages_and_seq_continues(tmp_path, broker):
    truth = truth_now()
    rig = BoxRig(tmp_path, broker.url)
    sub = Watcher(broker.url, ["rally/box07/event", "rally/box07/status"])
    try:
        rig.start()
        gps = GpsFeeder(rig, truth)
        gps.start()
        sub.wait_status(lambda s: s.get("clock") == "locked", 60, "lock", since=0)
        t0 = time.monotonic_ns() + NS // 2
        car(rig, t0)
        car(rig, t0 + 1_500_000_000)
        first = sub.take("/event", 2, timeout=20)
        assert [e["seq"] for e in first] == [1, 2]
        rig.kill(signal.SIGKILL)
        rig.start()
        t1 = time.monotonic_ns() + NS
        car(rig, t1)
        # With no HQ acking, the restarted box re-sends 1 and 2 from its store first.
        later = sub.take("/event", 3, timeout=20)
        gps.stop()
    finally:
        sub.close()
        rig.close()
    assert [e["seq"] for e in later] == [1, 2, 3]
    assert later[:2] == first
    assert later[2]["mono_ns"] == t1 and later[2]["store"] == first[0]["store"]
    # The restarted daemon reloaded this boot's clock samples: no minute of relocking.
    assert later[2]["clock"] in ("locked", "holdover")
    assert abs(later[2]["utc_ns"] - truth.utc(t1)) <= later[2]["uncertainty_ns"] <= 100_000
