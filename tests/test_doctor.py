"""`checkpoint doctor`: the pure diagnosis per failure state, then a real simulated box.

The end-to-end test runs the real daemon (tests/boxrig.py: real Mosquitto, the
checkpoint-sim pin factory, a pty for the GPS) through the states a marshal meets at
dawn and checks doctor's verdict in each.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time

import pytest
from boxrig import NS, BoxRig, GpsFeeder, truth_now
from faults import Watcher
from waits import wait_for

from checkpoint.field.doctor import (
    FAIL,
    INFO,
    MB,
    OK,
    WARN,
    Facts,
    Limits,
    Snapshot,
    diagnose,
    gather,
    render,
)


def status(**over) -> dict:
    st = {
        "state": "ready",
        "box": "box07",
        "checkpoint": "PC3",
        "store": "S1",
        "version": "0.1.0",
        "clock": "locked",
        "uncertainty_ns": 1500,
        "fix": {
            "accepted": 100,
            "valid": 100,
            "rejects": {},
            "ignored": 50,
            "resynced": 0,
            "last_kind": "GGA",
            "last_valid_mono_ns": 1,
        },
        "gps_port": True,
        "pps_pulses": 50,
        "backlog": 0,
        "inflight": 0,
        "last_seq": 3,
        "acked_upto": 3,
        "unstored": 0,
        "inputs": {
            "beam": {"broken": False, "fault": False, "passages": 3, "glitches": 0, "suppressed": 0}
        },
        "alarms": {},
        "bad_commands": 0,
    }
    st.update(over)
    return st


def later(st: dict, *, lines: int = 6, valid: int | None = None, pps: int = 3, **over) -> dict:
    """The same daemon a few seconds on: counters advanced."""
    nxt = copy.deepcopy(st)
    nxt["fix"]["accepted"] += lines
    nxt["fix"]["valid"] += lines if valid is None else valid
    if valid == 0 and lines:
        nxt["fix"]["rejects"]["no_fix"] = nxt["fix"]["rejects"].get("no_fix", 0) + lines
    nxt["pps_pulses"] += pps
    nxt.update(over)
    return nxt


def facts(first: dict | None = None, second: dict | None = None, **over) -> Facts:
    first = status() if first is None else first
    second = later(first) if second is None else second
    f = Facts(
        config_file="/etc/checkpoint/box.toml",
        box="box07",
        checkpoint="PC3",
        gps_port="/dev/gps0",
        pps_pin="GPIO18",
        input_sources={"beam": "beam"},
        broker_url="mqtt://hq:1883",
        broker="connected",
        snapshots=[Snapshot(100.0, False, first), Snapshot(103.0, True, second)],
        waited_s=3.0,
        store_path="/var/lib/checkpoint/checkpoint.db",
        store_id="S1",
        store_counts={"edges": 10, "pps": 50, "samples": 40, "events": 3},
        store_pragmas={"journal_mode": "wal", "synchronous": 2, "busy_timeout": 5000},
        disk_free=8 * 1024 * MB,
        disk_total=16 * 1024 * MB,
        service="active",
    )
    for k, v in over.items():
        setattr(f, k, v)
    return f


def levels(report) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in report.checks:
        # The worst level per check name.
        order = [OK, INFO, WARN, FAIL]
        if c.name not in out or order.index(c.level) > order.index(out[c.name]):
            out[c.name] = c.level
    return out


def test_ready_box():
    report = diagnose(facts())
    assert report.ready and report.verdict == "READY"
    assert {lvl for lvl in levels(report).values()} == {OK}
    text = render(report)
    assert text.splitlines()[-1] == "READY"
    assert "clock locked to GPS PPS, ±1.5 µs" in text
    assert json.loads(json.dumps(report.as_dict()))["ready"] is True


@pytest.mark.parametrize(
    ("burst", "warned"),
    [
        ({"end_ms": 250, "end_ms_max": 260, "bytes_per_s": 190, "line_load": 0.2}, False),
        ({"end_ms": 899, "end_ms_max": 967, "bytes_per_s": 815, "line_load": 0.85}, True),
        ({"end_ms": 500, "end_ms_max": 520, "bytes_per_s": 900, "line_load": 0.94}, True),
        ({"end_ms": 578, "end_ms_max": 996, "bytes_per_s": 253, "line_load": 0.53}, True),
        ({"end_ms": 746, "end_ms_max": 783, "bytes_per_s": 1358, "line_load": 0.71}, False),
        ({"end_ms": None, "end_ms_max": None, "bytes_per_s": None, "line_load": None}, False),
    ],
)
def test_a_late_gps_burst_is_a_warning_with_what_to_do(burst, warned):
    first = status(gps_burst=burst)
    report = diagnose(facts(first, later(first)))
    assert report.ready  # a warning: the box times, but the next sentence set up fails
    warn = [c for c in report.checks if c.name == "gps-burst"]
    assert bool(warn) == warned
    if warned:
        assert warn[0].level == WARN and "checkpoint gps configure" in warn[0].text


def test_no_gps_data():
    first = status()
    report = diagnose(facts(first, later(first, lines=0, pps=0, clock="holdover")))
    assert not report.ready
    # Holdover within the bound is a warning (core.readiness): the lost PPS is the failure.
    assert report.verdict.startswith("NOT READY: no GPS data; no PPS")
    assert "port /dev/gps0 is open but silent" in render(report)


def test_nothing_ever_received_is_no_data_even_in_a_short_window():
    empty = status(fix={"accepted": 0, "valid": 0, "rejects": {}, "ignored": 0}, pps_pulses=0)
    f = facts(empty, copy.deepcopy(empty), clock="unsynced")
    f.snapshots[1] = Snapshot(100.5, True, copy.deepcopy(empty))
    assert "no GPS data" in diagnose(f).verdict


def test_gps_port_not_open():
    first = status(gps_port=False)
    report = diagnose(facts(first, later(first, lines=0, pps=0, gps_port=False)))
    assert "GPS port not open" in report.verdict
    assert "/dev/gps0" in render(report)


def test_no_fix():
    first = status(clock="unsynced", fix={"accepted": 10, "valid": 0, "rejects": {"no_fix": 10}})
    report = diagnose(facts(first, later(first, lines=6, valid=0, pps=0)))
    assert report.verdict == "NOT READY: no GPS fix; no PPS; clock unsynced"
    assert "pulses only with a fix" in render(report)


def test_unreadable_gps_data():
    first = status(clock="unsynced")
    second = copy.deepcopy(first)
    second["fix"]["rejects"] = {"checksum": 12}
    second["pps_pulses"] += 3
    report = diagnose(facts(first, second))
    assert "GPS data unreadable" in report.verdict


def test_no_pps_with_a_fix():
    first = status(clock="nmea", uncertainty_ns=2_000_000)
    report = diagnose(facts(first, later(first, pps=0)))
    assert report.verdict == "NOT READY: no PPS; clock nmea"
    assert "check the PPS wire" in render(report)


def test_noisy_pps_is_a_warning():
    report = diagnose(facts(status(), later(status(), pps=12)))
    assert report.ready and levels(report)["pps"] == WARN


def test_clock_holdover_and_large_uncertainty_and_convention_mismatch():
    first = status(clock="holdover")
    assert levels(diagnose(facts(first, later(first))))["clock"] == WARN
    first = status(clock="holdover", uncertainty_ns=250_000)
    assert "clock holdover" in diagnose(facts(first, later(first, pps=0))).verdict
    first = status(uncertainty_ns=250_000)
    assert "clock uncertainty too large" in diagnose(facts(first, later(first))).verdict
    first = status(alarms={"gps": "NMEA/PPS convention mismatch: check gps.convention"})
    report = diagnose(facts(first, later(first)))
    assert report.verdict == "NOT READY: GPS convention mismatch"


def test_broker_unreachable_or_refused_or_not_checked():
    f = facts(broker="unreachable", broker_detail="no connection within 5 s", snapshots=[])
    report = diagnose(f)
    assert report.verdict == "NOT READY: broker unreachable"
    assert levels(report)["daemon"] == INFO
    assert "kept on the card" in render(report)
    f = facts(broker="refused", broker_detail="Not authorized", snapshots=[])
    assert diagnose(f).verdict == "NOT READY: broker refused login"
    f = facts(broker="not checked", broker_detail="cannot read password file", snapshots=[])
    assert diagnose(f).verdict == "NOT READY: broker not checked"
    f = facts(subscribe_error="Not authorized")
    assert "not authorised to read status" in diagnose(f).verdict


def test_daemon_silent_lost_offline_or_stale():
    assert "no status from the daemon" in diagnose(facts(snapshots=[])).verdict
    lost = facts()
    lost.snapshots.append(Snapshot(104, True, {"state": "lost"}))
    assert "daemon lost" in diagnose(lost).verdict
    off = facts(snapshots=[Snapshot(1, False, {"state": "offline", "box": "box07"})])
    assert "daemon offline" in diagnose(off).verdict
    stale = facts()
    stale.snapshots = stale.snapshots[:1]
    report = diagnose(stale)
    assert report.verdict == "NOT READY: daemon status stale"


def test_beam_blocked_at_idle_but_a_car_passing_is_not():
    blocked = {"broken": True, "fault": False, "passages": 3, "glitches": 0}
    first = status(inputs={"beam": blocked})
    report = diagnose(facts(first, later(first)))
    assert report.verdict == "NOT READY: beam blocked"
    assert "aim sensor and reflector" in render(report)
    # Broken only in the latest snapshot: a car right now, not a fault.
    car = diagnose(facts(status(), later(status(), inputs={"beam": blocked})))
    assert car.ready


def test_chattering_beam_and_stuck_button():
    chatter = {"broken": False, "fault": True, "passages": 3, "glitches": 40}
    first = status(
        inputs={"beam": chatter, "button": {"broken": True, "fault": False}},
        alarms={"input:beam": "sensor fault: beam chattering (400 edges dropped)"},
    )
    f = facts(first, later(first), input_sources={"beam": "beam", "button": "manual"})
    report = diagnose(f)
    assert report.verdict == "NOT READY: beam chattering; button stuck"
    assert "button stuck or wire shorted" in render(report)


def test_glitches_are_a_warning_only():
    second = later(status())
    second["inputs"]["beam"]["glitches"] = 4
    report = diagnose(facts(status(), second))
    assert report.ready and levels(report)["input:beam"] == WARN


def test_walk_test_passage_or_none():
    ev = {"type": "passage", "seq": 4, "input": "beam", "utc": "2026-04-21T06:00:00.1Z"}
    ev |= {"clock": "locked", "uncertainty_ns": 1500}
    report = diagnose(facts(walk_test_s=60, walk_passage=ev))
    assert report.ready and "passage seen: seq 4 on beam" in render(report)
    report = diagnose(facts(walk_test_s=60))
    assert report.verdict == "NOT READY: walk test: no passage"


def test_store_backlog_alarms_disk_and_database():
    first = status(unstored=5, alarms={"store": "disk I/O error: replace the card"}, backlog=500)
    report = diagnose(facts(first, later(first)))
    assert report.verdict == "NOT READY: store refuses writes"
    assert levels(report)["backlog"] == WARN
    assert "disk I/O error" in render(report)
    first = status(alarms={"outbox": "event seq 9 missing from store"})
    assert "alarm outbox" in diagnose(facts(first, later(first))).verdict
    assert "card nearly full" in diagnose(facts(disk_free=50 * MB)).verdict
    warn = diagnose(facts(disk_free=500 * MB))
    assert warn.ready and levels(warn)["disk"] == WARN
    bad = diagnose(facts(store_error="database is corrupt: ... fails quick_check"))
    assert bad.verdict == "NOT READY: database problem"
    other = diagnose(facts(store_id="S2"))
    assert other.ready and levels(other)["database"] == WARN


def test_service_state():
    assert "service inactive" in diagnose(facts(service="inactive")).verdict
    unknown = diagnose(facts(service="unknown"))
    assert unknown.ready and levels(unknown)["service"] == INFO


def test_config_error_stops_early():
    report = diagnose(Facts(config_file="x.toml", config_error="x.toml: no such config file"))
    assert report.verdict == "NOT READY: config file unusable" and len(report.checks) == 1


def test_counters_from_a_restarted_daemon_use_the_new_run_only():
    old = status(pps_pulses=5000)
    old["fix"]["accepted"] = 9000
    new = status(pps_pulses=10)
    f = facts(old, new)
    f.snapshots.append(Snapshot(106.0, True, later(new)))
    assert diagnose(f, Limits(min_window_s=2.5)).ready


def test_gather_with_a_bad_config_and_no_broker(tmp_path):
    f = gather(str(tmp_path / "missing.toml"))
    assert f.config_error and "no such config file" in f.config_error
    cfg = tmp_path / "box.toml"
    cfg.write_text(
        '[box]\nid = "b"\ncheckpoint = "c"\n[store]\npath = "b.db"\n'
        '[mqtt]\nbroker = "mqtt://127.0.0.1:9"\n'
    )
    f = gather(str(cfg), connect_timeout_s=0.5, service=lambda: "unknown")
    assert f.broker == "unreachable" and f.store_error and "never run" in f.store_error
    assert f.disk_free is not None
    report = diagnose(f)
    assert report.verdict == "NOT READY: broker unreachable; database problem"


# -- end to end: a real daemon in each state ------------------------------------------------


def _wait_locked(broker_url: str, timeout: float) -> None:
    watch = Watcher(broker_url, ["rally/+/status"])
    try:
        watch.wait_status(lambda st: st.get("clock") == "locked", timeout, "clock locked")
    finally:
        watch.close()


def _doctor_with_a_walk(rig: BoxRig) -> tuple[int, str, str]:
    """`checkpoint doctor --walk-test 10 --json` as a marshal runs it, walking through the
    beam once doctor asks. Returns (exit code, stdout, what doctor said on stderr)."""
    doctor = subprocess.Popen(
        [sys.executable, "-m", "checkpoint.cli.field", "doctor", "--config", str(rig.config)]
        + ["--walk-test", "10", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said_lines: list[str] = []
    stderr_reader = threading.Thread(target=lambda: said_lines.extend(doctor.stderr), daemon=True)
    stderr_reader.start()
    try:
        # The marshal walks once doctor asks for it (it is listening by then).
        wait_for(
            lambda: any("walk through the beam now" in x for x in said_lines),
            30,
            "doctor's walk-test prompt",
        )
        t = time.monotonic_ns()
        rig.pin("GPIO17", t, 0)
        rig.pin("GPIO17", t + 150_000_000, 1)
        stdout = doctor.stdout.read()
        doctor.wait(60)
    finally:
        doctor.kill()
        doctor.wait()
    stderr_reader.join(5)
    return doctor.returncode, stdout, "".join(said_lines)


class _Doctor:
    """doctor's `gather` and `diagnose` on one rig, asked again until a state shows."""

    def __init__(self, rig: BoxRig, lim: Limits) -> None:
        self.rig, self.lim = rig, lim
        self.said: list[str] = []

    def check(self, **kw):
        f = gather(
            str(self.rig.config),
            limits=self.lim,
            service=lambda: "unknown",
            say=self.said.append,
            **kw,
        )
        return diagnose(f, self.lim)

    def until(self, pred, timeout: float = 12.0, **kw):
        # A state takes a moment to show (a loaded CI machine, the serial reader's
        # 1 s reopen): ask again until doctor sees it, as a marshal would.
        deadline = time.monotonic() + timeout
        report = self.check(**kw)
        while not pred(report.verdict) and time.monotonic() < deadline:
            report = self.check(**kw)
        return report


def _gps_failures(rig: BoxRig, doc: _Doctor, truth, feeders: list[GpsFeeder]) -> None:
    """GPS silent, then sentences without a fix or PPS, then a fix without PPS."""
    report = doc.until(lambda v: "no GPS data" in v)  # powered up, GPS silent
    assert "no GPS data" in report.verdict, render(report) + rig.log_text()[-2000:]

    feeder = GpsFeeder(rig, truth, valid=False)  # sentences with status V, no PPS
    feeder.pps_on = False
    feeders.append(feeder)
    feeder.start()
    report = doc.until(lambda v: "no GPS fix" in v and "no PPS" in v)
    assert "no GPS fix" in report.verdict and "no PPS" in report.verdict, (
        render(report) + rig.log_text()[-3000:]
    )
    feeder.stop()

    feeder = GpsFeeder(rig, truth)  # a fix, but the PPS wire is off
    feeder.pps_on = False
    feeders.append(feeder)
    feeder.start()
    report = doc.until(lambda v: "no GPS fix" not in v and "no PPS" in v)
    assert "no GPS fix" not in report.verdict and "no PPS" in report.verdict, render(report)
    feeder.stop()


def _beam_failures(rig: BoxRig, doc: _Doctor) -> None:
    """A car parked in the beam, then a loose wire chattering."""
    rig.pin("GPIO17", time.monotonic_ns(), 0)  # someone parks a car in the beam
    report = doc.until(lambda v: v == "NOT READY: beam blocked")
    assert report.verdict == "NOT READY: beam blocked", render(report)
    rig.pin("GPIO17", time.monotonic_ns(), 1)

    t0 = time.monotonic_ns() + 50_000_000  # a loose wire: 1 kHz of edges
    for i in range(300):
        rig.pin("GPIO17", t0 + i * NS // 1000, i % 2)
    report = doc.until(lambda v: v == "NOT READY: beam chattering", timeout=6)
    assert report.verdict == "NOT READY: beam chattering", render(report)


@pytest.mark.slow
def test_doctor_on_a_simulated_box_in_each_failure_state(tmp_path, broker):
    lim = Limits(min_window_s=1.5)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rig = BoxRig(tmp_path / "a", broker.url)
    rigs = [rig]
    feeders: list[GpsFeeder] = []
    try:
        rig.start()
        truth = truth_now(ppm=20)
        _gps_failures(rig, _Doctor(rig, lim), truth, feeders)
        rigs.remove(rig)
        rig.close()  # once: its fd numbers are free for the next rig afterwards

        # Wire fixed, box powered up again (a fresh box, so the lock does not depend on
        # how the clock model weighs the PPS-less minutes before).
        rig = BoxRig(tmp_path / "b", broker.url)
        rigs.append(rig)
        rig.start()
        feeder = GpsFeeder(rig, truth)
        feeders.append(feeder)
        feeder.start()
        _wait_locked(broker.url, 60)

        rc, stdout, said_text = _doctor_with_a_walk(rig)
        result = json.loads(stdout)
        assert rc == 0 and result["verdict"] == "READY", stdout + said_text
        walk_check = next(c for c in result["checks"] if c["name"] == "walk-test")
        assert "passage seen: seq 1 on beam" in walk_check["text"]

        doc = _Doctor(rig, lim)
        _beam_failures(rig, doc)
        broker.stop()
        report = doc.until(lambda v: "broker unreachable" in v, connect_timeout_s=1.5)
        assert report.verdict.startswith("NOT READY: broker unreachable"), render(report)
    finally:
        for f in feeders:
            f.stop()
        for r in rigs:
            r.close()
