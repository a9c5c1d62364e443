"""The regularity classification: trials, time controls, coefficients, jokers, ranks.

Pure: the event, the entry list and each car's timed passages in; a
`Classification` out. No I/O, no clock reads.

Rules (parameters in the event file's `[rules]`, Mille Miglia style by default):

* A trial is timed from the car's passage at its start control. At each timed
  control of the trial (secret controls, then the finish) the deviation is
  (passage − trial start) − that control's target; its points are the absolute
  deviation in hundredths (truncated by default, `rounding = "round"` rounds half
  up) × `penalty_per_hundredth`, capped at `max_penalty` when given.
* A timed control without a passage, or every timed control of a trial without a
  start passage, costs `missed_control` points. So does a plain passage control
  (not in a trial, not a time control) the car missed.
* A trial's score is its points × the car's coefficient (exact decimals). The
  coefficient is the entry's own, else with `coefficient = "year"` it is
  1 + (year − `year_base`) / 100 (1934 → 1.34); `"entries"`: the entry's or 1;
  `"none"`: 1.
* Jokers: each car's `jokers` worst trial scores are dropped (a missed trial can
  be one of them).
* Time controls are timed to the unit (`time_unit_s`, the minute): the unit the
  car arrived in minus the unit of its ideal time (start + the control's due
  offset) gives units early (× `early_per_unit`) or late (× `late_per_unit`).
  More than `max_late_units` late: out of time limit (OTL). These points are not
  multiplied by the coefficient.
* Total = kept trial scores + time-control points + missed passage controls.
  Lowest total wins. Equal totals are split by `tie_break` in order: `year` (the
  older car ahead), `best_trials` (count-back: the car whose best trial score is
  lower, then second best, ...). Still equal: the same rank (1, 2, 2, 4).
* Status: `dns` (withdrawn), `dnf` (retired, or no passage at the last control
  once the results are final), `otl` (out of time limit): shown as such, after
  every classified car, unranked.
* Provisional: when a passage's uncertainty bound (the sum of the two passages'
  bounds for a trial control) could move a deviation across a hundredth (or a
  time control's arrival across a unit), that line and the car are marked
  provisional, with the reason.
* Classes rank their cars by the same keys; each trial ranks the cars that
  completed it by score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from checkpoint.hq.entries import Entry
from checkpoint.hq.event import Event, Rules
from checkpoint.hq.identify import Call
from checkpoint.hq.results import NS_PER_S, hundredths

STATUS_ORDER = {"classified": 0, "otl": 1, "dnf": 2, "dns": 3}


@dataclass(frozen=True, slots=True)
class Line:
    """One control on a car's sheet."""

    control: str
    kind: str  # "trial", "start", "time", "passage"
    trial: str | None
    ideal_ns: int | None
    actual_ns: int | None
    deviation_ns: int | None
    points: int
    status: str  # ok | missed | early | late | otl | untimed
    uncertainty_ns: int | None = None
    provisional: str | None = None
    car_source: str | None = None
    backup: str | None = None
    disagree_ns: int | None = None


@dataclass(frozen=True, slots=True)
class TrialScore:
    """One car on one trial."""

    trial: str
    points: int
    score: Decimal
    missed: int
    joker: bool = False


@dataclass(frozen=True, slots=True)
class CarResult:
    """One car: its entry, status, total and rank, sheet lines and trial scores."""

    entry: Entry
    coefficient: Decimal
    status: str
    total: Decimal | None
    trials: tuple[TrialScore, ...]
    lines: tuple[Line, ...]
    time_points: int
    passage_points: int
    rank: int | None = None
    class_rank: int | None = None
    provisional: tuple[str, ...] = ()

    @property
    def number(self) -> str:
        """The car number."""
        return self.entry.number


@dataclass(frozen=True, slots=True)
class Classification:
    """Overall (ranked cars then the unranked), per class and per trial."""

    event: str
    trials: tuple[str, ...]
    cars: tuple[CarResult, ...]
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    trial_ranks: dict[str, tuple[tuple[int, str, Decimal], ...]] = field(default_factory=dict)
    to_confirm: int = 0
    unknown: int = 0

    def car(self, number: str) -> CarResult | None:
        """One car's result (its sheet), or None."""
        return next((c for c in self.cars if c.number == number), None)


def coefficient(entry: Entry, rules: Rules) -> Decimal:
    """The car's coefficient by the event's rule."""
    if rules.coefficient == "none":
        return Decimal(1)
    if entry.coefficient is not None:
        return entry.coefficient
    if rules.coefficient == "year":
        return Decimal(1) + Decimal(entry.year - rules.year_base) / 100
    return Decimal(1)


def _points(dev: int, rules: Rules) -> int:
    pts = hundredths(dev, rules.rounding) * rules.penalty_per_hundredth
    return pts if rules.max_penalty is None else min(pts, rules.max_penalty)


def _straddle(dev: int, unc: int, rules: Rules) -> bool:
    """Could a deviation anywhere in dev ± unc give other points?"""
    lo, hi = dev - unc, dev + unc
    ends = {_points(lo, rules), _points(hi, rules)}
    if lo < 0 < hi:
        ends.add(0)
    return len(ends) > 1


def _unc(*calls: Call) -> int:
    return sum(c.timed.uncertainty_ns for c in calls)


def _fmt_s(ns: int) -> str:
    sign = "-" if ns < 0 else "+"
    return f"{sign}{abs(ns) / NS_PER_S:.3f} s"


def _line(
    control: str, kind: str, trial: str | None, ideal: int | None, call: Call | None, **kw: object
) -> Line:
    if call is None:
        return Line(control, kind, trial, ideal, None, None, int(kw.pop("points", 0)), **kw)  # type: ignore[arg-type]
    t = call.timed
    return Line(
        control,
        kind,
        trial,
        ideal,
        t.utc_ns,
        None if ideal is None else t.utc_ns - ideal,
        uncertainty_ns=t.uncertainty_ns,
        car_source=call.source,
        backup=t.backup,
        disagree_ns=t.disagree_ns,
        **kw,  # type: ignore[arg-type]
    )


def _score_car(
    event: Event, entry: Entry, start_ns: int | None, got: Mapping[str, Call], final: bool
) -> CarResult:
    rules = event.rules
    coef = coefficient(entry, rules)
    lines: list[Line] = []
    reasons: list[str] = []  # why the result is provisional
    trials, timed_in_trials = _score_trials(event, start_ns, got, coef, lines, reasons)
    time_pts, passage_pts, otl = _score_controls(
        event, start_ns, got, timed_in_trials, lines, reasons
    )
    trials = _jokers(trials, rules.jokers)
    total = sum((t.score for t in trials if not t.joker), Decimal(0)) + time_pts + passage_pts
    status = _status(event, entry, got, final, otl)
    return CarResult(
        entry=entry,
        coefficient=coef,
        status=status,
        total=total if status == "classified" else None,
        trials=tuple(trials),
        lines=tuple(lines),
        time_points=time_pts,
        passage_points=passage_pts,
        provisional=tuple(reasons),
    )


def _score_trials(
    event: Event,
    start_ns: int | None,
    got: Mapping[str, Call],
    coef: Decimal,
    lines: list[Line],
    reasons: list[str],
) -> tuple[list[TrialScore], set[str]]:
    """Each regularity trial's points (lines and provisional reasons appended); also the
    controls the trials timed."""
    rules = event.rules
    trials: list[TrialScore] = []
    timed_in_trials: set[str] = set()
    for tr in event.trials:
        timed_in_trials.add(tr.start)
        st = got.get(tr.start)
        sc = event.control(tr.start)
        due = sc.due_ns if sc is not None else None
        ideal_start = None if start_ns is None or due is None else start_ns + due
        lines.append(
            _line(tr.start, "start", tr.name, ideal_start, st, points=0,
                  status="ok" if st else "missed")
        )  # fmt: skip
        pts, missed = 0, 0
        for ctl, target in tr.points:
            timed_in_trials.add(ctl)
            c = got.get(ctl)
            if st is None or c is None or c.timed.utc_ns <= st.timed.utc_ns:
                missed += 1
                pts += rules.missed_control
                ideal = None if st is None else st.timed.utc_ns + target
                lines.append(
                    _line(ctl, "trial", tr.name, ideal, None, points=rules.missed_control,
                          status="missed")
                )  # fmt: skip
                continue
            ideal = st.timed.utc_ns + target
            dev = c.timed.utc_ns - ideal
            p = _points(dev, rules)
            unc = _unc(st, c)
            prov = None
            if _straddle(dev, unc, rules):
                prov = (
                    f"{tr.name} {ctl}: deviation {_fmt_s(dev)} ± {unc / 1e6:.3f} ms "
                    f"straddles a hundredth"
                )
                reasons.append(prov)
            pts += p
            lines.append(
                _line(ctl, "trial", tr.name, ideal, c, points=p, status="ok", provisional=prov)
            )
        trials.append(TrialScore(tr.name, pts, pts * coef, missed))
    return trials, timed_in_trials


def _score_controls(
    event: Event,
    start_ns: int | None,
    got: Mapping[str, Call],
    timed_in_trials: set[str],
    lines: list[Line],
    reasons: list[str],
) -> tuple[int, int, bool]:
    """Time controls and passage controls outside the trials: (time points, passage
    points, out of time limit)."""
    rules = event.rules
    time_pts = passage_pts = 0
    otl = False
    for ctl in event.controls:
        if ctl.id in timed_in_trials and ctl.kind != "time":
            continue
        c = got.get(ctl.id)
        ideal = None if start_ns is None or ctl.due_ns is None else start_ns + ctl.due_ns
        if ctl.kind == "time":
            line = _time_control(ctl.id, ideal, c, rules)
            time_pts += line.points
            otl = otl or line.status == "otl"
            if line.provisional:
                reasons.append(line.provisional)
            lines.append(line)
        else:
            p = 0 if c is not None else rules.missed_control
            passage_pts += p
            lines.append(
                _line(ctl.id, "passage", None, ideal, c, points=p,
                      status="ok" if c is not None else "missed")
            )  # fmt: skip
    return time_pts, passage_pts, otl


def _time_control(cid: str, ideal: int | None, c: Call | None, rules: Rules) -> Line:
    """A time control's line: to the minute (the time unit), early/late per unit, OTL."""
    if c is None:
        return _line(cid, "time", None, ideal, None, points=rules.missed_control,
                     status="missed")  # fmt: skip
    if ideal is None:
        return _line(cid, "time", None, None, c, points=0, status="untimed")
    unit = int(rules.time_unit_s * NS_PER_S)
    diff = c.timed.utc_ns // unit - ideal // unit
    u = c.timed.uncertainty_ns
    prov = None
    if (c.timed.utc_ns - u) // unit != (c.timed.utc_ns + u) // unit:
        prov = f"{cid}: arrival ± {u / 1e6:.3f} ms straddles a time unit"
    if diff < 0:
        p, status = -diff * rules.early_per_unit, "early"
    elif diff > 0:
        p, status = diff * rules.late_per_unit, "late"
        if diff > rules.max_late_units:
            status = "otl"
    else:
        p, status = 0, "ok"
    return _line(cid, "time", None, ideal, c, points=p, status=status, provisional=prov)


def _jokers(trials: list[TrialScore], jokers: int) -> list[TrialScore]:
    """Drop the N worst trial scores (ties: the later trial goes first)."""
    order = sorted(range(len(trials)), key=lambda i: (trials[i].score, i), reverse=True)
    dropped = set(order[:jokers])
    return [
        TrialScore(t.trial, t.points, t.score, t.missed, joker=i in dropped)
        for i, t in enumerate(trials)
    ]


def _status(event: Event, entry: Entry, got: Mapping[str, Call], final: bool, otl: bool) -> str:
    last = event.controls[-1].id if event.controls else None
    if entry.status == "withdrawn":
        return "dns"
    if entry.status == "retired" or (final and last is not None and last not in got):
        return "dnf"
    return "otl" if otl else "classified"


def _num_key(n: str) -> tuple[int, int | str]:
    return (0, int(n)) if n.isdigit() else (1, n)


def _rank_key(c: CarResult, ties: tuple[str, ...]) -> tuple:
    key: list[object] = [c.total]
    for t in ties:
        if t == "year":
            key.append(c.entry.year)
        elif t == "best_trials":
            key.append(tuple(sorted(t.score for t in c.trials if not t.joker)))
    return tuple(key)


def _ranked(cars: list[CarResult], ties: tuple[str, ...]) -> list[tuple[int, CarResult]]:
    ok = sorted(
        (c for c in cars if c.status == "classified"),
        key=lambda c: (_rank_key(c, ties), _num_key(c.number)),
    )
    out: list[tuple[int, CarResult]] = []
    prev, rank = None, 0
    for pos, c in enumerate(ok, 1):
        k = _rank_key(c, ties)
        if k != prev:
            rank, prev = pos, k
        out.append((rank, c))
    return out


def _trial_ranks(cars: list[CarResult], i: int) -> tuple[tuple[int, str, Decimal], ...]:
    """(rank, car, score) on trial `i` of every car that missed none of its controls;
    equal scores share a rank."""
    done = sorted(
        ((c.trials[i].score, c.number) for c in cars if c.trials[i].missed == 0),
        key=lambda x: (x[0], _num_key(x[1])),
    )
    rows: list[tuple[int, str, Decimal]] = []
    prev_s, rank = None, 0
    for pos, (s, n) in enumerate(done, 1):
        if s != prev_s:
            rank, prev_s = pos, s
        rows.append((rank, n, s))
    return tuple(rows)


def classify(
    event: Event,
    entries: list[Entry],
    starts: Mapping[str, int],
    passages: Mapping[str, Mapping[str, Call]],
    *,
    final: bool = True,
    to_confirm: int = 0,
    unknown: int = 0,
) -> Classification:
    """Score and rank every entered car.

    `starts`: car → scheduled start (UTC ns); `passages`: car → control → its call.
    `final=False` (a live board) does not call a car without a finish passage DNF.
    """
    cars = [
        _score_car(event, e, starts.get(e.number), passages.get(e.number, {}), final)
        for e in entries
    ]
    overall = _ranked(cars, event.rules.tie_break)
    rank_of = {c.number: r for r, c in overall}
    class_rank: dict[str, int] = {}
    classes: dict[str, tuple[str, ...]] = {}
    for k in sorted({c.entry.klass for c in cars if c.entry.klass}):
        members = [c for c in cars if c.entry.klass == k]
        ranked = _ranked(members, event.rules.tie_break)
        class_rank.update({c.number: r for r, c in ranked})
        rest = sorted(
            (c for c in members if c.status != "classified"),
            key=lambda c: (STATUS_ORDER[c.status], _num_key(c.number)),
        )
        classes[k] = tuple(c.number for _, c in ranked) + tuple(c.number for c in rest)
    final_cars = [
        replace(c, rank=rank_of.get(c.number), class_rank=class_rank.get(c.number)) for c in cars
    ]
    final_cars.sort(
        key=lambda c: (
            STATUS_ORDER[c.status],
            c.rank if c.rank is not None else 0,
            _num_key(c.number),
        )
    )
    trial_ranks = {tr.name: _trial_ranks(cars, i) for i, tr in enumerate(event.trials)}
    return Classification(
        event=event.name,
        trials=tuple(t.name for t in event.trials),
        cars=tuple(final_cars),
        classes=classes,
        trial_ranks=trial_ranks,
        to_confirm=to_confirm,
        unknown=unknown,
    )


def fmt_points(d: Decimal | None) -> str:
    """Points for display: integers without decimals, else two decimals."""
    if d is None:
        return ""
    return str(int(d)) if d == d.to_integral_value() else f"{d:.2f}"
