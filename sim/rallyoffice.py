"""The simulated rally's office: its event file and entry list, and how HQ did.

With `[regularity]` in a scenario, the simulator gives HQ what an organiser
would: `event.toml` (one regularity trial per leg, targets as the crews drive
them, compressed like the travel) and `entries.csv` (every car, its start as a
UTC instant, crew, car, year, class). HQ then identifies the cars itself, and
`figures` measures it against the truth: passages identified automatically,
wrongly identified, left to confirm; and the classification from HQ's passages
against the classification computed from the truth.
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkpoint.hq import office
from checkpoint.hq.entries import Entry, parse_entries, render_entries
from checkpoint.hq.event import Event, parse_event
from sim.scenario import Scenario
from sim.world import leg_targets_ns

NS = 1_000_000_000
_MAKES = (
    ("Alfa Romeo 6C 1750", 1929), ("Bugatti Type 35", 1926), ("Lancia Lambda", 1928),
    ("OM 665 Superba", 1927), ("Fiat 508 S", 1934), ("BMW 328", 1937),
    ("Mercedes-Benz 300 SL", 1955), ("Jaguar XK120", 1950), ("Porsche 356", 1953),
    ("Ferrari 166 MM", 1949), ("Aston Martin DB2", 1951), ("Maserati A6GCS", 1953),
)  # fmt: skip
_NAMES = (
    "Rossi", "Bianchi", "Smith", "Garcia", "Müller", "Dubois", "Tanaka", "Kowalski",
    "Nguyen", "Silva", "Jones", "Ricci", "Moreau", "Weber", "Santos", "Brown",
)  # fmt: skip


def event_toml(sc: Scenario) -> str:
    """The event file HQ gets: controls, one trial per leg, identification sigma."""
    reg = sc.regularity
    assert reg is not None
    date = _dt.datetime.fromtimestamp(sc.epoch_utc_ns // NS, _dt.UTC).date().isoformat()
    lines = [
        f"# Written by the simulator for {sc.name!r}: times are as run (compressed).",
        "[event]",
        f'name = "{sc.name}"',
        f'date = "{date}"',
        'timezone = "UTC"',
        "",
        "[rules]",
        "missed_control = 300",
        "jokers = 1",
        "",
        "[identify]",
        f"sigma_s = {reg.identify_sigma_s!r}",
        f"pair_window_s = {min(1.0, sc.cars.min_gap_s * 0.7)!r}",
        "",
    ]
    for c in sc.controls:
        lines += ["[[control]]", f'id = "{c.id}"', f'name = "{c.name}"', f"km = {c.km!r}", ""]
    for k, ns in enumerate(leg_targets_ns(sc)):
        a, b = sc.controls[k], sc.controls[k + 1]
        ms = ns // 1_000_000
        lines += [
            "[[trial]]",
            f'name = "PS{k + 1}"',
            f'start = "{a.id}"',
            f'finish = "{b.id}"',
            f"target_s = {ms // 1000}.{ms % 1000:03d}",
            "",
        ]
    return "\n".join(lines)


def entry_list(sc: Scenario, start_utc_ns: int) -> list[Entry]:
    """Every car with its start (UTC instant, ms), crew, car, year and class."""
    reg = sc.regularity
    assert reg is not None
    rng = random.Random(f"{sc.seed}/entries")
    out = []
    for i in range(sc.cars.count):
        model, year = rng.choice(_MAKES)
        year += rng.randint(0, 3)
        start = start_utc_ns + round(i * sc.cars.start_interval_s * NS)
        t = _dt.datetime.fromtimestamp(start // NS, _dt.UTC)
        ms = (start % NS) // 1_000_000
        crew = f"{rng.choice(_NAMES)} / {rng.choice(_NAMES)}"
        klass = reg.classes[min(len(reg.classes) - 1, (year - 1926) * len(reg.classes) // 32)]
        out.append(
            Entry(
                number=str(sc.cars.first_number + i),
                crew=crew,
                car=model,
                year=year,
                klass=klass,
                start=t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z",
            )
        )
    return out


def entries_csv(sc: Scenario, start_utc_ns: int) -> str:
    """`entry_list` as entries.csv text."""
    return render_entries(entry_list(sc, start_utc_ns))


@dataclass
class Figures:
    """How HQ's automatic identification and results did against the truth."""

    timed: int = 0  # true car passages HQ has (matched to truth)
    auto: int = 0  # of those, identified automatically and right
    wrong: int = 0  # given a car (by anyone) that is not the truth
    to_confirm: int = 0  # left without a car
    extra_assigned: int = 0  # a service vehicle or false passage given a car
    cars_compared: int = 0
    results_differ: list[str] = field(default_factory=list)  # cars whose total differs
    results_differ_provisional: int = 0  # of those, marked provisional (the bound explains it)
    rank_differ: int = 0

    @property
    def auto_share(self) -> float | None:
        return None if not self.timed else self.auto / self.timed

    def as_dict(self) -> dict[str, Any]:
        return {
            "timed": self.timed,
            "identified_auto": self.auto,
            "identified_auto_share": None if self.auto_share is None else round(self.auto_share, 4),
            "wrongly_identified": self.wrong,
            "left_to_confirm": self.to_confirm,
            "extra_assigned": self.extra_assigned,
            "results_cars": self.cars_compared,
            "results_differ": self.results_differ,
            "results_differ_provisional": self.results_differ_provisional,
            "rank_differ": self.rank_differ,
        }

    def render(self) -> str:
        share = "n/a" if self.auto_share is None else f"{100 * self.auto_share:.1f} %"
        lines = [
            f"  identification: {self.auto}/{self.timed} passages identified automatically "
            f"({share}), {self.wrong} wrongly identified, {self.to_confirm} left to confirm, "
            f"{self.extra_assigned} non-cars given a car",
            f"  results vs truth: {self.cars_compared} cars, "
            f"{len(self.results_differ)} totals differ"
            + (
                f" ({self.results_differ_provisional} of them marked provisional)"
                if self.results_differ
                else ""
            )
            + f", {self.rank_differ} positions differ",
        ]
        return "\n".join(lines)


def figures(
    rows: Iterable[Mapping[str, Any]],
    matches: Mapping[tuple[str, str, int], str],
    truth: Iterable[Mapping[str, Any]],
    event: Event,
    entries: list[Entry],
) -> Figures:
    """Identification and results figures.

    `rows`: HQ's export (cars applied); `matches`: (box, store, seq) → true car for
    rows the verdict matched to a truth passage; `truth`: TruthPassage dicts.
    """
    f = Figures()
    known = {e.number for e in entries}
    rows = list(rows)
    for r in rows:
        if r.get("void"):
            continue
        key = (r["box"], r["store"], r["seq"])
        true = matches.get(key)
        car = r.get("car")
        if true is None or true not in known:
            if car:
                f.extra_assigned += 1
            continue
        f.timed += 1
        if car is None or car == "":
            f.to_confirm += 1
        elif str(car) != true:
            f.wrong += 1
        elif r.get("car_source") == "auto":
            f.auto += 1
    # Results: HQ's classification vs the one computed from the truth (every true
    # passage, with its true car and its true time).
    measured = office.build(rows, event, entries).classification
    truth_rows = [
        {"box": t["box"], "store": "truth", "seq": i, "checkpoint": t["checkpoint"],
         "input": t["input"], "utc_ns": t["utc_ns"], "uncertainty_ns": 0, "car": t["car"],
         "car_source": "hq", "void": False}
        for i, t in enumerate(truth, 1)
        if t["car"] in known
    ]  # fmt: skip
    ideal = office.build(truth_rows, event, entries).classification
    true_by = {c.number: c for c in ideal.cars}
    for c in measured.cars:
        t = true_by.get(c.number)
        if t is None:
            continue
        f.cars_compared += 1
        if c.total != t.total or c.status != t.status:
            f.results_differ.append(c.number)
            if c.provisional:
                f.results_differ_provisional += 1
        if c.rank != t.rank:
            f.rank_differ += 1
    return f


def write(sc: Scenario, out: Path, start_utc_ns: int) -> tuple[Path, Path]:
    """Write event.toml and entries.csv into `out` (the organiser's two files)."""
    ev, en = out / "event.toml", out / "entries.csv"
    ev.write_text(event_toml(sc), encoding="utf-8")
    en.write_text(entries_csv(sc, start_utc_ns), encoding="utf-8")
    return ev, en


def read(out: Path) -> tuple[Event, list[Entry]] | None:
    """The event and entry list written in `out`, or None (no [regularity])."""
    ev, en = out / "event.toml", out / "entries.csv"
    if not ev.exists() or not en.exists():
        return None
    return (
        parse_event(ev.read_text(encoding="utf-8"), str(ev)),
        parse_entries(en.read_text(encoding="utf-8"), str(en)),
    )


def judge(
    v: Any,
    rows: list[Mapping[str, Any]],
    truth: Iterable[Mapping[str, Any]],
    event: Event,
    entries: list[Entry],
    top: str,
) -> None:
    """Put the identification figures and the top of the classification on verdict `v`."""
    f = figures(rows, v.matches, truth, event, entries)
    v.identification = f.as_dict()
    v.office_text = f.render() + "\n" + "".join(f"    {ln}\n" for ln in top.splitlines())
