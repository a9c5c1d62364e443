"""HQ commands as an operator uses them: from "a passage with no car" to corrected
results without a box id or a seq, with what was typed checked against what HQ knows.

Real Mosquitto, a real collector, real SQLite; boxes are emulated at the MQTT edge
(tests/hq_box.py). Times are local (TZ=Europe/Rome: T0 = 17:03:20Z = 19:03:20).
"""

from __future__ import annotations

import csv
import io
import time

import pytest
from hq_box import T0_NS
from test_hq import _cli, boxes, db, hq, read  # noqa: F401  (fixtures)
from waits import wait_for

S = 1_000_000_000


@pytest.fixture
def rome(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Rome")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def rally(broker, hq, db, boxes, rome):  # noqa: F811 (fixtures from test_hq)
    """PC1 (box01) and PC2 (box02): cars 1-3 start; at PC2 one passage has no car and
    one is a false trigger."""
    b1 = boxes(broker.url, "box01", checkpoint="PC1")
    b2 = boxes(broker.url, "box02", checkpoint="PC2")
    for i, car in enumerate(("1", "2", "3")):
        b1.assign(b1.passage(T0_NS + i * 60 * S), car)
    b2.assign(b2.passage(T0_NS + 120_370_000_000), "1")  # 19:05:20.37, 37 points
    b2.passage(T0_NS + 181 * S)  # 19:06:21.00: car 2, nobody typed it
    b2.assign(b2.passage(T0_NS + 245 * S), "3")  # 19:07:25.00
    b2.passage(T0_NS + 246_500_000_000)  # 19:07:26.50: a photographer
    b1.publish_all()
    b2.publish_all()
    b1.status(checkpoint="PC1", place="Passo della Futa", backlog=0)
    b2.status(checkpoint="PC2", place="Passo della Raticosa", backlog=0)
    b1.wait_acked(6)
    b2.wait_acked(6)
    wait_for(lambda: len(read(db, lambda s: s.box_rows())) == 2, 5, "two boxes")
    wait_for(lambda: all(r["status"] for r in read(db, lambda s: s.box_rows())), 5, "box status")
    return db


def hq_cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    return _cli(list(argv), buf), buf.getvalue()


def stages_file(tmp_path, *controls: tuple[str, str], target: int = 120):
    p = tmp_path / "stages.toml"
    p.write_text(
        "".join(
            f'[[stage]]\nname = "Trial {i} {a}-{b}"\nstart = "{a}"\nfinish = "{b}"\n'
            f"target_s = {target}\n"
            for i, (a, b) in enumerate(controls, 1)
        )
    )
    return p


def audit_count(path) -> int:
    return len(read(path, lambda s: s.corrections()))


def test_from_a_passage_with_no_car_to_corrected_results(rally, tmp_path, capsys):
    dbp = str(rally)
    stages = stages_file(tmp_path, ("PC1", "PC2"))
    code, out = hq_cli("results", "--db", dbp, "--stages", str(stages), "--format", "json")
    assert code == 0 and '"total": null' in out  # car 2 has no finish yet

    code, todo = hq_cli("todo", "--db", dbp)
    assert code == 0
    assert "PC2 Passo della Raticosa: 2" in todo
    assert f"checkpoint hq assign --db {dbp} --control PC2 --at 19:06:21.00 CAR" in todo

    code, out = hq_cli("assign", "--db", dbp, "--control", "PC2", "--at", "19:06:21.00", "2")
    assert code == 0, capsys.readouterr().err
    assert "PC2 19:06:21.00" in out and "car 2" in out
    code, _ = hq_cli(
        "void", "--db", dbp, "--control", "PC2", "--at", "19:07:26.5", "--reason", "photographer"
    )
    assert code == 0, capsys.readouterr().err

    code, todo = hq_cli("todo", "--db", dbp)
    assert "nothing to do" in todo
    code, out = hq_cli("results", "--db", dbp, "--stages", str(stages), "--format", "wide")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["rank"], r["car"], r["total"]) for r in rows] == [
        ("1", "1", "37"),
        ("2", "2", "100"),
        ("3", "3", "500"),
    ]
    code, audit = hq_cli("audit", "--db", dbp)
    assert code == 0
    assert max(len(line) for line in audit.splitlines()) <= 100
    assert "PC2" in audit and "19:06:21.00" in audit and "photographer" in audit


def test_what_was_typed_is_checked_against_what_hq_knows(rally, tmp_path, capsys):
    dbp = str(rally)
    before = audit_count(rally)

    def refused(*argv: str) -> str:
        code, _ = hq_cli(*argv)
        assert code == 2, argv
        return capsys.readouterr().err

    err = refused("assign", "--db", dbp, "--control", "PC9", "--at", "19:06:21", "2")
    assert "control 'PC9' has no passages at HQ (controls seen: PC1, PC2)" in err
    err = refused("assign", "--db", dbp, "--control", "PC2", "--at", "19:06:21", "12 A")
    assert "contains a space" in err and "'12A'" in err
    err = refused("assign", "--db", dbp, "--control", "PC2", "--at", "19:06:21", "99")
    assert "car 99 is not in the field" in err and "--new-car" in err
    err = refused("assign", "--db", dbp, "--control", "PC2", "--at", "19:06:21", "1")
    assert "car 1 already has a passage at PC2: PC2 19:05:20.37 car 1" in err
    err = refused("unvoid", "--db", dbp, "--control", "PC2", "--car", "3")
    assert "is not void: nothing to undo" in err
    err = refused("unvoid", "--db", dbp, "box02", "3")
    assert "not void" in err
    err = refused("void", "--db", dbp, "--control", "PC2", "--at", "19:0", "--reason", "x")
    assert "HH:MM" in err
    assert audit_count(rally) == before  # nothing refused left a row

    # --new-car says "yes, a car nobody has typed yet"
    code, _ = hq_cli(
        "assign", "--db", dbp, "--control", "PC2", "--at", "19:06:21", "--new-car", "99"
    )
    assert code == 0
    assert audit_count(rally) == before + 1


def test_a_stages_file_naming_an_unseen_control_is_an_error(rally, tmp_path, capsys):
    stages = stages_file(tmp_path, ("PC1", "PC3"))
    code, out = hq_cli("results", "--db", str(rally), "--stages", str(stages))
    assert code == 1 and out == ""
    err = capsys.readouterr().err
    assert "control 'PC3' was never seen at HQ (controls seen: PC1, PC2)" in err
    code, out = hq_cli("results", "--db", str(rally), "--stages", str(stages), "--allow-unseen")
    assert code == 0 and "MISSING finish" in out


def test_bulk_corrections_are_checked_first_and_applied_all_or_none(rally, tmp_path, capsys):
    dbp = str(rally)
    bad = tmp_path / "fix.csv"
    bad.write_text(
        "action,control,at,car,reason\n"
        "assign,PC2,19:06:21,2,\n"
        "void,PC2,19:07:26.50,,photographer\n"
        "assign,PC2,19:07:25,2,\n"  # car 2 at PC2 twice: the first row gave it one
    )
    before = audit_count(rally)
    code, _ = hq_cli("apply", "--db", dbp, str(bad))
    assert code == 2
    err = capsys.readouterr().err
    assert "line 4: car 2 already has a passage at PC2" in err and "nothing applied" in err
    assert audit_count(rally) == before
    good = tmp_path / "fix2.csv"
    good.write_text(bad.read_text().rsplit("\n", 2)[0] + "\n")
    code, out = hq_cli("apply", "--db", dbp, str(good), "--by", "jury")
    assert code == 0 and "2 corrections applied" in out
    trail = read(rally, lambda s: s.corrections())[before:]
    assert [(c["action"], c["by"]) for c in trail] == [("assign", "jury"), ("void", "jury")]


def test_exports_read_right_in_a_spreadsheet_and_tables_fit_a_page(rally, tmp_path):
    dbp = str(rally)
    code, out = hq_cli("export", "--db", dbp)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["local_date"] == "2024-04-21" and rows[0]["local_time"] == "19:03:20.000"
    stages = stages_file(tmp_path, *[("PC1", "PC2")] * 9)
    code, out = hq_cli("results", "--db", dbp, "--stages", str(stages), "--format", "long")
    long = list(csv.DictReader(io.StringIO(out)))
    first = long[0]
    assert first["car"] == "1" and first["start"] == "19:03:20.000"
    assert first["finish"] == "19:05:20.370" and first["deviation s"] == "0.370"
    for r in long:  # no number a spreadsheet would round (it keeps 15 digits)
        digits = [v.replace(".", "").lstrip("-") for v in r.values()]
        assert all(len(d) < 15 for d in digits if d.isdigit()), r
    code, out = hq_cli("results", "--db", dbp, "--stages", str(stages), "--format", "wide")
    wide = list(csv.DictReader(io.StringIO(out)))
    assert len(wide) == 3 and "Trial 9 PC1-PC2 points" in wide[0]
    code, table = hq_cli("results", "--db", dbp, "--stages", str(stages))
    assert max(len(line) for line in table.splitlines()) <= 100
    assert "-- page 1 of 2 --" in table and "T9" in table


def test_status_names_the_control_and_its_place(rally):
    code, out = hq_cli("status", "--db", str(rally))
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100, out
    pc2 = next(line for line in lines if line.startswith("PC2"))
    assert "Passo della Raticosa" in pc2 and "box02" in pc2 and "19:07:26" in pc2
