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

`gather()` collects those `Facts`; `diagnose(facts)` is pure and turns them into a
`Report` of checks (ok / warn / fail / info) and the verdict. Warnings do not make a
box NOT READY; failures do.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from checkpoint.contracts import Topics
from checkpoint.core import readiness
from checkpoint.field import doctor_web

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
MB = 1024 * 1024


@dataclass(frozen=True)
class Snapshot:
    """One status message: when doctor received it (monotonic s) and whether it was live."""

    received_s: float
    live: bool
    status: dict[str, Any]


@dataclass
class Facts:
    """Everything doctor observed; `diagnose` needs nothing else."""

    config_file: str = ""
    config_error: str | None = None
    box: str = ""
    checkpoint: str = ""
    gps_port: str = ""
    pps_pin: str = ""
    input_sources: dict[str, str] = field(default_factory=dict)
    broker_url: str = ""
    # "connected", "refused", "unreachable" or "not checked"
    broker: str = "not checked"
    broker_detail: str = ""
    subscribe_error: str | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    waited_s: float = 0.0
    walk_test_s: float | None = None
    walk_passage: dict[str, Any] | None = None
    store_path: str = ""
    store_error: str | None = None
    store_id: str | None = None
    store_counts: dict[str, int] | None = None
    store_pragmas: dict[str, Any] | None = None
    disk_free: int | None = None
    disk_total: int | None = None
    # "active", "inactive", "failed", "activating", ... or "unknown" (no systemd)
    service: str = "unknown"
    # The marshal page: its URL ("" = not enabled) and doctor_web.probe's answer.
    web_url: str = ""
    web: str = "off"


@dataclass(frozen=True)
class Limits:
    """Thresholds; defaults suit a box on an SD card timing to the tenth."""

    min_free_bytes: int = 200 * MB
    warn_free_bytes: int = 1024 * MB
    max_uncertainty_ns: int = 100_000
    warn_backlog: int = 100
    # Counters are compared over at least this long before "nothing arrives" is said.
    min_window_s: float = 2.5
    # The GPS burst ending later than this after the pulse, or filling more than this
    # share of the serial line, is a warning: the next sentence set or baud rate up and
    # the receiver starts dropping output (gps configure fixes both).
    late_burst_ms: int = 800  # median end of the burst
    overrun_burst_ms: int = 950  # latest end seen: about to pass the next pulse
    max_line_load: float = 0.85


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    text: str
    short: str = ""


@dataclass
class Report:
    checks: list[Check]

    @property
    def ready(self) -> bool:
        return not any(c.level == FAIL for c in self.checks)

    @property
    def verdict(self) -> str:
        fails = [c.short or c.text for c in self.checks if c.level == FAIL]
        return "READY" if not fails else "NOT READY: " + "; ".join(fails)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "verdict": self.verdict,
            "checks": [asdict(c) for c in self.checks],
        }


# -- pure diagnosis ------------------------------------------------------------------


def _lines(fix: dict[str, Any]) -> int:
    """Every NMEA line the daemon's parser saw (a no_fix line is both accepted and rejected)."""
    rejects = fix.get("rejects") or {}
    return (
        int(fix.get("accepted", 0))
        + sum(int(v) for v in rejects.values())
        - int(rejects.get("no_fix", 0))
        + int(fix.get("ignored", 0))
    )


def _counters(st: dict[str, Any]) -> tuple[int, int, int, int]:
    fix = st.get("fix") or {}
    return (
        _lines(fix),
        int(fix.get("accepted", 0)),
        int(fix.get("valid", 0)),
        int(st.get("pps_pulses") or 0),
    )


def _baseline(snaps: list[Snapshot]) -> Snapshot:
    """The earliest snapshot of the latest daemon run (counters never go down within one)."""
    last = _counters(snaps[-1].status)
    for snap in snaps:
        if all(a <= b for a, b in zip(_counters(snap.status), last, strict=True)):
            return snap
    return snaps[-1]


def _usable(snaps: list[Snapshot]) -> list[Snapshot]:
    return [s for s in snaps if s.status.get("state") == "ready"]


def diagnose(facts: Facts, limits: Limits | None = None) -> Report:
    """Facts → checks and verdict. Pure: no I/O, no clock."""
    lim = limits or Limits()
    checks: list[Check] = []
    add = checks.append
    if facts.config_error:
        add(Check("config", FAIL, facts.config_error, "config file unusable"))
        return Report(checks)
    add(Check("config", OK, f"{facts.config_file}: box {facts.box} at {facts.checkpoint}"))
    _service(facts, add)
    _broker(facts, add)
    snaps = _usable(facts.snapshots)
    if _daemon(facts, snaps, add):
        _gps(facts, snaps, lim, add)
        _inputs(facts, snaps, add)
        _walk(facts, add)
        _delivery(facts, snaps[-1].status, lim, add)
    _store(facts, snaps, add)
    _disk(facts, lim, add)
    _web_check(facts.web_url, facts.web, add)
    return Report(checks)


def _service(f: Facts, add: Callable[[Check], None]) -> None:
    if f.service == "active":
        add(Check("service", OK, "checkpoint.service is active"))
    elif f.service == "unknown":
        add(Check("service", INFO, "systemd not running here: service state not checked"))
    else:
        add(
            Check(
                "service",
                FAIL,
                f"checkpoint.service is {f.service}: sudo systemctl restart checkpoint; "
                "see journalctl -u checkpoint -n 50",
                f"service {f.service}",
            )
        )


def _broker(f: Facts, add: Callable[[Check], None]) -> None:
    if f.broker == "connected":
        add(Check("broker", OK, f"broker {f.broker_url} reachable, credentials accepted"))
        if f.subscribe_error:
            add(
                Check(
                    "broker",
                    FAIL,
                    f"broker refused doctor's subscription ({f.subscribe_error}): "
                    "the box user may not read its own status topic (broker ACL)",
                    "not authorised to read status",
                )
            )
    elif f.broker == "refused":
        add(
            Check(
                "broker",
                FAIL,
                f"broker {f.broker_url} refused the box's login: {f.broker_detail}; check "
                "mqtt.username and the password file",
                "broker refused login",
            )
        )
    elif f.broker == "unreachable":
        add(
            Check(
                "broker",
                FAIL,
                f"broker {f.broker_url} unreachable ({f.broker_detail}): check the network; "
                "passages are kept on the card and sent when the link is back",
                "broker unreachable",
            )
        )
    else:
        add(Check("broker", FAIL, f"broker not checked: {f.broker_detail}", "broker not checked"))


def _daemon(f: Facts, snaps: list[Snapshot], add: Callable[[Check], None]) -> bool:
    """The daemon's own report; True when there is a live one to judge the rest by."""
    if f.broker != "connected":
        add(Check("daemon", INFO, "no broker: GPS, clock and sensors cannot be checked"))
        return False
    if not f.snapshots:
        add(
            Check(
                "daemon",
                FAIL,
                f"no status from box {f.box} on the broker: the daemon never connected "
                "(is it running? same broker and prefix?)",
                "no status from the daemon",
            )
        )
        return False
    latest = f.snapshots[-1].status
    state = latest.get("state")
    if state != "ready":
        why = {
            "lost": "its connection died without a goodbye (crash, power or network loss)",
            "offline": "it was stopped",
        }.get(str(state), f"state {state!r}")
        add(Check("daemon", FAIL, f"daemon not running: {why}", f"daemon {state}"))
        return False
    if not any(s.live for s in snaps):
        add(
            Check(
                "daemon",
                FAIL,
                f"only an old status: no update within {f.waited_s:.0f} s (daemon hung or "
                "its link is down)",
                "daemon status stale",
            )
        )
        return False
    add(
        Check(
            "daemon",
            OK,
            f"daemon {latest.get('version', '?')} reporting, store {latest.get('store', '?')}, "
            f"last seq {latest.get('last_seq', '?')}",
        )
    )
    return True


def _gps(f: Facts, snaps: list[Snapshot], lim: Limits, add: Callable[[Check], None]) -> None:
    latest = snaps[-1].status
    base = _baseline(snaps)
    window = snaps[-1].received_s - base.received_s
    lines0, acc0, valid0, pps0 = _counters(base.status)
    lines1, acc1, valid1, pps1 = _counters(latest)
    confirmed = window >= lim.min_window_s
    span = f"in {window:.0f} s" if confirmed else "so far"
    port = f.gps_port or "the GPS port"
    if not latest.get("gps_port"):
        add(
            Check(
                "gps",
                FAIL,
                f"GPS port {port} is not open: check the receiver is fitted and /dev/gps0 "
                "exists (udev rule, enable_uart=1)",
                "GPS port not open",
            )
        )
        receiving = False
    elif lines1 == 0 or (confirmed and lines1 == lines0):
        add(
            Check(
                "gps",
                FAIL,
                f"no NMEA from the GPS {span}: port {port} is open but silent; check the "
                "TX→RX wire and gps.baudrate",
                "no GPS data",
            )
        )
        receiving = False
    elif acc1 == acc0 and confirmed:
        add(
            Check(
                "gps",
                FAIL,
                f"GPS sends data but no readable time sentence {span} (rejects: "
                f"{(latest.get('fix') or {}).get('rejects')}): wrong baud rate or RMC/ZDA off",
                "GPS data unreadable",
            )
        )
        receiving = False
    else:
        add(Check("gps", OK, f"NMEA arriving ({lines1 - lines0} lines {span})"))
        receiving = True
        _burst(f, latest, lim, add)

    has_fix = valid1 > valid0 if confirmed else valid1 > 0
    if receiving:
        if has_fix:
            add(Check("fix", OK, "GPS has a fix"))
        else:
            add(
                Check(
                    "fix",
                    FAIL,
                    f"GPS has no fix {span} (status V): give the antenna open sky; a cold "
                    "start takes a few minutes",
                    "no GPS fix",
                )
            )

    pulses = pps1 - pps0
    if pulses > 0 or (not confirmed and pps1 > 0):
        # Status messages are not aligned to the pulses: a window of W s holds up to
        # W + 2 pulse counts, so a rate (3 pulses / 2.1 s = "1.4/s") is a sampling
        # artefact. Only a count beyond that slack is noise.
        noisy = confirmed and window > 0 and pulses > window * 1.5 + 2
        rate = (
            f" ({pulses} in {window:.0f} s: more than one a second, noise on the PPS line?)"
            if noisy
            else (" (one a second)" if confirmed and window > 0 else "")
        )
        level = WARN if noisy else OK
        add(Check("pps", level, f"PPS pulses on {f.pps_pin or 'the PPS pin'}{rate}"))
    elif has_fix:
        add(
            Check(
                "pps",
                FAIL,
                f"no PPS on {f.pps_pin or 'the PPS pin'} {span} although the GPS has a fix: "
                "check the PPS wire (and that no pps-gpio overlay claims the pin)",
                "no PPS",
            )
        )
    else:
        add(
            Check(
                "pps",
                FAIL,
                f"no PPS {span} (a receiver set up by `checkpoint gps configure` pulses "
                "only with a fix)",
                "no PPS",
            )
        )

    clock = latest.get("clock")
    unc = latest.get("uncertainty_ns")
    unc_text = f"±{unc / 1000:.1f} µs" if isinstance(unc, int | float) else "± unknown"
    alarms = latest.get("alarms") or {}
    if "gps" in alarms:
        add(Check("clock", FAIL, f"{alarms['gps']}", "GPS convention mismatch"))
    # The one readiness verdict (core.readiness), as the marshal page and the LED judge.
    level = readiness.clock_level(latest, lim.max_uncertainty_ns)
    if clock == "locked":
        if level == readiness.BAD:
            add(
                Check(
                    "clock",
                    FAIL,
                    f"locked but uncertainty {unc_text} exceeds "
                    f"{lim.max_uncertainty_ns / 1000:.0f} µs",
                    "clock uncertainty too large",
                )
            )
        else:
            add(Check("clock", OK, f"clock locked to GPS PPS, {unc_text}"))
    else:
        why = {
            "holdover": "holdover: PPS lost, times are extrapolated and degrading",
            "nmea": "NMEA only (millisecond grade): waiting for PPS lock",
            "unsynced": "unsynced: no GPS time at all, system clock only",
        }.get(str(clock), f"clock state {clock!r}")
        # Holdover within the bound still times as promised: a warning, not a failure.
        worst = WARN if level == readiness.WARN else FAIL
        add(Check("clock", worst, f"{why} ({unc_text})", f"clock {clock}"))


def _burst(f: Facts, st: dict[str, Any], lim: Limits, add: Callable[[Check], None]) -> None:
    """Warn when the receiver's output ends late in the second or nearly fills the line."""
    burst = st.get("gps_burst") or {}
    end, latest = burst.get("end_ms"), burst.get("end_ms_max")
    load, size = burst.get("line_load"), burst.get("bytes_per_s")
    if not isinstance(end, int | float) or not isinstance(latest, int | float):
        return
    late = end > lim.late_burst_ms or latest > lim.overrun_burst_ms
    full = isinstance(load, int | float) and load > lim.max_line_load
    if not (late or full):
        return
    share = f", {load:.0%} of the serial line" if isinstance(load, int | float) else ""
    add(
        Check(
            "gps-burst",
            WARN,
            f"the GPS output ends {end:.0f} ms after the pulse (latest {latest:.0f} ms; "
            f"{size} bytes a second{share}): "
            "the receiver sends more than its baud rate carries comfortably and drops "
            "sentences once it overflows; run `checkpoint gps configure` (turns off "
            "GSV/GSA/GLL/VTG) or raise the receiver's baud rate and gps.baudrate to match",
        )
    )


def _inputs(f: Facts, snaps: list[Snapshot], add: Callable[[Check], None]) -> None:
    latest = snaps[-1].status
    inputs = latest.get("inputs") or {}
    base_inputs = _baseline(snaps).status.get("inputs") or {}
    if not inputs:
        add(Check("inputs", FAIL, "the daemon reports no inputs", "no inputs"))
    for name, info in sorted(inputs.items()):
        manual = f.input_sources.get(name) == "manual"
        if info.get("fault"):
            add(
                Check(
                    f"input:{name}",
                    FAIL,
                    f"{name} is chattering (edges dropped): check wiring and sensor supply, "
                    "clean the reflector",
                    f"{name} chattering",
                )
            )
        elif info.get("broken") and all(
            ((s.status.get("inputs") or {}).get(name) or {}).get("broken") for s in snaps
        ):
            text = (
                f"{name} reads pressed at idle: button stuck or wire shorted"
                if manual
                else f"{name} beam blocked at idle: aim sensor and reflector, clear the path"
            )
            add(Check(f"input:{name}", FAIL, text, f"{name} {'stuck' if manual else 'blocked'}"))
        else:
            glitches = int(info.get("glitches") or 0) - int(
                (base_inputs.get(name) or {}).get("glitches") or 0
            )
            what = _input_label("button" if manual else "beam", name)
            if glitches > 0:
                add(
                    Check(
                        f"input:{name}",
                        WARN,
                        f"{what} clear at idle, but {glitches} short glitches just now "
                        "(insects, rain, marginal alignment?)",
                    )
                )
            else:
                add(Check(f"input:{name}", OK, f"{what} clear at idle"))


def _input_label(what: str, name: str) -> str:
    """ "beam", "beam beam2", "button start": never "beam beam" for an input named beam."""
    return name if name.lower().startswith(what) else f"{what} {name}"


def _walk(f: Facts, add: Callable[[Check], None]) -> None:
    if f.walk_test_s is None:
        return
    ev = f.walk_passage
    if ev is None:
        add(
            Check(
                "walk-test",
                FAIL,
                f"no passage within {f.walk_test_s:.0f} s: walk through the beam, check its "
                "aim and min_break_ms",
                "walk test: no passage",
            )
        )
        return
    unc = ev.get("uncertainty_ns")
    unc_text = f" ±{unc / 1000:.1f} µs" if isinstance(unc, int | float) else ""
    add(
        Check(
            "walk-test",
            OK,
            f"passage seen: seq {ev.get('seq')} on {ev.get('input')} at {ev.get('utc')} "
            f"({ev.get('clock')}{unc_text})",
        )
    )


def _delivery(f: Facts, st: dict[str, Any], lim: Limits, add: Callable[[Check], None]) -> None:
    unstored = int(st.get("unstored") or 0)
    if unstored:
        add(
            Check(
                "store",
                FAIL,
                f"{unstored} events held in memory only: the card refuses writes "
                f"({(st.get('alarms') or {}).get('store', 'see the log')})",
                "store refuses writes",
            )
        )
    backlog = int(st.get("backlog") or 0)
    if backlog > lim.warn_backlog:
        add(Check("backlog", WARN, f"{backlog} events not yet acknowledged by HQ"))
    else:
        add(Check("backlog", OK, f"{backlog} events awaiting HQ's acknowledgement"))
    for key, text in sorted((st.get("alarms") or {}).items()):
        if key == "gps" or key.startswith("input:") or (key == "store" and unstored):
            continue  # already said by the GPS, input or store check
        add(Check(f"alarm:{key}", FAIL, str(text), f"alarm {key}"))


def _store(f: Facts, snaps: list[Snapshot], add: Callable[[Check], None]) -> None:
    if f.store_error:
        add(Check("database", FAIL, f.store_error, "database problem"))
        return
    counts = f.store_counts or {}
    mode = (f.store_pragmas or {}).get("journal_mode")
    add(
        Check(
            "database",
            OK,
            f"{f.store_path}: integrity ok, {counts.get('events', '?')} events, "
            f"{counts.get('edges', '?')} edges, journal {mode}",
        )
    )
    if mode is not None and mode != "wal":
        add(Check("database", WARN, f"journal mode {mode}, not wal: the daemon has not run it"))
    status_store = snaps[-1].status.get("store") if snaps else None
    if status_store and f.store_id and status_store != f.store_id:
        add(
            Check(
                "database",
                WARN,
                f"the daemon reports store {status_store} but {f.store_path} is store "
                f"{f.store_id}: another config or another card?",
            )
        )


def _disk(f: Facts, lim: Limits, add: Callable[[Check], None]) -> None:
    if f.disk_free is None:
        add(Check("disk", INFO, "free space not checked (store folder missing)"))
        return
    free = f"{f.disk_free / MB / 1024:.1f} GB free"
    if f.disk_free < lim.min_free_bytes:
        add(Check("disk", FAIL, f"only {free} on the store's card", "card nearly full"))
    elif f.disk_free < lim.warn_free_bytes:
        add(Check("disk", WARN, f"{free} on the store's card: clear space before the event"))
    else:
        add(Check("disk", OK, free))


# -- rendering -------------------------------------------------------------------------

_MARK = {OK: " ok ", WARN: "warn", FAIL: "FAIL", INFO: " -- "}


def render(report: Report) -> str:
    """Human-readable: one line per check, the verdict last."""
    lines = [f"[{_MARK[c.level]}] {c.name:<12} {c.text}" for c in report.checks]
    lines.append("")
    lines.append(report.verdict)
    return "\n".join(lines)


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
    connect_deadline = start + connect_timeout_s
    status_deadline = walk_deadline = 0.0
    walk_inputs = {n for n, s in facts.input_sources.items() if s == "beam"} or set(
        facts.input_sources
    )
    while True:
        now = time.monotonic()
        if facts.broker == "connected":
            status_done = _enough(facts, lim) or now >= status_deadline
            walk_done = (
                facts.walk_test_s is None or facts.walk_passage is not None or now >= walk_deadline
            )
            if status_done and walk_done:
                break
        elif now >= connect_deadline:
            break
        try:
            ev = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(ev, Connected):
            facts.broker = "connected"
            facts.broker_detail = ""
            # Long enough for the daemon's periodic status to arrive twice.
            status_deadline = time.monotonic() + min(30.0, 2 * cfg.status_interval_s + 3)
            if facts.walk_test_s is not None:
                say(f"walk test: walk through the beam now (waiting up to {facts.walk_test_s:g} s)")
                walk_deadline = time.monotonic() + facts.walk_test_s
        elif isinstance(ev, Disconnected):
            if facts.broker != "connected":
                refused = "authori" in ev.reason.lower() or "password" in ev.reason.lower()
                facts.broker = "refused" if refused else "unreachable"
                facts.broker_detail = ev.reason
                if refused:
                    break
        elif isinstance(ev, SubAck) and not ev.ok:
            facts.subscribe_error = ", ".join(ev.reasons)
        elif isinstance(ev, Message) and ev.topic == status_topic:
            try:
                st = json.loads(ev.payload)
            except ValueError:
                continue
            if isinstance(st, dict):
                facts.snapshots.append(Snapshot(time.monotonic(), not ev.retain, st))
        elif isinstance(ev, Message) and ev.topic == event_topic and facts.walk_passage is None:
            try:
                ev_data = json.loads(ev.payload)
            except ValueError:
                continue
            if (
                isinstance(ev_data, dict)
                and ev_data.get("type") == "passage"
                and ev_data.get("input") in walk_inputs
                and facts.walk_test_s is not None
            ):
                facts.walk_passage = ev_data
    if facts.broker == "not checked":
        facts.broker = "unreachable"
        facts.broker_detail = f"no connection within {connect_timeout_s:g} s"
    facts.waited_s = time.monotonic() - start


def _enough(facts: Facts, lim: Limits) -> bool:
    """Doctor has seen enough status: live messages spanning a long enough window."""
    snaps = _usable(facts.snapshots)
    if facts.snapshots and facts.snapshots[-1].status.get("state") != "ready":
        # A stopped or lost daemon: give it a moment to come back, then say so.
        return time.monotonic() - facts.snapshots[0].received_s > lim.min_window_s
    if not snaps or not snaps[-1].live:
        return False
    return snaps[-1].received_s - _baseline(snaps).received_s >= lim.min_window_s


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


def _web_check(url: str, result: str, add: Callable[[Any], None]) -> None:
    """Add the `web` check: doctor_web.probe's answer for the marshal page."""
    if result == doctor_web.OFF or not url:
        return
    if result == doctor_web.SERVED:
        add(Check("web", OK, f"marshal page served at {url}"))
        return
    add(
        Check(
            "web",
            FAIL,
            f"marshal page not served at {url}: {result} (another program on the port? "
            "see the daemon's log; [web] port in the config)",
            "marshal page not served",
        )
    )
