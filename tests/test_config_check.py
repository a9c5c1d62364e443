"""`checkpoint config check`: every problem at once, with suggestions, pins checked
against the Pi header, timing rules against each other, secret files by one rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from checkpoint import config, pins
from checkpoint.errors import ConfigError

MINIMAL = '[box]\nid = "box01"\ncheckpoint = "PC1"\n'


def run_check(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "checkpoint", "config", "check", str(path)],
        capture_output=True,
        text=True,
    )


def test_every_problem_is_reported_at_once_with_suggestions(tmp_path):
    p = tmp_path / "box.toml"
    p.write_text(
        MINIMAL
        + "[gps]\nbaudrat = 9600\nconvention = 'afer'\n"
        + "[web]\nprot = 8080\n"
        + "[[inputs]]\nname = 'beam'\npin = 'GPIO99'\nsource = 'bem'\n"
    )
    res = run_check(p)
    assert res.returncode == 1
    err = res.stderr
    assert "unknown key gps.baudrat (did you mean gps.baudrate?)" in err
    assert "gps.convention: must be one of after, before, got 'afer' (did you mean after?)" in err
    assert "unknown key web.prot (did you mean web.port?)" in err
    assert "inputs[0].pin: 'GPIO99': the Pi header has GPIO0 to GPIO27" in err
    assert "inputs[0].source" in err and "did you mean beam?" in err
    assert "5 problems" in err


@pytest.mark.parametrize(
    ("pin", "ok"),
    [
        ("GPIO17", True),
        ("BCM4", True),
        ("BOARD11", True),
        ("J8:40", True),
        ("GPIO27", True),
        ("GPIO28", False),
        ("GPIO99", False),
        ("BOARD1", False),
        ("BOARD6", False),
        ("BOARD41", False),
        ("pin17", False),
    ],
)
def test_pins_are_checked_against_the_pi_header(pin, ok):
    assert (pins.problem(pin) is None) is ok


def test_two_names_for_one_wire_are_the_same_pin():
    # BOARD11 is GPIO17: an input on each would share one wire.
    text = MINIMAL + "[[inputs]]\nname='a'\npin='GPIO17'\n[[inputs]]\nname='b'\npin='BOARD11'\n"
    with pytest.raises(ConfigError, match="pin BOARD11 used twice"):
        config.parse(__import__("tomllib").loads(text), "box.toml")
    with pytest.raises(ConfigError, match="gps.pps_pin BOARD12 is also an input"):
        config.parse(
            __import__("tomllib").loads(
                MINIMAL + "[gps]\npps_pin='BOARD12'\n[[inputs]]\nname='a'\npin='GPIO18'\n"
            ),
            "box.toml",
        )


def test_min_break_must_be_shorter_than_lockout():
    import tomllib

    text = MINIMAL + "[[inputs]]\nname='a'\npin='GPIO17'\nmin_break_ms=1500\nlockout_ms=1000\n"
    with pytest.raises(ConfigError, match=r"min_break_ms: 1500 must be shorter than lockout_ms"):
        config.parse(tomllib.loads(text), "box.toml")
    # lockout 0 (no lockout) leaves min_break alone.
    ok = MINIMAL + "[[inputs]]\nname='a'\npin='GPIO17'\nmin_break_ms=10\nlockout_ms=0\n"
    assert config.parse(tomllib.loads(ok), "box.toml").inputs[0].lockout_ms == 0


def web_config(tmp_path, pin_text: str, mode: int):
    pin = tmp_path / "pin"
    pin.write_text(pin_text)
    pin.chmod(mode)
    p = tmp_path / "box.toml"
    p.write_text(MINIMAL + f"[web]\nenabled = true\npin_file = '{pin}'\n")
    return p


def test_pin_file_is_checked_by_the_same_rules_as_hq_serve(tmp_path):
    res = run_check(web_config(tmp_path, "123\n", 0o600))
    assert res.returncode == 1
    assert "web.pin_file" in res.stderr and "at least 6 characters" in res.stderr
    res = run_check(web_config(tmp_path, "246813\n", 0o644))
    assert res.returncode == 1
    assert "readable by others" in res.stderr and "chmod 600" in res.stderr
    res = run_check(web_config(tmp_path, "246813\n", 0o600))
    assert res.returncode == 0, res.stderr
    assert "ok: box box01" in res.stdout


def test_key_and_pin_problems_are_reported_together(tmp_path):
    p = web_config(tmp_path, "12\n", 0o644)
    p.write_text(p.read_text() + "[gpio]\npin_factry = 'lgpio'\n")
    res = run_check(p)
    # A key error stops before the files are read (the paths may be the mistake),
    # but every key error is listed.
    assert res.returncode == 1
    assert "gpio.pin_factry (did you mean gpio.pin_factory?)" in res.stderr
