"""Config loading: every bad key or value names itself and the file."""

import subprocess
import sys
from pathlib import Path

import pytest

from checkpoint import config
from checkpoint.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "box.toml"

MINIMAL = """
[box]
id = "box01"
checkpoint = "PC1"
"""


def write(tmp_path, text):
    p = tmp_path / "box.toml"
    p.write_text(text)
    return p


def test_shipped_example_is_valid():
    cfg = config.load(EXAMPLE)
    assert cfg.box == "box07" and cfg.checkpoint == "PC3"
    assert [i.name for i in cfg.inputs] == ["beam", "button"]
    assert cfg.inputs[1].source == "manual"
    assert cfg.mqtt.prefix == "rally"


def test_minimal_config_gets_documented_defaults(tmp_path):
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.inputs[0].min_break_ms == 10 and cfg.inputs[0].lockout_ms == 1000
    assert cfg.gps.convention == "after"
    assert cfg.store == "/var/lib/checkpoint/checkpoint.db"


def test_relative_store_path_is_taken_from_the_config_folder(tmp_path):
    cfg = config.load(write(tmp_path, MINIMAL + '[store]\npath = "data/box.db"\n'))
    assert cfg.store == str(tmp_path / "data" / "box.db")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[gps]\nbaud = 9600\n", "unknown key gps.baud"),
        ("colour = 1\n", "unknown key colour"),
        ("[gps]\nbaudrate = true\n", "gps.baudrate: must be an integer"),
        ("[gps]\nconvention = 'late'\n", "gps.convention: must be one of after, before"),
        ("[mqtt]\nbroker = 'tcp://x'\n", "mqtt.broker: must be mqtt://"),
        ("[mqtt]\nprefix = 'rally/#'\n", "mqtt.prefix"),
        ("[[inputs]]\nname = 'beam'\n", "inputs[0].pin: is required"),
        ("[[inputs]]\nname = 'b'\npin = 'GPIO5'\nmin_break_ms = -1\n", "inputs[0].min_break_ms"),
        (
            "[[inputs]]\nname='a'\npin='GPIO5'\n[[inputs]]\nname='a'\npin='GPIO6'\n",
            "duplicate name a",
        ),
        ("[[inputs]]\nname='a'\npin='GPIO18'\n", "gps.pps_pin GPIO18 is also an input"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, extra, message):
    # A table header after [box] must not swallow top-level keys, so put them first.
    text = extra + MINIMAL if not extra.startswith("[") else MINIMAL + extra
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    assert message in str(e.value)
    assert str(tmp_path / "box.toml") in str(e.value)


def test_missing_box_id_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="box.id: is required"):
        config.load(write(tmp_path, "[box]\ncheckpoint='x'\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[box\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "missing.toml")


def test_cli_config_check_exit_codes(tmp_path):
    exe = [sys.executable, "-m", "checkpoint", "config", "check"]
    ok = subprocess.run(exe + [str(EXAMPLE)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok: box box07" in ok.stdout
    bad = write(tmp_path, MINIMAL + "[gps]\nbaudrate = 'fast'\n")
    res = subprocess.run(exe + [str(bad)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "gps.baudrate: must be an integer" in res.stderr
