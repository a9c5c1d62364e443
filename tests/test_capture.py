"""Capture files: the public JSON Lines format, read strictly, replayed by the CLI."""

import json
import subprocess
import sys

import pytest

from checkpoint import capture
from checkpoint.errors import CaptureError


def write(path, lines):
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


HEAD = {"format": "checkpoint-capture", "version": 1, "box": "b1", "checkpoint": "PC1"}


def test_writer_round_trip(tmp_path):
    w = capture.Writer(tmp_path / "c.jsonl", "b1", "PC1")
    recs = [
        {"type": "pps", "mono_ns": 5},
        {"type": "nmea", "mono_ns": 6, "line": "$GPRMC*00"},
        {"type": "edge", "mono_ns": 7, "input": "beam", "active": True},
    ]
    for r in recs:
        w.write(r)
    w.close()
    head, it = capture.read(tmp_path / "c.jsonl")
    assert head == HEAD and list(it) == recs


def test_unknown_types_are_skipped_with_a_warning(tmp_path, caplog):
    p = write(
        tmp_path / "c.jsonl", [HEAD, {"type": "gnss-raw", "x": 1}, {"type": "pps", "mono_ns": 1}]
    )
    _, it = capture.read(p)
    assert list(it) == [{"type": "pps", "mono_ns": 1}]
    assert "unknown record type 'gnss-raw'" in caplog.text


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"format": "other"}], "not a checkpoint capture"),
        ([{**HEAD, "version": 2}], "capture version 2 is not supported"),
        ([HEAD, {"type": "pps", "mono_ns": 1.5}], ":2: pps record needs mono_ns as int"),
        ([HEAD, {"type": "edge", "mono_ns": 1, "input": "b", "active": 1}], "active as bool"),
        ([HEAD, {"mono_ns": 1}], ":2: a record must be an object with a string 'type'"),
    ],
)
def test_bad_captures_name_the_line(tmp_path, lines, message):
    p = write(tmp_path / "c.jsonl", lines)
    with pytest.raises(CaptureError, match=message):
        _, it = capture.read(p)
        list(it)


def test_cli_replay_of_a_broken_capture_exits_1_naming_it(tmp_path):
    p = write(tmp_path / "c.jsonl", [HEAD, {"type": "pps", "mono_ns": "x"}])
    res = subprocess.run(
        [sys.executable, "-m", "checkpoint", "replay", str(p)], capture_output=True, text=True
    )
    assert res.returncode == 1
    assert "c.jsonl:2: pps record needs mono_ns as int" in res.stderr
