"""The clock model against known truth (tests/clocktruth.py), in the style of chrony's
test/unit/regress.c: synthetic data with a seeded RNG, the truth known exactly.

Targets (1 µs PPS jitter σ, exact beam ticks): locked stamps made within 2 s of the
edge have RMS error ≤ 0.3 µs and max ≤ 1 µs even with 2 % late pulses, median bound
≤ 5 µs; after 10 minutes of holdover the error is ≤ 30 µs and the bound ≤ 300 µs;
every stamp on every profile lies within its bound.
"""

from __future__ import annotations

import functools
import json
import statistics

import pytest
from clocktruth import (
    HOT_BOX,
    NS,
    WANDER,
    Profile,
    Stamped,
    Truth,
    generate,
    replay,
    restamp_all,
)

from checkpoint.core.clock import (
    UNKNOWN_UNCERTAINTY_NS,
    ClockModel,
    ClockParams,
    ClockState,
    Stamp,
)
from checkpoint.core.nmea import Fix
from checkpoint.core.pairing import Pairer, Sample


@functools.cache
def simulate(
    prof: Profile, params: ClockParams | None = None
) -> tuple[Truth, ClockModel, list[Stamped]]:
    truth = generate(prof)
    model = ClockModel(params)
    return truth, model, replay(truth, Pairer(prof.convention), model)


def rms(values: list[int]) -> float:
    return (sum(v * v for v in values) / len(values)) ** 0.5


def assert_covered(recs: list[Stamped]) -> None:
    bad = [r for r in recs if not r.covered]
    assert not bad, f"{len(bad)} stamps outside their bound, first {bad[0]}"


LOCKED_PROFILES = [
    Profile(
        name="+50ppm after", seconds=1200, offset_ppm=50.0, outlier_rate=0.02, seed=21, **WANDER
    ),
    Profile(
        name="-50ppm before",
        seconds=1200,
        offset_ppm=-50.0,
        outlier_rate=0.02,
        convention="before",
        seed=22,
        **{**WANDER, "drift_ppm_per_min": -0.01},
    ),
]


@pytest.mark.parametrize("prof", LOCKED_PROFILES, ids=lambda p: p.name)
def test_locked_targets(prof: Profile) -> None:
    truth, model, recs = simulate(prof)
    assert_covered(recs)
    for late in (False, True):  # the immediate stamp, and the one after the next pulse
        locked = [r for r in recs if r.clock == "locked" and r.late is late]
        assert len(locked) > 400
        errs = [r.err for r in locked]
        assert rms(errs) <= 300, rms(errs)
        assert max(map(abs, errs)) <= 1000
        assert statistics.median(r.unc for r in locked) <= 5000
    # ~2 % late pulses were thrown out, and nothing else
    injected = 0.02 * prof.seconds
    assert 0.6 * injected <= model.counters["outliers"] <= 1.4 * injected
    assert model.counters["stamp_error"] == 0
    st = model.status(truth.mono_at[prof.seconds])
    assert st["state"] == "locked"
    k = prof.seconds - 1
    true_ppm = (truth.mono_at[k + 1] - truth.mono_at[k] - NS) / 1e3
    assert abs(st["freq_ppm"] - true_ppm) < 0.01
    assert 800 < st["jitter_ns"] < 1200


def test_restamping_later_interpolates_and_improves() -> None:
    prof = LOCKED_PROFILES[0]
    truth, model, recs = simulate(prof)
    final = restamp_all(truth, model, truth.mono_at[prof.seconds])
    assert_covered(final)
    locked = [r for r in final if r.clock == "locked"]
    immediate = [r for r in recs if r.clock == "locked" and not r.late]
    assert rms([r.err for r in locked]) < 0.7 * rms([r.err for r in immediate])
    assert statistics.median(r.unc for r in locked) < statistics.median(r.unc for r in immediate)
    # passages from before the first lock are re-stamped to µs
    early = [r for r in final if r.mono < truth.mono_at[60]]
    assert early and max(r.unc for r in early) < 10_000


HOLDOVER = Profile(
    name="outage",
    seconds=1500,
    offset_ppm=20.0,
    outlier_rate=0.02,
    pps_outages=((600, 600),),
    seed=24,
    **WANDER,
)


def test_ten_minutes_of_holdover() -> None:
    truth, model, recs = simulate(HOLDOVER)
    assert_covered(recs)
    lo, hi = truth.mono_at[600], truth.mono_at[1200]
    inside = [r for r in recs if not r.late and lo + 4 * NS < r.mono < hi]
    assert inside and all(r.clock == "holdover" for r in inside)
    end = inside[-1]
    assert end.mono > hi - 5 * NS
    assert abs(end.err) <= 30_000
    assert end.unc <= 300_000
    assert max(abs(r.err) for r in inside) <= 30_000
    # the bound grows with time since the last pulse
    assert inside[0].unc < inside[len(inside) // 2].unc < end.unc
    # PPS back: locked again within a minute and a half
    back = [r for r in recs if not r.late and r.mono > hi + 90 * NS]
    assert back and all(r.clock == "locked" for r in back)
    # and once it is back, the outage is bridged from both sides
    final = restamp_all(truth, model, truth.mono_at[HOLDOVER.seconds])
    assert_covered(final)
    bridged = [r for r in final if lo + 4 * NS < r.mono < hi]
    assert max(r.unc for r in bridged) < end.unc
    assert rms([r.err for r in bridged]) < rms([r.err for r in inside])


def test_hot_crystal_holdover_stays_honest_by_the_learnt_wander() -> None:
    # 1 °C temperature cycles (0.25 ppm/°C) change the frequency faster than the
    # default allowance (0.05 ppm/min); the self-test sees it while locked.
    prof = Profile(name="hot", seconds=2400, pps_outages=((1500, 600),), seed=3, **HOT_BOX)
    truth, model, recs = simulate(prof)
    assert_covered(recs)
    learnt = model.status(truth.mono_at[1499])["holdover_wander_ppm_per_min"]
    assert learnt > 0.1
    holdover = [r for r in recs if r.clock == "holdover"]
    assert max(abs(r.err) for r in holdover) > 100_000  # the default would not have held
    assert_covered(restamp_all(truth, model, truth.mono_at[prof.seconds]))


def test_state_transitions_unsynced_nmea_locked_holdover_nmea() -> None:
    prof = Profile(
        name="transitions",
        seconds=420,
        offset_ppm=-12.0,
        nmea_start_s=10,
        pps_start_s=20,
        pps_outages=((250, 1000),),
        seed=25,
    )
    params = ClockParams(holdover_max_ns=60 * NS)
    truth = generate(prof)
    model = ClockModel(params)
    seen: list[tuple[float, str]] = []

    def probe(mono: int) -> None:
        state = model.state(mono).value
        if not seen or seen[-1][1] != state:
            seen.append(((mono - truth.mono_at[0]) / 1e9, state))

    recs = replay(truth, Pairer("after"), model, probe=probe)
    assert [s for _, s in seen] == ["unsynced", "nmea", "locked", "holdover", "nmea"]
    at = {s: t for t, s in reversed(seen)}  # first time in each state
    at["nmea again"] = seen[-1][0]
    assert 10 <= at["nmea"] < 14  # three consistent sentences
    # min_lock_samples (10) paired pulses, the first at the first pulse (20 s): within
    # 15 s of the first pulse with a fix
    assert 28 <= at["locked"] <= 20 + 15
    assert 252 <= at["holdover"] < 255  # locked_gap after the last pulse
    assert 309 <= at["nmea again"] < 312  # holdover_max
    assert_covered(recs)
    nmea_late = [r for r in recs if r.clock == "nmea" and r.mono > truth.mono_at[320]]
    # the latency of each sentence kind was learnt while locked: far tighter than ±1 s
    assert nmea_late and max(r.unc for r in nmea_late) < 450_000_000
    unsynced = [r for r in recs if r.clock == "unsynced"]
    assert unsynced and all(r.unc == UNKNOWN_UNCERTAINTY_NS for r in unsynced)


def test_cold_start_bounds_are_honest() -> None:
    prof = Profile(
        name="cold",
        seconds=200,
        offset_ppm=44.0,
        outlier_rate=0.02,
        nmea_start_s=5,
        pps_start_s=15,
        seed=26,
        **WANDER,
    )
    truth, model, recs = simulate(prof)
    assert_covered(recs)
    before_lock = [r for r in recs if r.mono < truth.mono_at[24] and not r.late]
    assert before_lock and {r.clock for r in before_lock} <= {"nmea", "unsynced"}
    nmea = [r for r in before_lock if r.clock == "nmea"]
    assert nmea and all(r.unc >= 900_000_000 for r in nmea)  # ±1 s prior, nothing learnt


@pytest.mark.parametrize(
    ("convention", "latency"),
    [("after", (80_000_000, 140_000_000)), ("before", (300_000_000, 450_000_000))],
)
def test_nmea_latency_learnt_both_conventions(convention: str, latency) -> None:
    prof = Profile(
        name=f"nmea {convention}",
        seconds=400,
        convention=convention,
        latency_ns=latency,
        pps_outages=((200, 1000),),
        seed=27,
    )
    truth, model, recs = simulate(prof, ClockParams(holdover_max_ns=30 * NS))
    assert_covered(recs)
    nmea = [r for r in recs if r.clock == "nmea" and r.mono > truth.mono_at[240]]
    assert len(nmea) > 50
    # learnt range (60 ms wide) + margins: a few tens of ms, not ±1 s
    assert max(r.unc for r in nmea) < 150_000_000
    lo, hi = model.status(truth.mono_at[399])["nmea_latency_ms"]["RMC"]
    if convention == "after":  # RMC leaves 80..140 ms after the pulse
        assert 0 < lo <= 80 and 140 <= hi < 250
    else:  # and 315..465 ms before it (GGA follows 15 ms later, up to the lead)
        assert -600 < lo <= -465 and -315 <= hi < 0


def test_leap_second_relabels_without_losing_lock() -> None:
    prof = Profile(name="leap", seconds=700, leap_at=599, outlier_rate=0.02, seed=28, **WANDER)
    truth, model, recs = simulate(prof)
    assert_covered(recs)
    assert model.counters["leap"] == 1
    after = [r for r in recs if truth.mono_at[601] < r.mono and not r.late]
    assert after and all(r.clock == "locked" and r.unc < 5_000 for r in after)
    final = restamp_all(truth, model, truth.mono_at[prof.seconds])
    assert_covered(final)


def test_date_jump_widens_until_confirmed_then_follows_the_receiver() -> None:
    # The receiver's labels move by +1 s at second 400 and stay there (as when it
    # learns the GPS−UTC offset). Nothing local can say which is right; the pairer
    # follows after confirmation, and the model must not claim µs in between.
    prof = Profile(name="jump", seconds=600, label_jumps=((400, 1),), seed=29, **WANDER)
    truth = generate(prof)
    model = ClockModel()
    probes: list[Stamped] = []

    def probe(mono: int) -> None:
        if truth.mono_at[400] + 700_000_000 <= mono <= truth.mono_at[402]:
            s = model.stamp(mono, mono)
            probes.append(
                Stamped(mono, mono, truth.utc_of(mono), s.utc_ns, s.uncertainty_ns, "", False)
            )

    recs = replay(truth, Pairer("after"), model, probe=probe) + probes
    assert len(probes) >= 5
    assert model.counters["relabel"] == 1
    assert model.counters["nmea_pps_disagree"] >= 1
    for r in recs:
        k = truth.second_of(r.mono)
        truth_then = r.truth + (NS if k >= 400 else 0)  # what the receiver now says
        if k < 399:
            assert r.covered
        elif k > 410 and r.now > truth.mono_at[412]:
            assert abs(r.utc - truth_then) <= r.unc and r.unc < 5_000
        else:  # in the transition: one of the two answers, never neither
            assert abs(r.utc - r.truth) <= r.unc or abs(r.utc - truth_then) <= r.unc
            if k >= 400 and truth.mono_at[400] + 700_000_000 <= r.now <= truth.mono_at[402]:
                # the sentences moved, no sample has yet: both must be inside
                assert abs(r.utc - r.truth) <= r.unc and abs(r.utc - truth_then) <= r.unc


def test_a_pps_phase_step_starts_a_new_segment_and_widens_the_gap() -> None:
    prof = Profile(name="step", seconds=500, seed=30)
    truth = generate(prof)
    step = 3_000_000  # the receiver's pulse jumps 3 ms and stays
    truth.stream = [
        (m + step, o, k, p + step) if k == "pps" and m > truth.mono_at[300] else (m, o, k, p)
        for m, o, k, p in truth.stream
    ]
    truth.stream.sort(key=lambda item: (item[0], item[1]))
    model = ClockModel()
    recs = replay(truth, Pairer("after"), model)
    assert model.counters["step"] == 1
    # stamps are either consistent with the old pulses or carry the step
    for r in recs:
        if r.mono < truth.mono_at[300]:
            assert r.covered
        else:
            assert abs(r.err) <= r.unc or abs(r.err + step) <= r.unc
    later = [r for r in recs if r.mono > truth.mono_at[380]]
    assert later and all(r.clock == "locked" for r in later)


def test_nothing_known_gives_the_unknown_stamp() -> None:
    model = ClockModel()
    s = model.stamp(123, 456)
    assert s == Stamp(0, UNKNOWN_UNCERTAINTY_NS, ClockState.UNSYNCED)
    assert model.state(0) is ClockState.UNSYNCED
    json.dumps(model.status(0))


def test_sysclock_only() -> None:
    model = ClockModel()
    model.add_sysclock(5 * NS, 1_700_000_000 * NS)
    s = model.stamp(7 * NS, 8 * NS)
    assert s.clock is ClockState.UNSYNCED
    assert s.utc_ns == 1_700_000_002 * NS
    assert s.uncertainty_ns == UNKNOWN_UNCERTAINTY_NS
    told = ClockModel(ClockParams(sysclock_uncertainty_ns=10 * NS))
    told.add_sysclock(5 * NS, 1_700_000_000 * NS)
    assert told.stamp(7 * NS, 8 * NS).uncertainty_ns == 10 * NS
    # a reading made after `now` is not known yet
    assert told.stamp(1 * NS, 2 * NS).uncertainty_ns == UNKNOWN_UNCERTAINTY_NS


def test_odd_requests_never_raise() -> None:
    truth, model, _ = simulate(LOCKED_PROFILES[0])
    end = truth.mono_at[-1]
    for m, now in [
        (-(2**62), end),
        (2**62, end),
        (end + 10**15, end),  # far future
        (truth.mono_at[0] - 10**14, end),  # a day before the first sample
        (end, 0),  # now before everything
        (end, -5),
    ]:
        s = model.stamp(m, now)
        assert isinstance(s.utc_ns, int) and isinstance(s.uncertainty_ns, int)
        assert 0 <= s.uncertainty_ns <= UNKNOWN_UNCERTAINTY_NS
    assert model.counters["stamp_error"] == 0


def test_invalid_and_out_of_order_inputs_are_ignored() -> None:
    model = ClockModel()
    model.add_fix(Fix(10 * NS, 1_800_000_000, 0, False, "RMC", True))
    assert model.counters["invalid_fix"] == 1
    assert model.stamp(10 * NS, 11 * NS).clock is ClockState.UNSYNCED
    for k in range(5):
        model.add_sample(Sample(k * NS + 7, 1_800_000_000 + k))
    model.add_sample(Sample(2 * NS + 7, 1_800_000_002))  # duplicate
    model.add_sample(Sample(1 * NS, 1_800_000_001))  # older
    assert model.counters["out_of_order"] == 2
    assert model.counters["samples"] == 5


def test_epoch_ns_stay_exact_integers() -> None:
    # year 2100: 4.1e18 ns, far beyond a float's 2^53; results must be exact ints
    model = ClockModel()
    base_s = 4_102_444_800
    mono0 = 987_654_321_000
    for k in range(120):
        model.add_sample(Sample(mono0 + k * (NS + 10_000), base_s + k))  # 10 ppm fast
    m = mono0 + 100 * (NS + 10_000) + 123_456_789
    s = model.stamp(m, m)
    expect = (base_s + 100) * NS + round(123_456_789 / (1 + 1e-5))
    assert s.clock is ClockState.LOCKED
    assert abs(s.utc_ns - expect) <= 2 and s.uncertainty_ns < 1_000
    assert model.status(m)["freq_ppm"] == pytest.approx(10.0, abs=1e-3)


def test_deterministic() -> None:
    prof = Profile(name="det", seconds=150, outlier_rate=0.05, seed=31, **WANDER)
    a = replay(generate(prof), Pairer("after"), ClockModel())
    b = replay(generate(prof), Pairer("after"), ClockModel())
    assert a == b


EARLY_LOCK_PROFILES = [
    Profile(
        name="+50ppm 2%out", seconds=240, offset_ppm=50.0, outlier_rate=0.02, seed=41, **WANDER
    ),
    Profile(
        name="-44ppm 5%out before",
        seconds=240,
        offset_ppm=-44.0,
        outlier_rate=0.05,
        convention="before",
        seed=42,
        **WANDER,
    ),
    Profile(
        name="cold, late pps",
        seconds=240,
        offset_ppm=31.0,
        outlier_rate=0.02,
        nmea_start_s=7,
        pps_start_s=25,
        seed=43,
        **WANDER,
    ),
    # The receiver's first seconds name the wrong second, then it corrects itself.
    Profile(
        name="wrong second at start",
        seconds=240,
        offset_ppm=-17.0,
        outlier_rate=0.02,
        label_jumps=((0, 1), (6, -1)),
        seed=44,
        **WANDER,
    ),
]


@pytest.mark.parametrize("prof", EARLY_LOCK_PROFILES, ids=lambda p: p.name)
def test_locked_within_15_s_with_a_bound_that_holds_and_narrows(prof: Profile) -> None:
    truth = generate(prof)
    model = ClockModel()
    first_locked: list[int] = []

    def probe(mono: int) -> None:
        if not first_locked and model.state(mono) is ClockState.LOCKED:
            first_locked.append(mono)

    recs = replay(truth, Pairer(prof.convention), model, probe=probe)
    first_pulse = truth.mono_at[max(prof.pps_start_s, prof.nmea_start_s)]
    assert first_locked and (first_locked[0] - first_pulse) / NS <= 15
    # every stamp, the early short-fit ones included, lies within its bound ...
    assert_covered(recs)
    locked = [r for r in recs if r.clock == "locked" and not r.late]
    lock_at = first_locked[0]
    early = [r for r in locked if r.mono < lock_at + 20 * NS]
    later = [r for r in locked if r.mono > lock_at + 150 * NS]
    assert early and later
    # ... and the bound narrows as pulses accumulate
    assert statistics.median(r.unc for r in later) < statistics.median(r.unc for r in early)
    # knowing everything, the passages before lock are re-stamped honestly too
    final = restamp_all(truth, model, truth.mono_at[prof.seconds])
    assert_covered(final)
    if not prof.label_jumps:
        before = [r for r in final if r.mono < lock_at and r.mono > first_pulse]
        assert before and max(r.unc for r in before) < 50_000
