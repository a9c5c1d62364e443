"""The posted results page and the board's office panel in a real headless Chromium.

HQ's database is filled through the collector's own ingest (`HQFiller`), the event
file and entry list are loaded as `checkpoint hq event load / entries import` do,
and the board server (`checkpoint hq serve`) serves /results with no login.
"""

from __future__ import annotations

import base64
import re
from contextlib import closing

import pytest
from webrig import (
    HQFiller,
    attrs,
    browser,
    cells,
    click_row,
    console_errors,
    css,
    make_driver,
    quit_driver,
    require_browser,
    wait_page,
)

from checkpoint.hq import officestore
from checkpoint.hq.entries import parse_entries
from checkpoint.hq.store import HQStore
from checkpoint.web.board import BoardServer

pytestmark = pytest.mark.browser
S = 1_000_000_000
MS = 1_000_000
T0 = 1_745_740_800 * S  # 2025-04-27 08:00 UTC

# One trial, PC1 to PC2 in 120 s; the marshal's test has no date (its cars start today).
EVENT_PS1 = """
[identify]
sigma_s = 2

[[control]]
id = "PC1"
[[control]]
id = "PC2"

[[trial]]
name = "PS1"
start = "PC1"
finish = "PC2"
target_s = 120
"""
EVENT = (
    '[event]\nname = "Coppa delle Alpi"\ndate = "2025-04-27"\ntimezone = "Europe/Rome"\n'
    + EVENT_PS1
)
MARSHAL_EVENT = '[event]\nname = "Coppa delle Alpi"\n' + EVENT_PS1

ENTRIES = """number,crew,car,year,class,start
7,Rossi / Bianchi,Alfa Romeo 6C 1750,1929,A,10:00
12,Smith / Jones,Bugatti T35,1934,A,10:01
15,Lee / Park,Porsche 356,1955,B,10:02
21,Dubois / Weber,Jaguar XK120,1951,B,10:03
"""


@pytest.fixture(autouse=True)
def _browser():
    require_browser()


@pytest.fixture
def page(tmp_path):
    with browser(tmp_path, width=1280, height=900) as d:
        yield d


@pytest.fixture
def rally(tmp_path):
    db = tmp_path / "hq.db"
    f = HQFiller(db)
    starts = [T0 + i * 60 * S for i in range(4)]
    for t in starts:
        f.passage("box01", "PC1", t)
    # PS1 deviations: car 7 +0.055 s, car 12 +0.125 ± 6 ms (an nmea-grade bound that
    # straddles a hundredth), car 15 -0.30 s; car 21 and a service vehicle reach PC2
    # 0.4 s apart, both a minute late: that pair is left to confirm.
    f.passage("box02", "PC2", starts[0] + 120 * S + 55 * MS)
    f.passage("box02", "PC2", starts[1] + 120 * S + 125 * MS, unc=6 * MS)
    f.passage("box02", "PC2", starts[2] + 120 * S - 300 * MS)
    f.passage("box02", "PC2", starts[3] + 121 * S)
    f.passage("box02", "PC2", starts[3] + 121 * S + 400 * MS)
    f.close()
    with closing(HQStore(db, create=False)) as store:
        officestore.load_event(store, EVENT, "event.toml")
        officestore.import_entries(store, parse_entries(ENTRIES))
    server = BoardServer(db, host="127.0.0.1", port=0, poll_s=0.1).start()
    yield server
    server.stop()


# The marshal page's "due next" list as (car, class) pairs, read at one instant.
NEXT_JS = """
return Array.from(document.querySelectorAll("#next li"),
                  li => [li.querySelector("strong").innerText, li.className]);
"""


def test_results_page_posts_and_prints_on_a4(page, rally):
    page.get(rally.url + "results")
    assert page.find_element("tag name", "h1").text == "Coppa delle Alpi"
    assert page.find_element("id", "issued").text.startswith("Issued ")
    overall = css(page, 'table.results[data-class=""] tbody tr')
    cells = [[td.text for td in r.find_elements("css selector", "td")] for r in overall]
    # Car 7: 5 × 1.29 = 6.45; car 15: 30 × 1.55 = 46.50; car 12: 12 × 1.34 = 16.08, provisional.
    assert [(c[0], c[1], c[-2]) for c in cells[:3]] == [
        ("1", "7", "6.45"),
        ("2", "12", "16.08"),
        ("3", "15", "46.50"),
    ]
    assert cells[1][-1] == "P" and cells[0][-1] == ""
    notes = page.find_element("id", "provisional").text
    assert "car 12" in notes and "straddles a hundredth" in notes
    # Car 21's passage is still to confirm: the page says the results are provisional.
    assert "still to confirm" in page.find_element("id", "issued").text
    classes = [t.get_attribute("data-class") for t in css(page, "table.results")]
    assert classes == ["", "A", "B"]
    class_b = css(page, 'table.results[data-class="B"] tbody tr')
    assert class_b[0].find_elements("css selector", "td")[0].text == "1"  # 15 leads B
    # Each trial's own ranking: PS1 by score, car 21 (to confirm) not in it.
    trial = [r.text.split() for r in css(page, 'table.trial[data-trial="PS1"] tbody tr')]
    assert trial == [["1", "7", "6.45"], ["2", "12", "16.08"], ["3", "15", "46.50"]]
    # The inline style is allowed by its hash: no CSP violation, no script error.
    assert console_errors(page) == []

    # Print: A4, the table fits the printable width, and every row is on paper.
    page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    width = page.execute_script("return document.querySelector('table.results').scrollWidth")
    body = page.execute_script("return document.body.clientWidth")
    assert width <= body
    pdf = page.execute_cdp_cmd(
        "Page.printToPDF", {"paperWidth": 8.27, "paperHeight": 11.69, "preferCSSPageSize": True}
    )
    data = base64.b64decode(pdf["data"])
    boxes = re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", data)
    assert boxes and all(round(float(w)) == 595 and round(float(h)) == 842 for w, h in boxes)
    assert len(re.findall(rb"/Type /Page[^s]", data)) == 1  # four cars fit on one page


def test_board_shows_live_classes_and_the_confirm_queue(page, rally):
    page.get(rally.url)
    cars = wait_page(
        page, lambda d: attrs(d, "#office tbody tr", "data-car"), what="classification"
    )
    assert cars[:3] == ["7", "12", "15"]
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "office-class")).select_by_value("B")
    wait_page(
        page,
        lambda d: attrs(d, "#office tbody tr", "data-car") == ["15", "21"],
        what="class B",
    )
    queue = wait_page(page, lambda d: cells(d, "#confirm tbody tr.confirm"), what="to confirm")
    assert len(queue) == 2
    assert all(r[3] == "21" for r in queue)
    assert "2 passage(s)" in page.find_element("id", "confirm-note").text
    # Not logged in: a click leaves the correction form hidden and empty.
    assert click_row(page, "#confirm tbody tr.confirm", queue[0][2])
    assert page.find_element("id", "c-box").get_attribute("value") == ""
    assert console_errors(page) == []


def test_marshal_page_shows_cars_due_and_prefills_the_predicted_car(tmp_path):
    import time

    from webrig import PIN, FakeBox, login

    from checkpoint.hq.event import parse_event
    from checkpoint.web.marshal import MarshalServer
    from checkpoint.web.marshal_office import MarshalOffice

    now = time.time_ns() // S * S
    starts = [now - 200 * S, now - 140 * S, now - 80 * S, now - 20 * S]
    iso = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t // S)) for t in starts]
    entries = "number,crew,year,start\n" + "".join(
        f"{n},crew {n},1950,{s}\n" for n, s in zip("1234", iso, strict=True)
    )
    office = MarshalOffice(parse_event(MARSHAL_EVENT), parse_entries(entries), "PC2")
    box = FakeBox(checkpoint="PC2")
    page = MarshalServer(
        box.snapshot, box.passages, box.correct, host="127.0.0.1", port=0, pin=PIN,
        tick_s=0.1, office=office,
    ).start()  # fmt: skip
    phone = make_driver(tmp_path, width=390, height=844, mobile=True)
    try:
        s1 = box.passage(starts[0] + 120 * S + 30 * MS)  # car 1, on time
        s2 = box.passage(starts[1] + 120 * S + 200 * MS)  # car 2 ... or the one behind it?
        s3 = box.passage(starts[1] + 120 * S + 600 * MS)
        login(phone, page.url, PIN)
        due = wait_page(phone, lambda d: d.execute_script(NEXT_JS), what="cars due next")
        assert [car for car, _ in due] == ["2", "3", "4"]
        assert "late" in due[0][1]  # car 2: due, no sure passage yet
        li1 = wait_page(phone, lambda d: css(d, f'li.p[data-seq="{s1}"].predicted'), what="pred")[0]
        assert li1.find_element("css selector", "input.car").get_attribute("value") == "1"
        for s in (s2, s3):
            li = wait_page(phone, lambda d, s=s: css(d, f'li.p[data-seq="{s}"].confirm'))[0]
            assert "to confirm: car 2?" in li.find_element("css selector", ".state").text
        # One tap confirms the prediction: the box gets the marshal's assignment.
        li1.find_element("css selector", "button.set").click()
        wait_until_text = lambda d: "car 1 ✓" in css(d, f'li.p[data-seq="{s1}"] .state')[0].text  # noqa: E731
        wait_page(phone, wait_until_text, what="car 1 confirmed")
        assert box.corrections == [("assign", s1, "1")]
        assert console_errors(phone) == []
    finally:
        quit_driver(phone)
        page.stop()
