"""Regularity results against hand-computed penalties (pure, no broker, no files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checkpoint.errors import ConfigError
from checkpoint.hq.results import (
    Scoring,
    compute,
    hundredths,
    parse_stages,
    penalty_points,
    render_csv,
    render_json,
    render_table,
    target_ns_from,
)

S = 1_000_000_000
MS = 1_000_000
T0 = 1_713_719_000_123_456_789  # deliberately not a round number: float ns would lose digits

STAGES = """
[scoring]
penalty_per_hundredth = 1
rounding = "truncate"

[[stage]]
name = "A"
start = "PC1"
finish = "PC2"
target_s = 120

[[stage]]
name = "B"
start = "PC3"
finish = "PC4"
distance_km = 2.5
target_kmh = 50
"""


def p(car, cp, utc_ns, *, void=False, unc=1500):
    return {"car": car, "checkpoint": cp, "utc_ns": utc_ns, "void": void, "uncertainty_ns": unc}


def field(rows):
    """Three cars; values chosen so every penalty can be worked out by hand."""
    return [
        # car 7: A elapsed 120.370 s -> +0.370 -> 37; B 180.009 s -> +0.009 -> 0
        p("7", "PC1", T0),
        p("7", "PC2", T0 + 120 * S + 370 * MS),
        p("7", "PC3", T0 + 1000 * S),
        p("7", "PC4", T0 + 1180 * S + 9 * MS),
        # car 12: A 119.952 s -> -0.048 -> 4; B 181.5 s -> +1.5 -> 150
        p("12", "PC1", T0 + 60 * S),
        p("12", "PC2", T0 + 179 * S + 952 * MS),
        p("12", "PC3", T0 + 1060 * S),
        p("12", "PC4", T0 + 1241 * S + 500 * MS),
        # car 3: A has no finish -> MISSING; B 180.5 s -> 50
        p("3", "PC1", T0 + 120 * S),
        p("3", "PC3", T0 + 1120 * S),
        p("3", "PC4", T0 + 1300 * S + 500 * MS),
        *rows,
    ]


def test_hand_computed_penalties_and_ranking():
    res = compute(field([]), parse_stages(STAGES))
    by_car = {c.car: c for c in res.cars}
    a7, b7 = by_car["7"].stages
    assert a7.elapsed_ns == 120 * S + 370 * MS
    assert a7.deviation_ns == 370 * MS and a7.points == 37
    assert b7.target_ns == 180 * S and b7.points == 0
    a12, b12 = by_car["12"].stages
    assert a12.deviation_ns == -48 * MS and a12.points == 4
    assert b12.points == 150
    assert by_car["7"].total == 37 and by_car["12"].total == 154
    a3, b3 = by_car["3"].stages
    assert a3.status == "missing_finish" and a3.points is None and a3.elapsed_ns is None
    assert b3.points == 50
    assert by_car["3"].total is None  # MISSING, never zero
    assert by_car["3"].missing == 1 and by_car["3"].partial_points == 50
    # lowest points wins; the incomplete car after every complete one
    assert [(c.rank, c.car) for c in res.cars] == [(1, "7"), (2, "12"), (3, "3")]
    assert a7.uncertainty_ns == 3000


def test_round_mode_and_cap():
    text = STAGES.replace('rounding = "truncate"', 'rounding = "round"\nmax_penalty = 100')
    res = compute(field([]), parse_stages(text))
    by_car = {c.car: c for c in res.cars}
    assert by_car["7"].stages[0].points == 37  # 0.370 exactly
    assert by_car["7"].stages[1].points == 1  # 0.009 rounds to 0.01
    assert by_car["12"].stages[0].points == 5  # 0.048 rounds to 0.05
    assert by_car["12"].stages[1].points == 100  # 150 capped
    assert by_car["12"].total == 105


def test_penalty_boundaries_in_integer_ns():
    sc = Scoring()
    assert penalty_points(10 * MS, sc) == 1
    assert penalty_points(10 * MS - 1, sc) == 0  # a hundredth not fully elapsed
    assert penalty_points(-(370 * MS + 999_999), sc) == 37  # sign does not matter
    assert hundredths(5 * MS, "round") == 1 and hundredths(5 * MS - 1, "round") == 0
    assert penalty_points(250 * MS, Scoring(penalty_per_hundredth=2)) == 50
    with pytest.raises(ValueError):
        hundredths(1, "banker")


def test_elapsed_is_exact_integer_ns():
    # 1 ns past 120.37 s on top of an 19-digit epoch: float seconds could not hold it.
    rows = [p("1", "PC1", T0), p("1", "PC2", T0 + 120 * S + 370 * MS + 1)]
    st = parse_stages(STAGES.split('[[stage]]\nname = "B"')[0])
    (car,) = compute(rows, st).cars
    assert car.stages[0].elapsed_ns == 120_370_000_001
    assert car.stages[0].deviation_ns == 370_000_001
    assert car.total == 37


def test_void_unassigned_and_missing_start_and_ties():
    rows = [
        # car 21: a voided early start is ignored, the real one is used -> +0.10 -> 10
        p("21", "PC1", T0, void=True),
        p("21", "PC1", T0 + 5 * S),
        p("21", "PC2", T0 + 125 * S + 100 * MS),
        # car 22 ties car 21 on A: -0.10 -> 10
        p("22", "PC1", T0 + 10 * S),
        p("22", "PC2", T0 + 129 * S + 900 * MS),
        # car 5 never started A
        p("5", "PC2", T0 + 200 * S),
        # nobody assigned to this one
        p(None, "PC2", T0 + 300 * S),
        p(None, "PC9", T0 + 300 * S),  # not a stage checkpoint: not counted
    ]
    st = parse_stages(STAGES.split('[[stage]]\nname = "B"')[0])
    res = compute(rows, st)
    ranks = [(c.rank, c.car, c.total) for c in res.cars]
    assert ranks == [(1, "21", 10), (1, "22", 10), (3, "5", None)]
    assert res.cars[2].stages[0].status == "missing_start"
    assert res.unassigned == {"PC2": 1}


def test_finish_must_follow_start_and_loop_stage():
    text = """
[[stage]]
name = "loop"
start = "PC1"
finish = "PC1"
target_s = 60
"""
    rows = [p("9", "PC1", T0), p("9", "PC1", T0 + 60 * S + 20 * MS)]
    (car,) = compute(rows, parse_stages(text)).cars
    assert car.stages[0].points == 2
    # a finish passage before the start does not count
    rows = [p("9", "PC2", T0), p("9", "PC1", T0 + S)]
    (car,) = compute(rows, parse_stages(STAGES.split('[[stage]]\nname = "B"')[0])).cars
    assert car.stages[0].status == "missing_finish"


def test_target_from_speed_is_exact():
    # 1.1 km at 33 km/h is exactly 120 s; binary floats make it 120.00000000000001
    assert target_ns_from(distance_km=1.1, target_kmh=33) == 120 * S
    assert target_ns_from(target_s=95.5) == 95_500_000_000
    assert target_ns_from(distance_km=1, target_kmh=3) == 1_200 * S


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[stage]]\nname='a'\nstart='P'\nfinish='Q'\n", "needs target_s"),
        ("[[stage]]\nname='a'\nstart='P'\nfinish='Q'\ntarget_s=1\ntarget_kmh=3\n", "not both"),
        ("[[stage]]\nname='a'\nstart='P'\nfinish='Q'\ntarget_s=-1\n", "positive"),
        ("[[stage]]\nname='a'\nstart='P'\ntarget_s=1\n", "finish"),
        ("[[stage]]\nname='a'\nstart='P'\nfinish='Q'\ntarget_s=1\nspeed=3\n", "speed"),
        (
            "[scoring]\nrounding='up'\n[[stage]]\nname='a'\nstart='P'\nfinish='Q'\ntarget_s=1",
            "rounding",
        ),
        ("[scoring]\nmax_penalty=-1\n", "max_penalty"),
        ("", "at least one"),
        ("[[stage\n", "not valid TOML"),
        ("[[stage]]\nname='a'\nstart='P'\nfinish='Q'\ntarget_s='60'\n", "must be a number"),
    ],
)
def test_stages_errors_name_key_and_file(text, needle):
    with pytest.raises(ConfigError) as err:
        parse_stages(text, "st.toml")
    assert needle in str(err.value) and "st.toml" in str(err.value)


def test_example_stages_file_parses():
    path = Path(__file__).resolve().parents[1] / "examples" / "stages.toml"
    st = parse_stages(path.read_text(), str(path))
    assert [s.target_ns for s in st.stages] == [120 * S, 180 * S, 95_500_000_000]


def test_renderings():
    res = compute(field([]), parse_stages(STAGES))
    table = render_table(res)
    assert "MISSING" in table and "37 (+0.370)" in table
    rows = render_csv(res).splitlines()
    assert rows[0].startswith("rank,car,stage,status")
    assert any(r.startswith("3,3,A,missing_finish") for r in rows)
    doc = json.loads(render_json(res))
    assert [c["car"] for c in doc["cars"]] == ["7", "12", "3"]
    assert doc["cars"][2]["total"] is None
