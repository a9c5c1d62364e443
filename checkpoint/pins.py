"""Raspberry Pi 40-pin header: which pin names are GPIOs a box can use.

gpiozero accepts "GPIO17", "BCM17", "17", "BOARD11" and "J8:11" for the same wire;
a config naming GPIO99, or BOARD1 (3.3 V power), would only fail when the daemon
starts on the box. `canonical` maps every spelling to "GPIOn" so two names for one
wire are caught as the same pin. Pure: no I/O.
"""

from __future__ import annotations

import re

#: Header pin (BOARD numbering) → BCM GPIO number, for the pins that are GPIOs.
BOARD_TO_BCM: dict[int, int] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24,
    19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12,
    33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip
_POWER = {1: "3.3 V power", 17: "3.3 V power", 2: "5 V power", 4: "5 V power"}
_GROUND = {6, 9, 14, 20, 25, 30, 34, 39}
_BCM = re.compile(r"^(?:GPIO|BCM)?(\d{1,3})$")
_BOARD = re.compile(r"^(?:BOARD|J8:)(\d{1,3})$")


def canonical(name: str) -> str | None:
    """ "GPIOn" for any accepted spelling of a header GPIO, else None."""
    text = name.strip().upper()
    m = _BCM.match(text)
    if m and 0 <= int(m.group(1)) <= 27:
        return f"GPIO{int(m.group(1))}"
    m = _BOARD.match(text)
    if m and int(m.group(1)) in BOARD_TO_BCM:
        return f"GPIO{BOARD_TO_BCM[int(m.group(1))]}"
    return None


def problem(name: str) -> str | None:
    """Why `name` is not a usable header GPIO (None when it is)."""
    if canonical(name):
        return None
    text = name.strip().upper()
    m = _BOARD.match(text)
    if m:
        n = int(m.group(1))
        if n in _POWER:
            return f"{name!r} is header pin {n}, {_POWER[n]}, not a GPIO"
        if n in _GROUND:
            return f"{name!r} is header pin {n}, ground, not a GPIO"
        return f"{name!r}: the header has pins 1-40 (GPIOs: {_gpio_board_pins()})"
    m = _BCM.match(text)
    if m:
        return f"{name!r}: the Pi header has GPIO0 to GPIO27"
    return (
        f"{name!r} is not a pin name: use GPIO0..GPIO27 (BCM numbers, as in the README's "
        "wiring table) or BOARDn for header pin n"
    )


def _gpio_board_pins() -> str:
    return ", ".join(str(n) for n in sorted(BOARD_TO_BCM))
