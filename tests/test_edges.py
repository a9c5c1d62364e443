"""Edges through gpiozero at Pin level, driven by the simulator's pin factory.

The factory is loaded by name through gpiozero's entry points, exactly as the
daemon loads lgpio on a Pi, and its pins fire `when_changed(ticks, state)` with
the ticks we inject: the test checks they arrive unchanged as int ns.
"""

import pytest

from checkpoint.box.edges import EdgeSource, open_factory, tick_ns
from checkpoint.config import InputConfig
from checkpoint.errors import ConfigError
from sim.pins import SimFactory


def source(inputs, **kw):
    edges, pps = [], []
    src = EdgeSource(
        inputs,
        pps_pin="GPIO18",
        pps_edge="rising",
        on_edge=lambda n, t, a, f: edges.append((n, t, a) if not f else (n, t, a, "fault")),
        on_pps=pps.append,
        pin_factory="checkpoint-sim",
        **kw,
    )
    return src, edges, pps


def test_sim_factory_is_found_through_gpiozero_entry_points():
    f = open_factory("checkpoint-sim")
    assert isinstance(f, SimFactory)
    f.close()
    with pytest.raises(ConfigError, match="no pin factory 'nope'"):
        open_factory("nope")


def test_kernel_ticks_arrive_as_exact_int_ns_with_polarity_applied():
    beam = InputConfig(name="beam", pin="GPIO17", active_low=True, pull="up")
    src, edges, pps = source([beam])
    f = src.factory
    # Pulled up = idle = not broken. Ticks above 2^53 would not survive a float.
    big = 2**60 + 123
    f.inject("GPIO17", big, 0)
    f.inject("GPIO17", big + 20_000_001, 1)
    f.inject("GPIO18", big + 5, 1)
    f.inject("GPIO18", big + 100_000_005, 0)  # falling edge of PPS: not watched
    assert edges == [("beam", big, True), ("beam", big + 20_000_001, False)]
    assert all(type(t) is int for _, t, _ in edges)
    assert pps == [big + 5]
    assert src.levels() == {"beam": False}
    src.close()


def test_active_high_input():
    btn = InputConfig(name="button", pin="GPIO27", active_low=False, pull="down")
    src, edges, _ = source([btn])
    src.factory.inject("GPIO27", 10, 1)
    assert edges == [("button", 10, True)]
    assert src.levels() == {"button": True}
    src.close()


def test_chattering_input_is_rate_limited_and_flagged_while_others_get_through():
    beam = InputConfig(name="beam", pin="GPIO17", max_edges_per_s=50)
    other = InputConfig(name="beam2", pin="GPIO22")
    src, edges, _ = source([beam, other])
    f = src.factory
    for i in range(4000):  # 4 kHz for one second
        f.inject("GPIO17", 1_000 + i * 250_000, i % 2)
        if i == 2000:
            f.inject("GPIO22", 500_000_000, 0)
    chatter = [e for e in edges if e[0] == "beam"]
    # 50 edges, then the first one over the limit, flagged so the detector distrusts it.
    assert len(chatter) == 51 and len(chatter[-1]) == 4 and all(len(e) == 3 for e in chatter[:50])
    assert ("beam2", 500_000_000, True) in edges
    assert src.faults(1_000_000_000) == {"beam": 3949}
    src.close()


def test_float_ticks_from_stock_lgpio_are_rounded_to_ns():
    assert tick_ns(12.000000001) == 12_000_000_001
    assert tick_ns(5) == 5
