"""GPIO edges with kernel timestamps: the only module that imports gpiozero.

We work at gpiozero's Pin level and register `pin.when_changed(ticks, state)`:
with the lgpio factory `ticks` is the kernel's hard-IRQ timestamp
(CLOCK_MONOTONIC), taken before Python ever runs, so scheduling latency never
enters a stamp. `Button.when_pressed` would drop that tick, and `bounce_time`
would shift it by the debounce period, so neither is used: debouncing is the
detector's job, on exact ticks.

The pin factory is chosen by name through gpiozero's own entry points
(`gpiozero_pin_factories`), so the simulator's factory (`checkpoint-sim`) drives
this very code path.

Tick sources. Only a factory whose ticks are the kernel's CLOCK_MONOTONIC edge
timestamps can give µs-grade stamps:

* ``checkpoint-lgpio`` (the default on a box): lgpio's callback hands over the
  kernel's `timestamp_ns` of the GPIO line event as an int (lg's lgpio.py unpacks it
  from its notification pipe as a uint64). gpiozero's `LGPIOPin._call_when_changed`
  divides it by 1e9, and `LGPIOFactory.__init__` sets ``self.pin_class = LGPIOPin``
  on the instance, so a subclass's class attribute is ignored: ours sets its pin
  class after ``super().__init__()``, and its pin passes the int on untouched.
* ``checkpoint-sim``: the simulator's injected ticks, int ns of CLOCK_MONOTONIC.
* gpiozero's stock ``lgpio``: the same kernel tick as float seconds, converted
  back by `tick_ns` (exact to the ns for ~48 days of uptime, within 2 ns after).

Every other factory is refused unless ``gpio.allow_coarse_ticks = true``: rpigpio
and native call Python with no kernel tick (gpiozero fills in `time.monotonic()`
when the callback runs: scheduling latency, ms under load), pigpio's ticks are
pigpiod's own 32-bit µs counter (another clock, wrapping every 71.6 min). With the
flag, every edge is stamped with CLOCK_MONOTONIC when the callback runs (the
factory's ticks are ignored, so pigpio's wrap cannot bite) and every passage's
bound is widened by `COARSE_TICK_NS`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from gpiozero import Device
from gpiozero.pins import Factory

from checkpoint.config import InputConfig
from checkpoint.core.detector import RateLimiter
from checkpoint.errors import ConfigError

log = logging.getLogger("checkpoint.box.edges")

# Added to every passage's uncertainty when edges are stamped in a Python callback:
# the stamp is late by the callback's scheduling delay (0.1-1 ms typical on a Pi,
# tens of ms in a stall of the GIL or the scheduler).
COARSE_TICK_NS = 20_000_000

EdgeSink = Callable[[str, int, bool, bool], None]
PpsSink = Callable[[int], None]


def tick_ns(ticks: float) -> int:
    """A gpiozero tick as integer nanoseconds.

    Factories that keep kernel ticks as int ns (ours) pass through untouched;
    gpiozero's stock lgpio factory hands over `ns / 1e9` as a float, which is exact
    to the nanosecond for the first ~48 days of uptime and within 2 ns after.
    """
    if isinstance(ticks, int):
        return ticks
    return round(ticks * 1_000_000_000)


def open_factory(name: str) -> Factory:
    """The gpiozero pin factory registered under `name` ('' = gpiozero's default)."""
    if not name:
        return Device._default_pin_factory()
    for ep in entry_points(group="gpiozero_pin_factories"):
        if ep.name == name:
            return ep.load()()
    known = sorted(ep.name for ep in entry_points(group="gpiozero_pin_factories"))
    raise ConfigError(f"gpio.pin_factory: no pin factory {name!r} (known: {', '.join(known)})")


def kernel_tick_lgpio_factory() -> Factory:
    """gpiozero's lgpio factory, but handing over lgpio's int ns ticks unconverted.

    Registered as `checkpoint-lgpio`; the default on a box. Imported lazily since
    lgpio only exists on a Pi.
    """
    from gpiozero.pins.lgpio import LGPIOFactory, LGPIOPin
    from gpiozero.pins.local import LocalPiPin

    class KernelTickPin(LGPIOPin):
        def _call_when_changed(self, chip: Any, gpio: Any, level: int, ticks: int) -> None:
            # lgpio's callback signature; LGPIOPin would pass on ticks / 1e9.
            LocalPiPin._call_when_changed(self, ticks, level)

    class KernelTickFactory(LGPIOFactory):
        kernel_ticks = True

        def __init__(self, chip: int | None = None) -> None:
            super().__init__(chip)
            # After super(): LGPIOFactory.__init__ assigns its own pin class.
            self.pin_class = KernelTickPin

    return KernelTickFactory()


def has_kernel_ticks(factory: Factory) -> bool:
    """True for factories whose ticks are the kernel's CLOCK_MONOTONIC edge stamps."""
    if getattr(factory, "kernel_ticks", False):
        return True
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(factory).__mro__}
    return "gpiozero.pins.lgpio.LGPIOFactory" in names


def _callback_tick(ticks: float) -> int:
    """A coarse factory's edge: stamped now, its own ticks ignored (module docstring)."""
    return time.monotonic_ns()


class _Input:
    """One beam/button input: polarity, rate limit, and the sink."""

    def __init__(
        self, cfg: InputConfig, pin: Any, sink: EdgeSink, tick: Callable[[float], int]
    ) -> None:
        self.tick = tick
        self.cfg = cfg
        self.pin = pin
        self.sink = sink
        self.limiter = RateLimiter(cfg.max_edges_per_s)
        self.lock = threading.Lock()

    def changed(self, ticks: float, state: int) -> None:
        # Runs on the factory's callback thread: do the minimum and hand over.
        active = bool(state) != self.cfg.active_low
        with self.lock:
            admitted = self.limiter.offer(self.tick(ticks), active)
        for mono_ns, level, fault in admitted:
            self.sink(self.cfg.name, mono_ns, level, fault)

    def poll(self, now_ns: int) -> None:
        with self.lock:
            admitted = self.limiter.poll(now_ns)
        for mono_ns, level, fault in admitted:
            self.sink(self.cfg.name, mono_ns, level, fault)

    def level(self) -> bool:
        return bool(self.pin.state) != self.cfg.active_low


class _Pps:
    def __init__(self, pin: Any, sink: PpsSink, tick: Callable[[float], int]) -> None:
        self.tick = tick
        self.pin = pin
        self.sink = sink
        self.limiter = RateLimiter(20)
        self.pulses = 0

    def changed(self, ticks: float, state: int) -> None:
        # A PPS line ringing at kHz would otherwise flood the queue just like a
        # chattering beam; 20/s is far above any real pulse rate.
        for mono_ns, _, _ in self.limiter.offer(self.tick(ticks), True):
            self.pulses += 1
            self.sink(mono_ns)


class EdgeSource:
    """Beam/button inputs and the PPS input, read through one gpiozero factory.

    `on_edge(input, mono_ns, active, fault)` and `on_pps(mono_ns)` are called on the
    factory's callback thread; they must only enqueue.

    A factory without kernel ticks is a ConfigError unless `allow_coarse_ticks`;
    then `kernel_ticks` is False and the caller must widen every bound by
    `COARSE_TICK_NS` (module docstring).
    """

    def __init__(
        self,
        inputs: Sequence[InputConfig],
        *,
        pps_pin: str,
        pps_edge: str,
        on_edge: EdgeSink,
        on_pps: PpsSink,
        pin_factory: str = "",
        allow_coarse_ticks: bool = False,
    ) -> None:
        self.factory = open_factory(pin_factory)
        self.kernel_ticks = has_kernel_ticks(self.factory)
        if not self.kernel_ticks:
            kind = type(self.factory).__name__
            if not allow_coarse_ticks:
                self.factory.close()
                raise ConfigError(
                    f"gpio.pin_factory {pin_factory or '(gpiozero default)'!r} gives {kind}, "
                    "which has no kernel edge timestamps: stamps would be off by the Python "
                    "callback's delay (ms) while claiming µs. Use pin_factory = "
                    '"checkpoint-lgpio", or set gpio.allow_coarse_ticks = true to accept '
                    f"±{COARSE_TICK_NS // 1_000_000} ms more on every passage"
                )
            log.warning(
                "pin factory %s: no kernel edge timestamps; edges are stamped in the "
                "Python callback and every passage's bound is widened by %d ms",
                kind,
                COARSE_TICK_NS // 1_000_000,
            )
        tick = tick_ns if self.kernel_ticks else _callback_tick
        self._inputs: list[_Input] = []
        for cfg in inputs:
            pin = self._input_pin(cfg.pin, cfg.pull)
            handler = _Input(cfg, pin, on_edge, tick)
            pin.edges = "both"
            # gpiozero keeps only a weak reference to the callback; `handler`
            # lives in self._inputs for as long as the source does.
            pin.when_changed = handler.changed
            self._inputs.append(handler)
        pin = self._input_pin(pps_pin, "floating")
        self._pps = _Pps(pin, on_pps, tick)
        pin.edges = pps_edge
        pin.when_changed = self._pps.changed

    def _input_pin(self, name: str, pull: str) -> Any:
        try:
            pin = self.factory.pin(name)
            pin.function = "input"
            # Pins with a fixed pull (GPIO2/3 on a Pi) refuse any other setting.
            if not pin.info.pull:
                pin.pull = pull
        except Exception as e:
            raise ConfigError(f"pin {name}: cannot use it as an input: {e}") from e
        return pin

    def poll(self, now_ns: int) -> None:
        """Release edges the rate limiters held back; call a few times a second."""
        for handler in self._inputs:
            handler.poll(now_ns)

    def levels(self) -> dict[str, bool]:
        """Current level of every input read from the pin (True = broken/pressed)."""
        return {h.cfg.name: h.level() for h in self._inputs}

    def faults(self, now_ns: int) -> dict[str, int]:
        """Inputs chattering now, with how many edges were dropped so far."""
        return {h.cfg.name: h.limiter.dropped for h in self._inputs if h.limiter.faulted(now_ns)}

    def dropped(self) -> dict[str, int]:
        return {h.cfg.name: h.limiter.dropped for h in self._inputs}

    @property
    def pps_pulses(self) -> int:
        return self._pps.pulses

    def close(self) -> None:
        for h in self._inputs:
            h.pin.when_changed = None
        self._pps.pin.when_changed = None
        self.factory.close()
