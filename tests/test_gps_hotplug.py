"""A GPS receiver that appears after the daemon started (a USB receiver plugged in
late, a udev symlink made a moment after boot): the daemon starts, says in its status
that it waits for the port, and locks once the device appears.

Real daemon process, real Mosquitto, a real pty that only shows up (as the symlink the
config names) after the daemon is up. The systemd side (the unit's device allow-list
resolving ttyACM/ttyUSB only for loaded drivers) is checked against the shipped files.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
from boxrig import BoxRig, GpsFeeder, truth_now
from faults import Watcher

from checkpoint.box import gpsport
from checkpoint.field import install

REPO = Path(__file__).resolve().parent.parent

# Device classes the unit allows whose driver Pi OS builds into the kernel: always in
# /proc/devices when the unit starts.
_BUILT_IN = {"gpiochip", "ttyAMA", "ttyS"}
# The module that registers each class listed in /proc/devices.
_MODULE_OF = {"ttyACM": "cdc_acm", "ttyUSB": "usbserial"}


@pytest.mark.slow
def test_daemon_waits_for_a_late_gps_then_locks(tmp_path, broker):
    rig = BoxRig(tmp_path, broker.url)
    late = tmp_path / "gps0"
    rig.config.write_text(rig.config.read_text().replace(f'"{rig.tty}"', f'"{late}"'))
    truth = truth_now()
    sub = Watcher(broker.url, ["rally/box07/status"])
    gps = None
    try:
        rig.start()
        st = sub.wait_status(lambda s: s.get("state") == "ready", 20, "a ready status", since=0)
        assert st["gps_port"] is False and st["gps_port_waiting"] is True
        assert f"GPS port {late} not present: waiting for it to appear" in st["alarms"]["gps_port"]
        assert "waiting for it to appear" in rig.log_text()

        # Plugged in: the device node appears; the receiver talks and pulses.
        late.symlink_to(rig.tty)
        gps = GpsFeeder(rig, truth)
        gps.start()
        st = sub.wait_status(lambda s: s.get("clock") == "locked", 60, "lock", since=0)
        assert st["gps_port"] is True and st["gps_port_waiting"] is False
        assert "gps_port" not in st["alarms"]
        assert rig.alive()
    finally:
        if gps is not None:
            gps.stop()
        sub.close()
        rig.close()


def test_open_failure_names_the_cause(tmp_path):
    missing = tmp_path / "ttyACM0"
    assert gpsport.missing(str(missing)) and not gpsport.missing("socket://h:1")
    assert "waiting for it to appear" in gpsport.open_failure(str(missing), OSError(2, "x"))
    there = tmp_path / "tty"
    there.touch()
    denied = OSError(errno.EPERM, "Operation not permitted")
    text = gpsport.open_failure(str(there), denied)
    assert "permission denied" in text and "modules-load.d/checkpoint.conf" in text
    busy = gpsport.open_failure(str(there), OSError(errno.EBUSY, "busy"))
    assert "busy" in busy


def test_every_usb_device_class_the_unit_allows_has_its_driver_loaded_at_boot(tmp_path):
    unit = (REPO / "systemd/checkpoint.service").read_text()
    classes = set(re.findall(r"^DeviceAllow=char-(\S+)", unit, re.MULTILINE))
    assert {"ttyACM", "ttyUSB"} <= classes
    loaded = install.modules((REPO / "systemd/checkpoint.modules-load").read_text())
    assert loaded == ["cdc_acm", "usbserial"]
    for cls in classes - _BUILT_IN:
        assert _MODULE_OF[cls] in loaded, f"char-{cls}: its driver is not loaded at boot"

    root = tmp_path / "root"
    said: list[str] = []
    install.install(root, program="/opt/checkpoint/bin/checkpoint", say=said.append)
    assert (root / "etc/modules-load.d/checkpoint.conf").read_text() == (
        REPO / "systemd/checkpoint.modules-load"
    ).read_text()
    assert any("modprobe -a cdc_acm usbserial" in s for s in said)
