"""The README's screenshots, regenerated: `python -m tests.screenshots [OUT_DIR]`.

Real pages in Debian's headless Chromium: the HQ board over a whole rally
(tests/board_rally.py) at wall-screen (1600x1000) and phone (390x844) sizes, and the
marshal page on a phone in its states: READY with passages (one row per car at two
inputs, HQ's correction shown), NOT READY while the GPS locks, and the Void confirm.
Default OUT_DIR: docs/screenshots. tests/test_web_layout.py runs it into a tmp dir.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import board_rally  # noqa: E402
from webrig import (  # noqa: E402
    PASSWORD,
    PIN,
    SCREENSHOTS,
    FakeBox,
    login,
    make_driver,
    quit_driver,
    wait_page,
)

from checkpoint.hq.results import parse_stages  # noqa: E402
from checkpoint.hq.store import iso_now  # noqa: E402
from checkpoint.web.board import BoardServer  # noqa: E402
from checkpoint.web.marshal import MarshalServer  # noqa: E402

NS = 1_000_000_000
BOARD = {"hq-board-wall.png": (1600, 1000, False), "hq-board-phone.png": (390, 844, True)}
MARSHAL = ("marshal-ready.png", "marshal-locking.png", "marshal-void.png")


def _settle(d) -> None:
    """The picture once nothing on the page still moves (the caller has waited for its
    data): every CSS animation and transition has finished."""
    still = "return document.getAnimations().every(a => a.playState !== 'running')"
    wait_page(d, lambda d: d.execute_script(still), 10, "the page to stop moving")


def _spread_history(store) -> None:
    """For the picture only: the rally's statuses arrived within a second; spread each
    box's over the last hour, as a morning of GPS locking would look."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    rows = list(store.db.query("SELECT id, box FROM status_history ORDER BY box, id"))
    by_box: dict[str, list[int]] = {}
    for r in rows:
        by_box.setdefault(r["box"], []).append(r["id"])
    with store.transaction():
        for k, ids in enumerate(by_box.values()):
            for i, rid in enumerate(ids):
                back = (len(ids) - 1 - i) * 900 + k * 40
                at = (now - dt.timedelta(seconds=back)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                store.db.execute("UPDATE status_history SET at=? WHERE id=?", (at, rid))


def board_shots(out: Path, work: Path) -> list[Path]:
    """The board over a whole rally, at wall-screen and phone sizes."""
    db = work / "hq.db"
    filler = board_rally.fill(db)
    # A running collector writes these; here the rally was stored through Ingest.
    filler.store.set_state("link", "connected")
    filler.store.set_state("heartbeat_at", iso_now())
    _spread_history(filler.store)
    server = BoardServer(
        db, port=0, stages=parse_stages(board_rally.stages_toml()), password=PASSWORD, poll_s=0.2
    ).start()
    shots = []
    try:
        for name, (w, h, mobile) in BOARD.items():
            d = make_driver(work, width=w, height=h, mobile=mobile)
            try:
                d.get(server.url)
                wait_page(
                    d,
                    lambda d: len(d.find_elements("css selector", "#results tbody tr")) > 60,
                    10,
                    "results",
                )
                _settle(d)
                shots.append(out / name)
                d.save_screenshot(str(shots[-1]))
            finally:
                quit_driver(d)
    finally:
        server.stop()
        filler.close()
    return shots


def _marshal_box() -> FakeBox:
    box = FakeBox(box="box03", checkpoint="PC3")
    box.status_over.update(
        place="Passo della Raticosa",
        inputs={
            "beam": {"broken": False, "fault": False, "passages": 5},
            "button": {"broken": False, "fault": False, "passages": 1},
        },
    )
    t = (time.time_ns() // NS - 300) * NS
    rows = []

    def row(seq: int, dt_ns: int, inp: str, **kw: object) -> None:
        rows.append(
            {"seq": seq, "input": inp, "source": "beam", "utc_ns": t + dt_ns, "clock": "locked"}
            | {"uncertainty_ns": 1_240, "void": False}
            | kw
        )

    row(1, 120_370_000, "beam", car="12")
    row(2, 430_000_000, "button", car="12")  # the same car, the marshal's button
    row(3, 61 * NS + 50_000_000, "beam", car="13", hq="HQ: car 14")
    row(4, 78 * NS + 990_000_000, "beam", void=True, void_reason="photographer")
    row(5, 121 * NS + 880_000_000, "beam")
    box.recent = tuple(rows)
    box._next = 6  # noqa: SLF001
    return box


def marshal_shots(out: Path, work: Path) -> list[Path]:
    """The marshal page on a phone: ready with passages, locking, the Void confirm."""
    box = _marshal_box()
    page = MarshalServer(box.snapshot, box.passages, box.correct, port=0, pin=PIN, tick_s=0.1)
    page.start()
    shots = []
    d = make_driver(work, width=390, height=844, mobile=True)
    try:
        login(d, page.url, PIN)
        wait_page(d, lambda d: len(d.find_elements("css selector", "li.p")) == 4, 10, "rows")
        _settle(d)
        shots.append(out / MARSHAL[0])
        d.save_screenshot(str(shots[-1]))
        box.status_over.update(clock="nmea", uncertainty_ns=501_000_000, lock_in_s=40)
        wait_page(d, lambda d: "NOT READY" in d.find_element("id", "verdict").text, 10)
        _settle(d)
        shots.append(out / MARSHAL[1])
        d.save_screenshot(str(shots[-1]))
        box.status_over.update(clock="locked", uncertainty_ns=1_240, lock_in_s=None)
        wait_page(d, lambda d: "NOT READY" not in d.find_element("id", "verdict").text, 10)
        d.find_element("css selector", 'li.p[data-seq="5"] button.void').click()
        wait_page(d, lambda d: d.find_element("id", "void-dialog").is_displayed(), 10)
        _settle(d)
        shots.append(out / MARSHAL[2])
        d.save_screenshot(str(shots[-1]))
    finally:
        quit_driver(d)
        page.stop()
    return shots


def main(argv: list[str] | None = None) -> int:
    """Write every screenshot to OUT_DIR (default docs/screenshots)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else SCREENSHOTS
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="checkpoint-shots-") as tmp:
        work = Path(tmp)
        shots = board_shots(out, work) + marshal_shots(out, work)
    for p in shots:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
