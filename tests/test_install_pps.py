"""`checkpoint install` and pps-gpio overlays: any overlay on a pin the box config reads
is turned off, whatever the pin (a HAT wiring PPS to GPIO4 ships with
``dtoverlay=pps-gpio,gpiopin=4``); overlays on other pins are left alone.

Runs the real installer into a temporary root, as tests/test_field.py does.
"""

from __future__ import annotations

from pathlib import Path

from checkpoint.field import install

REPO = Path(__file__).resolve().parent.parent
PROGRAM = "/opt/checkpoint/bin/checkpoint"

_HAT_CONFIG = """\
[box]
id = "box07"
checkpoint = "PC3"

[gps]
pps_pin = "GPIO4"

[[inputs]]
name = "beam"
pin = "GPIO17"
"""


def _root(tmp_path: Path, config_txt: str, box_toml: str | None) -> Path:
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text(config_txt)
    (root / "boot/firmware/cmdline.txt").write_text("console=tty1 root=PARTUUID=1 rootwait\n")
    if box_toml is not None:
        (root / "etc/checkpoint").mkdir(parents=True)
        (root / "etc/checkpoint/box.toml").write_text(box_toml)
    return root


def _install(root: Path) -> list[str]:
    said: list[str] = []
    install.install(root, program=PROGRAM, say=said.append, yes=True)
    return said


def test_hat_overlay_on_gpio4_is_disabled_when_the_config_reads_pps_there(tmp_path):
    root = _root(
        tmp_path,
        "[all]\ndtoverlay=pps-gpio,gpiopin=4\ndtoverlay=pps-gpio,gpiopin=22\n",
        _HAT_CONFIG,
    )
    _install(root)
    text = (root / "boot/firmware/config.txt").read_text()
    lines = text.splitlines()
    assert (
        "#dtoverlay=pps-gpio,gpiopin=4  # disabled by checkpoint: the daemon reads GPIO4 "
        "(gps.pps_pin)" in lines
    )
    # GPIO22 is nobody's here: someone else's PPS, kept.
    assert "dtoverlay=pps-gpio,gpiopin=22" in lines
    # A second run changes nothing.
    assert _install(root)[-1] == "nothing to change: already installed"


def test_overlay_on_an_input_pin_and_the_default_pin_follow_the_config(tmp_path):
    # No gpiopin = the overlay's default, GPIO18: not used by this config, so kept;
    # an overlay on the beam's pin would steal the beam.
    root = _root(
        tmp_path,
        "dtoverlay=pps-gpio\ndtoverlay=pps-gpio, gpiopin = 17 ,assert_falling_edge\n",
        _HAT_CONFIG,
    )
    _install(root)
    lines = (root / "boot/firmware/config.txt").read_text().splitlines()
    assert "dtoverlay=pps-gpio" in lines
    assert any(
        line.startswith("#dtoverlay=pps-gpio, gpiopin = 17") and "GPIO17 (input beam)" in line
        for line in lines
    )


def test_without_a_config_the_example_decides_gpio18(tmp_path):
    root = _root(tmp_path, "dtoverlay=pps-gpio\ndtoverlay=pps-gpio,gpiopin=4\n", None)
    _install(root)
    lines = (root / "boot/firmware/config.txt").read_text().splitlines()
    assert lines[0].startswith(
        "#dtoverlay=pps-gpio  # disabled by checkpoint: the daemon reads GPIO18"
    )
    assert "dtoverlay=pps-gpio,gpiopin=4" in lines


def test_config_pins_reads_names_leniently():
    assert install.config_pins(
        '[gps]\npps_pin = "BCM4"\n[[inputs]]\npin = "GPIO5"\nname="b"\n'
    ) == {
        4: "gps.pps_pin",
        5: "input b",
    }
    # No [[inputs]]: the daemon's default beam on GPIO17.
    assert install.config_pins("not toml [") == {18: "gps.pps_pin", 17: "input beam"}
    assert install.config_pins('[gps]\npps_pin = "BOARD7"\n[[inputs]]\npin = "BOARD11"\n') == {}
    assert install.config_pins('[[inputs]]\npin = "GPIO5"\n[indicator]\nled_pin = "GPIO23"\n') == {
        18: "gps.pps_pin",
        5: "input ?",
        23: "indicator.led_pin",
    }
