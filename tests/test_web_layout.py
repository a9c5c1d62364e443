"""The HQ board as people use it: a wall screen, a laptop, a phone, in a real browser.

Each check fails when something is cut off or wider than the screen: the page may not
scroll sideways, no panel may hide part of its table behind a horizontal scroll, the
results' TOTAL column must be on screen, and a phone gets one column. The data is a
whole rally (tests/board_rally.py) stored through the collector's own `Ingest`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import board_rally
import pytest
from waits import wait_for
from webrig import (
    PASSWORD,
    cells,
    click_row,
    login,
    make_driver,
    quit_driver,
    require_browser,
    wait_page,
)

from checkpoint.hq.collector import Collector
from checkpoint.hq.results import parse_stages
from checkpoint.web.board import BoardServer
from checkpoint.web.board_data import BoardReader

REPO = Path(__file__).resolve().parents[1]

# Every panel: [right edge, content width, visible width, left edge].
PANELS_JS = """
return [...document.querySelectorAll('.panel:not([hidden]), .todo')].map(p => {
  const r = p.getBoundingClientRect();
  return [p.id || p.querySelector('h2').textContent.slice(0, 20), Math.round(r.right),
          p.scrollWidth, p.clientWidth, Math.round(r.left)];
});
"""


@pytest.fixture(scope="module")
def rally_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("rally") / "hq.db"
    board_rally.fill(db).close()
    return db


@pytest.fixture
def board(rally_db):
    s = BoardServer(
        rally_db,
        port=0,
        stages=parse_stages(board_rally.stages_toml()),
        password=PASSWORD,
        poll_s=0.1,
    ).start()
    yield s
    s.stop()


def open_board(tmp_path, url: str, width: int, height: int, mobile: bool):
    require_browser()
    d = make_driver(tmp_path, width=width, height=height, mobile=mobile)
    d.get(url)
    wait_page(d, lambda d: d.execute_script("return document.body.dataset.ready"), 10, "ready")
    wait_page(
        d,
        lambda d: len(d.find_elements("css selector", "#results tbody tr")) == board_rally.CARS,
        10,
        "70 cars ranked",
    )
    return d


@pytest.mark.browser
@pytest.mark.parametrize(
    ("width", "height", "mobile"),
    [(1600, 1000, False), (1280, 800, False), (390, 844, True)],
    ids=["wall-1600x1000", "laptop-1280x800", "phone-390x844"],
)
def test_board_fits_the_screen_with_totals_visible(board, tmp_path, width, height, mobile):
    d = open_board(tmp_path, board.url, width, height, mobile)
    try:
        page_width = d.execute_script("return document.scrollingElement.scrollWidth")
        assert page_width <= width, f"page is {page_width} px wide on a {width} px screen"
        for name, right, content, visible, _left in d.execute_script(PANELS_JS):
            assert right <= width, f"panel {name!r} ends at {right} px, screen is {width}"
            assert content <= visible + 1, f"panel {name!r} hides {content - visible} px"
        total = d.execute_script(
            "const r = document.querySelector('#results th.total').getBoundingClientRect();"
            "return [r.left, r.right, r.top];"
        )
        assert 0 <= total[0] and total[1] <= width and total[2] < height, total
        last = d.execute_script(
            "const h = [...document.querySelectorAll('#results thead th')];"
            "return Math.round(h[h.length - 1].getBoundingClientRect().right);"
        )
        assert last <= width, "the last trial's column is off screen"
        cols = d.execute_script(
            "return [...document.querySelectorAll('main.grid > .col')]"
            ".map(c => Math.round(c.getBoundingClientRect().left));"
        )
        if width < 900:
            assert len(set(cols)) == 1, f"a phone gets one column, got lefts {cols}"
        else:
            assert len(set(cols)) == 2
        # The to-do is the loudest thing: above the results, in the largest type.
        todo = d.execute_script(
            "const t = document.querySelector('#todo h2');"
            "return [parseFloat(getComputedStyle(t).fontSize), t.getBoundingClientRect().top,"
            " document.querySelector('#results').getBoundingClientRect().top,"
            " parseFloat(getComputedStyle(document.querySelector('.panel h2')).fontSize),"
            " t.textContent];"
        )
        assert todo[0] > todo[3] * 1.2 and todo[1] < todo[2], todo
        assert "4 passages with no car" in todo[4]
    finally:
        quit_driver(d)


@pytest.mark.browser
def test_feed_filters_show_everything_hq_holds(board, tmp_path):
    d = open_board(tmp_path, board.url, 1600, 1000, False)
    try:
        d.find_element("id", "f-car").send_keys("29")
        rows = wait_page(
            d,
            lambda d: (n := len(d.find_elements("css selector", "#feed tbody tr"))) == 8 and n,
            10,
            "car 29's 8 passages (the feed's newest 40 hold none of them)",
        )
        assert rows == 8
        assert "car 29: all 8 HQ holds" in d.find_element("id", "feed-note").text
        d.find_element("id", "f-car").clear()
        d.execute_script("document.getElementById('f-car').dispatchEvent(new Event('input'))")
        from selenium.webdriver.support.ui import Select

        Select(d.find_element("id", "f-cp")).select_by_value("PC3")
        wait_page(
            d,
            lambda d: len(d.find_elements("css selector", "#feed tbody tr")) == 71,
            10,
            "every passage at PC3 (70 cars + car 29's second)",
        )
    finally:
        quit_driver(d)


@pytest.mark.browser
def test_from_the_todo_to_a_corrected_car_on_the_board(board, tmp_path):
    require_browser()
    d = make_driver(tmp_path, width=1600, height=1000)
    try:
        login(d, board.url, PASSWORD)
        wait_page(d, lambda d: d.execute_script("return document.body.dataset.ready"), 10)
        # The to-do is re-rendered with every update: read and click it by its text.
        label = wait_page(d, lambda d: cells(d, "#todo-items li")[0], 10, "to-do items")[
            0
        ]  # "PC4 19:30:19.71": control and local time, no box, no seq
        assert label.startswith("PC4 ")
        assert click_row(d, "#todo-items li", label)
        assert d.find_element("id", "c-passage").text.startswith(label)
        d.find_element("id", "c-value").send_keys("12")
        d.find_element("css selector", "#correct button[type=submit]").click()
        wait_page(
            d,
            lambda d: "3 passages with no car" in d.find_element("id", "todo-count").text,
            10,
            "the to-do to shrink",
        )
        wait_page(
            d,
            lambda d: (
                "PC4" in d.find_element("css selector", "#audit tbody tr").text
                and "12" in d.find_element("css selector", "#audit tbody tr").text
            ),
            10,
            "the correction in the audit trail",
        )
    finally:
        quit_driver(d)


@pytest.mark.browser
def test_header_says_whether_the_collector_runs_not_the_stream(broker, tmp_path):
    db = tmp_path / "hq.db"
    c = Collector(broker.url, db, heartbeat_s=0.5)
    c.start()
    wait_for(c.subscribed.is_set, 10, "HQ subscribed")
    s = BoardServer(db, port=0, poll_s=0.1).start()
    require_browser()
    d = make_driver(tmp_path, width=1280, height=800)
    try:
        d.get(s.url)
        pill = d.find_element("id", "collector")
        wait_page(d, lambda d: pill.text == "collector up", 10, "collector up")
        header = d.find_element("css selector", "header").text
        assert "session present" not in header and "live" not in header.split()
        c.stop()
        wait_page(d, lambda d: pill.text == "collector stopped", 10, "collector stopped")
        assert "bad" in pill.get_attribute("class")
    finally:
        quit_driver(d)
        s.stop()
        c.stop()


def test_clock_history_comes_from_hqs_stored_statuses(rally_db):
    # A board started after the statuses arrived still has every box's history.
    reader = BoardReader(rally_db)
    try:
        reader.poll(0)
        hist = reader.history_view()
    finally:
        reader.close()
    assert sorted(hist) == [f"box{k:02d}" for k in range(1, 8)]
    assert [p[1] for p in hist["box01"]] == [480_000_000, 35_000_000, 2_400, 1_500]


def _serve(*argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "checkpoint", "hq", "serve", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_refuses_a_database_that_does_not_exist(tmp_path):
    res = _serve("--db", str(tmp_path / "nosuch.db"), "--port", "0")
    assert res.returncode == 1
    assert "nosuch.db does not exist" in res.stderr


def test_serve_on_a_taken_port_says_so_once(rally_db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _serve("--db", str(rally_db), "--port", str(port))
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in lines[0]


@pytest.mark.browser
def test_readme_screenshots_are_regenerated_by_one_command(tmp_path):
    require_browser()
    import struct

    import screenshots

    assert screenshots.main([str(tmp_path)]) == 0
    sizes = {}
    for p in sorted(tmp_path.glob("*.png")):
        head = p.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        sizes[p.name] = struct.unpack(">II", head[16:24])
    assert sizes == {
        "hq-board-phone.png": (390, 844),
        "hq-board-wall.png": (1600, 1000),
        "marshal-locking.png": (390, 844),
        "marshal-ready.png": (390, 844),
        "marshal-void.png": (390, 844),
    }
    readme = (REPO / "README.md").read_text()
    for name in sizes:  # every picture the command makes is in the README
        assert f"docs/screenshots/{name}" in readme


def test_board_corrections_are_checked_like_hq_assign(tmp_path):
    from webrig import Client

    db = tmp_path / "hq.db"
    board_rally.fill(db, cars=5).close()
    s = BoardServer(db, port=0, password=PASSWORD, poll_s=0.1).start()
    try:
        c = Client(s.url)
        assert c.login(PASSWORD) == 303
        csrf = c.csrf()
        # box04 times PC4; each car's passage there is followed by its assign event,
        # so car 2's passage is seq 3.
        body = {"box": "box04", "seq": 3, "action": "assign"}
        status, data = c.post_json("/api/correct", body | {"car": "12 A"}, csrf=csrf)
        assert status == 400 and "contains a space" in data["error"]
        status, data = c.post_json("/api/correct", body | {"car": "3"}, csrf=csrf)
        assert status == 400 and "car 3 already has a passage at PC4" in data["error"]
        status, data = c.post_json("/api/correct", body | {"car": "77"}, csrf=csrf)
        assert status == 400 and "not in the field" in data["error"]
        status, data = c.post_json(
            "/api/correct", body | {"car": "77", "override": True}, csrf=csrf
        )
        assert status == 200 and data["correction"]["car"] == "77"
    finally:
        s.stop()
