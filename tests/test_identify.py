"""Automatic identification: a hard rally (overtakes, a skipped control, a retired car,
a service vehicle, two cars close together) identifies no passage wrongly; dual timing
pairs a control's inputs; the Hungarian matcher is optimal."""

from __future__ import annotations

import itertools
import random

import pytest

from checkpoint.hq import assign
from checkpoint.hq.dualtiming import merge
from checkpoint.hq.event import parse_event
from checkpoint.hq.identify import identify

S = 1_000_000_000
MS = 1_000_000

EVENT = """
[event]
name = "Hard rally"
[identify]
sigma_s = 5
transfer_sigma_s = 60
[[control]]
id = "C1"
[[control]]
id = "C2"
[[control]]
id = "C3"
[[control]]
id = "C4"
inputs = ["beam", "button"]
[[control]]
id = "TC"
due_s = 2700
kind = "time"
[[control]]
id = "C6"
[[trial]]
name = "P1"
start = "C1"
finish = "C3"
target_s = 900
secrets = [{control = "C2", target_s = 400}]
[[trial]]
name = "P2"
start = "C3"
finish = "C4"
target_s = 600
[[trial]]
name = "P3"
start = "TC"
finish = "C6"
target_s = 500
"""

T0 = 1_745_740_800 * S


def hard_rally(seed: int):
    """Rows (HQ export shape) and the truth: (box, store, seq) → car or None."""
    ev = parse_event(EVENT, "hard.toml")
    rng = random.Random(seed)
    cars = [str(n) for n in range(1, 41)]
    starts = {c: T0 + i * 60 * S for i, c in enumerate(cars)}
    skill = {c: 10 ** rng.uniform(-2, 0.6) for c in cars}  # σ 0.01 s .. 4 s per leg
    rows: list[dict] = []
    truth: dict[tuple[str, str, int], str | None] = {}
    seq = itertools.count(1)

    def passage(ctl: str, inp: str, t: int, car: str | None) -> None:
        n = next(seq)
        rows.append(
            {"box": f"box-{ctl}", "store": "s1", "seq": n, "checkpoint": ctl, "input": inp,
             "utc_ns": t, "uncertainty_ns": 2000, "car": None, "void": False}
        )  # fmt: skip
        truth[(f"box-{ctl}", "s1", n)] = car

    for c in cars:
        t = starts[c] + round(rng.gauss(0, 0.3) * S)
        prev_due = 0
        for ctl in ev.controls:
            leg = ctl.due_ns - prev_due
            prev_due = ctl.due_ns
            if ctl.id != "C1":
                err = rng.gauss(0, skill[c])
                if ctl.id == "TC":  # a transfer: anywhere in the car's minute
                    t = starts[c] + ctl.due_ns + round(rng.uniform(0, 55) * S)
                else:
                    t += leg + round(err * S)
            if c == "9" and ctl.id not in ("C1", "C2"):
                continue  # retired after C2
            if c == "7" and ctl.id == "C2":
                continue  # skipped the secret control
            if c == "12" and ctl.id == "C4":
                t += 25 * S  # lost time: 25 s late, right behind car 13 on time (z = 5)
            if c == "20" and ctl.id == "C3":
                t -= 30 * S  # overtakes car 19 is impossible to tell apart: half way
            if not (ctl.id == "C4" and c in ("3", "4")):  # the beam missed 3 and 4
                passage(ctl.id, "beam", t, c)
            if ctl.id == "C4":
                passage(ctl.id, "button", t + round(rng.uniform(0.15, 0.35) * S), c)
    # A service vehicle drives the route between cars 15 and 16.
    for ctl, dt in (("C3", 900 + 30), ("C4", 1500 + 29), ("C6", 3200 + 31)):
        passage(ctl, "beam", starts["15"] + dt * S, None)
    return ev, starts, rows, truth


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_hard_rally_identifies_nothing_wrongly(seed: int) -> None:
    ev, starts, rows, truth = hard_rally(seed)
    timed = {
        c.id: merge(rows, c, ev.identify.pair_window_ns, ev.identify.dual_tolerance_ns)
        for c in ev.controls
    }
    # Dual timing: one timed passage per car at C4; cars 3 and 4 by their button.
    c4 = timed["C4"]
    assert len(c4) == 39 + 1  # 39 cars (9 retired) + the service vehicle
    backups = {truth[t.key] for t in c4 if t.backup}
    assert backups == {"3", "4"}
    idn = identify(ev, timed, starts, retired={"9"})
    wrong = [
        (k, c.car, truth[k])
        for k, c in idn.by_key.items()
        if c.car is not None and c.car != truth[k]
    ]
    assert wrong == []
    counts = idn.counts()
    total = sum(counts.values())
    assert counts.get("auto", 0) >= 0.9 * total, counts
    # The service vehicle is nobody; car 7 has nothing at C2; car 9 nothing after C2.
    for k, c in idn.by_key.items():
        if truth[k] is None:
            assert c.car is None and c.status in ("unknown", "confirm")
    per_car = idn.car_passages()
    assert "C2" not in per_car.get("7", {})
    assert set(per_car.get("9", {})) <= {"C1", "C2"}
    # Every confirm carries a suggestion, and a margin under the threshold.
    for c in idn.to_confirm():
        assert c.suggest is not None and c.margin is not None
        assert c.margin < ev.identify.min_margin


def test_human_assignment_wins_and_anchors() -> None:
    ev, starts, rows, truth = hard_rally(1)
    # A marshal says the passage car 12 made at C4 (25 s late) is car 12.
    late = next(
        r
        for r in rows
        if r["checkpoint"] == "C4"
        and r["input"] == "beam"
        and truth[("box-C4", "s1", r["seq"])] == "12"
    )
    late["car"], late["car_source"] = "12", "marshal"
    # And HQ wrongly calls a C1 passage car 40's: it stays so (a person's call wins).
    first = next(r for r in rows if r["checkpoint"] == "C1")
    first["car"], first["car_source"] = "40", "hq"
    timed = {
        c.id: merge(rows, c, ev.identify.pair_window_ns, ev.identify.dual_tolerance_ns)
        for c in ev.controls
    }
    idn = identify(ev, timed, starts, retired={"9"})
    call = idn.by_key[(late["box"], "s1", late["seq"])]
    assert (call.car, call.source) == ("12", "marshal")
    c1 = idn.by_key[(first["box"], "s1", first["seq"])]
    assert (c1.car, c1.source) == ("40", "hq")
    # Car 40's own C1 passage is no longer matched to car 40.
    assert sum(1 for c in idn.calls["C1"] if c.car == "40") == 1


def test_two_cars_at_the_same_moment_are_left_to_confirm() -> None:
    ev, starts, _, _ = hard_rally(1)
    only = {"1": starts["1"], "2": starts["1"] + 2 * S}  # started 2 s apart
    rows = [
        {"box": "b", "store": "s", "seq": i, "checkpoint": "C1", "input": "beam",
         "utc_ns": starts["1"] + round(x * S), "uncertainty_ns": 0, "car": None, "void": False}
        for i, x in enumerate((1.0, 1.2), 1)
    ]  # fmt: skip
    timed = {"C1": merge(rows, ev.controls[0], S // 10, S // 2)}
    idn = identify(ev, timed, only)
    assert [c.status for c in idn.calls["C1"]] == ["confirm", "confirm"]
    assert {c.suggest for c in idn.calls["C1"]} == {"1", "2"}


def test_dual_timing_flags_a_disagreement() -> None:
    ev, _, _, _ = hard_rally(1)
    c4 = ev.control("C4")
    assert c4 is not None
    rows = [
        {"box": "b", "store": "s", "seq": 1, "checkpoint": "C4", "input": "beam",
         "utc_ns": T0, "uncertainty_ns": 1000, "car": None, "void": False},
        {"box": "b", "store": "s", "seq": 2, "checkpoint": "C4", "input": "button",
         "utc_ns": T0 + 800 * MS, "uncertainty_ns": 1000, "car": "5", "car_source": "marshal",
         "void": False},
    ]  # fmt: skip
    (t,) = merge(rows, c4, S, S // 2)
    assert t.utc_ns == T0 and t.backup is None
    assert t.disagree_ns == -800 * MS
    assert (t.car, t.car_source) == ("5", "marshal")  # any member's assignment counts
    assert t.members == (("b", "s", 1), ("b", "s", 2))


def test_hungarian_is_optimal() -> None:
    rng = random.Random(7)
    for _ in range(30):
        n, m = rng.randint(1, 6), rng.randint(6, 7)
        cost = [[rng.uniform(0, 10) for _ in range(m)] for _ in range(n)]
        best = min(
            sum(cost[i][p[i]] for i in range(n)) for p in itertools.permutations(range(m), n)
        )
        cols = assign.solve(cost)
        assert len(set(cols)) == n
        assert assign.total(cost, cols) == pytest.approx(best)
