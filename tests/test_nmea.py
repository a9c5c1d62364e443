"""Tests for checkpoint.core.nmea: line splitting, sentence validation, the serial reader.

Expected values are computed independently of the code under test: checksums by a
helper here, POSIX seconds with `calendar.timegm`, corpus values read off the logs.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import logging
import os
import re
import socket
import threading
import time
import tty

import pytest
import serial
from corpusline import CORPUS
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from waits import wait_for

from checkpoint.box.gps_serial import SerialReader
from checkpoint.core.lines import LineSplitter
from checkpoint.core.nmea import (
    DEFAULT_NOT_AFTER,
    DEFAULT_NOT_BEFORE,
    Fix,
    NmeaParser,
)
from sim.gps import checksum

ROLLOVER = datetime.timedelta(weeks=1024)


# --------------------------------------------------------------------------- helpers


def nmea(body: str) -> str:
    """`$body*HH` with the NMEA checksum (XOR of the characters between $ and *)."""
    return f"${body}*{checksum(body)}"


def oracle_checks(line: str) -> bool:
    """Independent check: the sentence from the last '$' has a correct checksum."""
    s = line.strip()
    s = s[s.rfind("$") :]
    m = re.fullmatch(r"\$([^*$]*)\*([0-9A-Fa-f]{2})", s)
    if m is None:
        return False
    return functools.reduce(lambda a, c: a ^ ord(c), m.group(1), 0) == int(m.group(2), 16)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def rmc(
    hhmmss: str, ddmmyy: str, status: str = "A", talker: str = "GP", mode: str | None = "A"
) -> str:
    tail = "" if mode is None else f",{mode}"
    return nmea(f"{talker}RMC,{hhmmss},{status},4807.038,N,01131.000,E,0.0,0.0,{ddmmyy},,{tail}")


def gga(hhmmss: str, quality: int | str = 1, talker: str = "GP") -> str:
    return nmea(f"{talker}GGA,{hhmmss},4807.038,N,01131.000,E,{quality},08,0.9,545.4,M,46.9,M,,")


def zda(hhmmss: str, dd: str, mm: str, yyyy: str, talker: str = "GP") -> str:
    return nmea(f"{talker}ZDA,{hhmmss},{dd},{mm},{yyyy},00,00")


def one(parser: NmeaParser, line: str, mono_ns: int = 0) -> Fix | None:
    return parser.feed(line, mono_ns)


def lines_counted(p: NmeaParser) -> int:
    """Every line lands in exactly one place (no_fix lines are also in `accepted`)."""
    return p.accepted + sum(p.rejects.values()) - p.rejects["no_fix"] + sum(p.ignored.values())


# --------------------------------------------------------------------------- parser: truth

TALKERS = ["GP", "GN", "GL", "GA", "GB", "BD", "GQ"]


@pytest.mark.parametrize("talker", TALKERS)
def test_rmc_known_truth_any_talker(talker):
    p = NmeaParser()
    fix = one(p, rmc("170320.50", "250826", talker=talker), 123)
    assert fix == Fix(
        mono_ns=123,
        utc_s=utc(2026, 8, 25, 17, 3, 20),
        frac_ns=500_000_000,
        valid=True,
        kind="RMC",
        dated=True,
        talker=talker,
    )
    assert p.accepted == 1 and p.valid == 1 and not p.rejects


@pytest.mark.parametrize("talker", TALKERS)
def test_zda_known_truth_any_talker(talker):
    p = NmeaParser()
    one(p, gga("235959.00", talker=talker), 0)  # gives ZDA its fix status; no date yet
    fix = one(p, zda("235959.00", "31", "12", "2026", talker=talker), 1)
    assert fix is not None
    assert (fix.utc_s, fix.kind, fix.dated, fix.valid, fix.talker) == (
        utc(2026, 12, 31, 23, 59, 59),
        "ZDA",
        True,
        True,
        talker,
    )


@pytest.mark.parametrize("talker", TALKERS)
def test_gga_takes_date_from_rmc(talker):
    p = NmeaParser()
    one(p, rmc("081500", "020326", talker=talker), 0)
    fix = one(p, gga("081500.25", talker=talker), 5)
    assert fix == Fix(5, utc(2026, 3, 2, 8, 15, 0), 250_000_000, True, "GGA", False, talker=talker)


@pytest.mark.parametrize(
    ("text", "frac_ns"),
    [
        ("120000", 0),
        ("120000.0", 0),
        ("120000.5", 500_000_000),
        ("120000.50", 500_000_000),
        ("120000.001", 1_000_000),
        ("120000.123456789", 123_456_789),
        ("120000.1234567899", 123_456_789),  # below a nanosecond: truncated
    ],
)
def test_fraction_is_exact_integer_ns(text, frac_ns):
    fix = one(NmeaParser(), rmc(text, "010126"))
    assert fix is not None
    assert fix.frac_ns == frac_ns and fix.utc_s == utc(2026, 1, 1, 12)
    assert type(fix.frac_ns) is int and type(fix.utc_s) is int and type(fix.mono_ns) is int


def test_lowercase_checksum_hex_is_accepted():
    line = rmc("120000", "010126")
    assert one(NmeaParser(), line[:-2] + line[-2:].lower()) is not None


def test_trailing_whitespace_and_crlf_are_fine():
    assert one(NmeaParser(), rmc("120000", "010126") + " \r\n") is not None


# --------------------------------------------------------------------------- parser: rejects


def good_rmc() -> str:
    return rmc("120000", "010126")


def flip_checksum(line: str) -> str:
    bad = (int(line[-2:], 16) ^ 0x01) & 0xFF
    return f"{line[:-2]}{bad:02X}"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (flip_checksum(good_rmc()), "checksum"),
        (good_rmc()[:-3], "no_checksum"),
        (good_rmc()[:20], "truncated"),  # cut before the '*'
        (good_rmc()[:-1], "truncated"),  # cut inside the checksum
        (good_rmc()[:-2], "truncated"),
        (good_rmc() + "0", "garbage"),
        ("", "garbage"),
        ("GPRMC,120000,A*00", "garbage"),
        ("\x00\x00\ufffd\ufffd", "garbage"),
        ("$GPRMC,120000,A,4807\x00\x00\x00*12", "garbage"),
        ("$G\ufffdRMC,120000*00", "garbage"),
        ("$GPN,00000.0000,E,0,00,0.0,,M,,M,,*5C", "garbage"),
        ("$11,23,87,270,,13,70,270,,24,59,270,,04,40,270,40*7E", "garbage"),
        # two sentences run together: the checksum covers a '*'
        ("$GPGGA,1,*1E0,*4E", "checksum"),
        (nmea("GPRMC,120000,A,4807.038,N,01131.000,E"), "truncated"),
        (nmea("GPGGA,120000,4807.038,N,01131.000,E,1"), "truncated"),
        (nmea("GPZDA,120000,01,01"), "truncated"),
        (rmc("", "010126", status="V"), "no_time"),
        (nmea("GPGGA,,,,,,0,,,,,,,,"), "no_time"),
        (rmc("1200", "010126"), "parse"),
        (rmc("12h000", "010126"), "parse"),
        (rmc("246000", "010126"), "parse"),
        (rmc("126000", "010126"), "parse"),
        (rmc("120061", "010126"), "parse"),
        (rmc("120000.", "010126"), "parse"),
        (rmc("120000", "0101"), "parse"),
        (rmc("120000", "01o126"), "parse"),
        (rmc("120000", ""), "no_date"),
        (zda("120000", "", "", ""), "no_date"),
        (zda("120000", "1", "1", "26"), "parse"),
        (gga("120000", "x"), "parse"),
        (gga("120000"), "no_date"),  # nothing dated before it
        (rmc("120000", "310226"), "absurd_date"),  # 31 February
        (rmc("120000", "000000"), "absurd_date"),
        (zda("120000", "05", "01", "1980"), "absurd_date"),  # before the GPS epoch
        (zda("120000", "01", "01", "1970"), "absurd_date"),
        (rmc("120000", "010179"), "absurd_date"),  # 2079: after not_after
    ],
)
def test_rejects_with_reason(line, reason):
    p = NmeaParser()
    assert p.feed(line, 0) is None
    assert p.rejects == {reason: 1}
    assert p.accepted == 0 and p.last_reject is not None and p.last_reject.reason == reason


@pytest.mark.parametrize(
    "line",
    [
        "$GPGSV,3,1,12,20,76,058,40,11,73,252,,06,41,274,,14,41,185,*7D",
        "$GPGSA,A,3,20,,,,13,31,,04,,,,,02.7,01.4,02.3*05",
        "$GPVTG,000.0,T,357.0,M,000.0,N,0000.1,K,A*13",
        "$GNGLL,4404.13387,N,12118.85628,W,000941.00,A,A*69",
        nmea("GPTXT,01,01,02,ANTSTATUS=OK"),
        "$GPGSV,corrupted checksum is not our business*00",
        "$PLCS,REV,PLN012054S07,070312,145743",
        nmea("PUBX,00,120000.00,4807.038,N"),
        nmea("GNGNS,191434.96,,,,,NNN,,,,,,"),
    ],
)
def test_unused_sentences_are_ignored_not_errors(line):
    p = NmeaParser()
    assert p.feed(line, 0) is None
    assert not p.rejects and p.accepted == 0 and sum(p.ignored.values()) == 1


def test_ignored_counter_keys_stay_bounded():
    p = NmeaParser()
    for i in range(1000):
        p.feed(f"$PXYZABC{i}", 0)
    assert set(p.ignored) == {"PXYZA"}


def test_dollar_inside_a_line_restarts_the_sentence():
    p = NmeaParser()
    fix = p.feed("$GPGSA,A,1,,,,,,,,,,,,,,,*1E" + rmc("120000", "010126"), 0)
    assert fix is not None and fix.utc_s == utc(2026, 1, 1, 12)
    assert p.resynced == 1
    assert p.feed("\ufffd\ufffd)\ufffd" + rmc("120001", "010126"), 0) is not None
    assert p.resynced == 2


def test_line_not_starting_with_dollar_is_garbage_even_if_pynmea2_would_take_it():
    p = NmeaParser()
    assert p.feed(good_rmc()[1:], 0) is None
    assert p.rejects == {"garbage": 1}


# --------------------------------------------------------------------------- parser: validity


@pytest.mark.parametrize(
    ("line", "valid"),
    [
        (rmc("120000", "010126", status="A", mode="A"), True),
        (rmc("120000", "010126", status="A", mode="D"), True),
        (rmc("120000", "010126", status="A", mode=None), True),  # NMEA 2.2: no mode
        (rmc("120000", "010126", status="V"), False),
        (rmc("120000", "010126", status="A", mode="N"), False),
        (rmc("120000", "010126", status="A", mode="E"), False),  # dead reckoning
        (rmc("120000", "010126", status="A", mode="S"), False),  # simulator
        # NMEA 4.1 nav status 'V' (u-blox always sends it) does not void the fix
        (nmea("GNRMC,120000.00,A,3806.62964,N,12237.61382,W,0.040,,010126,,,D,V"), True),
    ],
)
def test_rmc_validity(line, valid):
    p = NmeaParser()
    fix = p.feed(line, 0)
    assert fix is not None and fix.valid is valid
    assert p.rejects["no_fix"] == (0 if valid else 1)
    assert p.valid == (1 if valid else 0) and p.accepted == 1


@pytest.mark.parametrize(
    ("quality", "valid"),
    [(0, False), (1, True), (2, True), (4, True), (5, True), (6, False), (8, False), ("", False)],
)
def test_gga_validity(quality, valid):
    p = NmeaParser()
    p.feed(rmc("120000", "010126"), 0)
    fix = p.feed(gga("120000", quality), 0)
    assert fix is not None and fix.valid is valid


def test_gga_with_good_quality_is_invalid_when_its_date_came_from_a_void_rmc():
    # A cold-booting receiver's V sentences carry garbage dates; never lend them out.
    p = NmeaParser()
    p.feed(rmc("120000", "010126", status="V"), 0)
    fix = p.feed(gga("120000", 1), 0)
    assert fix is not None and not fix.valid


def test_zda_validity_follows_the_latest_rmc_or_gga():
    p = NmeaParser()
    alone = p.feed(zda("120000", "01", "01", "2026"), 0)
    assert alone is not None and not alone.valid
    p.feed(rmc("120001", "010126"), 1_000_000_000)
    after_a = p.feed(zda("120001", "01", "01", "2026"), 1_100_000_000)
    assert after_a is not None and after_a.valid
    p.feed(rmc("120002", "010126", status="V"), 2_000_000_000)
    after_v = p.feed(zda("120002", "01", "01", "2026"), 2_100_000_000)
    assert after_v is not None and not after_v.valid
    p.feed(gga("120003", 1), 3_000_000_000)
    after_gga = p.feed(zda("120003", "01", "01", "2026"), 3_100_000_000)
    assert after_gga is not None and after_gga.valid
    # the vouching sentence is too old (by arrival) to speak for this ZDA
    stale = p.feed(zda("120004", "01", "01", "2026"), 9_000_000_000)
    assert stale is not None and not stale.valid


def test_zda_and_rmc_for_the_same_second_are_both_returned():
    p = NmeaParser()
    a = p.feed(rmc("120000", "010126"), 1)
    b = p.feed(zda("120000", "01", "01", "2026"), 2)
    assert a is not None and b is not None
    assert (a.utc_s, a.kind, b.utc_s, b.kind) == (b.utc_s, "RMC", a.utc_s, "ZDA")


# --------------------------------------------------------------------------- parser: GGA date


def test_gga_date_carry_across_midnight_forward():
    p = NmeaParser()
    p.feed(rmc("235959.00", "310826"), 0)
    fix = p.feed(gga("000000.00"), 900_000_000)
    assert fix is not None and fix.utc_s == utc(2026, 9, 1, 0, 0, 0) and not fix.dated


def test_gga_date_carry_across_midnight_backward():
    p = NmeaParser()
    p.feed(zda("000000.00", "01", "09", "2026"), 0)
    fix = p.feed(gga("235959.00"), 100_000_000)
    assert fix is not None and fix.utc_s == utc(2026, 8, 31, 23, 59, 59)


def test_gga_date_carry_across_year_end():
    p = NmeaParser()
    p.feed(rmc("235958", "311226"), 0)
    fix = p.feed(gga("000000"), 1_500_000_000)
    assert fix is not None and fix.utc_s == utc(2027, 1, 1)


@pytest.mark.parametrize(
    ("gga_time", "gga_mono_ns"),
    [
        ("120005", 0),  # 5 s away from the dated sentence in time of day
        ("115955", 0),
        ("120000", 10_000_000_000),  # same time of day but arrived 10 s later
        ("000000", 0),  # 12 h away: never borrow across that
    ],
)
def test_gga_no_date_when_dated_sentence_is_not_recent(gga_time, gga_mono_ns):
    p = NmeaParser()
    p.feed(rmc("120000", "010126"), 0)
    assert p.feed(gga(gga_time), gga_mono_ns) is None
    assert p.rejects["no_date"] == 1


def test_gga_keeps_the_rollover_flag_of_the_borrowed_date():
    p = NmeaParser()
    p.feed(rmc("000425.00", "220899"), 0)
    fix = p.feed(gga("000425.00"), 0)
    assert fix is not None and fix.rollover_fixed and fix.utc_s == utc(2019, 4, 7, 0, 4, 25)


# --------------------------------------------------------------------------- parser: leap


@pytest.mark.parametrize(("ddmmyy", "ymd"), [("311226", (2026, 12, 31)), ("300627", (2027, 6, 30))])
def test_leap_second_rmc(ddmmyy, ymd):
    p = NmeaParser()
    fix = p.feed(rmc("235960.25", ddmmyy), 7)
    assert fix is not None
    assert fix.leap and fix.valid and fix.frac_ns == 250_000_000
    assert fix.utc_s == utc(*ymd, 23, 59, 59) + 1
    # POSIX has no distinct number for :60: it shares the next midnight's value.
    next_day = datetime.date(*ymd) + datetime.timedelta(days=1)
    assert fix.utc_s == utc(next_day.year, next_day.month, next_day.day)


def test_leap_second_sequence_zda_and_gga():
    p = NmeaParser()
    seq = [
        (rmc("235959", "311226"), False, utc(2026, 12, 31, 23, 59, 59)),
        (gga("235959"), False, utc(2026, 12, 31, 23, 59, 59)),
        (zda("235960", "31", "12", "2026"), True, utc(2027, 1, 1)),
        (gga("235960"), True, utc(2027, 1, 1)),
        (rmc("000000", "010127"), False, utc(2027, 1, 1)),
        (gga("000000"), False, utc(2027, 1, 1)),
        (gga("000001"), False, utc(2027, 1, 1, 0, 0, 1)),
    ]
    for i, (line, leap, utc_s) in enumerate(seq):
        fix = p.feed(line, i * 300_000_000)
        assert fix is not None, line
        assert (fix.leap, fix.utc_s, fix.valid) == (leap, utc_s, True), line


def test_gga_leap_second_on_a_carried_date_that_is_not_month_end():
    p = NmeaParser()
    p.feed(rmc("235959", "150626"), 0)
    assert p.feed(gga("235960"), 0) is None
    assert p.rejects["absurd_date"] == 1


@pytest.mark.parametrize(
    "line",
    [
        rmc("235960", "301226"),  # 23:59:60 but not the last day of the month
        rmc("123460", "311226"),  # :60 at any other time
        rmc("235860", "311226"),
        zda("000060", "01", "01", "2027"),
    ],
)
def test_misplaced_leap_second_is_absurd(line):
    p = NmeaParser()
    assert p.feed(line, 0) is None
    assert p.rejects == {"absurd_date": 1}


# --------------------------------------------------------------------------- parser: rollover


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # the GP-320FW's week-0 date: 1999-08-22 + 1024 weeks
        (rmc("000425.00", "220899", status="V"), (2019, 4, 7)),
        (zda("000427.00", "22", "08", "1999"), (2019, 4, 7)),
        # the last day the rule touches
        (rmc("120000", "060419"), (2038, 11, 20)),
        # a receiver stuck in the first GPS epoch: two rounds
        (zda("120000", "06", "01", "1980"), (2019, 4, 7)),
        # the cold-boot garbage 2006-12-16: u-blox's rule moves it too. Deliberate: the
        # rule cannot tell it from a real rolled date; the clock refuses date jumps.
        (rmc("235948.00", "161206", status="V"), (2026, 8, 1)),
        (rmc("120000", "010101"), (2020, 8, 17)),  # yy 00-79 → 20xx before rollover
    ],
)
def test_week_rollover_is_corrected(line, expected):
    fix = NmeaParser().feed(line, 0)
    assert fix is not None and fix.rollover_fixed
    assert datetime.datetime.fromtimestamp(fix.utc_s, datetime.UTC).date() == datetime.date(
        *expected
    )


def test_rollover_rule_adds_exactly_1024_weeks():
    assert datetime.date(1999, 8, 22) + ROLLOVER == datetime.date(2019, 4, 7)
    assert datetime.date(2006, 12, 16) + ROLLOVER == datetime.date(2026, 8, 1)


@pytest.mark.parametrize("ddmmyy", ["070419", "250826", "311245"])
def test_dates_from_2019_04_07_are_left_alone(ddmmyy):
    fix = NmeaParser().feed(rmc("120000", ddmmyy), 0)
    assert fix is not None and not fix.rollover_fixed


def test_two_digit_years_80_to_99_are_19xx():
    # 95 → 1995-01-01; one round of 1024 weeks gives 2014, still before 2019-04-07,
    # so a second round gives 2034: the rule repeats until the date is believable.
    fix = NmeaParser().feed(rmc("120000", "010195"), 0)
    assert fix is not None and fix.rollover_fixed
    got = datetime.datetime.fromtimestamp(fix.utc_s, datetime.UTC).date()
    assert got == datetime.date(1995, 1, 1) + 2 * ROLLOVER
    replay = NmeaParser(not_before=datetime.date(1990, 1, 1)).feed(rmc("120000", "010195"), 0)
    assert replay is not None and replay.utc_s == utc(1995, 1, 1, 12) and not replay.rollover_fixed


def test_not_after_is_configurable_and_defaults_to_release_plus_20_years():
    assert DEFAULT_NOT_AFTER.year >= 2045
    assert DEFAULT_NOT_BEFORE == datetime.date(2019, 4, 7)
    late = rmc("120000", "010179")
    assert NmeaParser().feed(late, 0) is None
    fix = NmeaParser(not_after=datetime.date(2090, 1, 1)).feed(late, 0)
    assert fix is not None and fix.utc_s == utc(2079, 1, 1, 12)
    soon = NmeaParser(not_after=datetime.date(2027, 1, 1))
    assert soon.feed(rmc("120000", "020127"), 0) is None
    assert soon.rejects == {"absurd_date": 1}
    with pytest.raises(ValueError):
        NmeaParser(not_before=datetime.date(2030, 1, 1), not_after=datetime.date(2029, 1, 1))


# --------------------------------------------------------------------------- parser: stats


def test_stats_for_the_status_message():
    p = NmeaParser()
    p.feed(rmc("120000", "010126"), 5)
    p.feed(rmc("120001", "010126", status="V"), 6)
    p.feed(flip_checksum(good_rmc()), 7)
    p.feed("$GPGSV,1,1,00*79", 8)
    s = p.stats()
    assert s == {
        "accepted": 2,
        "valid": 1,
        "rejects": {"no_fix": 1, "checksum": 1},
        "ignored": 1,
        "resynced": 0,
        "last_kind": "RMC",
        "last_valid_mono_ns": 5,
    }
    assert lines_counted(p) == 4 and p.last_mono_ns == 8


# --------------------------------------------------------------------------- parser: fuzzing

GOOD_LINES = [
    rmc("202640.000", "130426"),
    rmc("000941.00", "100127", talker="GN"),
    gga("202640.000"),
    zda("202640.000", "13", "04", "2026"),
    nmea("GNRMC,223745.00,A,3806.62964,N,12237.61382,W,0.040,,110726,,,D,V"),
    rmc("235960", "311226"),
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 64))
def test_fuzz_random_bytes_never_raise(data, chunk):
    sp = LineSplitter()
    p = NmeaParser()
    for i in range(0, len(data), chunk):
        for line, ns in sp.feed(data[i : i + chunk], i):
            fix = p.feed(line, ns)
            assert fix is None or oracle_checks(line)
    assert p.rejects["internal"] == 0
    assert sp.pending <= sp.max_line


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.data())
def test_fuzz_single_byte_corruption_never_yields_a_fix(data):
    line = data.draw(st.sampled_from(GOOD_LINES))
    star = line.index("*")
    i = data.draw(st.integers(1, star - 1))  # inside the checksummed body
    new = data.draw(st.integers(0, 255).filter(lambda b: b != ord(line[i])))
    assume(chr(new) not in "$*\r\n")
    corrupted = (line[:i].encode() + bytes([new]) + line[i + 1 :].encode()).decode(
        "ascii", "replace"
    )
    p = NmeaParser()
    p.feed(rmc("202640.000", "130426"), 0)  # state that would date a GGA
    assert p.feed(corrupted, 0) is None
    assert p.rejects["internal"] == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(GOOD_LINES), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(1, 50),
)
def test_fuzz_corrupted_streams_only_yield_checksummed_fixes(lines, hits, chunk):
    stream = bytearray("\r\n".join(lines).encode() + b"\r\n")
    for pos, byte in hits:
        stream[pos % len(stream)] = byte
    sp = LineSplitter()
    p = NmeaParser()
    fed = 0
    for i in range(0, len(stream), chunk):
        for line, ns in sp.feed(bytes(stream[i : i + chunk]), i):
            fed += 1
            fix = p.feed(line, ns)
            assert fix is None or oracle_checks(line), line
    assert p.rejects["internal"] == 0
    assert lines_counted(p) == fed


# --------------------------------------------------------------------------- LineSplitter


def test_splitter_terminators_and_empty_lines():
    sp = LineSplitter()
    out = sp.feed(b"a\r\nb\nc\rd\r\r\n\n\ne", 9)
    assert out == [("a", 9), ("b", 9), ("c", 9), ("d", 9)]
    assert sp.pending == 1
    assert sp.feed(b"\n", 10) == [("e", 10)]
    assert sp.lines == 5


def test_splitter_partial_line_is_stamped_by_the_chunk_with_its_terminator():
    sp = LineSplitter()
    assert sp.feed(b"$GPRMC,1", 100) == []
    assert sp.feed(b"2,3*00", 200) == []
    assert sp.feed(b"\r", 300) == [("$GPRMC,12,3*00", 300)]
    assert sp.feed(b"\n$GP", 400) == []  # the LF of CRLF adds no line


def test_splitter_binary_garbage_keeps_going():
    sp = LineSplitter()
    junk = bytes([0xB5, 0x62, 0x01, 0x07, 0x00, 0xFF, 0x80]) + b"\x00" * 5
    out = sp.feed(junk + b"\n" + b"$GPZDA,1*00\n", 1)
    assert out[0] == ("\ufffdb\x01\x07\x00\ufffd\ufffd" + "\x00" * 5, 1)
    assert out[1] == ("$GPZDA,1*00", 1)


def test_splitter_overlong_line_is_discarded_and_counted():
    sp = LineSplitter(max_line=120)
    assert sp.feed(b"A" * 1000, 1) == []
    assert sp.pending == 0
    assert sp.feed(b"B" * 1000 + b"\nok\n", 2) == [("ok", 2)]
    assert sp.overlong == 1 and sp.pending == 0


def test_splitter_overlong_line_keeps_its_last_sentence():
    # Binary UBX packets without CR/LF run into the next sentence (u-blox HATs do this).
    sp = LineSplitter(max_line=120)
    sentence = rmc("000941.00", "100127", talker="GN").encode()
    out = sp.feed(bytes(range(128, 256)) * 2 + b"$junk" + sentence + b"\r\n", 1)
    assert out == [(sentence.decode(), 1)]
    assert sp.overlong == 1
    # ...unless that sentence itself is too long
    assert sp.feed(b"\xff" * 200 + b"$" + b"x" * 150 + b"\n", 2) == []
    assert sp.overlong == 2


def test_splitter_memory_is_bounded():
    sp = LineSplitter(max_line=50)
    for _ in range(200):
        sp.feed(b"$" + b"x" * 37, 0)
        assert sp.pending <= 50


def test_splitter_reset_drops_partial_line():
    sp = LineSplitter()
    sp.feed(b"$GPRMC,half", 1)
    sp.reset()
    assert sp.feed(b"$GPZDA\n", 2) == [("$GPZDA", 2)]


SPLIT_STREAM = (
    b"$GPRMC,1*00\r\n\xb5b\x01\x00$GNGGA,2*00\n\r\n$ab\rc\r\r\n"
    + b"\xff" * 30
    + b"$GPZDA,3,aaaaaaaaaaaaaaaaaaaaaaa*00\r\n"
    + b"z" * 45
    + b"\n$tail"
)


def _reference(stream: bytes, max_line: int) -> list[tuple[str, int]]:
    """Byte by byte, stamping each byte with its index: a line's stamp = terminator index."""
    sp = LineSplitter(max_line)
    out: list[tuple[str, int]] = []
    for i in range(len(stream)):
        out += sp.feed(stream[i : i + 1], i)
    return out


def test_splitter_every_split_point_gives_the_same_lines():
    max_line = 40
    ref = _reference(SPLIT_STREAM, max_line)
    assert [line for line, _ in ref][:3] == ["$GPRMC,1*00", "\ufffdb\x01\x00$GNGGA,2*00", "$ab"]
    assert "$GPZDA,3,aaaaaaaaaaaaaaaaaaaaaaa*00" in [line for line, _ in ref]  # overlong tail
    for i in range(len(SPLIT_STREAM) + 1):
        sp = LineSplitter(max_line)
        out = sp.feed(SPLIT_STREAM[:i], 1) + sp.feed(SPLIT_STREAM[i:], 2)
        assert out == [(line, 1 if t < i else 2) for line, t in ref], i


def test_splitter_every_pair_of_split_points_gives_the_same_lines():
    max_line = 40
    ref = _reference(SPLIT_STREAM, max_line)
    n = len(SPLIT_STREAM)
    for i in range(n + 1):
        for j in range(i, n + 1):
            sp = LineSplitter(max_line)
            out = (
                sp.feed(SPLIT_STREAM[:i], 1)
                + sp.feed(SPLIT_STREAM[i:j], 2)
                + sp.feed(SPLIT_STREAM[j:], 3)
            )
            want = [(line, 1 if t < i else 2 if t < j else 3) for line, t in ref]
            assert out == want, (i, j)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([b"\r", b"\n", b"\r\n", b"$", b"$GPRMC,1*00", b"\x00", b"\xb5b"]),
            st.binary(max_size=30),
        ),
        max_size=40,
    ),
    st.lists(st.integers(0, 2000), max_size=8),
)
def test_splitter_chunking_never_changes_lines(parts, cuts):
    stream = b"".join(parts)
    ref = _reference(stream, 24)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    sp = LineSplitter(24)
    out = []
    for k, (a, b) in enumerate(zip(points, points[1:], strict=False)):
        out += sp.feed(stream[a:b], k)
        assert sp.pending <= 24

    def chunk_of(t: int) -> int:
        return next(k for k, b in enumerate(points[1:]) if t < b)

    assert out == [(line, chunk_of(t)) for line, t in ref]


# --------------------------------------------------------------------------- real receiver logs


def corpus_bytes(name: str) -> bytes:
    if not CORPUS.is_dir():
        pytest.skip(f"NMEA corpus not found at {CORPUS}")
    data = (CORPUS / name).read_bytes()
    # Drop the leading '#' comment lines; everything after is what the receiver sent.
    while data.startswith(b"#"):
        data = data.split(b"\n", 1)[1]
    return data


def run_corpus(
    name: str, parser: NmeaParser | None = None, chunk: int = 64
) -> tuple[list[Fix], NmeaParser, LineSplitter]:
    """Feed a log in chunks, stamping as if it arrived at 10 kB/s."""
    data = corpus_bytes(name)
    sp = LineSplitter()
    p = parser or NmeaParser()
    fixes: list[Fix] = []
    fed = 0
    for i in range(0, len(data), chunk):
        for line, ns in sp.feed(data[i : i + chunk], (i + chunk) * 100_000):
            fed += 1
            fix = p.feed(line, ns)
            if fix is not None:
                assert oracle_checks(line)
                fixes.append(fix)
    assert p.rejects["internal"] == 0
    assert lines_counted(p) == fed
    return fixes, p, sp


ALL_LOGS = [
    "mt3339.log",
    "ublox-8.log",
    "ublox-neo-m9n-nmea.log",
    "ublox-zed-f9r.log",
    "skytraq.log",
    "quectel-eg25-g.log",
    "gp-320fw-2019-04-07-coldboot.log",
    "nmea-fuzzy-cases.log",
]


@pytest.mark.parametrize("name", ALL_LOGS)
def test_corpus_never_raises_and_accounts_for_every_line(name):
    fixes, p, _ = run_corpus(name)
    for fix in fixes:
        assert type(fix.utc_s) is int and type(fix.frac_ns) is int
        assert 0 <= fix.frac_ns < 1_000_000_000


def assert_consecutive(fixes: list[Fix]) -> list[int]:
    seconds = [f.utc_s for f in fixes if f.valid]
    assert seconds
    steps = {b - a for a, b in zip(seconds, seconds[1:], strict=False)}
    assert steps <= {0, 1}, steps
    return seconds


# (log, capture date for replay, first valid second, last valid second, valid count)
CLEAN_LOGS = [
    (
        "mt3339.log",
        datetime.date(2015, 1, 1),
        # the first GGA comes before any dated sentence; the first RMC is 20:26:40
        utc(2015, 4, 13, 20, 26, 40),
        utc(2015, 4, 13, 20, 27, 9),
    ),
    (
        "ublox-8.log",
        datetime.date(2017, 1, 1),
        # the first RMC sits behind 150 bytes of UBX binary on the same line
        utc(2017, 1, 10, 0, 9, 41),
        utc(2017, 1, 10, 0, 10, 52),  # the last RMC is cut off mid-sentence
    ),
    (
        "ublox-neo-m9n-nmea.log",
        DEFAULT_NOT_BEFORE,
        utc(2020, 7, 11, 22, 37, 45),
        utc(2020, 7, 11, 22, 38, 45),
    ),
]


@pytest.mark.parametrize(("name", "not_before", "first", "last"), CLEAN_LOGS)
def test_corpus_clean_receivers_give_consecutive_valid_seconds(name, not_before, first, last):
    fixes, p, _ = run_corpus(name, NmeaParser(not_before=not_before))
    seconds = assert_consecutive(fixes)
    assert (seconds[0], seconds[-1]) == (first, last)
    assert set(range(first, last + 1)) == set(seconds)  # no second missing
    assert all(f.valid for f in fixes) and not any(f.rollover_fixed for f in fixes)
    assert {f.kind for f in fixes} == {"RMC", "GGA", "ZDA"}
    assert p.rejects["checksum"] == 0


def test_corpus_pre_2019_logs_are_rolled_forward_by_the_default_rule():
    # Live, a 2015 date can only be an old receiver's rolled-over week: the default
    # parser moves it 1024 weeks on. Replays of old logs pass not_before instead.
    fixes, _, _ = run_corpus("mt3339.log")
    valid = [f for f in fixes if f.valid]
    assert valid and all(f.rollover_fixed for f in valid)
    assert valid[0].utc_s == utc(2015, 4, 13, 20, 26, 40) + ROLLOVER.days * 86_400


def test_corpus_ublox_8_first_line_behind_binary_and_cut_last_line():
    fixes, p, sp = run_corpus("ublox-8.log", NmeaParser(not_before=datetime.date(2017, 1, 1)))
    assert sp.overlong == 1
    assert fixes[0].kind == "RMC" and fixes[0].talker == "GN"
    assert p.rejects["truncated"] == 1  # "$GNRMC,001053.00,A,...,0." at the end


def test_corpus_zed_f9r_every_rmc_survives_interleaved_ubx():
    fixes, p, sp = run_corpus("ublox-zed-f9r.log")
    rmcs = [f for f in fixes if f.kind == "RMC"]
    assert len(rmcs) == 30 and all(f.valid for f in rmcs)
    assert rmcs[0].utc_s == utc(2025, 4, 11, 23, 14, 8)
    assert_consecutive(fixes)
    assert sp.overlong > 0 and p.resynced > 0


def test_corpus_skytraq_without_fix_gives_no_valid_time():
    fixes, p, _ = run_corpus("skytraq.log")
    assert fixes and not any(f.valid for f in fixes)  # alive, but never time
    assert p.valid == 0 and p.rejects["no_fix"] == len(fixes)
    assert {f.kind for f in fixes} == {"RMC", "GGA", "ZDA"}


def test_corpus_quectel_fix_comes_and_goes():
    fixes, p, _ = run_corpus("quectel-eg25-g.log")
    valid = [f for f in fixes if f.valid]
    assert valid and p.rejects["no_time"] > 0
    assert valid[0].utc_s == utc(2022, 9, 11, 19, 15, 3) and valid[0].frac_ns == 10_000_000
    assert all(datetime.datetime.fromtimestamp(f.utc_s, datetime.UTC).year == 2022 for f in valid)


def test_corpus_gp320fw_cold_boot():
    fixes, p, _ = run_corpus("gp-320fw-2019-04-07-coldboot.log")
    assert p.rejects["checksum"] > 0 and p.rejects["garbage"] > 0
    # Before the reboot: the one intact RMC (2019-04-07, no rollover) and its GGA.
    valid = [f for f in fixes if f.valid]
    assert [(f.kind, f.utc_s, f.rollover_fixed) for f in valid] == [
        ("RMC", utc(2019, 4, 7, 0, 3, 45), False),
        ("GGA", utc(2019, 4, 7, 0, 3, 45), False),
    ]
    # After it: status V throughout; 220899 (1999-08-22) comes out as 2019-04-07.
    week0 = [f for f in fixes if f.rollover_fixed and f.kind == "RMC" and f.utc_s < utc(2020, 1, 1)]
    assert week0 and week0[0].utc_s == utc(2019, 4, 7, 0, 4, 25)
    zdas = [f for f in fixes if f.kind == "ZDA"]
    assert zdas and all(f.rollover_fixed and not f.valid for f in zdas)
    # The 2006-12-16 garbage date, rolled by the same rule.
    assert any(f.utc_s == utc(2026, 8, 1, 23, 59, 48) for f in fixes)


def test_corpus_fuzzy_cases_fractions():
    fixes, _, _ = run_corpus("nmea-fuzzy-cases.log")
    first = fixes[0]
    assert (first.kind, first.utc_s, first.frac_ns) == (
        "RMC",
        utc(2020, 3, 18, 13, 28, 20),
        600_000_000,
    )
    assert {f.frac_ns for f in fixes} >= {600_000_000, 700_000_000, 500_000_000, 100_000_000}


# --------------------------------------------------------------------------- SerialReader


class Collector:
    def __init__(self) -> None:
        self.lines: list[tuple[str, int, int]] = []  # line, stamp, time received
        self.cond = threading.Condition()

    def __call__(self, line: str, mono_ns: int) -> None:
        with self.cond:
            self.lines.append((line, mono_ns, time.monotonic_ns()))
            self.cond.notify_all()

    def wait_for(self, n: int, timeout_s: float = 3.0) -> list[tuple[str, int, int]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.lines) >= n, timeout_s), self.lines
            return list(self.lines)


def open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo or CR mapping before pyserial configures it
    return master, slave, os.ttyname(slave)


@pytest.fixture
def reader_factory():
    readers: list[SerialReader] = []

    def make(url: str, on_line, **kw) -> SerialReader:
        r = SerialReader(url, 9600, on_line, reopen_delay_s=kw.pop("reopen_delay_s", 0.05), **kw)
        readers.append(r)
        r.start()
        return r

    yield make
    for r in readers:
        r.stop()
        assert not r.is_alive()


def test_reader_through_a_real_pty_stamps_lines_on_arrival(reader_factory):
    master, slave, path = open_pty()
    try:
        got = Collector()
        reader = reader_factory(path, got)
        wait_for(lambda: reader.connected)
        assert reader.daemon
        lines = [rmc(f"1200{s:02d}.00", "010126") for s in range(5)]
        stream = ("\r\n".join(lines) + "\r\n").encode()
        sizes = [1, 7, 13, 2, 61, 5, 90, 3]
        written_before: list[tuple[int, int]] = []  # (end offset of chunk, time before)
        pos = k = 0
        while pos < len(stream):
            n = sizes[k % len(sizes)]
            written_before.append((pos + n, time.monotonic_ns()))
            os.write(master, stream[pos : pos + n])
            pos += n
            k += 1
            time.sleep(0.003)  # paces the chunks as a UART delivers them: separate reads
        out = got.wait_for(len(lines))
        assert [line for line, _, _ in out] == lines
        stamps = [stamp for _, stamp, _ in out]
        assert stamps == sorted(stamps)
        for idx, (line, stamp, received) in enumerate(out):
            end = stream.index(line.encode()) + len(line)  # offset of its CR
            before = next(t for off, t in written_before if off > end)
            assert before <= stamp <= received, idx
        assert reader.bytes_read == len(stream) and reader.last_error is None
    finally:
        os.close(master)
        os.close(slave)


def test_reader_waits_for_a_device_that_appears_and_reconnects(
    reader_factory, tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="checkpoint.core.nmea")
    opens = _count_opens(monkeypatch)
    link = tmp_path / "gps0"
    got = Collector()
    reader = reader_factory(str(link), got)
    wait_for(lambda: reader.last_error is not None)
    wait_for(lambda: len(opens) >= 4, what="several retries")  # and only one log line
    assert not reader.connected and reader.waiting
    assert f"GPS port {link} not present: waiting for it to appear" in reader.last_error
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1

    master, slave, path = open_pty()
    link.symlink_to(path)
    wait_for(lambda: reader.connected)
    assert not reader.waiting and reader.last_error is None
    os.close(slave)  # only the reader holds the slave now: closing the master unplugs it
    os.write(master, (rmc("120000", "010126") + "\r\n").encode())
    assert got.wait_for(1)[0][0] == rmc("120000", "010126")

    os.write(master, b"$GPRMC,12")  # a partial line, then "unplug"
    os.close(master)
    wait_for(lambda: not reader.connected)
    assert reader.last_error is not None

    master2, slave2, path2 = open_pty()
    tmp = tmp_path / "gps0.new"
    tmp.symlink_to(path2)
    os.replace(tmp, link)
    try:
        wait_for(lambda: reader.connected)
        assert reader.connects == 2
        # a partial line from before the outage must not glue onto new bytes
        os.write(master2, (rmc("120001", "010126") + "\r\n").encode())
        assert got.wait_for(2)[1][0] == rmc("120001", "010126")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2  # one per outage
        assert any("open again" in r.getMessage() for r in caplog.records)
    finally:
        os.close(master2)
        os.close(slave2)


def _count_opens(monkeypatch) -> list[str]:
    """Count the reader's tries to open its port (at the serial edge, then the real open)."""
    opens: list[str] = []
    real = serial.serial_for_url

    def counted(url, *args, **kw):
        opens.append(url)
        return real(url, *args, **kw)

    monkeypatch.setattr(serial, "serial_for_url", counted)
    return opens


def test_reader_loop_url(reader_factory):
    got = Collector()
    reads: list[int] = []

    def clock() -> int:  # the reader reads its clock after every read, empty or not
        reads.append(time.monotonic_ns())
        return reads[-1]

    reader = reader_factory("loop://", got, clock=clock)
    wait_for(lambda: reader.connected)
    # The marker: three reads have come back since it connected, with nothing in them.
    seen = len(reads)
    wait_for(lambda: len(reads) >= seen + 3, what="three more reads of the port")
    assert reader.last_error is None and reader.bytes_read == 0 and not got.lines


def test_reader_socket_url_delivers_lines_and_survives_a_bad_callback(reader_factory):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(3)
    port = server.getsockname()[1]
    got = Collector()
    calls = []

    def on_line(line: str, mono_ns: int) -> None:
        calls.append(line)
        if len(calls) == 1:
            raise RuntimeError("consumer bug")
        got(line, mono_ns)

    reader = reader_factory(f"socket://127.0.0.1:{port}", on_line)
    conn, _ = server.accept()
    with conn, server:
        # pyserial flushes input while opening: bytes sent before that are lost
        wait_for(lambda: reader.connected)
        conn.sendall(("\r\n".join(GOOD_LINES[:3]) + "\r\n").encode())
        out = got.wait_for(2)
        assert [line for line, _, _ in out] == GOOD_LINES[1:3]
        assert reader.callback_errors == 1 and reader.connected


def test_reader_bad_url_keeps_retrying_and_stops_fast():
    reader = SerialReader("nosuchscheme://x", 9600, lambda line, ns: None, reopen_delay_s=30)
    reader.start()
    wait_for(lambda: reader.last_error is not None)
    t0 = time.monotonic()
    reader.stop()
    assert not reader.is_alive() and time.monotonic() - t0 < 1.0


def test_reader_uses_the_injected_clock(reader_factory):
    master, slave, path = open_pty()
    try:
        ticks = iter(range(10**9, 10**10, 1000))
        got = Collector()
        reader = reader_factory(path, got, clock=lambda: next(ticks))
        wait_for(lambda: reader.connected)
        os.write(master, b"$GPZDA,x*00\r\n")
        [(_, stamp, _)] = got.wait_for(1)
        assert 10**9 <= stamp < 10**10
    finally:
        os.close(master)
        os.close(slave)
