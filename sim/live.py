"""Live mode: a whole rally through real box daemons, a real broker and real HQ.

    broker (Mosquitto) ◄── box daemons (python -m checkpoint run) ◄── pins socket + pty
          ▲                     one per box, store in its box dir        ▲
          └── HQ collector (python -m checkpoint hq run)            Scheduler (sim)

The box clock is this machine's CLOCK_MONOTONIC. At the start the simulator reads
(mono0, utc0) once and gives every box a `BoxClock` with the box's crystal error;
from then on every PPS edge, NMEA byte and beam edge is placed on that clock and
its true UTC is exact. The GPS runs from the start; the first car leaves once the
boxes report `locked` (unless the scenario starts a receiver cold), so the timing
figures are locked-grade. Incidents (broker outage, link cut, box SIGKILL) are
performed by a director thread at their moment. At the end the simulator waits
until every box's last event is acknowledged by HQ, exports HQ's passages and
judges them (`sim.verdict`).

Everything started is stopped in `close()`, also on Ctrl-C or an error.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from checkpoint.errors import CheckpointError
from checkpoint.mqtt import parse_broker_url
from sim import boxconfig, hqclient, rallyoffice, verdict
from sim.boxclock import BoxClock
from sim.broker import Mosquitto
from sim.feed import BoxFeed, Scheduler, edge_items, gps_items
from sim.gps import GpsReceiver
from sim.monitor import Monitor
from sim.procs import Child
from sim.proxy import LinkProxy
from sim.scenario import Box, Incident, Scenario, ScenarioError
from sim.secure import Credentials
from sim.waits import wait_for
from sim.world import Rally

NS = 1_000_000_000
_START_MARGIN_NS = 2 * NS
_PROGRESS_EVERY_S = 3.0
# A box is killed only when no car has been at its beams for this long, so what it
# had seen is committed: SIGKILL is meant to test recovery, not to lose an edge that
# was still in a socket buffer.
_KILL_QUIET_NS = 300_000_000
_SOCKET_PATH_MAX = 100


class SimError(CheckpointError):
    """The live run could not go on (a process died, nothing locked, ...)."""


@dataclass
class Options:
    """Command-line options of `python -m sim run`."""

    broker: str | None = None
    workdir: Path | None = None
    #: Credentials for a secured broker, and HQ's own listener (sim.secure).
    credentials: Credentials | None = None
    hq_broker: str | None = None
    progress: IO[str] | None = sys.stderr


class LiveRun:
    """One live rally; `run()` returns the verdict, `close()` stops everything."""

    def __init__(self, sc: Scenario, opts: Options) -> None:
        self.sc = sc
        self.opts = opts
        self.own_workdir = opts.workdir is None
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="checkpoint-sim-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker: Mosquitto | None = None
        self.broker_url = ""
        self.feeds: dict[str, BoxFeed] = {}
        self.children: dict[str, Child] = {}
        self.proxies: dict[str, LinkProxy] = {}
        self.receivers: dict[str, GpsReceiver] = {}
        self.clocks: dict[str, BoxClock] = {}
        self.hq: Child | None = None
        self.monitor: Monitor | None = None
        self.scheduler: Scheduler | None = None
        self.rally: Rally | None = None
        self.mono0 = self.utc0 = 0
        self._abort = threading.Event()
        self._director: threading.Thread | None = None
        self._incidents_done = threading.Event()
        self.incident_log: list[str] = []
        self.director_error: BaseException | None = None
        self._sock_dir: str | None = None
        self._down: set[str] = set()
        self.boxes_started_wall_ns = 0
        self._last_progress = 0.0
        self.t0 = time.monotonic()

    # -- helpers --------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self.opts.progress is not None:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", file=self.opts.progress)
            self.opts.progress.flush()

    def utc_now(self) -> int:
        """True UTC now, as the simulation defines it (boxes differ by their ppm)."""
        return self.utc0 + time.monotonic_ns() - self.mono0

    def mono_at(self, utc: int) -> int:
        return self.mono0 + utc - self.utc0

    def _check(self) -> None:
        """Raise if a part of the run has failed."""
        if self.scheduler is not None and self.scheduler.error is not None:
            raise SimError(f"the feed scheduler failed: {self.scheduler.error!r}")
        if self.director_error is not None:
            raise SimError(f"an incident failed: {self.director_error!r}")
        if self.hq is not None and not self.hq.alive:
            raise SimError(f"the HQ collector exited:\n{self.hq.tail()}")
        for name, child in self.children.items():
            if child.proc is not None and not child.alive and not self._expected_down(name):
                raise SimError(f"box {name} exited ({child.proc.returncode}):\n{child.tail()}")

    def _expected_down(self, box: str) -> bool:
        return box in self._down

    def _sleep(self, seconds: float) -> None:
        if self._abort.wait(seconds):
            self._check()  # the reason, if a part failed
            raise SimError("aborted")

    def _wait(self, done: Callable[[], bool], timeout_s: float, what: str, **kw: Any) -> None:
        """`wait_for`, polling five times a second with the run's sleep (an abort stops
        it at once); a timeout is a SimError unless `error` says otherwise."""
        kw.setdefault("error", SimError)
        wait_for(done, timeout_s, what, 0.2, sleep=self._sleep, **kw)

    # -- setup ----------------------------------------------------------------------
    def _sock_path(self, box: str) -> str:
        path = self.workdir / "boxes" / box / "feed.sock"
        if len(str(path)) <= _SOCKET_PATH_MAX:
            return str(path)
        # Unix socket paths are limited (108 bytes); deep work dirs get a short one.
        if self._sock_dir is None:
            self._sock_dir = tempfile.mkdtemp(prefix="cpsim-")
        return f"{self._sock_dir}/{box}.sock"

    def setup(self) -> None:
        """Broker, every box's files and feeds, HQ and the monitor; then the daemons,
        until each has connected its pins."""
        self._start_broker()
        # True UTC is this machine's wall clock minus the boxes' system clock error
        # (all daemons read this one CLOCK_REALTIME, so they share the error).
        self.mono0 = time.monotonic_ns()
        self.utc0 = time.time_ns() - round(self.sc.sysclock_error_s * NS)
        for b in self.sc.boxes:
            self._prepare_box(b)
        self._start_hq()
        self._start_boxes()

    def _start_broker(self) -> None:
        sc = self.sc
        if self.opts.broker:
            if any(i.kind == "broker_outage" for i in sc.incidents):
                raise ScenarioError(
                    f"{sc.source}: a broker_outage needs the simulator's own broker; drop --broker"
                )
            parse_broker_url(self.opts.broker)
            self.broker_url = self.opts.broker
        else:
            self.broker = Mosquitto(workdir=self.workdir / "broker").start()
            self.broker_url = self.broker.url
        self.say(f"broker {self.broker_url}; work dir {self.workdir}")

    def _prepare_box(self, b: Box) -> None:
        """Box `b`'s clock, GPS receiver, feed, link (through a proxy if it is to be
        cut), config file and daemon process (not started yet)."""
        sc = self.sc
        boxdir = self.workdir / "boxes" / b.id
        boxdir.mkdir(parents=True, exist_ok=True)
        # A reused work dir starts a new rally: a new store, a new capture.
        for stale in ("box.db", "box.db-wal", "box.db-shm", "capture.jsonl"):
            (boxdir / stale).unlink(missing_ok=True)
        clock = BoxClock(self.mono0, self.utc0, b.clock_ppm, b.clock_drift_ppm_per_h)
        cp = sc.control(b.control)
        self.clocks[b.id] = clock
        self.receivers[b.id] = GpsReceiver(
            b.receiver,
            clock,
            seed=f"{sc.seed}/{b.id}",
            power_on_utc_ns=self.utc0,
            lat=cp.lat,
            lon=cp.lon,
        )
        feed = BoxFeed(b.id, self._sock_path(b.id))
        self.feeds[b.id] = feed
        url = self.broker_url
        if any(i.kind == "link_cut" and i.box == b.id for i in sc.incidents):
            u = parse_broker_url(self.broker_url)
            proxy = LinkProxy(u.host, u.port)
            self.proxies[b.id] = proxy
            url = proxy.url
        cfg = boxdir / "box.toml"
        creds = self.opts.credentials
        cfg.write_text(
            boxconfig.render(
                sc,
                b,
                gps_port=feed.port,
                broker=url,
                capture="capture.jsonl",
                mqtt=creds.box_toml(b.id) if creds else None,
            )
        )
        self.children[b.id] = Child(
            b.id,
            ["run", "--config", str(cfg)],
            boxdir / "daemon.log",
            env={"CHECKPOINT_SIM_FEED": feed.sock_path},
        )

    def _start_hq(self) -> None:
        """HQ's collector on a fresh database, and the monitor beside it."""
        for stale in ("hq.db", "hq.db-wal", "hq.db-shm"):
            (self.workdir / stale).unlink(missing_ok=True)
        creds = self.opts.credentials
        hq_url = self.opts.hq_broker or self.broker_url
        self.hq = hqclient.collector(
            self.workdir / "hq.db",
            hq_url,
            self.sc.prefix,
            self.workdir / "hq.log",
            [*creds.hq_args(), "--client-id", "checkpoint-sim-hq"] if creds else [],
        )
        self.hq.start()
        self.monitor = Monitor(hq_url, self.sc.prefix, **(creds.hq_link() if creds else {}))
        self.monitor.start()

    def _start_boxes(self) -> None:
        """The GPS feeds, then the daemons; until every box has connected its pins."""
        self.scheduler = Scheduler(self.feeds)
        self.scheduler.on_error = lambda _e: self._abort.set()
        for b in self.sc.boxes:
            self.scheduler.add(gps_items(b.id, self.receivers[b.id]))
        self.scheduler.start()
        # A broker given with --broker may hold retained statuses of an earlier run:
        # only what arrives after the boxes start counts.
        self.boxes_started_wall_ns = time.time_ns()
        for child in self.children.values():
            child.start()
        unconnected = [box for box, feed in self.feeds.items() if not feed.connected.is_set()]

        def connected() -> bool:
            self._check()
            unconnected[:] = [b for b in unconnected if not self.feeds[b].connected.is_set()]
            return not unconnected

        def which() -> str:
            box = unconnected[0]
            return f"box {box} never connected its pins:\n{self.children[box].tail()}"

        self._wait(connected, 60, "every box to connect its pins", detail=which)
        self.say(f"{len(self.children)} box daemons and HQ running")

    # -- phases -----------------------------------------------------------------------
    def wait_for_lock(self) -> None:
        sc = self.sc
        if not sc.wait_for_lock:
            return
        boxes = [b.id for b in sc.boxes if b.receiver.cold_start_s == 0]
        cold = [b.id for b in sc.boxes if b.receiver.cold_start_s > 0]
        if cold:
            self.say(f"not waiting for {', '.join(cold)}: their GPS starts cold")
        assert self.monitor is not None
        monitor = self.monitor
        states: dict[str, str | None] = {}

        def locked() -> bool:
            self._check()
            status, at = monitor.snapshot()
            states.update(
                (b, status[b].get("clock") if at.get(b, 0) > self.boxes_started_wall_ns else None)
                for b in boxes
            )
            if all(s == "locked" for s in states.values()):
                return True
            self._progress(lambda: "waiting for GPS lock: " + self._box_line())
            return False

        def seen() -> str:
            return ", ".join(f"{b} {s or 'no status'}" for b, s in states.items())

        self._wait(locked, sc.lock_timeout_s, "GPS lock", detail=seen)
        self.say("GPS locked at " + ", ".join(boxes))

    def start_rally(self) -> None:
        assert self.scheduler is not None
        start = self.utc_now() + _START_MARGIN_NS
        start -= start % 1_000_000
        for rx in self.receivers.values():
            rx.rally_start_utc_ns = start
        self.rally = Rally(self.sc, start, self.clocks)
        if self.sc.regularity is not None:
            # The organiser's files, written now that the start is known, and
            # loaded into HQ through its CLI: HQ identifies the cars from them.
            ev, en = rallyoffice.write(self.sc, self.workdir, start)
            hqclient.office_setup(self.workdir / "hq.db", ev, en)
            self.say(f"event file and entry list ({self.sc.cars.count} cars) loaded at HQ")
        for box, br in self.rally.boxes.items():
            self.scheduler.add(edge_items(box, br.edges))
        truth = self.rally.truth
        self.say(
            f"rally start: {self.sc.cars.count} cars, {len(truth)} passages to time, "
            f"last car at the finish in {(self.rally.end_utc_ns() - start) / NS:.0f} s"
        )
        if self.sc.incidents:
            self._director = threading.Thread(target=self._direct, name="director", daemon=True)
            self._director.start()

    def ride(self) -> None:
        """Until the last edge has gone out; progress every few seconds."""
        assert self.rally is not None and self.scheduler is not None
        end_mono = self.mono_at(self.rally.end_utc_ns())
        while time.monotonic_ns() < end_mono + NS:
            self._check()
            self._progress(self._rally_line)
            self._sleep(0.2)
        if self._director is not None:
            while not self._incidents_done.is_set():
                self._check()
                self._progress(lambda: "waiting for the last incident to end")
                self._sleep(0.2)

    def drain(self) -> bool:
        """Wait until HQ has acknowledged every box's last event; False on timeout."""
        assert self.monitor is not None
        monitor = self.monitor
        since = time.time_ns() + NS // 2
        pending: list[str] = []

        def drained() -> bool:
            self._check()
            status, at = monitor.snapshot()
            pending.clear()
            for b in self.sc.boxes:
                st = status.get(b.id)
                fresh = at.get(b.id, 0) >= since
                done = (
                    st is not None
                    and fresh
                    and st.get("backlog") == 0
                    and st.get("acked_upto") == st.get("last_seq")
                    # Locked again (a restarted or cold box) and no passage left at
                    # system-clock or NMEA grade: its re-stamps are out.
                    and st.get("clock") == "locked"
                    and st.get("coarse_passages") == 0
                )
                if not done:
                    pending.append(b.id)
            if not pending:
                return True
            self._progress(lambda p=pending: "draining: " + self._box_line(p))
            return False

        try:
            self._wait(drained, self.sc.drain_timeout_s, "HQ's acks", error=TimeoutError)
        except TimeoutError:
            self.say(f"drain timeout: still pending at {', '.join(pending)}")
            return False
        self.say("every box's events are acknowledged by HQ")
        return True

    def judge(self) -> verdict.Verdict:
        assert self.rally is not None and self.scheduler is not None
        db = self.workdir / "hq.db"
        rows = hqclient.export(db)
        delivery = self.scheduler.delivery
        need: dict[tuple[str, str, str], int] = {}
        for br in self.rally.boxes.values():
            for e in br.edges:
                if e.key is not None:
                    need[e.key] = need.get(e.key, 0) + 1
        blind = {k for k, n in need.items() if delivery.edges[k] < n}
        received = hqclient.received(db)
        truth = [t.as_dict() for t in self.rally.truth]
        # Boxes whose last status said locked: none of their passages may end coarse.
        status, _ = self.monitor.snapshot() if self.monitor is not None else ({}, {})
        locked = {b for b, st in status.items() if st.get("clock") == "locked"}

        def judge(rows: list[dict[str, Any]]) -> verdict.Verdict:
            return verdict.judge(
                truth,
                rows,
                blind=blind,
                sent_wall_ns=delivery.lead_sent_wall_ns,
                received_wall_ns=received,
                locked=locked,
            )

        v = judge(rows)
        if self.sc.marshal_assign and v.matches:
            n = hqclient.assign(db, [(b, s, q, car) for (b, s, q), car in v.matches.items()])
            self.say(f"marshal assigned {n} car numbers at HQ")
            rows = hqclient.export(db)
            v = judge(rows)
            v.unassigned = sum(1 for r in rows if r.get("car") is None and not r.get("void"))
        office_files = rallyoffice.read(self.workdir)
        if self.sc.regularity is not None and office_files is not None:
            event, entries = office_files
            top = hqclient.results_top(db, 10)
            rallyoffice.judge(v, rows, truth, event, entries, top)
        return v

    def feed_lateness_ms(self) -> dict[str, float | None]:
        """How late car edges left the simulator after their tick (p50/p99/max, ms).

        A diagnostic of this machine's scheduling, which the verdict is immune to.
        """
        late = self.scheduler.delivery.lateness_ns if self.scheduler else []
        return {
            k: None if v is None else round(v / 1e6, 3)
            for k, v in (
                ("p50", verdict.percentile(late, 50)),
                ("p99", verdict.percentile(late, 99)),
                ("max", max(late, default=None)),
            )
        }

    def run(self) -> verdict.Verdict:
        """The whole rally; always stops everything it started."""
        try:
            self.setup()
            self.wait_for_lock()
            self.start_rally()
            self.ride()
            self.drain()
            return self.judge()
        finally:
            self.close()

    # -- incidents --------------------------------------------------------------------
    def _direct(self) -> None:
        try:
            for mono, _, action, label in sorted(self._timeline()):
                self._wait_mono(mono)
                self.say(label)
                action()
            self._incidents_done.set()
            # Stay alive: Linux sends the parent-death signal when the *thread* that
            # started a child ends, and a restarted box was started here.
            self._abort.wait()
        except SimError:
            return
        except BaseException as e:
            self.director_error = e
            self._abort.set()

    def _wait_mono(self, mono: int) -> None:
        while True:
            left = mono - time.monotonic_ns()
            if left <= 0:
                return
            self._sleep(min(left / NS, 0.5))

    def _timeline(self) -> list[tuple[int, int, Callable[[], None], str]]:
        """Every incident as (tick, order, action, label): a begin and an end each.

        Incidents may overlap; one thread performs the actions in tick order.
        """
        assert self.rally is not None
        start = self.mono_at(self.rally.start_utc_ns)
        out: list[tuple[int, int, Callable[[], None], str]] = []
        for n, inc in enumerate(self.sc.incidents):
            at = start + round(inc.at_s * NS)
            if inc.kind == "box_kill" and inc.box is not None:
                at = self._quiet_moment(inc.box, at)
            what = f"{inc.kind}{' ' + inc.box if inc.box else ''}"
            self.incident_log.append(f"{what} at +{(at - start) / NS:.1f} s for {inc.down_s:g} s")
            begin, finish = self._actions(inc)
            out.append((at, 2 * n, begin, f"incident: {what} for {inc.down_s:g} s"))
            out.append((at + round(inc.down_s * NS), 2 * n + 1, finish, f"incident over: {what}"))
        return out

    def _actions(self, inc: Incident) -> tuple[Callable[[], None], Callable[[], None]]:
        """(begin, end) of one incident."""
        if inc.kind == "broker_outage":
            broker = self.broker
            assert broker is not None
            return broker.kill, lambda: broker.start()
        if inc.kind == "link_cut":
            proxy = self.proxies[inc.box or ""]
            return lambda: proxy.cut(inc.mode), proxy.restore
        box = inc.box or ""

        def kill() -> None:
            self._down.add(box)
            self.feeds[box].down()
            self.children[box].kill()

        def restart() -> None:
            self.feeds[box].flush_port()
            self.children[box].start()
            self._down.discard(box)

        return kill, restart

    def _quiet_moment(self, box: str, mono: int) -> int:
        """The first tick >= mono with no car at the box's beams for a while."""
        assert self.rally is not None
        spans = [(t.tick, t.end_tick) for t in self.rally.boxes[box].truth]
        t = mono
        moved = True
        while moved:
            moved = False
            for lo, hi in spans:
                if lo <= t + _KILL_QUIET_NS // 6 and t < hi + _KILL_QUIET_NS:
                    t = hi + _KILL_QUIET_NS + 1
                    moved = True
        return t

    # -- progress -----------------------------------------------------------------------
    def _progress(self, line: object) -> None:
        now = time.monotonic()
        if now - self._last_progress >= _PROGRESS_EVERY_S:
            self._last_progress = now
            self.say(line() if callable(line) else str(line))

    def _box_line(self, only: list[str] | None = None) -> str:
        assert self.monitor is not None
        status, _ = self.monitor.snapshot()
        parts = []
        for b in self.sc.boxes:
            if only is not None and b.id not in only:
                continue
            st = status.get(b.id)
            if b.id in self._down:
                parts.append(f"{b.id} DOWN")
            elif st is None or st.get("state") != "ready":
                parts.append(f"{b.id} {st.get('state') if st else 'no status'}")
            else:
                unc = st.get("uncertainty_ns")
                unc_s = f"±{_short(unc)}" if isinstance(unc, int) else ""
                part = f"{b.id} {st.get('clock')}{unc_s}"
                if st.get("backlog") or st.get("acked_upto") != st.get("last_seq"):
                    acked = f"{st.get('acked_upto')}/{st.get('last_seq')}"
                    part += f" backlog {st.get('backlog')} acked {acked}"
                parts.append(part)
        return " | ".join(parts)

    def _rally_line(self) -> str:
        assert self.rally is not None and self.monitor is not None
        now = time.monotonic_ns()
        last = self.sc.controls[-1].id
        finish = [t for t in self.rally.truth if t.checkpoint == last and t.input == "beam"]
        through = sum(1 for t in finish if t.tick <= now)
        due = sum(1 for t in self.rally.truth if t.tick <= now)
        at_hq = hqclient.event_count(self.workdir / "hq.db")
        return (
            f"finished {through}/{len(finish)} cars; passages {due}/{len(self.rally.truth)}, "
            f"published {self.monitor.passages_seen}, HQ has {at_hq} events | " + self._box_line()
        )

    # -- teardown -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything started, in order: feed, daemons, HQ, proxies, broker.

        Every step runs even if an earlier one failed, so nothing is left running.
        """
        self._abort.set()
        steps: list[Callable[[], object]] = []
        if self.scheduler is not None:
            steps.append(self.scheduler.stop)
        # SIGTERM to all boxes first, then wait: they shut down in parallel.
        steps += [c.terminate for c in self.children.values()]
        steps += [c.stop for c in self.children.values()]
        if self.monitor is not None:
            steps.append(self.monitor.stop)
        if self.hq is not None:
            steps.append(self.hq.stop)
        steps += [p.close for p in self.proxies.values()]
        if self.broker is not None:
            steps.append(self.broker.stop)
        steps += [f.close for f in self.feeds.values()]
        if self._sock_dir is not None:
            steps.append(lambda: shutil.rmtree(self._sock_dir or "", ignore_errors=True))
        errors = []
        for step in steps:
            try:
                step()
            except Exception as e:  # keep going: the next process must still be stopped
                errors.append(repr(e))
        if errors:
            self.say("while stopping: " + "; ".join(errors))

    def cleanup(self, keep: bool) -> None:
        """Remove a work directory the simulator made itself, unless asked to keep it."""
        if self.own_workdir and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _short(ns: int) -> str:
    if ns < 10_000:
        return f"{ns / 1000:.1f}µs"
    if ns < 10_000_000:
        return f"{ns / 1000:.0f}µs"
    if ns < 10 * NS:
        return f"{ns / 1e6:.0f}ms"
    return "big"
