"""The marshal's status LED and passage buzzer (optional; pins in `[indicator]`).

One LED says at a glance, from across the road, whether the box is ready:

=================  ========================================  ==========================
state              meaning                                   pattern
=================  ========================================  ==========================
``ready``          locked to GPS, broker connected, sensors  steady on
``no_gps``         clock not locked within its bound         slow blink (1 s on, 1 s off)
``no_broker``      locked, but HQ's broker not connected     fast blink (4 Hz)
``fault``          a sensor chatters or a beam is blocked    double blink every 1.5 s
``off``            daemon not running / shutting down        off
=================  ========================================  ==========================

When several apply the most urgent wins: a faulty sensor loses passages, a missing
lock makes their times poor, a missing broker only delays delivery (passages are on
the card). The buzzer chirps once per passage so the marshal hears each car counted.

Pure parts (unit-tested without hardware): `PATTERNS`, `level_at`, `next_change` and
`Chooser`. The driver `Indicator` toggles output pins at gpiozero's Pin level
(``pin.function = "output"``, ``pin.state = 1``) on the pin factory the daemon already
has (`EdgeSource.factory`); this module never imports gpiozero (only `edges` does).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from checkpoint.core import readiness

log = logging.getLogger("checkpoint.box.indicator")


class LedState(enum.Enum):
    OFF = "off"
    READY = "ready"
    NO_GPS = "no_gps"
    NO_BROKER = "no_broker"
    FAULT = "fault"


# One cycle of (lit, milliseconds) steps per state, repeated for as long as it lasts.
PATTERNS: dict[LedState, tuple[tuple[bool, int], ...]] = {
    LedState.OFF: ((False, 1000),),
    LedState.READY: ((True, 1000),),
    LedState.NO_GPS: ((True, 1000), (False, 1000)),
    LedState.NO_BROKER: ((True, 125), (False, 125)),
    LedState.FAULT: ((True, 150), (False, 150), (True, 150), (False, 1050)),
}


def _period(state: LedState) -> int:
    return sum(ms for _, ms in PATTERNS[state])


def level_at(state: LedState, t_ms: int) -> bool:
    """Whether the LED is lit `t_ms` after `state` began."""
    t = t_ms % _period(state)
    for lit, ms in PATTERNS[state]:
        if t < ms:
            return lit
        t -= ms
    raise AssertionError("unreachable: t is below the period")


def next_change(state: LedState, t_ms: int) -> int | None:
    """Milliseconds from `t_ms` until the LED next changes level; None if it never does."""
    steps = PATTERNS[state]
    if len({lit for lit, _ in steps}) == 1:
        return None
    now = level_at(state, t_ms)
    t = t_ms % _period(state)
    # Walk forward step by step (at most two cycles) to the first step of other level.
    elapsed = 0
    for lit, ms in steps + steps:
        if t >= ms:
            t -= ms
            continue
        if lit != now:
            return elapsed
        elapsed += ms - t
        t = 0
    raise AssertionError("unreachable: a blinking pattern changes within two cycles")


def schedule(state: LedState, until_ms: int) -> list[tuple[int, bool]]:
    """(t_ms, level) at 0 and at each change before `until_ms`: the expected pin trace."""
    out = [(0, level_at(state, 0))]
    t = 0
    while True:
        step = next_change(state, t)
        if step is None or t + step >= until_ms:
            return out
        t += step
        out.append((t, level_at(state, t)))


class Chooser:
    """The daemon's status message → the LED state, by the one readiness verdict
    (checkpoint.core.readiness), which doctor and the marshal page use too.

    A beam input reading "broken" is a car for a moment but a blocked or misaligned
    beam when it lasts: it counts as a fault after `blocked_after_s`. Push-button
    inputs (source "manual") held down count the same way.
    """

    def __init__(self, blocked_after_s: float = readiness.BEAM_BLOCKED_S) -> None:
        self.blocked_after_s = blocked_after_s
        self._broken = readiness.BrokenFor()

    def choose(self, now_s: float, status: Mapping[str, Any], broker_connected: bool) -> LedState:
        """The LED state for this status at time `now_s` (monotonic seconds)."""
        v = readiness.verdict(
            status,
            link=broker_connected,
            broken_for_s=self._broken.update(now_s, status),
            blocked_after_s=self.blocked_after_s,
        )
        # The most urgent wins (module docstring): a sensor fault loses passages, a
        # clock that is not locked within its bound makes their times poor (a warning
        # such as holdover blinks too), a missing broker only delays delivery.
        if readiness.BAD in v.inputs.values():
            return LedState.FAULT
        if v.clock != readiness.OK:
            return LedState.NO_GPS
        if v.broker != readiness.OK:
            return LedState.NO_BROKER
        return LedState.READY


class Indicator:
    """Drives the LED pattern and the buzzer chirps from one small thread.

    `led` and `buzzer` are gpiozero Pin objects (or None when not fitted) from the
    daemon's factory: `Indicator.from_factory(edges.factory, cfg.indicator)`.
    `show(state)` and `chirp()` are safe from any thread and return at once.
    """

    def __init__(
        self,
        led: Any | None,
        buzzer: Any | None,
        *,
        active_low: bool = False,
        chirp_ms: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.led = led
        self.buzzer = buzzer
        self.active_low = active_low
        self.chirp_ms = chirp_ms
        self._clock = clock
        self._state = LedState.OFF
        self._since = clock()
        self._buzz_until = 0.0
        self._written: dict[int, bool] = {}
        self._cond = threading.Condition()
        self._stop = False
        for pin in (led, buzzer):
            if pin is not None:
                pin.function = "output"
                self._write(pin, False)
        self._thread = threading.Thread(target=self._run, name="indicator", daemon=True)

    @classmethod
    def from_factory(cls, factory: Any, cfg: Any) -> Indicator | None:
        """Pins from `cfg` (an IndicatorConfig) on `factory`; None when none is fitted."""
        if cfg.led_pin is None and cfg.buzzer_pin is None:
            return None
        led = factory.pin(cfg.led_pin) if cfg.led_pin else None
        buzzer = factory.pin(cfg.buzzer_pin) if cfg.buzzer_pin else None
        return cls(led, buzzer, active_low=cfg.active_low, chirp_ms=cfg.chirp_ms)

    @property
    def state(self) -> LedState:
        return self._state

    def start(self) -> Indicator:
        self._thread.start()
        return self

    def show(self, state: LedState) -> None:
        """Switch the LED to `state`'s pattern (restarting it only on a change)."""
        with self._cond:
            if state == self._state:
                return
            self._state = state
            self._since = self._clock()
            self._cond.notify()

    def chirp(self) -> None:
        """One short beep (a passage was counted); overlapping chirps merge."""
        if self.buzzer is None:
            return
        with self._cond:
            self._buzz_until = self._clock() + self.chirp_ms / 1000
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread and leave both outputs off."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(2)
        for pin in (self.led, self.buzzer):
            if pin is not None:
                self._write(pin, False)

    def _write(self, pin: Any, on: bool) -> None:
        if self._written.get(id(pin)) == on:
            return
        self._written[id(pin)] = on
        try:
            pin.state = int(on != self.active_low)
        except Exception:  # a lamp must never take the timing daemon down
            log.exception("cannot set indicator pin %s", pin)

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                now = self._clock()
                t_ms = int((now - self._since) * 1000)
                waits: list[float] = []
                if self.led is not None:
                    self._write(self.led, level_at(self._state, t_ms))
                    step = next_change(self._state, t_ms)
                    if step is not None:
                        waits.append(max(step, 1) / 1000)
                if self.buzzer is not None:
                    buzzing = now < self._buzz_until
                    self._write(self.buzzer, buzzing)
                    if buzzing:
                        waits.append(self._buzz_until - now)
                self._cond.wait(min(waits) if waits else None)
