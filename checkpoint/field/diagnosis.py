"""Doctor's verdict: the `Facts` it observed → a `Report` of checks and READY or not (pure).

Every check is ok / warn / fail / info with words a marshal can act on; warnings do
not make a box NOT READY, failures do. The clock is judged by the one readiness rule
the marshal page and the LED use too (checkpoint.core.readiness). `doctor.gather`
collects the facts (doctor.py); nothing here does I/O, so every wording and verdict is
tested from facts written by hand. `diagnose` runs the checks in the order the report
prints them, so a marshal's "why NOT READY?" reads top to bottom there: one short
function per check, the GPS group (data, fix, PPS, clock, burst) in gps_checks.py.
The facts and the report's types are in facts.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from checkpoint.field import doctor_web, gps_checks
from checkpoint.field.facts import (
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

# -- pure diagnosis ------------------------------------------------------------------


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
        gps_checks.gps(facts, snaps, lim, add)
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
