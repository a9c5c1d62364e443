"""doctor's words: no sampling artefacts, no stutter (pure diagnosis, real status shapes)."""

from __future__ import annotations

from test_doctor import facts, later, levels, status

from checkpoint.field.doctor import OK, Snapshot, diagnose, render


def test_pps_count_across_unaligned_status_messages_is_not_a_rate():
    # 5 pulses counted between two status messages 3.0 s apart: one a second, seen
    # through unaligned sampling. It used to print "(1.7/s)" and warn of noise.
    first = status()
    f = facts(first, later(first, pps=5))
    f.snapshots = [Snapshot(100.0, False, first), Snapshot(103.0, True, later(first, pps=5))]
    report = diagnose(f)
    text = render(report)
    assert levels(report)["pps"] == OK
    assert "/s)" not in text
    assert "PPS pulses on GPIO18 (one a second)" in text


def test_input_named_like_its_kind_is_not_stuttered():
    text = render(diagnose(facts()))
    assert "beam beam" not in text
    assert "beam clear at idle" in text
    first = status(inputs={"beam2": {"broken": False, "fault": False, "glitches": 0}})
    f = facts(first, later(first), input_sources={"beam2": "beam"})
    assert "beam2 clear at idle" in render(diagnose(f))
    first = status(inputs={"start": {"broken": False, "fault": False, "glitches": 0}})
    f = facts(first, later(first), input_sources={"start": "manual"})
    assert "button start clear at idle" in render(diagnose(f))
