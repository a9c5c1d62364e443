"""The box.toml a simulated box runs with: the same file format a real box reads.

Live runs point `[gps] port` at the simulator's pty and `[mqtt] broker` at the
broker (or at the link-cut proxy in front of it); offline captures write the same
file next to the capture so `checkpoint replay --config` uses the right inputs and
GPS convention.
"""

from __future__ import annotations

from sim.scenario import Box, Scenario
from sim.world import PINS, PPS_PIN


def _q(text: str) -> str:
    """A TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def inputs(box: Box) -> list[tuple[str, str]]:
    """(input name, source) of the box's inputs, beam first."""
    out = [("beam", "beam")]
    if box.second_beam_m > 0:
        out.append(("beam2", "beam"))
    if box.button:
        out.append(("button", "manual"))
    return out


def render(
    sc: Scenario,
    box: Box,
    *,
    gps_port: str,
    broker: str,
    store: str = "box.db",
    capture: str = "",
    status_interval_s: int = 1,
    mqtt: list[str] | None = None,
) -> str:
    """box.toml text for `box`; relative paths are taken from the file's folder."""
    rx = box.receiver
    lines = [
        f"# Written by the simulator for scenario {sc.name!r}.",
        "[box]",
        f"id = {_q(box.id)}",
        f"checkpoint = {_q(box.control)}",
        f"status_interval_s = {status_interval_s}",
        "",
        "[store]",
        f"path = {_q(store)}",
        "",
        "[gpio]",
        'pin_factory = "checkpoint-sim"',
        "",
        "[gps]",
        f"port = {_q(gps_port)}",
        f"baudrate = {rx.baudrate}",
        f"pps_pin = {_q(PPS_PIN)}",
        'pps_edge = "rising"',
        f"convention = {_q(rx.convention)}",
        "",
        "[mqtt]",
        f"broker = {_q(broker)}",
        *(mqtt or []),  # credentials for a secured broker (sim.secure)
        f"prefix = {_q(sc.prefix)}",
        # Short timers: a simulated outage lasts seconds, not minutes.
        "keepalive_s = 4",
        "redeliver_after_s = 5",
        "",
        "[record]",
        f"capture = {_q(capture)}",
    ]
    for name, source in inputs(box):
        lines += [
            "",
            "[[inputs]]",
            f"name = {_q(name)}",
            f"pin = {_q(PINS[name])}",
            f"source = {_q(source)}",
            "active_low = true",
            'pull = "up"',
            f"min_break_ms = {30 if source == 'manual' else 10}",
            "lockout_ms = 1000",
        ]
    return "\n".join(lines) + "\n"
