"""The web pages' pure parts: secrets, sessions, the wrong-PIN limiter, forms, views."""

from __future__ import annotations

import os
import time

import pytest
from webrig import HQFiller, box_status

from checkpoint.errors import ConfigError
from checkpoint.hq.results import parse_stages
from checkpoint.web import forms
from checkpoint.web.auth import LoginLimiter, Sessions, load_secret, secret_matches
from checkpoint.web.board_data import BoardReader
from checkpoint.web.marshal_view import (
    fmt_uncertainty,
    passage_row,
    passage_rows,
    readiness,
    utc_hundredths,
)

T0 = 1_776_000_000 * 10**9  # 2026-04-12T13:20:00Z


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- secrets and sessions -----------------------------------------------------------------


def test_secret_file_must_be_private_and_long_enough(tmp_path):
    f = tmp_path / "pin"
    f.write_text("482913\n")
    os.chmod(f, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_secret(str(f), "web.pin_file")
    os.chmod(f, 0o600)
    assert load_secret(str(f), "web.pin_file") == "482913"
    f.write_text("1234\n")
    with pytest.raises(ConfigError, match="at least 6"):
        load_secret(str(f), "web.pin_file")
    with pytest.raises(ConfigError, match="no such|cannot read"):
        load_secret(str(tmp_path / "missing"), "web.pin_file")
    with pytest.raises(ConfigError, match="required"):
        load_secret("", "web.pin_file")


def test_secret_matches_only_the_exact_secret():
    assert secret_matches("482913", "482913")
    for wrong in ("482914", "48291", "4829130", "", "482913 ", "ü"):
        assert not secret_matches(wrong, "482913")


def test_sessions_expire_when_idle_and_are_bounded():
    clock = Clock()
    s = Sessions(ttl_s=100, max_sessions=3, clock=clock)
    a = s.create()
    assert s.get(a.token) is a and a.csrf != a.token
    clock.t += 99
    assert s.get(a.token) is a  # use keeps it alive
    clock.t += 101
    assert s.get(a.token) is None
    made = [s.create() for _ in range(4)]
    assert len(s) == 3 and s.get(made[0].token) is None and s.get(made[3].token)
    s.drop(made[3].token)
    assert s.get(made[3].token) is None
    assert s.get(None) is None and s.get("forged") is None


def test_limiter_locks_a_client_out_doubling_and_caps_all_clients():
    clock = Clock()
    lim = LoginLimiter(per_client=3, window_s=60, lockout_s=10, global_max=7, clock=clock)
    for _ in range(3):
        assert lim.retry_after("a") == 0
        lim.failed("a")
    assert lim.retry_after("a") == pytest.approx(10)
    assert lim.retry_after("b") == 0  # others unaffected
    clock.t += 10
    for _ in range(3):
        lim.failed("a")
    assert lim.retry_after("a") == pytest.approx(20)  # second lockout: doubled
    # A guesser changing address still hits the global cap (7 per window).
    lim.failed("c")
    assert lim.retry_after("d") > 0
    clock.t += 61
    assert lim.retry_after("d") == 0
    lim.succeeded("a")
    assert lim.retry_after("a") == 0


# -- forms ----------------------------------------------------------------------------


def test_forms_accept_the_boxs_own_ranges_and_refuse_the_rest():
    assert forms.seq(17) == 17 and forms.seq("17") == 17 and forms.seq(2**53) == 2**53
    for bad in (0, -1, 2**53 + 1, True, 1.5, "1e3", "", None, "12345678901234567"):
        with pytest.raises(forms.FormError):
            forms.seq(bad)
    assert forms.car(" 42 ") == "42" and forms.car("X" * 16) == "X" * 16
    for bad in ("", "   ", "X" * 17, "4\n2", "\x1b[31m", 42, None):
        with pytest.raises(forms.FormError):
            forms.car(bad)
    assert forms.reason("false trigger") == "false trigger"
    for bad in ("", "r" * 201, "a\nb", None):
        with pytest.raises(forms.FormError):
            forms.reason(bad)
    assert forms.box("box07") == "box07"
    for bad in ("", "box 7", "../x", "b" * 65, 7):
        with pytest.raises(forms.FormError):
            forms.box(bad)
    assert forms.store_prefix("") is None and forms.store_prefix("9f1c") == "9f1c"
    with pytest.raises(forms.FormError):
        forms.store_prefix("9f1c'--")


# -- marshal view -----------------------------------------------------------------------


def test_times_to_the_hundredth_are_truncated_and_uncertainty_is_readable():
    assert utc_hundredths(T0 + 123_456_789) == "13:20:00.12"
    assert utc_hundredths(T0 + 999_999_999) == "13:20:00.99"
    assert fmt_uncertainty(1_240) == "±1.2 µs"
    assert fmt_uncertainty(45_000) == "±45 µs"
    assert fmt_uncertainty(3_400_000) == "±3.4 ms"
    assert fmt_uncertainty(2_000_000_000) == "±2.0 s"
    assert fmt_uncertainty(None) == "" and fmt_uncertainty(True) == ""


def test_a_ready_box_is_ready():
    st = box_status()
    v = readiness(st, st["mono_ns"])
    assert v["ready"] and v["box"] == "box07" and v["cp"] == "PC3"
    assert {i["k"]: i["s"] for i in v["items"]} == {
        "gps": "ok",
        "clock": "ok",
        "broker": "ok",
        "in:beam": "ok",
        "backlog": "ok",
    }
    assert [i["t"] for i in v["items"] if i["k"] == "clock"] == ["locked to GPS ±1.2 µs"]


@pytest.mark.parametrize(
    ("over", "key", "level", "text"),
    [
        ({"gps_port": False}, "gps", "bad", "check the GPS cable"),
        ({"fix": {"last_valid_mono_ns": None}}, "gps", "bad", "searching for satellites"),
        ({"clock": "unsynced", "lock_in_s": 40}, "clock", "bad", "GPS is locking: about 40 s"),
        ({"clock": "unsynced", "pps_pulses": 0}, "clock", "bad", "waiting for the GPS time pulse"),
        ({"clock": "nmea", "uncertainty_ns": 20_000_000}, "clock", "bad", "nmea ±20 ms"),
        ({"clock": "holdover"}, "clock", "warn", "holdover"),
        ({"link": False}, "broker", "warn", "kept on the box"),
        ({"backlog": 12}, "backlog", "warn", "12 not yet at HQ"),
        ({"unstored": 3}, "backlog", "bad", "not on the card"),
        ({"inputs": {"beam": {"broken": False, "fault": True}}}, "in:beam", "bad", "flickers"),
    ],
)
def test_each_problem_shows_where_it_is(over, key, level, text):
    st = box_status(**over)
    v = readiness(st, st["mono_ns"])
    item = next(i for i in v["items"] if i["k"] == key)
    assert item["s"] == level and text in item["t"]
    assert v["ready"] is (level != "bad")


def test_blocked_beam_stale_fix_stale_daemon_and_alarms_make_it_not_ready():
    st = box_status()
    now = st["mono_ns"]
    v = readiness(st, now, {"beam": 5.0})
    assert not v["ready"] and "beam blocked" in v["items"][3]["t"]
    assert readiness(st, now, {"beam": 0.4})["ready"]  # a car passing
    v = readiness(st, now + 6 * 10**9)  # neither the fix nor the snapshot moved for 6 s
    assert not v["ready"] and v["items"][0]["k"] == "daemon"
    assert "lost its satellites" in next(i["t"] for i in v["items"] if i["k"] == "gps")
    v = readiness(box_status(alarms={"store": "card full: free space"}), now)
    assert not v["ready"] and v["alarms"] == ["card full: free space"]
    assert readiness({}, now)["ready"] is False


def test_passage_rows_are_compact_and_carry_corrections():
    p = {"seq": 5, "utc_ns": T0 + 987_654_321, "clock": "locked", "uncertainty_ns": 1500}
    p |= {"input": "beam", "car": "42", "void": True, "void_reason": "insect", "mono_ns": 1}
    assert passage_row(p) == {
        "seq": 5,
        "ms": (T0 + 987_654_321) // 10**6,
        "utc": "13:20:00.98",
        "clk": "locked",
        "unc": "±1.5 µs",
        "in": "beam",
        "car": "42",
        "void": "insect",
    }
    assert passage_row({"seq": True, "utc_ns": T0}) is None
    assert passage_row({"seq": 1, "utc_ns": "x"}) is None
    many = [{"seq": i, "utc_ns": T0 + i} for i in range(1, 71)]
    rows = passage_rows(tuple(many))
    assert list(rows) == list(range(21, 71))
    assert passage_rows(None) == {}


# -- board data ---------------------------------------------------------------------------

STAGES = """
[[stage]]
name = "S1"
start = "PC1"
finish = "PC2"
target_s = 120
"""


def test_board_reader_follows_the_database_and_scores_results(tmp_path):
    db = tmp_path / "hq.db"
    reader = BoardReader(db, parse_stages(STAGES))
    first = reader.poll(1)
    assert "waiting for" in first["hq"]["db"]
    hq = HQFiller(db)
    try:
        s1 = hq.passage("box01", "PC1", T0)
        s2 = hq.passage("box02", "PC2", T0 + 120_370_000_000)
        hq.event("box01", "assign", "PC1", ref_seq=s1, car="42", by="marshal")
        hq.event("box02", "assign", "PC2", ref_seq=s2, car="42", by="marshal")
        hq.status("box01", checkpoint="PC1", uncertainty_ns=900)
        changed = reader.poll(2)
        assert changed["hq"]["db"] == "ok" and changed["hq"]["events"] == 4
        assert [b["box"] for b in changed["boxes"]] == ["box01", "box02"]
        assert changed["boxes"][0]["cp"] == "PC1" and changed["boxes"][0]["unc"] == "±0.9 µs"
        assert [f["cp"] for f in changed["feed"]] == ["PC2", "PC1"]  # newest first
        assert changed["feed"][0]["car"] == "42" and changed["feed"][0]["utc"] == "13:22:00.37"
        car = changed["results"]["cars"][0]
        assert car["car"] == "42" and car["total"] == 37 and car["st"][0]["dev"] == "+0.370"
        assert changed["checkpoints"] == ["PC1", "PC2"]
        assert changed["hist"] == {"box01": [[changed["boxes"][0]["seen_ms"], 900, "locked"]]}
        assert reader.poll(3) == {}  # nothing committed since: no work, nothing to send
        hq.status("box01", checkpoint="PC1", uncertainty_ns=800)
        changed = reader.poll(4)
        assert set(changed) == {"boxes", "hq", "hist"}  # results untouched by a status
        assert [p[1] for p in reader.history_view()["box01"]] == [900, 800]
        view = reader.car_view("42")
        assert [p["cp"] for p in view["passages"]] == ["PC1", "PC2"]
        assert view["result"]["st"][0]["pts"] == 37 and view["result"]["rank"] == 1
        assert reader.car_view("7") == {"car": "7", "passages": [], "result": None}
    finally:
        hq.close()
        reader.close()


def test_board_reader_cannot_write(tmp_path):
    db = tmp_path / "hq.db"
    hq = HQFiller(db)
    hq.passage("box01", "PC1", T0)
    reader = BoardReader(db)
    reader.poll(int(time.time() * 1000))
    import sqlite3

    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._store.db.execute("DELETE FROM events")
    hq.close()
    reader.close()
