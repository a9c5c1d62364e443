"""Doctor's verdict: the `Facts` it observed → a `Report` of checks and READY or not (pure).

Every check is ok / warn / fail / info with words a marshal can act on; warnings do
not make a box NOT READY, failures do. The clock is judged by the one readiness rule
the marshal page and the LED use too (checkpoint.core.readiness). `doctor.gather`
collects the facts (doctor.py); nothing here does I/O, so every wording and verdict is
tested from facts written by hand. The checks stay in one module, in the order the
report prints them, so a marshal's "why NOT READY?" reads top to bottom in one place
(hence its length: one short function per check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

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


def baseline(snaps: list[Snapshot]) -> Snapshot:
    """The earliest snapshot of the latest daemon run (counters never go down within one)."""
    last = _counters(snaps[-1].status)
    for snap in snaps:
        if all(a <= b for a, b in zip(_counters(snap.status), last, strict=True)):
            return snap
    return snaps[-1]


def usable(snaps: list[Snapshot]) -> list[Snapshot]:
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
    snaps = usable(facts.snapshots)
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


@dataclass(frozen=True)
class _Window:
    """The GPS counters at the baseline snapshot and the latest, and the seconds between.

    Each counter pair is (then, now). A window shorter than `Limits.min_window_s` is
    not `confirmed`: only "never seen" can be said of it, not "stopped".
    """

    seconds: float
    confirmed: bool
    lines: tuple[int, int]
    accepted: tuple[int, int]
    valid: tuple[int, int]
    pps: tuple[int, int]

    @property
    def span(self) -> str:
        return f"in {self.seconds:.0f} s" if self.confirmed else "so far"

    @property
    def has_fix(self) -> bool:
        then, now = self.valid
        return now > then if self.confirmed else now > 0


def _window(snaps: list[Snapshot], lim: Limits) -> _Window:
    base = baseline(snaps)
    seconds = snaps[-1].received_s - base.received_s
    then, now = _counters(base.status), _counters(snaps[-1].status)
    lines, accepted, valid, pps = zip(then, now, strict=True)
    return _Window(seconds, seconds >= lim.min_window_s, lines, accepted, valid, pps)


def _gps(f: Facts, snaps: list[Snapshot], lim: Limits, add: Callable[[Check], None]) -> None:
    latest = snaps[-1].status
    w = _window(snaps, lim)
    if _gps_data(f, latest, w, add):
        _burst(f, latest, lim, add)
        _fix(w, add)
    _pps(f, w, add)
    _clock(latest, lim, add)


def _gps_data(f: Facts, latest: dict[str, Any], w: _Window, add: Callable[[Check], None]) -> bool:
    """Is the port open and are readable time sentences arriving? True if so."""
    port = f.gps_port or "the GPS port"
    (lines0, lines1), (acc0, acc1) = w.lines, w.accepted
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
        return False
    if lines1 == 0 or (w.confirmed and lines1 == lines0):
        add(
            Check(
                "gps",
                FAIL,
                f"no NMEA from the GPS {w.span}: port {port} is open but silent; check the "
                "TX→RX wire and gps.baudrate",
                "no GPS data",
            )
        )
        return False
    if acc1 == acc0 and w.confirmed:
        add(
            Check(
                "gps",
                FAIL,
                f"GPS sends data but no readable time sentence {w.span} (rejects: "
                f"{(latest.get('fix') or {}).get('rejects')}): wrong baud rate or RMC/ZDA off",
                "GPS data unreadable",
            )
        )
        return False
    add(Check("gps", OK, f"NMEA arriving ({lines1 - lines0} lines {w.span})"))
    return True


def _fix(w: _Window, add: Callable[[Check], None]) -> None:
    if w.has_fix:
        add(Check("fix", OK, "GPS has a fix"))
        return
    add(
        Check(
            "fix",
            FAIL,
            f"GPS has no fix {w.span} (status V): give the antenna open sky; a cold "
            "start takes a few minutes",
            "no GPS fix",
        )
    )


def _pps(f: Facts, w: _Window, add: Callable[[Check], None]) -> None:
    pin = f.pps_pin or "the PPS pin"
    pulses = w.pps[1] - w.pps[0]
    if pulses > 0 or (not w.confirmed and w.pps[1] > 0):
        # Status messages are not aligned to the pulses: a window of W s holds up to
        # W + 2 pulse counts, so a rate (3 pulses / 2.1 s = "1.4/s") is a sampling
        # artefact. Only a count beyond that slack is noise.
        window = w.seconds
        noisy = w.confirmed and window > 0 and pulses > window * 1.5 + 2
        rate = (
            f" ({pulses} in {window:.0f} s: more than one a second, noise on the PPS line?)"
            if noisy
            else (" (one a second)" if w.confirmed and window > 0 else "")
        )
        add(Check("pps", WARN if noisy else OK, f"PPS pulses on {pin}{rate}"))
    elif w.has_fix:
        add(
            Check(
                "pps",
                FAIL,
                f"no PPS on {pin} {w.span} although the GPS has a fix: "
                "check the PPS wire (and that no pps-gpio overlay claims the pin)",
                "no PPS",
            )
        )
    else:
        add(
            Check(
                "pps",
                FAIL,
                f"no PPS {w.span} (a receiver set up by `checkpoint gps configure` pulses "
                "only with a fix)",
                "no PPS",
            )
        )


def _clock(latest: dict[str, Any], lim: Limits, add: Callable[[Check], None]) -> None:
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
    base_inputs = baseline(snaps).status.get("inputs") or {}
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
