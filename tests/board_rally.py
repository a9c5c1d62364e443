"""A whole rally in an HQ database, as the collector's own `Ingest` stores it.

70 cars over 7 controls (6 trials), a few passages nobody gave a car, a photographer's
false trigger, car 29 passing one control twice (8 passages), statuses for the clock
plot. Used by the layout tests (tests/test_web_layout.py) and the README screenshots
(`python -m tests.screenshots`).
"""

from __future__ import annotations

from pathlib import Path

from hq_box import T0_NS
from webrig import HQFiller

S = 1_000_000_000
CONTROLS = 7
CARS = 70
PLACES = (
    "Brescia",
    "Passo della Futa",
    "Passo della Raticosa",
    "Radicofani",
    "Passo del Muraglione",
    "Passo della Consuma",
    "Piazza della Loggia",
)
STAGE_NAMES = ("Futa", "Raticosa", "Radicofani", "Muraglione", "Consuma", "Loggia")
UNASSIGNED = {(3, 12), (3, 13), (5, 40), (6, 66)}  # (control index, car): nobody typed it
TARGET_S = 300


def stages_toml() -> str:
    """Six trials, each from one control to the next."""
    return "[scoring]\npenalty_per_hundredth = 1\nmax_penalty = 300\n" + "".join(
        f'\n[[stage]]\nname = "{STAGE_NAMES[k]}"\nstart = "PC{k + 1}"\nfinish = "PC{k + 2}"\n'
        f"target_s = {TARGET_S}\n"
        for k in range(CONTROLS - 1)
    )


def fill(db: Path, *, cars: int = CARS) -> HQFiller:
    """Write the rally into `db` (created); returns the filler (close it)."""
    f = HQFiller(db)
    for k in range(CONTROLS):
        box = f"box{k + 1:02d}"
        for unc in (480_000_000, 35_000_000, 2_400, 1_500):
            clock = "nmea" if unc > 1_000_000 else "locked"
            f.status(
                box,
                checkpoint=f"PC{k + 1}",
                place=PLACES[k],
                clock=clock,
                uncertainty_ns=unc,
                backlog=0,
            )
    for car in range(1, cars + 1):
        start = T0_NS + car * 60 * S
        for k in range(CONTROLS):
            # A crew a few hundredths early or late on each trial.
            dev = ((car * car * 31 + k * k * 17 + car * k * 7) % 97 - 48) * 10_000_000
            t = start + k * TARGET_S * S + (dev if k else 0)
            box = f"box{k + 1:02d}"
            seq = f.passage(box, f"PC{k + 1}", t)
            if (k, car) not in UNASSIGNED:
                f.event(box, "assign", f"PC{k + 1}", ref_seq=seq, car=str(car), by="marshal")
            if car == 29 and k == 2:  # the marshal's second beam saw car 29 again
                seq = f.passage(box, f"PC{k + 1}", t + 900_000_000)
                f.event(box, "assign", f"PC{k + 1}", ref_seq=seq, car="29", by="marshal")
            if car == 51 and k == 4:  # a photographer crossing the beam
                seq = f.passage(box, f"PC{k + 1}", t + 17 * S)
                f.event(box, "void", f"PC{k + 1}", ref_seq=seq, reason="photographer", by="marshal")
    return f
