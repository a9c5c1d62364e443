"""What gets posted: the classification as a text table, CSV, JSON and an A4 HTML page.

Pure: a `Classification` (and the time of issue, given by the caller) in, text out.
Every format carries the provisional marks and reasons, DNF/DNS/OTL as such, and
each car's trial scores; the HTML page also the event name and time of issue, and
prints on A4 (CSS @page, no navigation, rows never split across pages).
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

from checkpoint.hq.classify import CarResult, Classification, fmt_points
from checkpoint.hq.identify import Call
from checkpoint.hq.results import fmt_seconds
from checkpoint.hq.store import ns_to_iso

STATUS_TEXT = {"classified": "", "dnf": "DNF", "dns": "DNS", "otl": "OTL"}


def _place(c: CarResult) -> str:
    return str(c.rank) if c.rank is not None else STATUS_TEXT[c.status]


def _total(c: CarResult) -> str:
    return fmt_points(c.total) if c.total is not None else STATUS_TEXT[c.status]


def _trial_cells(c: CarResult) -> list[str]:
    out = []
    for t in c.trials:
        cell = fmt_points(t.score)
        if t.missed:
            cell += f" ({t.missed} missed)"
        if t.joker:
            cell = f"[{cell}]"
        out.append(cell)
    return out


def _grid(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths).rstrip())
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return lines


def render_table(cls: Classification, issued: str, *, top: int | None = None) -> str:
    """Plain text: rank, car, crew, class, coefficient, trial scores, total; P = provisional."""
    header = ["pos", "car", "crew", "class", "coef", *cls.trials, "TC", "total", ""]
    body = []
    cars = cls.cars if top is None else cls.cars[:top]
    for c in cars:
        body.append(
            [
                _place(c),
                c.number,
                c.entry.crew,
                c.entry.klass,
                f"{c.coefficient:.2f}",
                *_trial_cells(c),
                str(c.time_points + c.passage_points),
                _total(c),
                "P" if c.provisional else "",
            ]
        )
    lines = [f"{cls.event or 'Classification'} - issued {issued}", *_grid(header, body)]
    if top is not None and len(cls.cars) > top:
        lines.append(f"... {len(cls.cars) - top} more")
    lines.append("[x] joker (dropped); P provisional; TC time and passage control points")
    if cls.to_confirm or cls.unknown:
        lines.append(f"passages to confirm: {cls.to_confirm}; unidentified passages: {cls.unknown}")
    for c in cars:
        for reason in c.provisional:
            lines.append(f"provisional car {c.number}: {reason}")
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "rank", "class_rank", "car", "crew", "model", "year", "class", "coefficient", "status",
    "total", "time_points", "passage_points", "trial", "trial_points", "trial_score",
    "trial_missed", "joker", "provisional",
)  # fmt: skip


def render_csv(cls: Classification) -> str:
    """CSV: one row per car and trial (the car's fields repeated), provisional reasons joined."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for c in cls.cars:
        base = {
            "rank": c.rank,
            "class_rank": c.class_rank,
            "car": c.number,
            "crew": c.entry.crew,
            "model": c.entry.car,
            "year": c.entry.year,
            "class": c.entry.klass,
            "coefficient": str(c.coefficient),
            "status": c.status,
            "total": fmt_points(c.total),
            "time_points": c.time_points,
            "passage_points": c.passage_points,
            "provisional": "; ".join(c.provisional),
        }
        for t in c.trials or ():
            w.writerow(
                base
                | {
                    "trial": t.trial,
                    "trial_points": t.points,
                    "trial_score": fmt_points(t.score),
                    "trial_missed": t.missed,
                    "joker": "true" if t.joker else "false",
                }
            )
        if not c.trials:
            w.writerow(base)
    return buf.getvalue()


def _num(d: Decimal | None) -> str | None:
    return None if d is None else fmt_points(d)


def car_doc(c: CarResult) -> dict[str, Any]:
    """One car as JSON: entry, status, rank, trials and its sheet (every control)."""
    return {
        "rank": c.rank,
        "class_rank": c.class_rank,
        "status": c.status,
        "total": _num(c.total),
        "coefficient": str(c.coefficient),
        "time_points": c.time_points,
        "passage_points": c.passage_points,
        "provisional": list(c.provisional),
        "entry": c.entry.as_dict(),
        "trials": [
            {
                "trial": t.trial,
                "points": t.points,
                "score": _num(t.score),
                "missed": t.missed,
                "joker": t.joker,
            }
            for t in c.trials
        ],
        "sheet": [
            {
                "control": ln.control,
                "kind": ln.kind,
                "trial": ln.trial,
                "ideal_utc_ns": ln.ideal_ns,
                "actual_utc_ns": ln.actual_ns,
                "deviation_ns": ln.deviation_ns,
                "points": ln.points,
                "status": ln.status,
                "uncertainty_ns": ln.uncertainty_ns,
                "provisional": ln.provisional,
                "car_source": ln.car_source,
                "backup": ln.backup,
                "disagree_ns": ln.disagree_ns,
            }
            for ln in c.lines
        ],
    }


def render_json(cls: Classification, issued: str) -> str:
    """JSON: event, time of issue, cars (with sheets), classes, trial rankings."""
    doc = {
        "event": cls.event,
        "issued": issued,
        "trials": list(cls.trials),
        "to_confirm": cls.to_confirm,
        "unknown": cls.unknown,
        "cars": [car_doc(c) for c in cls.cars],
        "classes": {k: list(v) for k, v in cls.classes.items()},
        "trial_ranks": {
            t: [{"rank": r, "car": n, "score": _num(s)} for r, n, s in rows]
            for t, rows in cls.trial_ranks.items()
        },
    }
    return json.dumps(doc, indent=2) + "\n"


def render_sheet(c: CarResult) -> str:
    """A car's sheet as text: every control, ideal vs actual, deviation, points, source."""
    e = c.entry
    head = (
        f"car {e.number}  {e.crew}  {e.car} ({e.year})  class {e.klass or '-'}  "
        f"coefficient {c.coefficient}  {_place(c) and 'position ' + _place(c)}  "
        f"total {_total(c) or '-'}"
    )
    header = ["control", "trial", "ideal (UTC)", "actual (UTC)", "dev s", "points", "status",
              "car from", "note"]  # fmt: skip
    body = []
    for ln in c.lines:
        note = []
        if ln.backup:
            note.append(f"backup {ln.backup}")
        if ln.disagree_ns is not None:
            note.append(f"inputs disagree {fmt_seconds(ln.disagree_ns, signed=True)} s")
        if ln.provisional:
            note.append("PROVISIONAL")
        body.append(
            [
                ln.control,
                ln.trial or ln.kind,
                ns_to_iso(ln.ideal_ns)[11:] if ln.ideal_ns else "",
                ns_to_iso(ln.actual_ns)[11:] if ln.actual_ns else "",
                fmt_seconds(ln.deviation_ns, signed=True),
                str(ln.points),
                ln.status,
                ln.car_source or "",
                "; ".join(note),
            ]
        )
    lines = [head, *_grid(header, body)]
    lines += [f"provisional: {r}" for r in c.provisional]
    return "\n".join(lines) + "\n"


def render_confirm(calls: list[Call]) -> str:
    """The "to confirm" queue: control, time, suggested car and why it is not sure."""
    if not calls:
        return "nothing to confirm\n"
    header = ["control", "time (UTC)", "box", "seq", "suggest", "margin", "z"]
    body = [
        [
            c.timed.control,
            ns_to_iso(c.timed.utc_ns)[11:],
            c.timed.key[0],
            str(c.timed.key[2]),
            c.suggest or "",
            f"{c.margin:.2f}" if c.margin is not None else "",
            f"{c.z:+.2f}" if c.z is not None else "",
        ]
        for c in calls
    ]
    lines = _grid(header, body)
    lines.append("confirm with: checkpoint hq assign --db HQ.db BOX SEQ CAR")
    return "\n".join(lines) + "\n"


PAGE_CSS = """
@page { size: A4; margin: 12mm; }
body { font: 10pt/1.3 system-ui, sans-serif; color: #000; background: #fff; margin: 0 auto;
       max-width: 186mm; }
h1 { font-size: 15pt; margin: 0 0 2mm; }
h2 { font-size: 12pt; margin: 5mm 0 1mm; break-after: avoid; }
p.meta { margin: 0 0 3mm; color: #333; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 0.2mm solid #999; padding: 0.6mm 1.2mm; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr { break-inside: avoid; }
thead { display: table-header-group; }
.prov { font-weight: bold; }
.joker { text-decoration: line-through; color: #555; }
.out { color: #555; }
ul.notes { font-size: 9pt; padding-left: 5mm; }
div.trials { display: flex; flex-wrap: wrap; gap: 4mm; break-inside: avoid; }
table.trial { width: auto; min-width: 40mm; }
table.trial caption { font-weight: bold; text-align: left; }
@media screen { body { padding: 6mm; } }
"""


def _cells(c: CarResult) -> str:
    e = html.escape
    trials = "".join(
        f'<td class="n{" joker" if t.joker else ""}">{e(fmt_points(t.score))}'
        f"{'*' if t.missed else ''}</td>"
        for t in c.trials
    )
    prov = '<span class="prov" title="provisional">P</span>' if c.provisional else ""
    return (
        f'<td class="n">{e(_place(c))}</td><td>{e(c.number)}</td><td>{e(c.entry.crew)}</td>'
        f"<td>{e(c.entry.car)}</td><td>{e(c.entry.klass)}</td>"
        f'<td class="n">{c.coefficient:.2f}</td>{trials}'
        f'<td class="n">{c.time_points + c.passage_points}</td>'
        f'<td class="n">{e(_total(c))}</td><td>{prov}</td>'
    )


def _table(cls: Classification, cars: list[CarResult], caption: str, klass: str) -> str:
    e = html.escape
    heads = "".join(f'<th class="n">{e(t)}</th>' for t in cls.trials)
    rows = "".join(
        f'<tr class="{"out" if c.status != "classified" else ""}" data-car="{e(c.number)}">'
        f"{_cells(c)}</tr>"
        for c in cars
    )
    return (
        f'<h2>{e(caption)}</h2><table class="results" data-class="{e(klass)}"><thead><tr>'
        '<th class="n">Pos</th><th>No</th><th>Crew</th><th>Car</th><th>Class</th>'
        f'<th class="n">Coef</th>{heads}<th class="n">TC</th><th class="n">Total</th><th></th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _trials_html(cls: Classification, top: int = 10) -> str:
    """Each trial's own ranking (its first `top`), side by side where the page allows."""
    e = html.escape
    blocks = []
    for t in cls.trials:
        rows = "".join(
            f'<tr><td class="n">{r}</td><td>{e(n)}</td><td class="n">{e(fmt_points(s))}</td></tr>'
            for r, n, s in cls.trial_ranks.get(t, ())[:top]
        )
        blocks.append(
            f'<table class="trial" data-trial="{e(t)}"><caption>{e(t)}</caption><thead><tr>'
            '<th class="n">Pos</th><th>No</th><th class="n">Score</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    return f'<h2>Trials (first {top})</h2><div class="trials">{"".join(blocks)}</div>'


def render_html(cls: Classification, issued: str, *, refresh_s: int | None = None) -> str:
    """A standalone page: overall, each class, notes; prints cleanly on A4."""
    e = html.escape
    by_number = {c.number: c for c in cls.cars}
    parts = [_table(cls, list(cls.cars), "Overall", "")]
    for k, numbers in cls.classes.items():
        members = [by_number[n] for n in numbers]
        # Within a class the position is the class rank.
        shown = [replace(c, rank=c.class_rank) for c in members]
        parts.append(_table(cls, shown, f"Class {k}", k))
    parts.append(_trials_html(cls))
    notes = [f"<li>car {e(c.number)}: {e(r)}</li>" for c in cls.cars for r in c.provisional]
    meta = f"Issued {e(issued)}"
    if cls.to_confirm:
        meta += f" · {cls.to_confirm} passage(s) still to confirm: results are provisional"
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}'
        f"<title>{e(cls.event or 'Results')} - results</title><style>{PAGE_CSS}</style></head>"
        f'<body><h1>{e(cls.event or "Results")}</h1><p class="meta" id="issued">{meta}</p>'
        + "".join(parts)
        + '<p class="meta">* a missed control in the trial; struck through: joker (dropped);'
        " P: provisional (a timing bound straddles a hundredth); TC: time and passage control"
        " points; DNF / DNS / OTL: retired / did not start / out of time limit.</p>"
        + (f'<ul class="notes" id="provisional">{"".join(notes)}</ul>' if notes else "")
        + "</body></html>\n"
    )
