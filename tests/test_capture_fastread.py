"""Capture reading: the writer's plain PPS and NMEA lines skip the JSON decoder.

`capture.read` recognises the two spellings that make up most of a capture and
builds their dict by hand; every other line goes through json.loads. Whichever
way a line is read, the record must be exactly what json.loads would give, and a
line json.loads refuses must still be refused with the line named.
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint import capture
from checkpoint.errors import CaptureError

HEAD = {"format": "checkpoint-capture", "version": 1, "box": "b1", "checkpoint": "PC1"}


def read_lines(tmp_path, lines: list[str]) -> list[dict]:
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps(HEAD) + "\n" + "".join(lines), encoding="utf-8")
    _, it = capture.read(p)
    return list(it)


# Text a serial line could carry after LineSplitter (ASCII, replacement characters),
# plus what JSON must escape: quotes, backslashes, control characters.
TEXT = st.text(
    alphabet=st.sampled_from(list('$GPRMC,.*0123456789AN "\\/\x00\x01\x1f\x7f\ufffdé\u2028')),
    max_size=40,
)
MONO = st.integers(min_value=-(2**70), max_value=2**70)


@settings(max_examples=300, deadline=None)
@given(recs=st.lists(st.tuples(st.booleans(), MONO, TEXT), min_size=1, max_size=20))
def test_written_records_read_back_as_json_loads_gives_them(tmp_path_factory, recs):
    tmp = tmp_path_factory.mktemp("c")
    w = capture.Writer(tmp / "c.jsonl", "b1", "PC1")
    written = []
    for is_pps, mono, text in recs:
        rec = {"type": "pps", "mono_ns": mono} if is_pps else {"type": "nmea", "mono_ns": mono}
        if not is_pps:
            rec["line"] = text
        w.write(rec)
        written.append(rec)
    w.close()
    lines = (tmp / "c.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[1:]
    _, it = capture.read(tmp / "c.jsonl")
    got = list(it)
    assert got == written == [json.loads(x) for x in lines]
    assert [list(r) for r in got] == [list(r) for r in written]  # key order too
    assert all(type(r["mono_ns"]) is int for r in got)


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"nmea","mono_ns":5,"line":"$GPGGA,1*00"}\n',  # the writer's spelling
        '{"type":"nmea","mono_ns":-0,"line":""}\n',
        '{"type":"nmea","mono_ns":5,"line":"caf\u00e9"}\n',  # raw UTF-8 is valid JSON
        '{"type": "nmea", "mono_ns": 5, "line": "$GPGGA"}\n',  # spaces: the decoder
        '{"type":"nmea","mono_ns":5,"line":"a\\"b\\\\c\\u0001"}\n',  # escapes: the decoder
        '{"mono_ns":5,"type":"nmea","line":"x"}\n',  # key order: the decoder
        '{"type":"pps","mono_ns":123}\n',
        '{"type":"pps","mono_ns":123}',  # no newline on the last line
        '{"type":"pps","mono_ns":123} \r\n',
    ],
)
def test_each_spelling_reads_as_json_loads_reads_it(tmp_path, line):
    assert read_lines(tmp_path, [line]) == [json.loads(line)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"type":"nmea","mono_ns":5,"line":"a\x01b"}\n', ":2: not JSON"),  # raw control char
        ('{"type":"nmea","mono_ns":05,"line":"x"}\n', ":2: not JSON"),  # leading zero
        ('{"type":"pps","mono_ns":1.0}\n', ":2: pps record needs mono_ns as int"),
        ('{"type":"pps","mono_ns":1e3}\n', ":2: pps record needs mono_ns as int"),
        ('{"type":"nmea","mono_ns":5}\n', ":2: nmea record needs line as str"),
    ],
)
def test_lines_json_refuses_are_still_refused_naming_the_line(tmp_path, line, message):
    with pytest.raises(CaptureError, match=message):
        read_lines(tmp_path, [line])
