"""The one corrections fold (checkpoint.core.corrections): known-truth cases.

HQ's export goes through it with a real database in test_hq.py; here the rules
themselves: highest rank wins per slot whatever the order, slots are independent,
HQ's ranking overrides the box, and applying one at a time equals one fold.
"""

from __future__ import annotations

import itertools

import pytest

from checkpoint.core.corrections import Correction, apply, fold, is_void, winners

PASSAGE = {"seq": 5, "utc_ns": 1_700_000_000_000_000_000, "utc": "a", "clock": "locked"}
STAMP = {"utc_ns": 1_700_000_000_500_000_000, "utc": "b", "clock": "holdover", "uncertainty_ns": 9}


def _box(seq: int, action: str, **fields: object) -> Correction:
    return Correction(5, action, (0, seq), fields)


def _hq(cid: int, action: str, **fields: object) -> Correction:
    return Correction(5, action, (1, cid), fields)


def test_an_uncorrected_passage_gets_the_fields_every_reader_expects():
    row = fold({5: PASSAGE}, [])[5]
    assert row == {**PASSAGE, "car": None, "void": False, "void_reason": None}
    assert PASSAGE.get("car") is None  # the input is not changed


def test_highest_rank_wins_in_each_slot_whatever_the_order():
    cs = [
        _box(6, "assign", car="12"),
        _box(9, "assign", car="21"),
        _box(7, "void", reason="test run"),
        _box(8, "restamp", **STAMP),
    ]
    want = {**PASSAGE, **STAMP, "car": "21", "void": True, "void_reason": "test run"}
    for order in itertools.permutations(cs):
        assert fold({5: PASSAGE}, order)[5] == want


def test_hq_overrides_the_box_and_its_latest_correction_wins():
    cs = [
        _box(6, "void", reason="marshal"),
        _hq(1, "unvoid"),
        _box(99, "void", reason="later box seq, still below HQ"),
        _hq(2, "assign", car="7"),
        _box(100, "assign", car="8"),
    ]
    for order in itertools.permutations(cs):
        row = fold({5: PASSAGE}, order)[5]
        assert (row["car"], row["void"], row["void_reason"]) == ("7", False, None)
        assert not is_void(order)
    assert is_void([*cs, _hq(3, "void", reason="jury")])


def test_applying_one_at_a_time_in_rank_order_equals_one_fold():
    cs = [
        _box(6, "assign", car="12"),
        _box(7, "void", reason="dup"),
        _box(8, "restamp", **STAMP),
        _box(9, "assign", car="13"),
    ]
    row = dict(PASSAGE)
    for c in cs:
        row = apply(row, {c.slot: c})
    assert row == fold({5: PASSAGE}, cs)[5]
    assert row["void"] is True and row["car"] == "13"


def test_corrections_of_other_passages_do_not_leak():
    other = Correction(6, "void", (0, 9), {"reason": "x"})
    assert fold({5: PASSAGE}, [other])[5]["void"] is False
    assert set(winners([other])) == {6}


def test_an_unknown_action_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown correction 'delete'"):
        Correction(5, "delete", (0, 1))


def test_without_fill_a_key_no_correction_set_stays_as_the_passage_has_it():
    assert apply(PASSAGE, {}, fill=False) == PASSAGE
    void = _box(7, "void", reason="dup")
    assert apply(PASSAGE, {"void": void}, fill=False) == {
        **PASSAGE,
        "void": True,
        "void_reason": "dup",
    }
    car = _box(8, "assign", car="4")
    assert apply(PASSAGE, {"car": car}, fill=False) == {**PASSAGE, "car": "4"}
