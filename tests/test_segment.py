"""Which fit answers a tick past the newest sample (`Segment.fit_for` with reuse).

The reused fit is the run's fit at its last multiple of `refit_every_samples`, kept while
the newer samples still lie within its outlier threshold. An isolated late pulse must not
force a 600-sample refit (a receiver with 2 % late pulses would refit nearly every
pulse); two misses in a row, or too many, must.
"""

from __future__ import annotations

import random

from checkpoint.core.clockparams import NS_PER_S, ClockParams
from checkpoint.core.segment import Segment, refit_step

LATE_NS = 50_000  # a late interrupt: far outside a 1 µs-jitter fit, far inside gross_ns


PERIOD_NS = NS_PER_S + 20_000  # the box's oscillator runs 20 ppm slow


def on_time(i: int) -> int:
    """Where pulse i falls on the box's clock."""
    return 5 * NS_PER_S + i * PERIOD_NS


def clean_segment(n: int, seed: int = 7) -> Segment:
    rng = random.Random(seed)
    seg = Segment(ClockParams())
    for i in range(n):
        seg.append(on_time(i) + rng.randint(-1000, 1000), (1_700_000_000 + i) * NS_PER_S)
    return seg


def add(seg: Segment, late_ns: int = 0) -> None:
    """The next pulse, `late_ns` late (its interrupt served late; the next is on time)."""
    i = len(seg.mono)
    seg.append(on_time(i) + late_ns, seg.cont[-1] + NS_PER_S)


def tail_fit(seg: Segment):  # noqa: ANN201 - a regression.Fit
    n = len(seg.mono)
    fit, _ok = seg.fit_for(seg.mono[-1] + NS_PER_S // 2, 0, n, True)
    return fit


def test_a_lone_late_pulse_keeps_the_reused_fit() -> None:
    seg = clean_segment(640)  # a multiple of 128: the tail fit is the newest window
    grid_fit = tail_fit(seg)
    add(seg)
    assert tail_fit(seg) is grid_fit  # reused
    add(seg, LATE_NS)
    assert tail_fit(seg) is grid_fit  # one late pulse: still the same fit
    add(seg)
    add(seg)
    assert tail_fit(seg) is grid_fit


def test_two_late_pulses_in_a_row_force_a_refit() -> None:
    seg = clean_segment(640)
    grid_fit = tail_fit(seg)
    add(seg, LATE_NS)
    assert tail_fit(seg) is grid_fit
    add(seg, LATE_NS)
    refit = tail_fit(seg)
    assert refit is not grid_fit and refit.last == seg.mono[-1]


def test_a_phase_step_forces_a_refit_once_confirmed() -> None:
    seg = clean_segment(640)
    grid_fit = tail_fit(seg)
    # The phase moved 50 µs and stays there: every new sample misses.
    add(seg, LATE_NS)
    assert tail_fit(seg) is grid_fit  # one miss: could be a late pulse
    add(seg, LATE_NS)
    assert tail_fit(seg) is not grid_fit


def test_too_many_scattered_misses_force_a_refit() -> None:
    seg = clean_segment(640)
    grid_fit = tail_fit(seg)
    for _ in range(3):
        add(seg, LATE_NS)
        add(seg)
    assert tail_fit(seg) is grid_fit  # three isolated misses: tolerated
    add(seg, LATE_NS)
    assert tail_fit(seg) is not grid_fit  # the fourth: refit


def test_a_full_window_is_refitted_every_128_clean_pulses() -> None:
    seg = clean_segment(640)
    grid_fit = tail_fit(seg)
    for _ in range(127):
        add(seg)
        assert tail_fit(seg) is grid_fit
    add(seg)  # 768 samples: the next multiple of 128
    refit = tail_fit(seg)
    assert refit is not grid_fit and refit.last == seg.mono[-1]


def test_a_young_run_refits_more_often() -> None:
    seg = clean_segment(100)  # a quarter of the run is 25: every 16 pulses
    first = tail_fit(seg)
    assert first.last == seg.mono[95]  # the fit of 96 samples, the last multiple of 16
    for _ in range(11):
        add(seg)
        assert tail_fit(seg) is first
    add(seg)  # 112 samples
    assert tail_fit(seg).last == seg.mono[-1]


def test_refit_steps_nest_so_the_reused_fit_never_moves_back() -> None:
    assert [refit_step(n, 128) for n in (10, 64, 100, 256, 600, 10**6)] == [2, 16, 16, 64, 128, 128]
    assert refit_step(10**6, 32) == 32
    ends = [n - n % refit_step(n, 128) for n in range(1, 5000)]
    assert all(b >= a for a, b in zip(ends, ends[1:], strict=False))


def test_a_published_stamp_always_gets_the_newest_window() -> None:
    seg = clean_segment(640)
    reused = tail_fit(seg)
    for _ in range(5):
        add(seg)
    assert tail_fit(seg) is reused  # state, status, checks: the fit of 128 pulses' step
    n = len(seg.mono)
    fresh, _ok = seg.fit_for(seg.mono[-1] + NS_PER_S // 2, 0, n, False)  # a stamp
    assert fresh is not reused and fresh.last == seg.mono[-1]
