"""Every real receiver log, replayed at the lowest baud rate it fits, through the real box.

Each log in the shared gpsd corpus (`tests/corpusline.py`) is cut into the receiver's
seconds and replayed, repeated with its time moved on, into a real daemon process over
a real pty: every record is written when its last byte has crossed a serial line at
the lowest standard baud rate that carries the log's output within a second (9600 for
ublox-8.log, whose burst then ends ~0.9 s after the pulse), with a PPS pulse every
true second through the checkpoint-sim pin factory. The box must lock on every log
from a receiver that gives whole-second time with a fix, and must not lock on the
others (it would be locking on nothing):

* skytraq.log: status V throughout (no fix);
* gp-320fw-2019-04-07-coldboot.log: after its reboot, status V and garbage dates;
* quectel-eg25-g.log: a cellular modem's GNSS (no PPS output on the PinePhone), its
  fixes are at .01/.98 s, never on the second, so no sentence names a pulse;
* nmea-fuzzy-cases.log: not a receiver's stream but sentences picked out of a 10 Hz
  RTK log for gpsd's arithmetic tests (fractional seconds, seconds missing).

All logs run at once (one daemon each); the figures (baud, burst end, time to lock)
are printed with ``-s``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from boxrig import NS, BoxRig, truth_now
from corpusline import CORPUS, Replay, cycles, log_bytes, lowest_baud

from checkpoint.core.lines import LineSplitter
from checkpoint.core.timing import Pipeline
from checkpoint.field.doctor import Limits, diagnose, gather, render
from checkpoint.mqtt import Link, Message
from sim.boxclock import BoxClock

LOCKS = ["mt3339.log", "ublox-8.log", "ublox-neo-m9n-nmea.log", "ublox-zed-f9r.log"]
NO_LOCK = [
    "skytraq.log",
    "gp-320fw-2019-04-07-coldboot.log",
    "quectel-eg25-g.log",
    "nmea-fuzzy-cases.log",
]
QUECTEL = "quectel-eg25-g.log"
LOCK_TIMEOUT_S = 60.0
# A non-locker is watched until the daemon itself has taken in this many pulses: well
# past what a locker needs (rig: min_lock_samples = 10), on the daemon's count, not a
# wall-clock span that a loaded machine could fill with fewer pulses.
WATCH_NO_LOCK_PULSES = 25


class Feeder(threading.Thread):
    """Performs one replay's events on a rig when due."""

    def __init__(self, rig: BoxRig, truth: BoxClock, replay: Replay) -> None:
        super().__init__(daemon=True)
        self.rig, self.truth, self.replay = rig, truth, replay
        self.halt = threading.Event()

    def run(self) -> None:
        for tick, _, what in self.replay.events(self.truth.tick):
            if self.halt.is_set():
                return
            if isinstance(what, bytes):
                wait = (tick - time.monotonic_ns()) / NS
                if wait > 0 and self.halt.wait(wait):
                    return
                try:
                    os.write(self.rig.master, what)
                except OSError:
                    return
            else:
                self.rig.pin("GPIO18", tick, what)


class Statuses:
    """The latest status of every box, and when each first reported `locked`."""

    def __init__(self, url: str) -> None:
        self.latest: dict[str, dict] = {}
        self.locked_at: dict[str, float] = {}
        self.count: Counter[str] = Counter()
        self.changed = threading.Condition()
        self.link = Link(
            url, f"corpus-{time.monotonic_ns()}", self._on, subscriptions=[("rally/+/status", 1)]
        )
        self.link.start()

    def _on(self, ev: object) -> None:  # the link's thread
        if not (isinstance(ev, Message) and ev.topic.endswith("/status")):
            return
        st = json.loads(ev.payload)
        with self.changed:
            self.latest[st["box"]] = st
            self.count[st["box"]] += 1
            if st.get("clock") == "locked":
                self.locked_at.setdefault(st["box"], time.monotonic())
            self.changed.notify_all()

    def pump(self, until: float, done: Callable[[], bool]) -> None:
        """Wait until `done()` (checked on every status, and at least once a second)."""
        with self.changed:
            while not done() and (left := until - time.monotonic()) > 0:
                self.changed.wait(min(left, 1.0))


def _box(name: str) -> str:
    return name.removesuffix(".log").replace("-2019-04-07-coldboot", "")[:40]


def _rig_at_lowest_baud(tmp_path: Path, url: str, name: str, t0: int) -> tuple[BoxRig, Replay]:
    """A box for corpus log `name`, its GPS line at the lowest rate the log fits."""
    data = log_bytes(CORPUS / name)
    baud = lowest_baud(cycles(data)[1])
    d = tmp_path / _box(name)
    d.mkdir()
    rig = BoxRig(d, url, box=_box(name))
    # The box is told the line's real rate: its status reports the line's load.
    rig.config.write_text(
        rig.config.read_text().replace("[gps]\n", f"[gps]\nbaudrate = {baud}\n", 1)
    )
    return rig, Replay(data, baud, t0)


def _figures(watch: Statuses, replays: dict[str, Replay], started: dict[str, float]) -> str:
    """One line per log: its rate, the burst the daemon measured, the time to lock."""
    figures = []
    for name in LOCKS + NO_LOCK:
        st = watch.latest.get(_box(name), {})
        at = watch.locked_at.get(_box(name))
        lock_s = f"{at - started[name]:.1f} s" if at else "never"
        burst = st.get("gps_burst") or {}
        figures.append(
            f"{name:34} {replays[name].baud:6d} baud  end {burst.get('end_ms')} ms "
            f"(max {burst.get('end_ms_max')})  {burst.get('bytes_per_s')} B/s  "
            f"load {burst.get('line_load')}  lock {lock_s}  clock {st.get('clock')}"
        )
    return "\n".join(figures)


def _doctor_on_the_bursts(watch: Statuses, rigs: dict[str, BoxRig]) -> None:
    """ublox-8.log at 9600 baud: the burst the daemon measured ends ~0.9 s after the
    pulse, and doctor (reading the real daemon's status) says what to do."""
    burst = watch.latest[_box("ublox-8.log")]["gps_burst"]
    assert 850 <= burst["end_ms"] < 1000 and burst["line_load"] > 0.8, burst
    lim = Limits(min_window_s=1.5)
    rig = rigs["ublox-8.log"]
    rep = diagnose(gather(str(rig.config), limits=lim, service=lambda: "unknown"), lim)
    warn = [c for c in rep.checks if c.name == "gps-burst"]
    assert warn and "gps configure" in warn[0].text, render(rep)
    # the M9N at 19200 is comfortable: no warning there
    rig = rigs["ublox-neo-m9n-nmea.log"]
    rep = diagnose(gather(str(rig.config), limits=lim, service=lambda: "unknown"), lim)
    assert not [c for c in rep.checks if c.name == "gps-burst"], render(rep)


@pytest.mark.slow
def test_every_corpus_log_replayed_at_its_lowest_baud_rate(tmp_path, broker):
    if not CORPUS.is_dir():
        pytest.skip(f"NMEA corpus not found at {CORPUS}")
    truth = truth_now(ppm=-17)
    t0 = truth.utc(time.monotonic_ns()) // NS + 3
    rigs: dict[str, BoxRig] = {}
    feeders: list[Feeder] = []
    replays: dict[str, Replay] = {}
    started: dict[str, float] = {}
    watch = Statuses(broker.url)
    try:
        for name in LOCKS + NO_LOCK:
            rigs[name], replays[name] = _rig_at_lowest_baud(tmp_path, broker.url, name, t0)
        for rig in rigs.values():
            rig.start()
        for name, rig in rigs.items():
            feeders.append(Feeder(rig, truth, replays[name]))
        for name, f in zip(rigs, feeders, strict=True):
            f.start()
            started[name] = time.monotonic()

        def done() -> bool:
            lockers_done = all(_box(n) in watch.locked_at for n in LOCKS)
            # Every non-locker replayed whole at least once (the modem's minute-long log
            # for as long as the lockers needed and more).
            replayed = all(replays[n].passes >= 1 for n in NO_LOCK if n != QUECTEL)
            watched = all(
                watch.latest.get(_box(n), {}).get("pps_pulses", 0) >= WATCH_NO_LOCK_PULSES
                for n in NO_LOCK
            )
            return lockers_done and replayed and watched

        watch.pump(time.monotonic() + LOCK_TIMEOUT_S, done)
        # A status from every box sent after that (its figures are the latest).
        before = dict(watch.count)
        boxes = [_box(n) for n in rigs]
        watch.pump(time.monotonic() + 5, lambda: all(watch.count[b] > before[b] for b in boxes))

        report = _figures(watch, replays, started)
        print("\n" + report)
        for name in LOCKS:
            assert _box(name) in watch.locked_at, (
                f"{name} never locked\n{report}\n{rigs[name].log_text()[-3000:]}"
            )
            st = watch.latest[_box(name)]
            assert not st["pairing"]["mismatch"], st["pairing"]
            assert st["uncertainty_ns"] < 20_000, report
        for name in NO_LOCK:
            assert _box(name) not in watch.locked_at, f"{name} locked on no usable time\n{report}"
            assert replays[name].passes >= 1 or name == QUECTEL, report

        _doctor_on_the_bursts(watch, rigs)
    finally:
        for f in feeders:
            f.halt.set()
        for f in feeders:
            f.join(timeout=3)
        watch.link.stop()
        for rig in rigs.values():
            rig.close()


def test_corpus_logs_lock_with_the_default_clock_settings():
    # The same lines through the box's pure pipeline (as `checkpoint replay` runs it),
    # with the shipped defaults (10 pulses to lock): the time to lock a marshal sees.
    # nmea-fuzzy-cases.log has one whole-second sentence every 11 s, consistent with
    # the pulses, but its fractional sentences name times 630 s away: never locked.
    if not CORPUS.is_dir():
        pytest.skip(f"NMEA corpus not found at {CORPUS}")
    mono0, utc0 = 10**12, 1_776_000_000
    locked = {}
    for name in LOCKS + NO_LOCK:
        data = log_bytes(CORPUS / name)
        replay = Replay(data, lowest_baud(cycles(data)[1]), utc0)
        pipe = Pipeline(box="b", checkpoint="c", store="s", inputs=[])
        splitter = LineSplitter()
        for tick, _, what in replay.events(lambda u: mono0 + u - utc0 * NS):
            if tick > mono0 + 150 * NS or name in locked:
                break
            if isinstance(what, bytes):
                for line, at in splitter.feed(what, tick):
                    pipe.nmea(at, line)
            elif what == 1:
                pipe.pps(tick)
                if pipe.clock.state(tick).value == "locked":
                    locked[name] = (tick - mono0) / NS
                    # Locked on the right second: the log was moved to start at utc0.
                    stamp = pipe.clock.stamp(tick, tick)
                    assert abs(stamp.utc_ns - (utc0 * NS + tick - mono0)) < 10_000, name
        assert not pipe.pairer.mismatch, (name, pipe.pairer.advice)
    assert set(locked) == set(LOCKS), locked
    assert all(s <= 65 for s in locked.values()), locked
