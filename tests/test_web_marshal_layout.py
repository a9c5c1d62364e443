"""The marshal page for sun and gloves, on a phone-sized headless Chromium.

High-contrast verdict, number pads for the PIN and car fields, a confirm step for
Void away from Set, one row per car at a control with two inputs, plain words with
an estimate while the GPS locks, nothing wider than the phone.
"""

from __future__ import annotations

import time

import pytest
from webrig import (
    PIN,
    FakeBox,
    browser,
    css,
    login,
    require_browser,
    wait_page,
)

from checkpoint.web.marshal import MarshalServer

pytestmark = pytest.mark.browser
NS = 1_000_000_000


def add_passage(box: FakeBox, utc_ns: int, inp: str) -> int:
    """A passage at input `inp` (FakeBox's own are all "beam"), published in one swap."""
    with box._lock:  # noqa: SLF001 - the page must never see it half made
        seq = box._next  # noqa: SLF001
        box._next = seq + 1  # noqa: SLF001
        row = {"type": "passage", "box": box.box, "checkpoint": box.checkpoint, "seq": seq}
        row |= {"input": inp, "source": "beam", "utc_ns": utc_ns, "clock": "locked"}
        row |= {"uncertainty_ns": 1_240, "void": False}
        box.recent = (*box.recent, row)[-50:]
    return seq


@pytest.fixture
def page():
    require_browser()
    box = FakeBox()
    box.status_over["inputs"] = {
        "beam": {"broken": False, "fault": False, "passages": 0},
        "button": {"broken": False, "fault": False, "passages": 0},
    }
    s = MarshalServer(box.snapshot, box.passages, box.correct, port=0, pin=PIN, tick_s=0.1).start()
    yield box, s
    s.stop()


@pytest.fixture
def phone(tmp_path):
    with browser(tmp_path, width=390, height=844, mobile=True) as d:
        yield d


def test_marshal_page_for_sun_and_gloves(page, phone):
    box, s = page
    phone.get(s.url + "login")
    assert phone.find_element("id", "pin").get_attribute("inputmode") == "numeric"
    login(phone, s.url, PIN)
    wait_page(phone, lambda d: "READY" in d.find_element("id", "verdict").text, what="READY")
    # High contrast: white on a dark, saturated background.
    fg, bg = phone.execute_script(
        "const s = getComputedStyle(document.getElementById('verdict'));"
        "return [s.color, s.backgroundColor];"
    )
    assert fg == "rgb(255, 255, 255)" and bg not in ("rgba(0, 0, 0, 0)", "rgb(230, 244, 234)")
    labels = [li.text for li in css(phone, "#items li")]
    assert any(t.startswith("BEAM") and "clear" in t for t in labels), labels
    assert any(t.startswith("BUTTON") and "clear" in t for t in labels), labels

    # One car crosses the beam and the marshal presses the button: one row, one Set.
    t = (time.time_ns() // NS - 5) * NS + 120_000_000
    s1 = add_passage(box, t, "beam")
    s2 = add_passage(box, t + 310_000_000, "button")
    add_passage(box, t + 61 * NS, "beam")  # the next car, a minute later
    wait_page(phone, lambda d: len(css(d, "li.p")) == 2, what="two rows for two cars")
    row = css(phone, f'li.p[data-seq="{s1}"]')[0]
    assert "+ button" in row.find_element("css selector", ".meta").text
    car = row.find_element("css selector", "input.car")
    assert car.get_attribute("inputmode") == "numeric"
    car.send_keys("42")
    row.find_element("css selector", "button.set").click()
    wait_page(phone, lambda d: len(box.corrections) == 2, what="both passages get car 42")
    assert box.corrections == [("assign", s1, "42"), ("assign", s2, "42")]

    # Void is not beside Set and asks first; cancelling changes nothing.
    set_r = row.find_element("css selector", "button.set").rect
    void = row.find_element("css selector", "button.void")
    gap = void.rect["y"] - (set_r["y"] + set_r["height"])
    assert gap >= 8 or abs(void.rect["x"] - set_r["x"]) > 150, (set_r, void.rect)
    void.click()
    wait_page(phone, lambda d: d.find_element("id", "void-dialog").is_displayed(), what="confirm")
    phone.find_element("id", "void-cancel").click()
    assert len(box.corrections) == 2

    # Nothing wider than the phone.
    assert phone.execute_script("return document.scrollingElement.scrollWidth") <= 390


def test_not_ready_says_what_is_happening_and_for_how_long(page, phone):
    box, s = page
    box.status_over.update(clock="nmea", uncertainty_ns=501_000_000, lock_in_s=40)
    login(phone, s.url, PIN)
    v = wait_page(
        phone,
        lambda d: (
            "NOT READY" in d.find_element("id", "verdict").text and d.find_element("id", "verdict")
        ),
        what="NOT READY",
    )
    assert "GPS is locking: about 40 s" in v.text
    assert "wait for lock" not in v.text
