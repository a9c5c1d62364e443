"""`checkpoint doctor`: the marshal's preflight, one verdict line: READY or NOT READY: why.

Doctor must not fight the running daemon for the hardware: lgpio lines are exclusive
and a second reader on the GPS port would steal its bytes. So it only *observes*:

* the daemon's retained status message on the broker (``{prefix}/{box}/status``, via
  `checkpoint.mqtt.Link` with the box's own credentials, which also proves the broker
  is reachable and the credentials accepted), then live ones for a few seconds so
  counters can be compared (is NMEA flowing? PPS? fix?), and with ``--walk-test``
  the box's events, waiting for the marshal to walk through the beam;
* the store file, opened read-only (`Store(..., readonly=True)`): integrity
  (``quick_check``), durability settings, row counts;
* free space on the store's filesystem; and ``systemctl is-active checkpoint`` where
  systemd runs.

`gather()` collects those `Facts`; `diagnose(facts)` (diagnosis.py, re-exported here)
is pure and turns them into a `Report` of checks (ok / warn / fail / info) and the
verdict. Warnings do not make a box NOT READY; failures do.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkpoint.contracts import Topics
from checkpoint.field import doctor_web
from checkpoint.field.diagnosis import diagnose, render
from checkpoint.field.facts import (  # re-exported: doctor is its callers' one door
    FAIL,
    INFO,
    MB,
    OK,
    WARN,
    Check,
    Facts,
    Limits,
    Report,
    Snapshot,
    baseline,
    usable,
)

# -- gathering -------------------------------------------------------------------------


def service_state(unit: str = "checkpoint.service") -> str:
    """`systemctl is-active UNIT`, or "unknown" where systemd is not running."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return "unknown"
    try:
        out = subprocess.run(
            ["systemctl", "is-active", unit], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _store_facts(facts: Facts, path: str, box: str, checkpoint: str) -> None:
    from checkpoint.box.store import Store
    from checkpoint.errors import StoreError

    facts.store_path = path
    try:
        usage = shutil.disk_usage(Path(path).parent)
        facts.disk_free, facts.disk_total = usage.free, usage.total
    except OSError:
        pass
    if not Path(path).exists():
        facts.store_error = f"no store at {path}: the daemon has never run with this config"
        return
    try:
        with Store(path, box=box, checkpoint=checkpoint, readonly=True) as store:
            store.check()
            facts.store_id = store.store_id
            facts.store_counts = store.counts()
            facts.store_pragmas = store.pragmas()
    except StoreError as e:
        facts.store_error = str(e)


def gather(
    config_file: str,
    *,
    walk_test_s: float | None = None,
    connect_timeout_s: float = 5.0,
    limits: Limits | None = None,
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
    service: Callable[[], str] = service_state,
) -> Facts:
    """Observe the box described by `config_file` (see the module docstring)."""
    from checkpoint import config as configmod
    from checkpoint.errors import CheckpointError

    lim = limits or Limits()
    facts = Facts(config_file=config_file, walk_test_s=walk_test_s)
    try:
        cfg = configmod.load(config_file)
    except CheckpointError as e:
        facts.config_error = str(e)
        return facts
    facts.box, facts.checkpoint = cfg.box, cfg.checkpoint
    facts.gps_port, facts.pps_pin = cfg.gps.port, cfg.gps.pps_pin
    facts.input_sources = {i.name: i.source for i in cfg.inputs}
    facts.broker_url = cfg.mqtt.broker
    facts.service = service()
    _store_facts(facts, cfg.store, cfg.box, cfg.checkpoint)
    _broker_facts(facts, cfg, lim, connect_timeout_s, say)
    facts.web_url = doctor_web.page_url(cfg)
    if facts.web_url:
        facts.web = doctor_web.probe(facts.web_url)
    return facts


def _broker_facts(
    facts: Facts, cfg: Any, lim: Limits, connect_timeout_s: float, say: Callable[[str], None]
) -> None:
    from checkpoint.errors import CheckpointError
    from checkpoint.mqtt import Link
    from checkpoint.support import read_secret

    topics = Topics(cfg.mqtt.prefix, cfg.box)
    status_topic, event_topic = topics.status, topics.event
    events: queue.Queue[Any] = queue.Queue()
    try:
        password = read_secret(cfg.mqtt.password_file, "mqtt.password_file")
        # A broker that authenticates boxes by client certificate: use the box's too.
        tls_client = {
            key: getattr(cfg.mqtt, key)
            for key in ("cert_file", "key_file")
            if getattr(cfg.mqtt, key, None) is not None
        }
        link = Link(
            cfg.mqtt.broker,
            f"checkpoint-doctor-{cfg.box}-{os.getpid()}",
            events.put,
            username=cfg.mqtt.username,
            password=password,
            ca_file=cfg.mqtt.ca_file,
            keepalive=cfg.mqtt.keepalive_s,
            subscriptions=[(status_topic, 1), (event_topic, 1)],
            **tls_client,
        )
    except CheckpointError as e:
        facts.broker_detail = f"{e} (doctor needs the box's credentials: run with sudo)"
        return
    link.start()
    try:
        _watch(facts, events, status_topic, event_topic, cfg, lim, connect_timeout_s, say)
    finally:
        link.stop()


@dataclass
class _Watch:
    """What doctor waits for on the broker (the box's statuses; a walk-test passage),
    and until when. Each message is handed to one method; `done` says when to stop."""

    facts: Facts
    lim: Limits
    status_interval_s: int
    say: Callable[[str], None]
    connect_deadline: float
    status_deadline: float = 0.0
    walk_deadline: float = 0.0

    def done(self, now: float) -> bool:
        facts = self.facts
        if facts.broker != "connected":
            return now >= self.connect_deadline
        status_done = _enough(facts, self.lim) or now >= self.status_deadline
        walk_done = (
            facts.walk_test_s is None or facts.walk_passage is not None or now >= self.walk_deadline
        )
        return status_done and walk_done

    def connected(self) -> None:
        facts = self.facts
        facts.broker = "connected"
        facts.broker_detail = ""
        # Long enough for the daemon's periodic status to arrive twice.
        self.status_deadline = time.monotonic() + min(30.0, 2 * self.status_interval_s + 3)
        if facts.walk_test_s is not None:
            self.say(
                f"walk test: walk through the beam now (waiting up to {facts.walk_test_s:g} s)"
            )
            self.walk_deadline = time.monotonic() + facts.walk_test_s

    def disconnected(self, reason: str) -> bool:
        """A failed connection attempt; True when the broker refused us (no use waiting)."""
        facts = self.facts
        if facts.broker == "connected":
            return False
        refused = "authori" in reason.lower() or "password" in reason.lower()
        facts.broker = "refused" if refused else "unreachable"
        facts.broker_detail = reason
        return refused

    def status(self, payload: bytes, retain: bool) -> None:
        try:
            st = json.loads(payload)
        except ValueError:
            return
        if isinstance(st, dict):
            self.facts.snapshots.append(Snapshot(time.monotonic(), not retain, st))

    def event(self, payload: bytes) -> None:
        """The walk test's passage: the first on a beam (any input if the box has none)."""
        facts = self.facts
        if facts.walk_test_s is None or facts.walk_passage is not None:
            return
        try:
            ev = json.loads(payload)
        except ValueError:
            return
        inputs = facts.input_sources
        walk_inputs = {n for n, s in inputs.items() if s == "beam"} or set(inputs)
        if isinstance(ev, dict) and ev.get("type") == "passage" and ev.get("input") in walk_inputs:
            facts.walk_passage = ev


def _watch(
    facts: Facts,
    events: queue.Queue[Any],
    status_topic: str,
    event_topic: str,
    cfg: Any,
    lim: Limits,
    connect_timeout_s: float,
    say: Callable[[str], None],
) -> None:
    from checkpoint.mqtt import Connected, Disconnected, Message, SubAck

    start = time.monotonic()
    watch = _Watch(facts, lim, cfg.status_interval_s, say, start + connect_timeout_s)
    while not watch.done(time.monotonic()):
        try:
            ev = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(ev, Connected):
            watch.connected()
        elif isinstance(ev, Disconnected):
            if watch.disconnected(ev.reason):
                break
        elif isinstance(ev, SubAck) and not ev.ok:
            facts.subscribe_error = ", ".join(ev.reasons)
        elif isinstance(ev, Message) and ev.topic == status_topic:
            watch.status(ev.payload, ev.retain)
        elif isinstance(ev, Message) and ev.topic == event_topic:
            watch.event(ev.payload)
    if facts.broker == "not checked":
        facts.broker = "unreachable"
        facts.broker_detail = f"no connection within {connect_timeout_s:g} s"
    facts.waited_s = time.monotonic() - start


def _enough(facts: Facts, lim: Limits) -> bool:
    """Doctor has seen enough status: live messages spanning a long enough window."""
    snaps = usable(facts.snapshots)
    if facts.snapshots and facts.snapshots[-1].status.get("state") != "ready":
        # A stopped or lost daemon: give it a moment to come back, then say so.
        return time.monotonic() - facts.snapshots[0].received_s > lim.min_window_s
    if not snaps or not snaps[-1].live:
        return False
    return snaps[-1].received_s - baseline(snaps).received_s >= lim.min_window_s


def run(
    config_file: str,
    *,
    walk_test_s: float | None = None,
    as_json: bool = False,
    out: Any = None,
) -> int:
    """Gather, diagnose, print; exit code 0 when READY, 1 otherwise."""
    out = out or sys.stdout
    facts = gather(config_file, walk_test_s=walk_test_s)
    report = diagnose(facts)
    if as_json:
        out.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        out.write(render(report) + "\n")
    return 0 if report.ready else 1


__all__ = [
    "FAIL",
    "INFO",
    "MB",
    "OK",
    "WARN",
    "Check",
    "Facts",
    "Limits",
    "Report",
    "Snapshot",
    "diagnose",
    "gather",
    "render",
    "run",
    "service_state",
]
