"""Pairing PPS with NMEA: known-truth streams (tests/clocktruth.py), seeded, fast.

The invariant under every perturbation: a sample's label is exactly the second the
receiver named for *that* pulse. Refusing is always allowed; shifting is never.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from clocktruth import NS, Profile, Truth, generate

from checkpoint.core.nmea import Fix
from checkpoint.core.pairing import Pairer, Sample


def run(truth: Truth, pairer: Pairer) -> list[Sample]:
    out: list[Sample] = []
    for _, _, kind, payload in truth.stream:
        if kind == "pps":
            out += pairer.pps(payload)
        elif kind == "fix":
            out += pairer.fix(payload)
    return out


def assert_labels_right(truth: Truth, samples: list[Sample]) -> None:
    monos = [s.mono_ns for s in samples]
    assert monos == sorted(monos) and len(set(monos)) == len(monos)
    for s in samples:
        k = truth.second_of(s.mono_ns)
        assert abs(s.mono_ns - truth.mono_at[k]) < 1_000_000, "a sample on a bounce or glitch"
        assert s.utc_s == truth.named(k)[0], f"second {k} labelled {s.utc_s}"


def short(**kw) -> Truth:
    base = {"seconds": 120, "offset_ppm": 23.0, "kinds": ("RMC", "GGA", "ZDA"), "seed": 5}
    return generate(Profile(**{**base, **kw}))


def _paired_after(**profile: object) -> tuple[Truth, Pairer, list[Sample]]:
    """A short run of `profile` through an "after" pairer, every label checked right."""
    truth = short(**profile)
    pairer = Pairer("after")
    samples = run(truth, pairer)
    assert_labels_right(truth, samples)
    return truth, pairer, samples


@pytest.mark.parametrize("convention", ["after", "before"])
def test_pairs_every_second_once_with_the_right_label(convention: str) -> None:
    truth = short(convention=convention, outlier_rate=0.02)
    pairer = Pairer(convention)
    samples = run(truth, pairer)
    assert_labels_right(truth, samples)
    # three sentences a second, one sample; the chain needs `confirm` seconds, then
    # releases the held ones too, so only the first second(s) of the run are lost
    assert len(samples) >= truth.profile.seconds - 2
    assert pairer.stats["duplicate_sentence"] >= truth.profile.seconds
    assert not pairer.mismatch
    assert pairer.rejects["convention_mismatch"] == 0


def test_samples_come_from_the_input_that_completes_them() -> None:
    # "after": the sentence completes the pair; "before": the pulse does.
    after, before = Pairer("after", confirm=1), Pairer("before", confirm=1)
    pulse = 10 * NS
    assert after.pps(pulse) == []
    got = after.fix(Fix(pulse + 200_000_000, 1_800_000_000, 0, True, "RMC", True))
    assert got == [Sample(pulse, 1_800_000_000)]
    assert before.pps(pulse) == []
    assert before.fix(Fix(pulse + 700_000_000, 1_800_000_001, 0, True, "RMC", True)) == []
    assert before.pps(pulse + NS) == [Sample(pulse + NS, 1_800_000_001)]


def test_confirmation_holds_then_releases() -> None:
    pairer = Pairer("after", confirm=3)
    got = []
    for k in range(3):
        assert got == []
        pairer.pps(k * NS)
        got = pairer.fix(Fix(k * NS + 100_000_000, 1000 + k, 0, True, "RMC", True))
    assert [s.utc_s for s in got] == [1000, 1001, 1002]


@pytest.mark.parametrize(
    ("configured", "actual", "latency"),
    [
        ("after", "before", (40_000_000, 90_000_000)),  # sentence just before the pulse
        ("before", "after", (40_000_000, 90_000_000)),  # sentence just after the pulse
    ],
)
def test_wrong_convention_is_refused_not_paired(configured, actual, latency) -> None:
    truth = short(convention=actual, latency_ns=latency)
    pairer = Pairer(configured)
    assert run(truth, pairer) == []
    assert pairer.mismatch
    assert pairer.rejects["convention_mismatch"] > 0


def test_ambiguous_phase_is_refused() -> None:
    # sentences within a few ms of the pulse could belong to either side of it
    truth = short(latency_ns=(1_000_000, 15_000_000), kinds=("RMC",))
    pairer = Pairer("after")
    assert run(truth, pairer) == []
    assert pairer.rejects["ambiguous_phase"] >= 3
    assert pairer.mismatch


def test_an_odd_late_sentence_is_paired_by_the_chain_without_latching() -> None:
    # One sentence stuck in a buffer until 950 ms: the chain (S − g constant) says
    # which pulse it names, so it is paired; it is one vote, not a mismatch.
    pairer = Pairer("after", confirm=1)
    out = []
    for k in range(20):
        out += pairer.pps(k * NS)
        lat = 950_000_000 if k == 7 else 120_000_000
        out += pairer.fix(Fix(k * NS + lat, 5000 + k, 0, True, "RMC", True))
    assert not pairer.mismatch
    assert [s.utc_s for s in out] == [5000 + k for k in range(20)]


def test_a_late_onset_without_a_chain_is_refused() -> None:
    pairer = Pairer("after", confirm=1)
    pairer.pps(0)
    assert pairer.fix(Fix(950_000_000, 5000, 0, True, "RMC", True)) == []
    assert pairer.rejects["convention_mismatch"] == 1
    assert not pairer.mismatch


def test_missing_pulses_pair_by_elapsed_seconds() -> None:
    truth, pairer, samples = _paired_after(seconds=300, missing_rate=0.08, seed=8)
    assert pairer.rejects["missing_pulse"] > 10
    assert pairer.rejects["unpaired"] > 10  # their sentences found no pulse
    assert len(samples) > 250


def test_doubled_pulses_keep_the_first_edge() -> None:
    truth, pairer, samples = _paired_after(seconds=300, double_rate=0.1, seed=9)
    assert pairer.rejects["double_pulse"] > 15
    assert len(samples) >= 297


def test_glitch_pulses_off_grid_are_dropped() -> None:
    truth = short(seconds=200)
    rng = random.Random(3)
    for _ in range(15):
        k = rng.randrange(5, 195)
        glitch = truth.mono_at[k] + rng.randint(150_000_000, 850_000_000)
        truth.stream.append((glitch, 0, "pps", glitch))
    truth.stream.sort(key=lambda item: (item[0], item[1]))
    pairer = Pairer("after")
    samples = run(truth, pairer)
    assert_labels_right(truth, samples)
    assert pairer.rejects["off_grid"] == 15
    assert len(samples) > 150


def test_pps_phase_change_regrids() -> None:
    # the receiver's whole second (pulse and sentences) moves 400 ms in our clock,
    # as when the PPS source is swapped under a running box
    truth = short(seconds=200)
    moved = []
    shift = 400_000_000
    for mono, order, kind, payload in truth.stream:
        if kind == "pps" and mono > truth.mono_at[100]:
            mono = payload = mono + shift
        elif kind == "fix" and mono > truth.mono_at[100]:
            mono += shift
            payload = dataclasses.replace(payload, mono_ns=mono)
        moved.append((mono, order, kind, payload))
    truth.stream = sorted(moved, key=lambda item: (item[0], item[1]))
    pairer = Pairer("after")
    samples = run(truth, pairer)
    assert pairer.rejects["regrid"] == 1
    late = [s for s in samples if s.mono_ns > truth.mono_at[100]]
    assert len(late) > 80
    for s in late:  # the labels follow the pulses, whose tick moved by 400 ms
        assert s.utc_s == truth.named(truth.second_of(s.mono_ns - shift))[0]


def test_nmea_without_pps_gives_nothing() -> None:
    truth = short(pps_outages=((0, 1000),))
    pairer = Pairer("after")
    assert run(truth, pairer) == []
    assert pairer.rejects["unpaired"] >= 3 * truth.profile.seconds - 3


def test_pps_without_valid_fix_gives_nothing() -> None:
    truth = short()
    truth.stream = [
        (m, o, k, dataclasses.replace(p, valid=False) if k == "fix" else p)
        for m, o, k, p in truth.stream
    ]
    pairer = Pairer("after")
    assert run(truth, pairer) == []
    assert pairer.rejects["invalid_fix"] == 3 * truth.profile.seconds
    assert pairer.rejects["no_fix"] >= truth.profile.seconds - 2


def test_fractional_sentences_do_not_label() -> None:
    pairer = Pairer("after", confirm=1)
    pairer.pps(0)
    assert pairer.fix(Fix(100_000_000, 77, 200_000_000, True, "RMC", True)) == []
    assert pairer.stats["fractional"] == 1
    assert pairer.fix(Fix(120_000_000, 77, 0, True, "RMC", True)) == [Sample(0, 77)]


def test_a_fractional_sentence_far_from_the_chain_drops_the_chain() -> None:
    # gpsd's nmea-fuzzy-cases.log: the whole-second sentences agree with the pulses, but
    # the fractional ones between them name a time 630 s away. Whichever is true, the
    # labels cannot be trusted: the chain goes and must be confirmed afresh.
    pairer = Pairer("after", confirm=2)
    out: list[Sample] = []
    for k in range(4):
        pairer.pps(k * NS)
        out += pairer.fix(Fix(k * NS + 100_000_000, 1000 + k, 0, True, "RMC", True))
    assert [s.utc_s for s in out] == [1000, 1001, 1002, 1003]
    # a 5 Hz receiver's fractions of the current second are no contradiction
    assert pairer.fix(Fix(3 * NS + 300_000_000, 1003, 200_000_000, True, "GGA", False)) == []
    assert pairer.rejects["contradicted"] == 0
    pairer.fix(Fix(3 * NS + 500_000_000, 1003 + 630, 200_000_000, True, "GGA", False))
    assert pairer.rejects["contradicted"] == 1
    pairer.pps(4 * NS)
    assert pairer.fix(Fix(4 * NS + 100_000_000, 1004, 0, True, "RMC", True)) == []  # held
    pairer.pps(5 * NS)
    got = pairer.fix(Fix(5 * NS + 100_000_000, 1005, 0, True, "RMC", True))
    assert [s.utc_s for s in got] == [1004, 1005]


def test_leap_second_is_not_paired_across() -> None:
    truth, pairer, samples = _paired_after(seconds=40, leap_at=20)
    seconds = [truth.second_of(s.mono_ns) for s in samples]
    assert 20 not in seconds  # 23:59:60 itself gives no sample
    assert pairer.rejects["leap"] == 1
    assert pairer.rejects["date_jump"] == 0
    # resumed on the new day's POSIX labels within `confirm` seconds
    assert [k for k in seconds if k > 20][0] <= 21 + pairer.confirm


@pytest.mark.parametrize("jump", [1, -1, 86_400, 619_315_200])
def test_date_jump_is_refused_then_followed_after_confirmation(jump: int) -> None:
    truth = short(seconds=100, label_jumps=((50, jump),))
    pairer = Pairer("after", confirm=3)
    samples = run(truth, pairer)
    assert_labels_right(truth, samples)  # before: old labels; after: the new ones
    assert pairer.rejects["date_jump"] == 1
    seconds = [truth.second_of(s.mono_ns) for s in samples]
    assert 49 in seconds and 52 in seconds
    # every sample after the jump was confirmed by three consistent seconds
    assert all(truth.named(k)[0] - k == truth.named(99)[0] - 99 for k in seconds if k >= 50)


def test_a_single_wrong_second_costs_seconds_not_a_wrong_sample() -> None:
    truth = short(seconds=60)
    truth.stream = [
        (
            m,
            o,
            k,
            dataclasses.replace(p, utc_s=p.utc_s + 1)
            if k == "fix" and p.utc_s == 1767225030
            else p,
        )
        for m, o, k, p in truth.stream
    ]
    pairer = Pairer("after")
    samples = run(truth, pairer)
    assert all(s.utc_s == truth.named(truth.second_of(s.mono_ns))[0] for s in samples)
    assert pairer.rejects["conflict"] + pairer.rejects["date_jump"] >= 1
    assert 30 not in [truth.second_of(s.mono_ns) for s in samples]


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_never_shifts_a_label(seed: int) -> None:
    rng = random.Random(seed)
    prof = Profile(
        seconds=200,
        seed=seed,
        offset_ppm=rng.uniform(-60, 60),
        convention=rng.choice(["after", "before"]),
        latency_ns=(rng.randint(40, 300) * 1_000_000, rng.randint(300, 850) * 1_000_000),
        kinds=rng.choice([("RMC",), ("RMC", "GGA"), ("GGA", "RMC", "ZDA")]),
        outlier_rate=0.05,
        missing_rate=rng.uniform(0, 0.1),
        double_rate=rng.uniform(0, 0.1),
        pps_outages=((rng.randint(20, 150), rng.randint(1, 40)),),
        nmea_outages=((rng.randint(20, 150), rng.randint(1, 10)),),
        label_jumps=((rng.randint(30, 180), rng.choice([1, -1, 3600])),),
        leap_at=rng.choice([None, rng.randint(10, 190)]),
    )
    truth = generate(prof)
    # and some sentences that are not valid, and some glitch pulses
    stream = []
    for m, o, k, p in truth.stream:
        if k == "fix" and rng.random() < 0.05:
            p = dataclasses.replace(p, valid=False)
        stream.append((m, o, k, p))
        if k == "pps" and rng.random() < 0.02:
            g = m + rng.randint(120_000_000, 880_000_000)
            stream.append((g, 0, "pps", g))
    truth.stream = sorted(stream, key=lambda item: (item[0], item[1]))
    pairer = Pairer(prof.convention)
    samples = run(truth, pairer)
    assert_labels_right(truth, samples)
    assert not pairer.mismatch
    assert len(samples) > prof.seconds // 3


def test_status_is_json_able() -> None:
    import json

    truth = short(seconds=30)
    pairer = Pairer("after")
    run(truth, pairer)
    st = pairer.status()
    json.dumps(st)
    assert 50_000_000 < st["phase_ns"] < 650_000_000


def test_bad_convention_is_rejected() -> None:
    with pytest.raises(ValueError):
        Pairer("sideways")


# -- chatty receivers: time sentences late in the second and past the next pulse --


def run_burst(latencies, seconds: int = 40, first: int = 5000, **kw):
    """Sentences of second k arrive `latencies(k)` after pulse k (any may pass pulse k+1)."""
    pairer = Pairer("after", **kw)
    events = []
    for k in range(seconds):
        events.append((k * NS, 0, "pps", k))
        for kind, lat in zip(("RMC", "GGA", "ZDA"), latencies(k), strict=True):
            if lat is not None:
                events.append((k * NS + lat, 1, kind, k))
    out: list[Sample] = []
    for mono, _, kind, k in sorted(events):
        if kind == "pps":
            out += pairer.pps(mono)
        else:
            out += pairer.fix(Fix(mono, first + k, 0, True, kind, True))
    for s in out:
        assert s.utc_s == first + s.mono_ns // NS, f"pulse {s.mono_ns // NS} labelled {s.utc_s}"
    return pairer, out


def test_ublox_m8_at_9600_pairs_with_zda_at_the_end_of_the_second() -> None:
    # RMC first (~125 ms), GGA after VTG (~300 ms), ZDA last at 0.90-0.99 s: the old
    # pairer voted every ZDA as a convention mismatch and latched; the box never locked.
    pairer, out = run_burst(lambda k: (125_000_000, 300_000_000, 900_000_000 + 9_000_000 * k % 90))
    assert not pairer.mismatch and pairer.rejects["convention_mismatch"] == 0
    assert len(out) >= 38
    assert pairer.stats["duplicate_sentence"] >= 2 * 39
    assert 900_000_000 <= pairer.tail_ns < 1_000_000_000


def test_a_burst_that_overruns_the_next_pulse_pairs_its_tail_with_its_own_pulse() -> None:
    # ZDA arrives 20-120 ms after the *next* pulse, before that second's RMC.
    pairer, out = run_burst(lambda k: (60_000_000, 500_000_000, 1_020_000_000 + k % 5 * 25_000_000))
    assert not pairer.mismatch
    assert pairer.rejects["conflict"] == 0 and pairer.rejects["date_jump"] == 0
    assert pairer.stats["overrun_sentence"] >= 38
    assert len(out) >= 38


def test_an_onset_drifting_past_the_next_pulse_keeps_its_label() -> None:
    # The backlog grows 20 ms a second: RMC moves from 0.7 s to 1.1 s after its pulse.
    pairer, out = run_burst(lambda k: (700_000_000 + 20_000_000 * min(k, 20), None, None))
    assert pairer.stats["chain_overrun"] >= 10
    assert pairer.rejects["date_jump"] == 0
    assert len(out) >= 30


def test_a_label_that_jumps_back_a_second_is_not_taken_for_an_overrun() -> None:
    # From second 20 the receiver names the previous second: the RMC kind is seen
    # twice for one named second, so it is no continuation; the jump is counted.
    def lat(k):
        return (120_000_000, 300_000_000, 950_000_000)

    pairer = Pairer("after")
    out: list[Sample] = []
    for k in range(40):
        out += pairer.pps(k * NS)
        named = 5000 + k - (1 if k >= 20 else 0)
        for kind, la in zip(("RMC", "GGA", "ZDA"), lat(k), strict=True):
            out += pairer.fix(Fix(k * NS + la, named, 0, True, kind, True))
    assert pairer.rejects["date_jump"] == 1
    for s in out:  # the receiver's labels: old before the jump, new after it
        k = s.mono_ns // NS
        assert s.utc_s == 5000 + k - (1 if k >= 20 else 0)


def test_a_mismatch_decays_and_says_what_to_change() -> None:
    # A "before" receiver (lead 50 ms) on a box set to "after": refused, with advice;
    # then the receiver is reconfigured to send after the pulse and the box recovers.
    pairer = Pairer("after")
    out: list[Sample] = []
    for k in range(100):
        out += pairer.pps(k * NS)
        if k < 20:
            out += pairer.fix(Fix((k + 1) * NS - 50_000_000, 5001 + k, 0, True, "RMC", True))
        else:
            out += pairer.fix(Fix(k * NS + 150_000_000, 5000 + k, 0, True, "RMC", True))
        if k == 19:
            assert pairer.mismatch and out == []
            assert 'gps.convention = "before"' in pairer.status()["advice"]
    assert not pairer.mismatch and pairer.status()["advice"] is None
    assert out and all(s.utc_s == 5000 + s.mono_ns // NS for s in out)
    first = min(s.mono_ns // NS for s in out)
    assert first <= 20 + pairer.mismatch_clear + pairer.confirm


@pytest.mark.parametrize("seed", range(8))
def test_fuzz_chatty_bursts_never_shift_a_label(seed: int) -> None:
    # Bursts whose later sentences land anywhere up to ~1.4 s after their pulse.
    rng = random.Random(100 + seed)
    prof = Profile(
        seconds=200,
        seed=seed,
        offset_ppm=rng.uniform(-60, 60),
        latency_ns=(rng.randint(40, 200) * 1_000_000, rng.randint(200, 400) * 1_000_000),
        kinds=rng.choice([("RMC", "GGA", "ZDA"), ("GGA", "RMC", "ZDA"), ("RMC", "ZDA")]),
        kind_gap_ns=rng.randint(200, 500) * 1_000_000,
        outlier_rate=0.05,
        missing_rate=rng.uniform(0, 0.05),
        pps_outages=((rng.randint(20, 150), rng.randint(1, 20)),),
        label_jumps=((rng.randint(30, 180), rng.choice([1, -1, 3600])),),
    )
    truth = generate(prof)
    pairer = Pairer("after")
    samples = run(truth, pairer)
    assert_labels_right(truth, samples)
    assert len(samples) > prof.seconds // 3


def test_the_same_kind_twice_in_a_second_gives_one_sample() -> None:
    # GPRMC and GNRMC both enabled: same kind, same second, one pulse.
    pairer = Pairer("after", confirm=1)
    out: list[Sample] = []
    for k in range(10):
        out += pairer.pps(k * NS)
        out += pairer.fix(Fix(k * NS + 100_000_000, 5000 + k, 0, True, "RMC", True, talker="GP"))
        out += pairer.fix(Fix(k * NS + 180_000_000, 5000 + k, 0, True, "RMC", True, talker="GN"))
    assert [s.utc_s for s in out] == [5000 + k for k in range(10)]
    assert pairer.stats["duplicate_sentence"] == 10


def test_a_before_receiver_whose_burst_runs_past_its_pulse() -> None:
    # RMC naming S 300 ms before pulse S, ZDA naming S 60 ms after it: the tail is the
    # same burst, not a sentence 940 ms ahead of the next pulse.
    pairer = Pairer("before")
    out: list[Sample] = []
    for k in range(30):
        out += pairer.fix(Fix(k * NS - 300_000_000, 5000 + k, 0, True, "RMC", True))
        out += pairer.pps(k * NS)
        out += pairer.fix(Fix(k * NS + 60_000_000, 5000 + k, 0, True, "ZDA", True))
    # Only the very first tail (its burst began before the box listened) is refused.
    assert not pairer.mismatch and pairer.rejects["convention_mismatch"] == 1
    assert pairer.stats["duplicate_sentence"] >= 28
    assert len(out) >= 26 and all(s.utc_s == 5000 + s.mono_ns // NS for s in out)
