"""One "is the box ready?" verdict: doctor, the marshal page and the LED agree.

Each status below goes through the three real judges (doctor's `diagnose`, the page's
`marshal_view.readiness`, the LED's `Chooser`) and `core.readiness`, which they share.
"""

from __future__ import annotations

import pytest
from test_doctor import facts, later, levels, status
from webrig import box_status

from checkpoint.box.indicator import Chooser, LedState
from checkpoint.core import readiness
from checkpoint.field.doctor import FAIL, OK, WARN, diagnose
from checkpoint.web import marshal_view

DOCTOR = {readiness.OK: OK, readiness.WARN: WARN, readiness.BAD: FAIL}
LED_CLOCK = {readiness.OK: LedState.READY, readiness.WARN: LedState.NO_GPS}


@pytest.mark.parametrize(
    ("clock", "unc", "level"),
    [
        ("locked", 1_200, readiness.OK),
        ("locked", 250_000, readiness.BAD),  # locked, but wider than the box promises
        ("holdover", 5_000, readiness.WARN),  # PPS lost, still inside the bound
        ("holdover", 250_000, readiness.BAD),
        ("nmea", 2_000_000, readiness.BAD),
        ("unsynced", None, readiness.BAD),
    ],
)
def test_the_clock_is_judged_the_same_by_doctor_page_and_led(clock, unc, level):
    assert readiness.clock_level({"clock": clock, "uncertainty_ns": unc}) == level
    first = status(clock=clock, uncertainty_ns=unc)
    assert levels(diagnose(facts(first, later(first))))["clock"] == DOCTOR[level]
    page = box_status(clock=clock, uncertainty_ns=unc)
    items = marshal_view.readiness(page, page["mono_ns"])["items"]
    assert [i["s"] for i in items if i["k"] == "clock"] == [level]
    led = Chooser().choose(0.0, page, broker_connected=True)
    assert led == LED_CLOCK.get(level, LedState.NO_GPS)


def test_a_beam_is_blocked_after_the_same_time_on_the_page_and_the_led():
    page = box_status()
    page["inputs"]["beam"]["broken"] = True
    chooser = Chooser()
    assert chooser.choose(100.0, page, True) == LedState.READY  # a car, for now
    just_under = readiness.BEAM_BLOCKED_S - 0.01
    assert chooser.choose(100.0 + just_under, page, True) == LedState.READY
    view = marshal_view.readiness(page, page["mono_ns"], {"beam": just_under})
    assert view["ready"]
    assert chooser.choose(100.0 + readiness.BEAM_BLOCKED_S, page, True) == LedState.FAULT
    view = marshal_view.readiness(page, page["mono_ns"], {"beam": readiness.BEAM_BLOCKED_S})
    assert not view["ready"] and "beam blocked" in view["items"][3]["t"]
    page["inputs"]["beam"]["broken"] = False  # the car has gone: clear again at once
    assert chooser.choose(200.0, page, True) == LedState.READY


def test_the_verdict_is_ready_only_when_nothing_is_bad():
    st = {"clock": "holdover", "uncertainty_ns": 3_000, "inputs": {"beam": {"broken": None}}}
    v = readiness.verdict(st, link=False, broken_for_s={})
    assert v.ready and (v.clock, v.inputs["beam"], v.broker) == ("warn", "warn", "warn")
    v = readiness.verdict({**st, "inputs": {"beam": {"fault": True}}}, link=True, broken_for_s={})
    assert not v.ready and v.inputs == {"beam": "bad"}
