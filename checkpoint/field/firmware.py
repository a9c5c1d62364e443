"""The Pi's firmware files and the box config's pins, as text (pure; `install` writes).

`merge_config_txt` puts our marked block into config.txt and disables a pps-gpio
overlay on a pin the box reads; `strip_serial_console` takes the console off the
UART the GPS uses (cmdline.txt); `config_pins` says which GPIOs a box config uses.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping

from checkpoint.config import default_inputs

BEGIN, END = "# BEGIN checkpoint", "# END checkpoint"
# Same rules as firmware_config/cmdline.sed (a test keeps the two in step).
_CONSOLE = r"console=(?:serial0|serial1|ttyAMA[0-9]*|ttyS0)(?:,[0-9a-zA-Z]*)?"
_CONSOLE_HEAD = re.compile(rf"^\s*{_CONSOLE}(?:\s+|$)")
_CONSOLE_MIDDLE = re.compile(rf"\s+{_CONSOLE}(\s|$)")
_PPS_OVERLAY = re.compile(r"^\s*dtoverlay\s*=\s*pps-gpio\b(?P<args>.*)$")


def merge_config_txt(current: str, block: str, *, pins: Mapping[int, str] | None = None) -> str:
    """`current` config.txt with our block in place and pps-gpio overlays on our pins off.

    The block replaces an earlier copy between the markers, or is appended (later
    lines win in config.txt, so appending overrides e.g. an earlier enable_uart=0).
    `pins` maps each BCM GPIO number the box config uses to what uses it (default
    ``{18: "gps.pps_pin"}``). A ``dtoverlay=pps-gpio`` on one of them (no ``gpiopin``
    means the overlay's default, 18) is commented out: the kernel's pps driver would
    claim the line, and the daemon, failing to request it, would restart forever. A
    pps-gpio overlay on a pin the box does not use is left alone.
    """
    pins = {18: "gps.pps_pin"} if pins is None else pins
    lines = current.splitlines()
    out: list[str] = []
    skipping = False
    for line in lines:
        if line.strip() == BEGIN:
            skipping = True
            continue
        if skipping:
            if line.strip() == END:
                skipping = False
            continue
        m = _PPS_OVERLAY.match(line)
        if m:
            found = re.search(r"gpiopin\s*=\s*(\d+)", m.group("args"))
            pin = int(found.group(1)) if found else 18
            if pin in pins:
                line = (
                    f"#{line}  # disabled by checkpoint: the daemon reads GPIO{pin} ({pins[pin]})"
                )
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    text = "\n".join(out)
    return (text + "\n\n" if text else "") + block


def strip_serial_console(cmdline: str) -> str:
    """cmdline.txt without any console= on the Pi's UARTs (as firmware_config/cmdline.sed)."""

    def one(line: str) -> str:
        for pattern, repl in ((_CONSOLE_HEAD, ""), (_CONSOLE_MIDDLE, r"\1")):
            while True:
                new = pattern.sub(repl, line, count=1)
                if new == line:
                    break
                line = new
        return line

    return "\n".join(one(line) for line in cmdline.split("\n"))


_GPIO_NAME = re.compile(r"^(?:GPIO|BCM)?(\d+)$", re.IGNORECASE)


def config_pins(text: str) -> dict[int, str]:
    """BCM GPIO numbers a box config uses (PPS, inputs, LED/buzzer), each with its user.

    Read leniently from the TOML (the daemon checks the config, not the installer):
    a pin written as a header position (``BOARD12``) or anything unparsable is skipped.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        data = {}
    gps = data.get("gps") if isinstance(data.get("gps"), dict) else {}
    named = [("gps.pps_pin", gps.get("pps_pin", "GPIO18"))]
    if "inputs" not in data:  # the daemon's default inputs then
        named += [(f"input {i.name}", i.pin) for i in default_inputs()]
    inputs = data.get("inputs") if isinstance(data.get("inputs"), list) else []
    named += [(f"input {i.get('name', '?')}", i.get("pin")) for i in inputs if isinstance(i, dict)]
    ind = data.get("indicator") if isinstance(data.get("indicator"), dict) else {}
    named += [(f"indicator.{k}", ind[k]) for k in ("led_pin", "buzzer_pin") if ind.get(k)]
    pins: dict[int, str] = {}
    for what, name in named:
        m = _GPIO_NAME.match(str(name)) if isinstance(name, (str, int)) else None
        if m:
            pins.setdefault(int(m.group(1)), what)
    return pins
