"""Classification against hand-computed tables: coefficients, jokers, time controls,
missed controls, ties, DNF/DNS/OTL, provisional marks; the event file and entry list."""

from __future__ import annotations

from decimal import Decimal

import pytest

from checkpoint.errors import ConfigError
from checkpoint.hq.classify import classify, coefficient
from checkpoint.hq.dualtiming import Timed
from checkpoint.hq.entries import Entry, edit, parse_entries, render_entries, start_ns
from checkpoint.hq.event import parse_event
from checkpoint.hq.identify import Call

S = 1_000_000_000
MS = 1_000_000

EVENT = """
[event]
name = "Test Mille"
date = "2025-04-27"
timezone = "Europe/Rome"

[rules]
missed_control = 300
early_per_unit = 60
late_per_unit = 10
max_late_units = 30
{extra}

[[control]]
id = "S"
km = 0
[[control]]
id = "A"
km = 1
[[control]]
id = "F"
km = 3
[[control]]
id = "G"
km = 5
[[control]]
id = "TC"
due_s = 900
kind = "time"

[[trial]]
name = "T1"
start = "S"
finish = "F"
target_s = 300
secrets = [{{control = "A", target_s = 100}}]

[[trial]]
name = "T2"
start = "F"
finish = "G"
target_kmh = 36          # 2 km at 36 km/h = 200 s
"""


def ev(extra: str = ""):
    return parse_event(EVENT.format(extra=extra), "test.toml")


def call(control: str, utc: int, car: str, unc: int = 0) -> Call:
    t = Timed(control, utc, unc, ("b", "s", utc), (("b", "s", utc),), ("b:beam",))
    return Call(t, "auto", car)


def sheet(car: str, start: int, offsets: dict[str, float], unc: int = 0) -> dict[str, Call]:
    """Passages at start + offset seconds (exact to the ms)."""
    return {c: call(c, start + round(o * 1000) * MS, car, unc) for c, o in offsets.items()}


def entry(n: str, year: int, klass: str = "A", coef: str | None = None, status: str = "entered"):
    return Entry(
        n, f"crew {n}", "car", year, klass, "10:00", Decimal(coef) if coef else None, status
    )


T0 = 1_745_740_800 * S  # 2025-04-27 08:00:00 UTC, on the minute


def rally(extra: str = ""):
    e = ev(extra)
    entries = [
        entry("1", 1934),
        entry("2", 1950, coef="1.10"),
        entry("3", 1934, "B"),
        entry("5", 1940, "B"),
        entry("6", 1930, status="retired"),
        entry("7", 1930, status="withdrawn"),
        entry("8", 1955, "B"),
    ]
    starts = {x.number: T0 + i * 60 * S for i, x in enumerate(entries)}
    P = {
        # S, A (+100), F (+300), G (F + 200), TC at minute 15
        "1": {"S": 0, "A": 100.12, "F": 299.955, "G": 500.455, "TC": 930},
        "2": {"S": 0, "F": 300.30, "G": 500.32, "TC": 1030},  # A missed, TC 2 min late
        "3": {"S": 0, "A": 100.12, "F": 299.955, "G": 500.455, "TC": 930},  # as car 1
        "5": {"S": 0, "A": 100, "F": 300, "G": 500, "TC": 900 + 31 * 60},  # 31 min late
        "6": {"S": 0, "A": 100},
        "8": {"S": 0, "A": 100.01, "F": 300, "G": 500, "TC": 850},  # 1 min early
    }
    got = {car: sheet(car, starts[car], offs) for car, offs in P.items()}
    return e, entries, starts, got


def test_hand_computed_table() -> None:
    e, entries, starts, got = rally()
    res = classify(e, entries, starts, got)
    by = {c.number: c for c in res.cars}
    # Car 1: T1 = 12 (A +0.12) + 4 (F -0.045, truncated) = 16; T2 = 50; × 1.34 = 88.44.
    assert [t.points for t in by["1"].trials] == [16, 50]
    assert by["1"].coefficient == Decimal("1.34")
    assert by["1"].total == Decimal("88.44")
    # Car 2: T1 = 300 (A missed) + 30; T2 = 2; × 1.10 (entry's own) = 365.2; TC 2 late = 20.
    assert [t.points for t in by["2"].trials] == [330, 2]
    assert by["2"].time_points == 20
    assert by["2"].total == Decimal("385.2")
    # Car 8: T1 = 1; T2 = 0; × 1.55 = 1.55; TC one minute early = 60.
    assert by["8"].total == Decimal("61.55")
    assert [(c.number, c.rank, c.status) for c in res.cars] == [
        ("8", 1, "classified"),
        ("1", 2, "classified"),
        ("3", 2, "classified"),  # same year, same trials: a shared rank
        ("2", 4, "classified"),
        ("5", None, "otl"),
        ("6", None, "dnf"),
        ("7", None, "dns"),
    ]
    assert res.classes == {"A": ("1", "2", "6", "7"), "B": ("8", "3", "5")}
    assert by["3"].class_rank == 2 and by["1"].class_rank == 1
    # T1 by score: 5 (0, out of time later but the trial is complete), 8 (1 × 1.55),
    # 1 and 3 (16 × 1.34 = 21.44); car 2 missed a control, car 6 never finished it.
    assert res.trial_ranks["T1"] == (
        (1, "5", Decimal(0)),
        (2, "8", Decimal("1.55")),
        (3, "1", Decimal("21.44")),
        (3, "3", Decimal("21.44")),
    )
    sheet2 = {ln.control: ln for ln in by["2"].lines}
    assert sheet2["A"].status == "missed" and sheet2["A"].points == 300
    assert sheet2["TC"].status == "late" and sheet2["TC"].points == 20
    assert by["5"].total is None


def test_jokers_drop_worst_trial() -> None:
    e, entries, starts, got = rally("jokers = 1")
    by = {c.number: c for c in classify(e, entries, starts, got).cars}
    # Car 1 keeps T1 (16 × 1.34); car 2 drops its missed T1 and keeps 2 × 1.10 + 20.
    assert by["1"].total == Decimal("21.44")
    assert [t.joker for t in by["1"].trials] == [False, True]
    assert by["2"].total == Decimal("22.2")
    assert by["8"].total == 60  # drops T1 (1 × 1.55), keeps T2 (0) and TC (60)
    assert (by["1"].rank, by["3"].rank, by["2"].rank) == (1, 1, 3)


def test_ties_older_car_then_count_back() -> None:
    e = parse_event(EVENT.format(extra='coefficient = "none"'), "t")
    entries = [entry("10", 1950), entry("11", 1930), entry("12", 1950), entry("13", 1950)]
    starts = {x.number: T0 + i * 60 * S for i, x in enumerate(entries)}
    same = {"S": 0, "A": 100, "F": 300.10, "G": 500.10, "TC": 900}  # T1 10, T2 0
    got = {
        "10": sheet("10", starts["10"], same),
        "11": sheet("11", starts["11"], same),  # same total, older: ahead of 10
        "12": sheet("12", starts["12"], {"S": 0, "A": 100, "F": 300.05, "G": 500.1, "TC": 900}),
        "13": sheet("13", starts["13"], {"S": 0, "A": 100, "F": 300.00, "G": 500.1, "TC": 900}),
    }
    res = classify(e, entries, starts, got)
    # Totals: 10 → 10+0 = 10; 11 → 10; 12 → 5 + 5 = 10; 13 → 0 + 10 = 10. All equal.
    # Older first (11), then 1950 cars by count-back: 13 (0, 10), 10 (0, 10), 12 (5, 5).
    assert [c.total for c in res.cars] == [Decimal(10)] * 4
    assert [(c.number, c.rank) for c in res.cars] == [("11", 1), ("10", 2), ("13", 2), ("12", 4)]


def test_provisional_when_bound_straddles_a_hundredth() -> None:
    e, entries, starts, got = rally()
    got["1"] = sheet("1", starts["1"], {"S": 0, "A": 100.125, "F": 300, "G": 500}, unc=3 * MS)
    res = classify(e, entries, starts, got, final=False)
    c1 = res.car("1")
    assert c1 is not None and c1.provisional
    line = next(ln for ln in c1.lines if ln.control == "A")
    assert "straddles a hundredth" in (line.provisional or "")
    assert next(ln for ln in c1.lines if ln.control == "F").provisional is None
    # Not final: no passage at the last control is not DNF yet (it is a missed TC).
    assert c1.status == "classified"


def test_coefficient_rules() -> None:
    e = ev()
    assert coefficient(entry("1", 1934), e.rules) == Decimal("1.34")
    assert coefficient(entry("1", 1934, coef="1.05"), e.rules) == Decimal("1.05")
    none = parse_event(EVENT.format(extra='coefficient = "none"'), "t").rules
    assert coefficient(entry("1", 1934, coef="1.05"), none) == 1
    ent = parse_event(EVENT.format(extra='coefficient = "entries"'), "t").rules
    assert coefficient(entry("1", 1934), ent) == 1


def test_event_schedule_from_trials() -> None:
    e = ev()
    assert [c.due_ns for c in e.controls] == [0, 100 * S, 300 * S, 500 * S, 900 * S]
    assert e.trials[1].target_ns == 200 * S
    assert e.scheduled


def test_stages_file_is_an_event() -> None:
    e = parse_event(
        '[scoring]\npenalty_per_hundredth = 2\n[[stage]]\nname = "S1"\nstart = "PC1"\n'
        'finish = "PC2"\ntarget_s = 60\n',
        "stages.toml",
    )
    assert [c.id for c in e.controls] == ["PC1", "PC2"]
    assert e.rules.penalty_per_hundredth == 2 and e.rules.coefficient == "none"
    assert not e.scheduled


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("[rules]\njokers = -1\n", "rules.jokers"),
        ('[[control]]\nid = "A"\n[[trial]]\nname = "x"\nstart = "A"\nfinish = "B"\n'
         "target_s = 5\n", "control 'B' is not a [[control]]"),
        ('[event]\ntimezone = "Mars/Olympus"\n[[control]]\nid = "A"\n', "event.timezone"),
        ('[[control]]\nid = "A"\n[[control]]\nid = "B"\n', "B have no due time"),
    ],
)  # fmt: skip
def test_event_errors_name_the_key(text: str, msg: str) -> None:
    with pytest.raises(ConfigError, match="ev.toml") as err:
        parse_event(text, "ev.toml")
    assert msg in str(err.value)


ENTRIES = """number,crew,car,year,class,start,coefficient
1,Rossi / Bianchi,Alfa Romeo 6C 1750,1929,A,09:00,
2,Smith / Jones,Bugatti T35,1934,A,09:01:00,1.2
3,Lee / Park,Porsche 356,1955,B,2025-04-27T07:02:30.5Z,
"""


def test_entries_parse_and_resolve_starts() -> None:
    es = parse_entries(ENTRIES)
    assert [e.number for e in es] == ["1", "2", "3"]
    assert es[1].coefficient == Decimal("1.2") and es[0].coefficient is None
    # 09:00 in Rome on 27 April (CEST, UTC+2) is 07:00 UTC.
    assert start_ns(es[0].start, "2025-04-27", "Europe/Rome") == 1_745_737_200 * S
    assert start_ns(es[2].start, None, "UTC") == (1_745_737_200 + 150) * S + S // 2
    assert parse_entries(render_entries(es)) == es
    moved = edit(es[0], start="09:05", status="retired")
    assert moved.start == "09:05" and moved.status == "retired"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("number,crew,year\n1,x,1930\n", "row 1: missing column(s) start"),
        ("number,crew,year,start,colour\n", "row 1: unknown column(s) 'colour'"),
        ("number,crew,year,start\n1,x,1930,09:00\n1,y,1931,09:01\n", "row 3, column number"),
        ("number,crew,year,start\n1,x,19x0,09:00\n", "row 2, column year"),
        ("number,crew,year,start\n1,x,1930,25:00\n", "row 2, column start"),
        ("number,crew,year,start\n1,x,1930,2025-04-27T09:00\n", "row 2, column start"),
        ("number,crew,year,start,coefficient\n1,x,1930,09:00,-1\n", "row 2, column coefficient"),
        ("number,crew,year,start\n1,,1930,09:00\n", "row 2, column crew"),
        ("number,crew,year,start\n1,x,1930\n", "row 2: 3 fields"),
    ],
)
def test_entries_errors_name_row_and_column(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_entries(text, "entries.csv")
    assert f"entries.csv: {where}" in str(err.value)


def test_sheet_shows_backup_disagreement_and_source() -> None:
    from checkpoint.hq.posting import render_sheet

    e, entries, starts, got = rally()
    c = got["1"]["F"]
    timed = Timed(
        "F", c.timed.utc_ns, 0, c.timed.key, c.timed.members, ("box05:button",),
        backup="box05:button", disagree_ns=-700 * MS,
    )  # fmt: skip
    got["1"]["F"] = Call(timed, "marshal", "1")
    car = classify(e, entries, starts, got).car("1")
    assert car is not None
    text = render_sheet(car)
    line = next(ln for ln in text.splitlines() if ln.startswith("F "))
    assert "backup box05:button" in line and "inputs disagree -0.700 s" in line
    assert "marshal" in line
