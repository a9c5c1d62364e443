"""The clock's vocabulary: its states, a stamp, its parameters and bound arithmetic (pure).

Split from clock.py so the pieces of the model (segment.py, wander.py, nmea_time.py)
share one definition of a parameter set and of what a bound is without importing the
model itself; clock.py re-exports the public names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

NS_PER_S = 1_000_000_000
# SQLite's INTEGER maximum: "no idea", still a true bound, still storable.
UNKNOWN_UNCERTAINTY_NS = 2**63 - 1


class ClockState(StrEnum):
    """Where a stamp's UTC came from, best first."""

    LOCKED = "locked"
    HOLDOVER = "holdover"
    NMEA = "nmea"
    UNSYNCED = "unsynced"


# Ties between candidates go to the better grade.
RANK = {ClockState.LOCKED: 0, ClockState.HOLDOVER: 1, ClockState.NMEA: 2, ClockState.UNSYNCED: 3}


@dataclass(frozen=True, slots=True)
class Stamp:
    """UTC of a tick: the true UTC lies within ``utc_ns ± uncertainty_ns``."""

    utc_ns: int
    uncertainty_ns: int
    clock: ClockState


@dataclass(frozen=True)
class ClockParams:
    """Thresholds of the clock model (module docstring explains how each is used).

    Fit: ``window_samples`` (longest window, PPS samples ≈ seconds; 600 gives ~0.15 µs at
    the window's end with 1 µs jitter), ``min_lock_samples`` (fewer → no PPS estimate; 10
    locks ten seconds after the first paired pulse, with a bound a few times wider than a
    full window's: the small-sample factor below and the propagated frequency error of a
    short line), ``min_window_samples`` (the window tests never shrink a window below this
    many samples), ``refit_every_samples`` (the state, status and checks of new pulses and
    sentences reuse a fit of at most this many samples ago while the newer ones agree with
    it; a young run refits more often, see `segment.refit_step`; published stamps always get
    the newest window), ``quadratic_min_samples`` and ``drift_t`` (drift term only from this
    many samples and when significant at this t), ``window_shrink``, ``runs_z`` (runs test:
    fail when the sign runs are fewer than expected by more than this many σ), ``local_z``
    and ``local_frac`` (mean residual of the nearest ``local_frac`` of the window vs its
    σ/√k), ``outlier_sigmas`` / ``outlier_floor_ns`` (rejection threshold: the larger of
    outlier_sigmas·robust σ and the floor), ``gross_ns`` (a sample this far off is a step
    candidate, not an outlier), ``step_confirm``, ``max_bridge_ns`` (a fit never spans a
    longer gap: past ~30 s the wander allowance exceeds one jitter σ, and a polynomial bent
    over both sides of an outage would claim µs where it errs by tens), ``early_relabel_ns``
    (a whole-second relabel this soon after a segment began may mean the receiver started
    with a wrong second: earlier ticks then carry the step).

    Bound: ``k_sigma`` (coverage factor on the propagated covariance; 5 σ),
    ``pps_accuracy_ns`` (receiver PPS vs UTC), ``misfit_sigmas``,
    ``wander_ppm_per_min`` (default allowance for unmodelled frequency change: 0.05
    ppm/min, 0.2 °C/min on a 0.25 ppm/°C crystal), ``wander_learn_factor`` and
    ``self_test_*`` / ``wander_memory_ns`` (the learnt allowance).

    States: ``locked_gap_ns`` (nearest sample closer than this → locked; 3.5 s lets one
    pulse go missing and its sentence be late), ``holdover_max_ns`` (30 min; after
    that, or as soon as NMEA's bound is smaller, NMEA).

    NMEA: ``nmea_latency_min_ns``/``max_ns`` (prior latency range, ±1 s; a daemon that
    knows the pairing convention may pass 0..1 s for "after"), ``nmea_latency_margin_ns``
    and ``nmea_latency_margin_frac`` (added to the learnt range on both sides),
    ``nmea_learn_min`` (sentences of a kind before its learnt range is used),
    ``nmea_learn_window``, ``nmea_min_consistent`` (consecutive sentences of a kind
    consistent with elapsed mono before it gives time), ``nmea_jump_tolerance_ns``,
    ``nmea_timeout_ns`` (farthest a sentence is extrapolated), ``nmea_floor_ns``
    (arrival stamping slop).

    Rates: ``max_freq_ppm`` (bound on the monotonic clock's rate error when unknown:
    Pi crystals are ±50 ppm, NTP slews add up to 500), ``learnt_freq_margin_ppm``.

    System clock: ``sysclock_uncertainty_ns`` (unknown by default; a daemon that knows
    the kernel clock is NTP-synchronised may pass e.g. 10 s).

    Memory: ``history_ns`` (how far back samples and fixes are kept for re-stamping).
    """

    window_samples: int = 600
    min_lock_samples: int = 10
    min_window_samples: int = 60
    refit_every_samples: int = 128
    quadratic_min_samples: int = 100
    drift_t: float = 2.5
    window_shrink: float = 0.7
    runs_z: float = 3.0
    local_z: float = 1.5
    local_frac: float = 0.125
    outlier_sigmas: float = 5.0
    outlier_floor_ns: int = 200
    gross_ns: int = 1_000_000
    step_confirm: int = 4
    early_relabel_ns: int = 120 * NS_PER_S

    k_sigma: float = 5.0
    pps_accuracy_ns: int = 100
    misfit_sigmas: float = 2.0
    wander_ppm_per_min: float = 0.05
    wander_learn_factor: float = 2.0
    self_test_every_ns: int = 60 * NS_PER_S
    self_test_min_ns: int = 120 * NS_PER_S
    self_test_max_ns: int = 1200 * NS_PER_S
    wander_memory_ns: int = 3600 * NS_PER_S

    locked_gap_ns: int = 3_500_000_000
    max_bridge_ns: int = 30 * NS_PER_S
    holdover_max_ns: int = 1800 * NS_PER_S

    nmea_latency_min_ns: int = -NS_PER_S
    nmea_latency_max_ns: int = NS_PER_S
    nmea_latency_margin_ns: int = 20_000_000
    nmea_latency_margin_frac: float = 0.25
    nmea_learn_min: int = 30
    nmea_learn_window: int = 600
    nmea_min_consistent: int = 3
    nmea_jump_tolerance_ns: int = 600_000_000
    nmea_timeout_ns: int = 10 * NS_PER_S
    nmea_floor_ns: int = 1_000_000

    max_freq_ppm: float = 500.0
    learnt_freq_margin_ppm: float = 20.0

    sysclock_uncertainty_ns: int = UNKNOWN_UNCERTAINTY_NS

    history_ns: int = 6 * 3600 * NS_PER_S


def ceil_ns(x: float) -> int:
    """A bound in float ns as int ns, rounded up (never below 0, "unknown" past int64)."""
    if not x < UNKNOWN_UNCERTAINTY_NS:  # also catches inf/nan
        return UNKNOWN_UNCERTAINTY_NS
    return max(0, math.ceil(x))


def sat_add(a: int, b: int) -> int:
    """a + b, saturating at "unknown" so a bound stays storable."""
    return min(UNKNOWN_UNCERTAINTY_NS, a + b)


@dataclass(slots=True)
class Est:
    """One source's candidate for a stamp: UTC, bound, grade (the bound may still grow)."""

    utc_ns: int
    unc_ns: int
    clock: ClockState
