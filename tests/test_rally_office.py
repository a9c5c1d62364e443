"""The rally office through HQ's real path: boxes publish over a real Mosquitto, the
collector stores in a real SQLite file, and the organiser's commands (event load,
entries import/set/log, export, results, confirm, sheet) run as `checkpoint hq`."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hq_box import T0_NS, fmt_utc
from test_hq import _cli, boxes, db, hq, read  # noqa: F401 - fixtures

from checkpoint.hq.officestore import entries_of

S = 1_000_000_000
MS = 1_000_000

EVENT = """
[event]
name = "Office Cup"
date = "2024-04-21"

[rules]
coefficient = "year"
missed_control = 300

[identify]
sigma_s = 2

[[control]]
id = "PC1"
[[control]]
id = "PC2"
[[control]]
id = "PC3"

[[trial]]
name = "PS1"
start = "PC1"
finish = "PC2"
target_s = 60

[[trial]]
name = "PS2"
start = "PC2"
finish = "PC3"
target_s = 90
"""


def iso(ns: int) -> str:
    return fmt_utc(ns)[:23] + "Z"


def entries_text() -> str:
    rows = [
        ("1", "Rossi / Bianchi", "Alfa Romeo 6C", 1930, "A", iso(T0_NS)),
        ("2", "Smith / Jones", "Bugatti T35", 1950, "B", iso(T0_NS + 60 * S)),
        ("3", "Lee / Park", "Porsche 356", 1955, "B", iso(T0_NS + 120 * S)),
    ]
    return "number,crew,car,year,class,start\n" + "".join(
        ",".join(map(str, r)) + "\n" for r in rows
    )


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = _cli(list(argv), out)
    return rc, out.getvalue()


def _three_controls_timed(broker, make_box) -> tuple[int, int]:
    """Three boxes at PC1-PC3 time three cars and a service vehicle; the marshal at PC2
    names car 1. Returns the seqs of that passage at PC2 and of the service vehicle."""
    b1 = make_box(broker.url, "box01", checkpoint="PC1")
    b2 = make_box(broker.url, "box02", checkpoint="PC2")
    b3 = make_box(broker.url, "box03", checkpoint="PC3")
    # Starts on the second; PS1 deviations +0.12, -0.05, +0.30 s; PS2 0, +0.01, (3 stops).
    for i in range(3):
        b1.passage(T0_NS + i * 60 * S)
    s21 = b2.passage(T0_NS + 60 * S + 120 * MS)
    b2.passage(T0_NS + 120 * S - 50 * MS)
    b2.passage(T0_NS + 180 * S + 300 * MS)
    b3.passage(T0_NS + 150 * S + 120 * MS)
    sv = b3.passage(T0_NS + 175 * S)  # a service vehicle, far from every car's time
    b3.passage(T0_NS + 210 * S - 40 * MS)
    b2.assign(s21, "1")  # the marshal at PC2 typed car 1 (right): it stays "marshal"
    for b, n in ((b1, 3), (b2, 4), (b3, 3)):
        b.publish_all()
        b.wait_acked(n)
    return s21, sv


def _office_files_loaded(tmp_path: Path, hq_db: Path) -> None:
    """The event file and the entry list into HQ; a bad entry list first stores nothing."""
    ev = tmp_path / "event.toml"
    ev.write_text(EVENT)
    bad = tmp_path / "bad.csv"
    bad.write_text("number,crew,car,year,class,start\n1,x,y,19x0,A,09:00\n")
    rc, _ = cli("entries", "import", "--db", str(hq_db), str(bad))
    assert rc == 1
    assert read(hq_db, entries_of) == []  # nothing stored from a bad file
    entries = tmp_path / "entries.csv"
    entries.write_text(entries_text())
    assert cli("event", "load", "--db", str(hq_db), str(ev))[0] == 0
    rc, out = cli("entries", "import", "--db", str(hq_db), str(entries))
    assert rc == 0 and "3 added" in out


def test_organiser_from_entry_list_to_posted_results(broker, hq, db, boxes, tmp_path):  # noqa: F811
    s21, sv = _three_controls_timed(broker, boxes)
    _office_files_loaded(tmp_path, db)

    rc, out = cli("export", "--db", str(db), "--format", "jsonl")
    rows = [json.loads(x) for x in out.splitlines()]
    cars = {(r["box"], r["seq"]): (r["car"], r["car_source"]) for r in rows}
    assert cars[("box01", 1)] == ("1", "auto") and cars[("box01", 3)] == ("3", "auto")
    assert cars[("box02", s21)] == ("1", "marshal")
    assert cars[("box03", sv)] == (None, None)
    assert cars[("box03", 3)] == ("2", "auto")

    rc, out = cli("results", "--db", str(db), "--format", "json")
    doc = json.loads(out)
    by = {c["entry"]["number"]: c for c in doc["cars"]}
    # Car 1: 12 + 0 = 12 × 1.30 = 15.6; car 2: 5 + 1 = 6 × 1.50 = 9; car 3: 30 + missed 300.
    assert by["1"]["total"] == "15.60" and by["2"]["total"] == "9"
    assert by["3"]["status"] == "dnf"  # no passage at the last control: results are final
    assert [c["entry"]["number"] for c in doc["cars"]] == ["2", "1", "3"]
    assert by["1"]["sheet"][1]["car_source"] == "marshal"
    assert doc["event"] == "Office Cup" and doc["issued"]

    # A start moved and a car withdrawn: both audited, and the results follow.
    rc, _ = cli("entries", "set", "--db", str(db), "2", "--status", "withdrawn", "--by", "clerk")
    assert rc == 0
    assert cli("entries", "set", "--db", str(db), "9", "--status", "retired")[0] == 2
    rc, out = cli("entries", "log", "--db", str(db))
    assert "car 2  edit by clerk status: entered -> withdrawn" in out
    rc, out = cli("results", "--db", str(db), "--live")
    assert rc == 0 and "Office Cup" in out
    lines = out.splitlines()
    assert lines[3].split()[:2] == ["1", "1"]  # car 1 leads now, car 3 still running
    assert any(ln.split()[:2] == ["DNS", "2"] for ln in lines)

    html_path = tmp_path / "results.html"
    assert cli("results", "--db", str(db), "--format", "html", "--out", str(html_path))[0] == 0
    page = html_path.read_text()
    assert "<h1>Office Cup</h1>" in page and "Issued" in page and "@page { size: A4" in page

    rc, out = cli("sheet", "--db", str(db), "1")
    assert rc == 0 and "PS1" in out and "marshal" in out
    rc, out = cli("confirm", "--db", str(db))
    assert rc == 0 and out == "nothing to confirm\n"


def test_readme_examples_load_and_edit(tmp_path):
    from pathlib import Path

    from checkpoint.hq.store import HQStore

    repo = Path(__file__).resolve().parents[1]
    hqdb = tmp_path / "hq.db"
    HQStore(hqdb).close()  # what `checkpoint hq run` creates
    rc, out = cli("event", "load", "--db", str(hqdb), str(repo / "examples/event.toml"))
    assert rc == 0 and "5 controls, 2 trials" in out
    rc, out = cli("event", "show", "--db", str(hqdb))
    # PS1: 12 km at 40 km/h = 18 min; the secret control at 6.5 km: 9 min 45 s;
    # the time control after 12 km at 45 km/h: 34 min after the start.
    assert "PC2      passage  due +585.000 s" in out
    assert "TC1      time     due +2040.000 s" in out
    rc, out = cli("entries", "import", "--db", str(hqdb), str(repo / "examples/entries.csv"))
    assert rc == 0 and "7 added" in out
    rc, out = cli("entries", "import", "--db", str(hqdb), str(repo / "examples/entries.csv"))
    assert "7 unchanged" in out
    # A later list without car 7 and with car 6's class changed: updated, nothing deleted.
    lines = (repo / "examples/entries.csv").read_text().splitlines()
    later = tmp_path / "later.csv"
    later.write_text("\n".join([*lines[:6], lines[6].replace(",C,", ",B,")]) + "\n")
    rc, out = cli("entries", "import", "--db", str(hqdb), str(later))
    assert "6 cars" in out and "1 changed" in out and "5 unchanged" in out
    rc, out = cli("entries", "list", "--db", str(hqdb), "--format", "csv")
    assert out.count("\n") == 8 and "\n7,Lee / Park" in out
    assert (
        cli("entries", "set", "--db", str(hqdb), "5", "--start", "09:12", "--by", "clerk")[0] == 0
    )
    assert cli("entries", "set", "--db", str(hqdb), "5", "--start", "9h12")[0] == 2
    rc, out = cli("entries", "list", "--db", str(hqdb), "--format", "json")
    five = next(e for e in json.loads(out) if e["number"] == "5")
    assert five["start"] == "09:12" and five["coefficient"] == "1.30"
    rc, out = cli("entries", "log", "--db", str(hqdb))
    assert "car 5  edit by clerk start: 09:04 -> 09:12" in out
    rc, out = cli("results", "--db", str(hqdb), "--live")
    assert rc == 0 and "California Mille - day 1" in out  # no passage yet: all still running
    assert cli("confirm", "--db", str(hqdb))[1] == "nothing to confirm\n"


def test_box_config_names_the_office_files_together_and_absolute(tmp_path):
    import pytest

    from checkpoint import config
    from checkpoint.errors import ConfigError

    base = '[box]\nid = "box01"\ncheckpoint = "PC1"\n[web]\n'
    p = tmp_path / "box.toml"
    p.write_text(base + 'event = "/etc/checkpoint/event.toml"\n')
    with pytest.raises(ConfigError, match="web.entries: give event and entries together"):
        config.load(p)
    p.write_text(base + 'event = "event.toml"\nentries = "/etc/checkpoint/entries.csv"\n')
    with pytest.raises(ConfigError, match="web.event: must be an absolute path"):
        config.load(p)
    p.write_text(base + 'event = "/e/event.toml"\nentries = "/e/entries.csv"\n')
    cfg = config.load(p)
    assert (cfg.web.event, cfg.web.entries) == ("/e/event.toml", "/e/entries.csv")


def test_an_unplaceable_start_drops_auto_cars_but_never_the_export(tmp_path, capsys):
    from pathlib import Path

    from hq_box import T0_NS

    from checkpoint.hq.store import HQStore

    repo = Path(__file__).resolve().parents[1]
    hqdb = tmp_path / "hq.db"
    HQStore(hqdb).close()
    (tmp_path / "ev.toml").write_text(EVENT.replace('date = "2024-04-21"\n', ""))
    assert cli("event", "load", "--db", str(hqdb), str(tmp_path / "ev.toml"))[0] == 0
    assert cli("entries", "import", "--db", str(hqdb), str(repo / "examples/entries.csv"))[0] == 0
    from webrig import HQFiller

    f = HQFiller(hqdb)
    f.passage("box01", "PC1", T0_NS)
    f.close()
    capsys.readouterr()
    rc, out = cli("export", "--db", str(hqdb), "--format", "jsonl")
    assert rc == 0 and json.loads(out)["car"] is None
    assert "no automatic car numbers" in capsys.readouterr().err
    rc, _ = cli("results", "--db", str(hqdb))
    assert rc == 1
    assert "needs [event] date" in capsys.readouterr().err
