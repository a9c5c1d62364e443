"""Results for people: a spreadsheet that reads right, a table that fits a printed page.

`results.render_csv` stays the exact machine form (integer ns). Here:

* `render_wide`: one row per car, a points and a deviation column per trial, the
  total first after the car (what a jury and a results board want);
* `render_long`: one row per car and trial with local times of day and seconds
  with decimals (no 19-digit epoch ns a spreadsheet would round);
* `render_text`: the ranking in pages at most `width` characters wide: rank, car
  and total on every page, the trials split over as many pages as needed.

Pure: no I/O; `tz` is the local zone (default: this machine's).
"""

from __future__ import annotations

import csv
import datetime as dt
import io

from checkpoint.hq.localtime import local_date, local_time, seconds
from checkpoint.hq.results import CarResult, Results, StageResult


def _total(c: CarResult) -> str:
    return str(c.total) if c.total is not None else ""


def _short_status(sr: StageResult) -> str:
    return {"missing_start": "MISSING start", "missing_finish": "MISSING finish"}.get(sr.status, "")


def render_wide(results: Results) -> str:
    """CSV: rank, car, total, missing, then per trial its points and deviation (s)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["rank", "car", "total", "missing", "points so far"]
    for s in results.stages:
        head += [f"{s.name} points", f"{s.name} deviation s"]
    w.writerow(head)
    for c in results.cars:
        row = [c.rank, c.car, _total(c), c.missing, c.partial_points]
        for sr in c.stages:
            if sr.missing:
                row += [_short_status(sr), ""]
            else:
                row += [sr.points, seconds(sr.deviation_ns, 3)]
        w.writerow(row)
    return buf.getvalue()


LONG_FIELDS = (
    "rank",
    "car",
    "stage",
    "status",
    "target s",
    "date",
    "start",
    "finish",
    "elapsed s",
    "deviation s",
    "points",
    "uncertainty s",
    "total",
)


def render_long(results: Results, tz: dt.tzinfo | None = None) -> str:
    """CSV, one row per car and trial: local times of day and seconds with decimals."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LONG_FIELDS)
    for c in results.cars:
        for sr in c.stages:
            w.writerow(
                [
                    c.rank,
                    c.car,
                    sr.stage,
                    sr.status,
                    seconds(sr.target_ns, 3),
                    local_date(sr.start_utc_ns, tz),
                    local_time(sr.start_utc_ns, tz, 3),
                    local_time(sr.finish_utc_ns, tz, 3),
                    seconds(sr.elapsed_ns, 3),
                    seconds(sr.deviation_ns, 3),
                    "" if sr.points is None else sr.points,
                    seconds(sr.uncertainty_ns, 6),
                    _total(c),
                ]
            )
    return buf.getvalue()


def _cell(sr: StageResult) -> str:
    if sr.missing:
        return _short_status(sr)
    dev = seconds(sr.deviation_ns, 2)
    return f"{sr.points} ({'' if dev.startswith('-') else '+'}{dev})"


def render_text(results: Results, width: int = 100) -> str:
    """Ranking table, no line longer than `width`; trials paginated when they do not fit."""
    fixed_head = ["rank", "car", "total"]
    fixed = [[str(c.rank), c.car, _total(c) or f"({c.partial_points})"] for c in results.cars]
    fw = [max(len(r[i]) for r in [fixed_head, *fixed]) for i in range(3)]
    fixed_width = sum(fw) + 2 * len(fw)
    labels = [f"T{i}" for i in range(1, len(results.stages) + 1)]
    cols = [
        [_cell(c.stages[i]) for c in results.cars] for i in range(len(results.stages))
    ]  # one list per trial
    cw = [max([len(labels[i])] + [len(x) for x in col]) for i, col in enumerate(cols)]

    pages: list[list[int]] = [[]]
    used = fixed_width
    for i, w in enumerate(cw):
        if pages[-1] and used + w + 2 > width:
            pages.append([])
            used = fixed_width
        pages[-1].append(i)
        used += w + 2

    out: list[str] = []
    for n, page in enumerate(pages, 1):
        if len(pages) > 1:
            out.append(f"-- page {n} of {len(pages)} --")
        head = [h.ljust(w) for h, w in zip(fixed_head, fw, strict=True)]
        head += [labels[i].ljust(cw[i]) for i in page]
        out.append("  ".join(head).rstrip())
        out.append("  ".join("-" * w for w in [*fw, *(cw[i] for i in page)]))
        for k, row in enumerate(fixed):
            cells = [v.ljust(w) for v, w in zip(row, fw, strict=True)]
            cells += [cols[i][k].ljust(cw[i]) for i in page]
            out.append("  ".join(cells).rstrip())
        if not fixed:
            out.append("(no assigned passages)")
        out.append("")
    out.append("trials (points (deviation s)); total in brackets = points so far, trials missing:")
    for label, s in zip(labels, results.stages, strict=True):
        line = f"  {label} {s.name}: {s.start} -> {s.finish}, target {seconds(s.target_ns, 2)} s"
        out.append(line[:width])
    if results.unassigned:
        un = ", ".join(f"{cp}: {n}" for cp, n in results.unassigned.items())
        out.append(f"passages with no car: {un} (see `checkpoint hq todo`)"[:width])
    return "\n".join(out) + "\n"
