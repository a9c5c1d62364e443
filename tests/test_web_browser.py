"""The pages in a real browser: headless Chromium (Debian's) driven by selenium.

The marshal page is served by `MarshalServer` over an in-process box (`FakeBox`)
whose events also go out over MQTT through an emulated box (tests/hq_box.py) to a
real `checkpoint.hq.collector.Collector` on a real Mosquitto; the HQ board reads that
collector's database. So "assign a car on the phone, see it on HQ's board" crosses
every process boundary but the daemon's own, which `test_real_daemon_...` covers
once the daemon hook is wired (it skips until then).

The README's screenshots come from `python -m tests.screenshots` (tests/screenshots.py);
the screenshots taken here go to the test's tmp folder (docs/screenshots/ with
CHECKPOINT_SCREENSHOTS=1, for a look at these scenes).
"""

from __future__ import annotations

import inspect
import time
from contextlib import closing
from typing import Any

import pytest
from hq_box import EmulatedBox
from waits import listening, wait_for
from webrig import (
    PASSWORD,
    PIN,
    FakeBox,
    browser,
    cells,
    click_row,
    console_errors,
    css,
    login,
    require_browser,
    screenshot_dir,
    wait_page,
)

from checkpoint.hq.collector import Collector
from checkpoint.hq.results import parse_stages
from checkpoint.hq.store import HQStore
from checkpoint.web import server as webserver
from checkpoint.web.board import BoardServer
from checkpoint.web.marshal import MarshalServer

pytestmark = pytest.mark.browser
NS = 1_000_000_000

STAGES = """
[scoring]
penalty_per_hundredth = 1

[[stage]]
name = "S1"
start = "PC1"
finish = "PC2"
target_s = 300

[[stage]]
name = "S2"
start = "PC2"
finish = "PC3"
target_s = 420

[[stage]]
name = "S3"
start = "PC3"
finish = "PC4"
target_s = 240
"""


@pytest.fixture(autouse=True)
def _browser():
    require_browser()


@pytest.fixture
def phone(tmp_path):
    with browser(tmp_path, width=390, height=844, mobile=True) as d:
        yield d


@pytest.fixture
def wall(tmp_path):
    with browser(tmp_path, width=1280, height=800) as d:
        yield d


@pytest.fixture
def hq(broker, tmp_path):
    db = tmp_path / "hq.db"
    c = Collector(broker.url, db, gap_wait_s=0.5, heartbeat_s=0.5)
    c.start()
    wait_for(c.subscribed.is_set, 10, "HQ subscribed")
    yield db
    c.stop()


@pytest.fixture
def emus(broker):
    started: list[EmulatedBox] = []

    def make(box: str, checkpoint: str) -> EmulatedBox:
        b = EmulatedBox(broker.url, box, checkpoint=checkpoint).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def board(hq):
    s = BoardServer(
        hq, host="127.0.0.1", port=0, stages=parse_stages(STAGES), password=PASSWORD, poll_s=0.1
    ).start()
    yield s
    s.stop()


def hq_passages(db):
    with closing(HQStore(db, create=False)) as s:
        return s.passages()


def row_state(driver, seq):
    rows = css(driver, f'li.p[data-seq="{seq}"] .state')
    return rows[0].text if rows else ""


# -- marshal page -----------------------------------------------------------------------


def _marshal_assigns_42(phone, wall, board, box: FakeBox, hq, li, seq: int) -> None:
    """The marshal types the car number: an assign event, seen on the box and at HQ,
    and HQ's board shows it in the live feed."""
    car = li.find_element("css selector", "input.car")
    car.send_keys("42")
    li.find_element("css selector", "button.set").click()
    wait_page(phone, lambda d: row_state(d, seq) == "car 42 ✓", what="car confirmed")
    assert box.corrections == [("assign", seq, "42")]
    wait_for(lambda: [p["car"] for p in hq_passages(hq)] == ["42"], 10, "assign at HQ")
    wall.get(board.url)
    wait_page(
        wall,
        lambda d: any(
            f"box07 #{seq}" in r.text and "42" in r.text for r in css(d, "#feed tbody tr")
        ),
        what="passage with car 42 on the board",
    )


def _marshal_voids_a_false_trigger(phone, wall, box: FakeBox, hq, utc_ns: int) -> None:
    """A false trigger at `utc_ns` is voided with a reason; HQ and the board follow."""
    seq2 = box.passage(utc_ns)
    li2 = wait_page(phone, lambda d: css(d, f'li.p[data-seq="{seq2}"]'), what="row 2")[0]
    li2.find_element("css selector", "button.void").click()
    reason = wait_page(phone, lambda d: d.find_element("id", "void-reason"), what="dialog")
    reason.clear()
    reason.send_keys("photographer in the beam")
    phone.find_element("css selector", "#void-form button[type=submit]").click()
    wait_page(phone, lambda d: row_state(d, seq2).startswith("VOID"), what="void shown")
    wait_for(lambda: [p["void"] for p in hq_passages(hq)] == [False, True], 10, "void")
    wait_page(
        wall,
        lambda d: any(f"box07 #{seq2}" in r.text for r in css(d, "#feed tbody tr.voided")),
        what="void on the board",
    )


def test_marshal_sees_a_passage_live_assigns_a_car_and_hq_board_shows_it(
    phone, wall, hq, emus, board, tmp_path
):
    emu = emus("box07", "PC3")
    emu.status(clock="locked", uncertainty_ns=1_240, checkpoint="PC3", backlog=0)
    box = FakeBox(emu)
    page = MarshalServer(
        box.snapshot, box.passages, box.correct, host="127.0.0.1", port=0, pin=PIN, tick_s=0.1
    ).start()
    try:
        phone.get(page.url)
        assert phone.current_url.endswith("/login")
        login(phone, page.url, PIN)
        wait_page(phone, lambda d: "READY" in d.find_element("id", "verdict").text, what="READY")
        assert "box07" in phone.find_element("id", "box").text

        # A car passes: the row appears by itself (SSE), local time and UTC to the 1/100.
        utc_ns = (time.time_ns() // NS - 3) * NS + 456_789_123
        seq = box.passage(utc_ns)
        li = wait_page(phone, lambda d: css(d, f'li.p[data-seq="{seq}"]'), what="passage row")[0]
        local = li.find_element("css selector", ".local").text
        utc = li.find_element("css selector", ".utc").text
        assert local.endswith(".45") and utc.endswith(".45 UTC") and local != utc[:11]

        _marshal_assigns_42(phone, wall, board, box, hq, li, seq)
        _marshal_voids_a_false_trigger(phone, wall, box, hq, utc_ns + 2 * NS + 170_000_000)
        # More traffic for the screenshot: assigned, unassigned, a clock warning.
        for i, (car_no, clock) in enumerate((("7", "locked"), ("15", "locked"), ("", "holdover"))):
            s = box.passage(utc_ns + (6 + 4 * i) * NS + 30_000_000 * i, clock=clock)
            if car_no:
                wait_page(phone, lambda d, s=s: css(d, f'li.p[data-seq="{s}"]'), what="row")
                box.correct("assign", s, car_no)
                wait_page(phone, lambda d, s=s, c=car_no: row_state(d, s) == f"car {c} ✓")
        wait_page(phone, lambda d: len(css(d, "li.p")) == 5, what="five rows")
        # The screenshot once every arrival highlight has faded (the page drops `new`).
        wait_page(phone, lambda d: not css(d, "li.p.new"), what="highlights faded")
        shot = screenshot_dir(tmp_path) / "marshal.png"
        assert phone.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        assert console_errors(phone) == [] and console_errors(wall) == []
    finally:
        page.stop()


def shown_error(driver: Any) -> str | None:
    """The text of the page's .error paragraph once it is displayed, else None."""
    err = driver.find_element("css selector", ".error")
    return err.text if err.is_displayed() and err.text else None


def test_wrong_pin_is_refused_in_the_browser(phone, monkeypatch):
    monkeypatch.setattr(webserver, "WRONG_PIN_DELAY_S", 0.0)
    box = FakeBox()
    page = MarshalServer(
        box.snapshot, box.passages, box.correct, host="127.0.0.1", port=0, pin=PIN
    ).start()
    try:
        login(phone, page.url, "135790")
        # The login page always carries a hidden .error paragraph: wait for the answer page's
        # shown one, reading it inside the wait so the page being replaced counts as "not yet".
        shown = wait_page(phone, shown_error, what="a shown error")
        assert shown == "Wrong PIN."
        assert phone.current_url.endswith("/login") and phone.get_cookies() == []
        phone.get(page.url)
        assert phone.current_url.endswith("/login")  # still no way in
        login(phone, page.url, PIN)
        wait_page(phone, lambda d: d.current_url == page.url, what="the page after login")
        cookie = phone.get_cookies()[0]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    finally:
        page.stop()


# -- HQ board ---------------------------------------------------------------------------

# Cars' deviations per stage in hundredths (early negative); None: no passage there.
DEVIATIONS = {
    "3": (4, -12, 7),
    "7": (-2, 3, 1),
    "11": (15, 22, -9),
    "12": (0, -1, 2),
    "15": (37, -41, 12),
    "21": (-8, 6, None),
    "42": (9, 9, -3),
}
TARGETS = (300, 420, 240)


def _rally(emus, hq):
    """Four controls, seven cars, statuses showing the clocks settling; one box lost."""
    boxes = [emus(f"box0{i}", f"PC{i}") for i in range(1, 5)]
    base = (time.time_ns() // NS - 1500) * NS
    for k, (car, devs) in enumerate(DEVIATIONS.items()):
        t = base + k * 60 * NS + 130_000_000 * k
        times = [t]
        for target, dev in zip(TARGETS, devs, strict=True):
            if dev is None:
                break
            # Off the round hundredth, away from zero: points = |dev| exactly.
            t = t + target * NS + dev * 10_000_000 + (3_456_789 if dev >= 0 else -3_456_789)
            times.append(t)
        for b, utc in zip(boxes, times, strict=False):
            seq = b.passage(utc, unc=1_100 + 90 * k)
            b.publish(seq)
            if not (car == "42" and b.box == "box04"):  # one left for HQ to assign
                b.publish(b.assign(seq, car))
    # Clocks settling: nmea (ms) to locked (µs); box03 drifts in holdover, box04 is lost.
    for step in range(14):
        for i, b in enumerate(boxes):
            if i == 2 and step > 8:
                unc, clock = 2_000 * 2 ** (step - 8), "holdover"
            elif step < 3 + i:
                unc, clock = 40_000_000 // (step + 1), "nmea"
            else:
                unc, clock = 900 + 150 * i + 40 * (step % 3), "locked"
            b.status(clock=clock, uncertainty_ns=unc, checkpoint=b.checkpoint, backlog=0)
        time.sleep(0.25)  # paces the boxes' status messages, as their clocks settle
    boxes[3].publish_raw(b'{"state":"lost"}', boxes[3].topic_status, retain=True)
    n = sum(len(b.events) for b in boxes)
    wait_for(lambda: _events(hq) == n, 15, f"{n} events at HQ")
    return boxes


def _events(db):
    with closing(HQStore(db, create=False)) as s:
        return s.event_count()


def _hq_assigns_the_passage_nobody_assigned(wall, board, hq) -> None:
    """HQ logs in, picks box04's passage with no car from the feed, assigns car 42; the
    results follow at once."""
    assert wall.find_element("id", "correct-panel").is_displayed() is False
    wall.find_element("id", "login").click()
    login(wall, board.url, PASSWORD)
    wait_page(wall, lambda d: d.find_element("id", "correct-panel").is_displayed(), what="login")
    wait_page(wall, lambda d: css(d, "#feed tbody tr"), what="feed")
    # The feed row of box04's passage that has no car (the feed re-renders as it likes).
    ref = next(
        r[6]
        for r in cells(wall, "#feed tbody tr")
        if r[6].startswith("box04 #") and "no car" in r[3]
    )
    assert click_row(wall, "#feed tbody tr", ref)
    wait_page(wall, lambda d: d.find_element("id", "c-box").get_attribute("value") == "box04")
    wall.find_element("id", "c-value").send_keys("42")
    wall.find_element("css selector", "#correct button[type=submit]").click()
    wait_page(wall, lambda d: "correction #" in d.find_element("id", "c-msg").text, what="applied")
    wait_for(
        lambda: any(p["car"] == "42" and p["box"] == "box04" for p in hq_passages(hq)), 5, "HQ"
    )
    wall.find_element("id", "f-car").send_keys("42")
    wait_page(
        wall,
        lambda d: (
            d.find_element("id", "car-summary").text.endswith("points")
            and "MISSING" not in d.find_element("id", "car-summary").text
        ),
        what="car 42 complete",
    )
    wall.find_element("id", "f-car").clear()
    wall.find_element("id", "f-car").send_keys(" ")


def test_board_results_car_view_filters_and_an_hq_correction(wall, hq, emus, board, tmp_path):
    _rally(emus, hq)
    wall.get(board.url)
    wait_page(wall, lambda d: d.find_element("tag name", "body").get_attribute("data-ready"))
    boxes = wait_page(
        wall,
        lambda d: len(cells(d, "#boxes tbody tr")) == 4 and cells(d, "#boxes tbody tr"),
        what="four boxes",
    )
    assert [r[1] for r in boxes] == ["online", "online", "online", "lost"]
    rows = wait_page(wall, lambda d: cells(d, "#results tbody tr"), what="results")
    # Car 12: 0 + 1 + 2 hundredths = 3 points, rank 1.
    assert rows[0][:3] == ["1", "12", "3"]  # total 3rd
    car21 = next(r for r in rows if r[1] == "21")
    assert "MISSING" in " ".join(car21)

    # Filter by stage: only that stage's column, sorted by its points.
    from selenium.webdriver.support.ui import Select

    Select(wall.find_element("id", "f-stage")).select_by_value("S2")
    heads = [h.rstrip(" ▾▴") for h in cells(wall, "#results thead tr")[0]]
    assert heads == ["RANK", "CAR", "TOTAL", "T2"]  # a laptop names trials T1..Tn
    cars = [r[1] for r in cells(wall, "#results tbody tr")]
    assert cars[:2] == ["12", "7"]  # S2: 1 and 3 hundredths
    Select(wall.find_element("id", "f-stage")).select_by_value("")

    # One car's view: every control point, times, deviations, points.
    wall.find_element("id", "f-car").send_keys("15")
    wait_page(wall, lambda d: d.find_element("id", "car-title").text == "15", what="car view")
    wait_page(wall, lambda d: len(cells(d, "#car-passages tbody tr")) == 4, what="4 passages")
    stage_rows = cells(wall, "#car-stages tbody tr")
    assert [r[6] for r in stage_rows] == ["37", "41", "12"]
    assert "-0.413" in " ".join(stage_rows[1])
    wall.find_element("id", "f-car").clear()
    wall.find_element("id", "f-car").send_keys(" ")  # input event: filter off

    _hq_assigns_the_passage_nobody_assigned(wall, board, hq)
    from selenium.webdriver.common.action_chains import ActionChains

    wall.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    ActionChains(wall).move_to_element(wall.find_element("tag name", "h1")).perform()
    shot = screenshot_dir(tmp_path) / "hq-board.png"
    assert wall.save_screenshot(str(shot)) and shot.stat().st_size > 30_000
    assert console_errors(wall) == []


# -- the real daemon (once `checkpoint run` starts the page) -----------------------------


def _daemon_hook_wired() -> bool:
    from checkpoint import config
    from checkpoint.box import daemon
    from checkpoint.cli import main as cli

    has_web_config = "web" in getattr(config.Config, "__dataclass_fields__", {})
    sources = inspect.getsource(cli) + inspect.getsource(daemon)
    return has_web_config and "start_marshal" in sources


@pytest.mark.slow
@pytest.mark.skipif(
    not _daemon_hook_wired(),
    reason="needs the daemon hook: [web] in config.py and start_marshal in `checkpoint run` "
    "(see checkpoint/web/boxhook.py)",
)
def test_real_daemon_serves_the_marshal_page_and_a_car_reaches_hq(
    phone, wall, hq, board, broker, tmp_path
):
    from webrig import web_box_rig

    rig, port = web_box_rig(tmp_path, broker.url)
    try:
        rig.start()
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: listening(port), 15, "the marshal page")
        login(phone, url, PIN)
        wait_page(phone, lambda d: d.find_element("id", "box").text == "box07", 15, "status")
        mono = time.monotonic_ns() + NS // 5
        rig.pin("GPIO17", mono, 0)  # active-low beam: broken
        rig.pin("GPIO17", mono + 150_000_000, 1)
        li = wait_page(phone, lambda d: css(d, 'li.p[data-seq="1"]'), 15, "passage row")[0]
        li.find_element("css selector", "input.car").send_keys("42")
        li.find_element("css selector", "button.set").click()
        wait_page(phone, lambda d: row_state(d, 1) == "car 42 ✓", 15, "car confirmed")
        wait_for(lambda: [p["car"] for p in hq_passages(hq)] == ["42"], 15, "assign at HQ")
        wall.get(board.url)
        wait_page(
            wall,
            lambda d: any(
                "box07 #1" in r.text and "42" in r.text for r in css(d, "#feed tbody tr")
            ),
            what="the car on HQ's board",
        )
    finally:
        rig.close()
    assert "marshal-web listening" in rig.log_text() or "listening on" in rig.log_text()
