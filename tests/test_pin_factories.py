"""Which gpiozero pin factories may stamp at µs grade, and what their ticks are.

The lgpio tests run gpiozero's real `LGPIOFactory`/`LGPIOPin` code with a fake
`lgpio` module injected at the hardware edge: its `callback` hands over what lg's
lgpio.py does (chip, gpio, level, the kernel's uint64 `timestamp_ns` as an int), and
the Pi's revision (read from /proc/device-tree on a Pi) is that of a Pi 4.
"""

from __future__ import annotations

import subprocess
import sys
import time
import types

import pytest
from test_timing import NS, World, pipeline, run

from checkpoint import config as configmod
from checkpoint.box.daemon import BoxDaemon
from checkpoint.box.edges import COARSE_TICK_NS, EdgeSource, has_kernel_ticks
from checkpoint.config import InputConfig
from checkpoint.errors import ConfigError

BEAM = InputConfig(name="beam", pin="GPIO17", active_low=True, pull="up")


class FakeLgpio(types.ModuleType):
    """lgpio's Python API as gpiozero's lgpio pins use it; edges fired by the test."""

    SET_PULL_NONE, SET_PULL_UP, SET_PULL_DOWN = 0x80, 0x20, 0x40
    BOTH_EDGES, RISING_EDGE, FALLING_EDGE = 3, 1, 2

    class error(Exception):  # noqa: N801 (lgpio's name)
        pass

    def __init__(self) -> None:
        super().__init__("lgpio")
        self.modes: dict[int, int] = {}
        self.callbacks: dict[int, list] = {}

    def gpiochip_open(self, chip):
        return 7

    def gpiochip_close(self, handle):
        pass

    def gpio_claim_input(self, handle, gpio, flags=0):
        self.modes[gpio] = flags

    def gpio_claim_output(self, handle, gpio, *a):
        self.modes[gpio] = 1 << 1

    def gpio_free(self, handle, gpio):
        self.modes.pop(gpio, None)

    def gpio_get_mode(self, handle, gpio):
        return self.modes.get(gpio, 0)

    def gpio_read(self, handle, gpio):
        return 1

    def gpio_claim_alert(self, handle, gpio, edges, flags=0):
        pass

    def callback(self, handle, gpio, edges, func):
        cbs = self.callbacks.setdefault(gpio, [])
        cb = types.SimpleNamespace(func=func, cancel=lambda: cbs.remove(cb))
        cbs.append(cb)
        return cb

    def fire(self, gpio: int, level: int, tick: int) -> None:
        """What lg's notification thread does for one kernel line event."""
        for cb in list(self.callbacks.get(gpio, [])):
            cb.func(0, gpio, level, tick)


@pytest.fixture
def fake_lgpio(monkeypatch):
    fake = FakeLgpio()
    monkeypatch.setitem(sys.modules, "lgpio", fake)
    monkeypatch.delitem(sys.modules, "gpiozero.pins.lgpio", raising=False)
    import gpiozero.pins.local as local

    monkeypatch.setattr(local, "get_pi_revision", lambda: 0xC03111)  # a Pi 4 B
    yield fake
    local.LocalPiFactory.pins.clear()
    local.LocalPiFactory._reservations.clear()


def _source(name: str, **kw):
    edges, pps = [], []
    src = EdgeSource(
        [BEAM],
        pps_pin="GPIO18",
        pps_edge="rising",
        on_edge=lambda n, t, a, f: edges.append((n, t, a)),
        on_pps=pps.append,
        pin_factory=name,
        **kw,
    )
    return src, edges, pps


def test_checkpoint_lgpio_hands_over_lgpios_int_ns_kernel_tick(fake_lgpio):
    src, edges, pps = _source("checkpoint-lgpio")
    try:
        assert src.kernel_ticks
        pin = src.factory.pin("GPIO17")
        # The real LGPIOFactory.__init__ sets pin_class on the instance; ours after it.
        assert type(pin).__name__ == "KernelTickPin"
        big = 2**60 + 123  # a float would lose the last digits
        fake_lgpio.fire(17, 0, big)
        fake_lgpio.fire(17, 1, big + 150_000_001)
        fake_lgpio.fire(18, 1, big + 7)
        assert edges == [("beam", big, True), ("beam", big + 150_000_001, False)]
        assert all(type(t) is int for _, t, _ in edges)
        assert pps == [big + 7]
    finally:
        src.close()


def test_stock_lgpio_is_kernel_ticks_as_float_seconds(fake_lgpio):
    src, edges, _ = _source("lgpio")
    try:
        assert src.kernel_ticks and type(src.factory.pin("GPIO17")).__name__ == "LGPIOPin"
        tick = 1_000_000 * NS + 123_456_789  # 11.6 days of uptime
        fake_lgpio.fire(17, 0, tick)
        ((_, got, _),) = edges
        assert type(got) is int and abs(got - tick) <= 2
    finally:
        src.close()


def test_a_factory_without_kernel_ticks_is_refused_unless_allowed():
    with pytest.raises(ConfigError, match="allow_coarse_ticks") as e:
        _source("mock")
    assert "MockFactory" in str(e.value) and "checkpoint-lgpio" in str(e.value)

    src, edges, _ = _source("mock", allow_coarse_ticks=True)
    try:
        assert not src.kernel_ticks and not has_kernel_ticks(src.factory)
        before = time.monotonic_ns()
        src.factory.pin("GPIO17").drive_low()  # the beam breaks
        after = time.monotonic_ns()
        ((name, tick, active),) = edges
        # Stamped with CLOCK_MONOTONIC ns when the callback ran, not the factory's ticks.
        assert name == "beam" and active and type(tick) is int and before <= tick <= after
    finally:
        src.close()


def test_coarse_ticks_widen_every_passage_and_restamp_bound():
    w = World()
    cars = [5 * NS, 40 * NS]
    fine = run(w, pipeline(), 70, fix_from=0, pps_from=20, cars=cars)
    coarse = run(
        w, pipeline(tick_uncertainty_ns=COARSE_TICK_NS), 70, fix_from=0, pps_from=20, cars=cars
    )

    def first_stamps(events: list[dict]) -> dict:
        # Each passage and its first restamp. Later restamps follow the bound halving:
        # a fine tick's bound keeps halving after lock, a coarse one's stays above 20 ms.
        # Keyed by the passage's tick: restamps take seqs, so seqs differ between runs.
        out: dict = {}
        tick = {}
        for e in events:
            if e["type"] == "passage":
                tick[e["seq"]] = e["mono_ns"]
                out[(e["mono_ns"], "passage")] = e
            elif e["type"] == "restamp":
                out.setdefault((tick[e["ref_seq"]], "restamp"), e)
        return out

    a_all, b_all = first_stamps(fine), first_stamps(coarse)
    assert a_all.keys() == b_all.keys()
    assert {k[1] for k in a_all} == {"passage", "restamp"}
    for key, a in a_all.items():
        b = b_all[key]
        assert b["uncertainty_ns"] == a["uncertainty_ns"] + COARSE_TICK_NS
        assert b["utc_ns"] == a["utc_ns"]


_CONFIG = """
[box]
id = "box07"
checkpoint = "PC3"
[store]
path = "box.db"
[gpio]
pin_factory = "mock"
{extra}
[gps]
port = "{tmp}/no-gps"
[mqtt]
broker = "mqtt://127.0.0.1:9"
"""


def test_the_daemon_refuses_a_coarse_factory_and_says_what_to_do(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(_CONFIG.format(extra="", tmp=tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "checkpoint", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "allow_coarse_ticks" in out.stderr + out.stdout


def test_the_daemon_with_allow_coarse_ticks_says_so_in_its_status(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(_CONFIG.format(extra="allow_coarse_ticks = true", tmp=tmp_path))
    cfg = configmod.load(path)
    assert cfg.allow_coarse_ticks
    daemon = BoxDaemon(cfg)
    try:
        assert daemon.pipeline.tick_uncertainty_ns == COARSE_TICK_NS
        assert daemon.status()["ticks"] == "callback"
    finally:
        daemon.edges.close()
        daemon.store.close()


def test_a_capture_of_a_coarse_box_replays_to_the_same_widened_bounds(tmp_path):
    from checkpoint import capture
    from checkpoint.box.replay import replay_events

    records = [
        {"type": "sysclock", "mono_ns": 10 * NS, "realtime_ns": 1_776_000_000 * NS},
        {"type": "edge", "mono_ns": 11 * NS, "input": "beam", "active": True},
        {"type": "edge", "mono_ns": 11 * NS + 200_000_000, "input": "beam", "active": False},
        {"type": "advance", "mono_ns": 13 * NS},
    ]
    bounds = []
    for extra in ({}, {"tick_uncertainty_ns": COARSE_TICK_NS}):
        path = tmp_path / f"c{len(bounds)}.jsonl"
        w = capture.Writer(path, "box07", "PC3", convention="after", **extra)
        for r in records:
            w.write(r)
        w.close()
        (ev,) = [e for e in replay_events(str(path)) if e["type"] == "passage"]
        bounds.append(ev["uncertainty_ns"])
    assert bounds[1] == bounds[0] + COARSE_TICK_NS
