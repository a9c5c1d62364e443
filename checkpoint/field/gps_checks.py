"""Doctor's GPS checks (pure): is NMEA arriving and readable, is there a fix, are the
pulses there, is the clock within its bound, does the receiver's burst fit the second.

Each judges the change in the daemon's counters between the first status of its
current run and the latest (`_Window`); diagnosis.py calls `gps` in report order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from checkpoint.core import readiness
from checkpoint.field.facts import (
    FAIL,
    OK,
    WARN,
    Check,
    Facts,
    Limits,
    Snapshot,
    baseline,
    counters,
)


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
    then, now = counters(base.status), counters(snaps[-1].status)
    lines, accepted, valid, pps = zip(then, now, strict=True)
    return _Window(seconds, seconds >= lim.min_window_s, lines, accepted, valid, pps)


def gps(f: Facts, snaps: list[Snapshot], lim: Limits, add: Callable[[Check], None]) -> None:
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
