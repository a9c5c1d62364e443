"""Crash and power-cut: the real box daemon SIGKILLed at random moments while passages
stream in, with a real Mosquitto and a real HQ collector.

After every kill the store is read as the dead process left it: every passage committed
before the kill is there byte for byte, seqs are 1..N without a hole, and what is missing
is only the newest passages (sent, not yet committed), whose age at the kill is the
measured loss window. At the end HQ holds exactly the store's events, each once, so it
holds every passage the beam saw except those in the loss windows.

The default run does a few cycles; `--soak` does 60, with HQ itself (a `checkpoint hq
run` process) SIGKILLed every tenth cycle.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from boxrig import BoxRig
from faults import (
    HQProcess,
    PassageFeeder,
    Sent,
    box_events,
    check_contiguous,
    fast_inputs,
    hq_box_counters,
    hq_chain_breaks,
    hq_events,
    passage_keys,
    report,
)
from waits import wait_for

from checkpoint.hq.collector import Collector

pytestmark = pytest.mark.slow

PINS = {"beam": "GPIO17", "beam2": "GPIO27"}


@dataclass
class _Tally:
    """What the kills so far have shown: the store's committed events (a prefix that
    must never change), the passages lost, and the figures of each kill."""

    kept: list[dict] = field(default_factory=list)
    lost: set[tuple[str, int]] = field(default_factory=set)
    windows_ms: list[float] = field(default_factory=list)
    fresh_ms: list[float] = field(default_factory=list)
    after_signal: int = 0
    restart_ms: list[float] = field(default_factory=list)
    hq_kills: int = 0

    def check_kill(self, cycle: int, events: list[dict], epoch: list[Sent], t_kill: int) -> None:
        """The store as the killed daemon left it, against the passages sent to that run."""
        check_contiguous(events)
        # Nothing committed before an earlier kill changed or went away.
        assert events[: len(self.kept)] == self.kept, f"cycle {cycle}: committed events changed"
        self.kept = events
        stored = set(passage_keys(events))
        missing = [s for s in epoch if (s.input, s.mono_ns) not in stored]
        # Only the newest are missing: what was stored is a prefix of what was sent.
        if missing:
            first_missing = min(s.sent_ns for s in missing)
            late_stored = [
                s for s in epoch if s.sent_ns > first_missing and (s.input, s.mono_ns) in stored
            ]
            assert not late_stored, f"cycle {cycle}: a hole, not a lost tail"
            # Edges written after the signal (before the socket closed) never had a
            # chance; the loss window is about those that arrived before it.
            before = [s.sent_ns for s in missing if s.sent_ns < t_kill]
            self.after_signal += len(missing) - len(before)
            if before:
                self.windows_ms.append((t_kill - min(before)) / 1e6)
        got = [s for s in epoch if (s.input, s.mono_ns) in stored]
        if got:
            self.fresh_ms.append((t_kill - max(s.sent_ns for s in got)) / 1e6)
        self.lost.update((s.input, s.mono_ns) for s in missing)

    def figures(self) -> dict:
        return {
            "hq_kills": self.hq_kills,
            # Passages whose edges reached the daemon's socket before the SIGKILL but were
            # not committed yet (the only acceptable loss), and those written after the
            # signal while the process was dying (never seen by any daemon).
            "lost_uncommitted_at_kill": len(self.lost) - self.after_signal,
            "sent_after_kill_signal": self.after_signal,
            "lost_after_commit": 0,
            # Age at the kill of the oldest passage that was lost: how long before a power
            # cut an edge must arrive to be safe.
            "loss_window_ms_max": round(max(self.windows_ms, default=0.0), 1),
            "kills_with_loss": len(self.windows_ms),
            "last_commit_age_ms_max": round(max(self.fresh_ms, default=0.0), 1),
            "restart_ms_median": round(statistics.median(self.restart_ms), 1),
        }


def _kill_cycles(
    tmp_path: Path, broker_url: str, *, cycles: int, rate: float, seed: int, hq_process: bool
) -> dict:
    rng = random.Random(seed)
    hq_db = tmp_path / "hq.db"
    hq = _Hq(broker_url, hq_db, hq_process)
    rig = BoxRig(tmp_path, broker_url, inputs=fast_inputs(*PINS.items()), redeliver_after_s=5)
    rig.start()
    feeder = PassageFeeder(rig, rate, pins=PINS).start()
    tally = _Tally()
    epoch_start = time.monotonic_ns()
    try:
        for cycle in range(cycles):
            time.sleep(rng.uniform(0.2, 2.0))  # the fault's schedule: kill at a random moment
            t_kill = time.monotonic_ns()
            rig.kill()
            t_dead = time.monotonic_ns()
            epoch = [s for s in feeder.snapshot() if epoch_start <= s.sent_ns < t_dead]
            tally.check_kill(cycle, box_events(rig.store_path), epoch, t_kill)
            if hq.proc is not None and cycle % 10 == 9:
                hq.proc.kill()
                tally.hq_kills += 1
                time.sleep(rng.uniform(0.5, 3.0))  # the fault's schedule: HQ down a while
                hq.proc.start()
            t0 = time.monotonic_ns()
            rig.start()
            tally.restart_ms.append((time.monotonic_ns() - t0) / 1e6)
            epoch_start = time.monotonic_ns()
        _stop_gracefully(rig, feeder, rate, epoch_start, tally.lost)
    finally:
        feeder.stop()
        rig.stop()

    final = box_events(rig.store_path)
    check_contiguous(final)
    assert final[: len(tally.kept)] == tally.kept
    sent_keys = [(s.input, s.mono_ns) for s in feeder.sent]
    stored_keys = passage_keys(final)
    assert len(stored_keys) == len(set(stored_keys)), "a passage is in the store twice"
    assert set(stored_keys) == set(sent_keys) - tally.lost, "store differs from what the beam saw"
    try:
        counters = _hq_holds(hq_db, rig.box, final)
    finally:
        hq.stop()
    rig.close()
    return {
        "cycles": cycles,
        "passages_sent": len(sent_keys),
        "events_in_store": len(final),
        **tally.figures(),
        "hq_duplicates_dropped": counters["duplicates"],
        "hq_conflicts": counters["conflicts"],
        "rate_per_s": rate,
        "seed": seed,
    }


class _Hq:
    """HQ for the run: an in-process collector, or a `checkpoint hq run` process that the
    soak run SIGKILLs too."""

    def __init__(self, broker_url: str, hq_db: Path, process: bool) -> None:
        self.collector: Collector | None = None
        self.proc: HQProcess | None = None
        if process:
            self.proc = HQProcess(broker_url, hq_db).start()
        else:
            self.collector = Collector(broker_url, hq_db, gap_wait_s=1.0, heartbeat_s=0.5)
            self.collector.start()
            wait_for(self.collector.subscribed.is_set, 10, "HQ subscribed")

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        if self.proc is not None:
            self.proc.stop()


def _stop_gracefully(
    rig: BoxRig, feeder: PassageFeeder, rate: float, epoch_start: int, lost: set
) -> None:
    """A second's worth of passages into the last run, then a graceful stop, which must
    not cut off passages still in the feed socket."""
    wait_for(
        lambda: sum(s.sent_ns >= epoch_start for s in feeder.snapshot()) >= rate,
        30,
        "passages sent to the last run",
    )
    feeder.stop()
    want = {(s.input, s.mono_ns) for s in feeder.sent} - lost
    wait_for(
        lambda: want <= set(passage_keys(box_events(rig.store_path))),
        30,
        "the last passages stored",
        every=0.2,
    )


def _hq_holds(hq_db: Path, box: str, final: list[dict]) -> dict:
    """HQ ends up with exactly the store's events: same seqs, same bytes, each once, no
    conflict, one unbroken chain across the restarts. Returns HQ's counters for the box."""
    wait_for(
        lambda: hq_events(hq_db, box) == final,
        90,
        "HQ to hold every event of the box's store",
        every=0.5,
    )
    at_hq = passage_keys(hq_events(hq_db, box))
    assert len(at_hq) == len(set(at_hq)), "HQ holds a passage twice (under two seqs)"
    counters = hq_box_counters(hq_db, box)
    assert counters["conflicts"] == 0
    # Each restart continues the hash chain from the store's last event.
    assert hq_chain_breaks(hq_db, box) == 0
    return counters


def test_sigkill_while_passages_stream_loses_only_the_uncommitted_tail(tmp_path, broker):
    figures = _kill_cycles(tmp_path, broker.url, cycles=4, rate=25, seed=6, hq_process=False)
    report("crash", figures)


@pytest.mark.soak
def test_soak_sixty_sigkills_with_hq_killed_too(tmp_path, broker):
    seed = int(time.time()) % 10_000
    figures = _kill_cycles(tmp_path, broker.url, cycles=60, rate=40, seed=seed, hq_process=True)
    report("crash_soak", figures)
