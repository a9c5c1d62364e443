"""Field deployment: firmware fragments, systemd units, installer, sd_notify, chrony
socket, u-blox frames, LED/buzzer, the control socket and the field commands.

Real parts where they exist here: AF_UNIX sockets, a pty, the checkpoint-sim pin
factory, `sed`, `systemd-analyze verify` and `systemd-sysusers` (skipped where absent).
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import socket
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from waits import wait_for

from checkpoint.box import chronysock, control, indicator, notify
from checkpoint.cli.field import main as field_main
from checkpoint.config import ConfigError, parse
from checkpoint.errors import CommandError
from checkpoint.field import gpsconf, install

REPO = Path(__file__).resolve().parent.parent
FW = REPO / "firmware_config"
UNITS = REPO / "systemd"
PROGRAM = "/opt/checkpoint/bin/checkpoint"


# -- firmware_config ---------------------------------------------------------------------

_CONFIG_TXT_KEYS = {"enable_uart", "dtoverlay", "dtparam", "gpio"}


def _config_txt_settings(text: str) -> list[tuple[str, str]]:
    """Validate config.txt syntax: comments, [filters], key=value; return the settings."""
    settings = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if re.fullmatch(r"\[(all|pi[0-9]+|none|cm4|cm5)\]", line):
            continue
        m = re.fullmatch(r"([a-z_0-9]+)=(\S+)", line)
        assert m, f"config.txt line {n} is not key=value: {raw!r}"
        assert m.group(1) in _CONFIG_TXT_KEYS, f"line {n}: unexpected key {m.group(1)}"
        settings.append((m.group(1), m.group(2)))
    return settings


def test_config_txt_fragment_parses_and_sets_uart_pullups_and_no_pps_overlay():
    text = (FW / "config.txt").read_text()
    assert text.startswith("# checkpoint"), "header comment says where it goes"
    assert "/boot/firmware/config.txt" in text.split("BEGIN")[0]
    settings = _config_txt_settings(text)
    assert ("enable_uart", "1") in settings
    assert ("dtoverlay", "disable-bt") in settings
    assert ("dtparam", "uart0=on") in settings  # Pi 5 header UART
    gpio = [v for k, v in settings if k == "gpio"]
    assert "17,27=ip,pu" in gpio
    for value in gpio:
        assert re.fullmatch(r"[0-9]+(,[0-9]+)*=(ip|op)(,(pu|pd|pn|np|dh|dl))*", value), value
        assert "18" not in value.split("=")[0].split(","), "PPS pin must be left alone"
    assert not any(k == "dtoverlay" and v.startswith("pps-gpio") for k, v in settings)
    # The block the installer copies ends back in [all], so later user lines apply to all.
    block = install.firmware_block(text)
    assert [line for line in block.splitlines() if line.startswith("[")][-1] == "[all]"


_CMDLINES = [
    (
        "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 fsck.repair=yes"
        " rootwait quiet splash plymouth.ignore-serial-consoles cfg80211.ieee80211_regdom=GB\n",
        "console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 fsck.repair=yes"
        " rootwait quiet splash plymouth.ignore-serial-consoles cfg80211.ieee80211_regdom=GB\n",
    ),
    ("root=/dev/mmcblk0p2 console=ttyAMA0,115200 rootwait", "root=/dev/mmcblk0p2 rootwait"),
    ("console=tty1 root=/dev/sda2 console=ttyS0", "console=tty1 root=/dev/sda2"),
    ("console=tty1 root=/dev/sda2 rootwait", "console=tty1 root=/dev/sda2 rootwait"),
    ("console=serial0,115200 console=ttyAMA0,9600  quiet", "quiet"),
    ("quiet console=serial0,115200 console=ttyS0,9600", "quiet"),
    ("quiet xconsole=serial0 console=ttyS0x\n", "quiet xconsole=serial0 console=ttyS0x\n"),
]


@pytest.mark.parametrize(("before", "after"), _CMDLINES)
def test_cmdline_serial_console_removed_by_python_rule(before, after):
    assert install.strip_serial_console(before) == after
    assert install.strip_serial_console(after) == after  # idempotent


@pytest.mark.skipif(shutil.which("sed") is None, reason="no sed here")
@pytest.mark.parametrize(("before", "after"), _CMDLINES)
def test_cmdline_sed_file_does_what_the_installer_does(tmp_path, before, after):
    f = tmp_path / "cmdline.txt"
    f.write_text(before)
    subprocess.run(["sed", "-i", "-f", str(FW / "cmdline.sed"), str(f)], check=True)
    assert f.read_text() == after


_UDEV_PAIR = re.compile(
    r'\s*(?P<key>[A-Z_]+(\{[A-Za-z0-9_.-]+\})?)\s*(?P<op>==|!=|\+=|-=|:=|=)\s*"(?P<val>[^"]*)"\s*'
)
_UDEV_MATCH_KEYS = {"SUBSYSTEM", "KERNEL", "ATTRS", "ACTION", "SUBSYSTEMS", "KERNELS"}
_UDEV_ASSIGN_KEYS = {"SYMLINK", "GROUP", "MODE", "OWNER"}


def _udev_rules(text: str) -> list[dict[str, tuple[str, str]]]:
    rules = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        rule: dict[str, tuple[str, str]] = {}
        for part in raw.split(","):
            m = _UDEV_PAIR.fullmatch(part)
            assert m, f"udev line {n}: bad pair {part!r}"
            key, op = m.group("key"), m.group("op")
            base = key.split("{")[0]
            if op in ("==", "!="):
                assert base in _UDEV_MATCH_KEYS, f"line {n}: {key} is not a match key"
            else:
                assert base in _UDEV_ASSIGN_KEYS, f"line {n}: {key} is not an assignment key"
            rule[key] = (op, m.group("val"))
        rules.append(rule)
    return rules


def test_udev_rules_parse_and_name_gps0_and_gpiochip():
    text = (FW / "99-checkpoint.rules").read_text()
    assert "/etc/udev/rules.d/" in text.splitlines()[2]
    rules = _udev_rules(text)
    gps = [r for r in rules if r.get("SYMLINK") == ("+=", "gps0")]
    assert any(r["KERNEL"] == ("==", "ttyAMA0") for r in gps)
    assert all(r["GROUP"] == ("=", "dialout") and r["MODE"] == ("=", "0660") for r in gps)
    chips = [r for r in rules if r.get("KERNEL") == ("==", "gpiochip*")]
    assert chips and chips[0]["GROUP"] == ("=", "gpio")


@pytest.mark.skipif(shutil.which("udevadm") is None, reason="no udevadm here")
def test_udev_rules_pass_udevadm_verify(tmp_path):
    probe = subprocess.run(["udevadm", "verify", "--help"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("udevadm has no verify (systemd < 254)")
    out = subprocess.run(
        ["udevadm", "verify", str(FW / "99-checkpoint.rules")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


_CHRONY_DIRECTIVES = {"refclock", "maxslewrate", "makestep", "driftfile"}


def test_chrony_fragment_parses_and_feeds_from_the_daemon_socket():
    text = (FW / "chrony-checkpoint.conf").read_text()
    assert "/etc/chrony/conf.d/" in text.split("\n\n")[0]
    directives = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!;%":
            continue
        words = line.split()
        assert words[0] in _CHRONY_DIRECTIVES, f"unexpected chrony directive {words[0]}"
        directives.append(words)
    refclock = next(w for w in directives if w[0] == "refclock")
    assert refclock[1:3] == ["SOCK", chronysock.DEFAULT_PATH]
    opts = dict(zip(refclock[3::2], refclock[4::2], strict=False))
    assert opts["refid"] == "GPS"
    slew = next(w for w in directives if w[0] == "maxslewrate")
    assert 0 < float(slew[1]) <= 100, "chrony must not bend CLOCK_MONOTONIC fast"


@pytest.mark.skipif(shutil.which("chronyd") is None, reason="chronyd not installed here")
def test_chrony_fragment_passes_chronyd_parse(tmp_path):
    out = subprocess.run(
        ["chronyd", "-p", "-f", str(FW / "chrony-checkpoint.conf")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


# -- systemd units -------------------------------------------------------------------------


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A tiny unit-file parser: {section: [(key, value), ...]}; fails on anything odd."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[(Unit|Service|Install)\]", line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        m = re.fullmatch(r"([A-Za-z]+)=(.*)", line)
        assert m and current is not None, f"{path.name}:{n}: not Key=value in a section"
        current.append((m.group(1), m.group(2)))
    return sections


def _values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit[section] if k == key]


def test_box_unit_is_notify_with_watchdog_and_hardened_but_reaches_gpio_and_serial():
    unit = _unit(UNITS / "checkpoint.service")
    svc = dict(unit["Service"])  # last value wins, as in systemd, for single-valued keys
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0
    assert svc["Restart"] == "always"
    assert svc["ExecStart"].startswith("@CHECKPOINT@ run --config ")
    assert svc["User"] == "checkpoint"
    assert set(svc["SupplementaryGroups"].split()) == {"gpio", "dialout"}
    assert svc["StateDirectory"] == "checkpoint" and svc["ConfigurationDirectory"] == "checkpoint"
    assert svc["WorkingDirectory"] == "%S/checkpoint"
    assert "LG_WD=%S/checkpoint" in _values(unit, "Service", "Environment")
    assert svc["DevicePolicy"] == "closed"
    allowed = _values(unit, "Service", "DeviceAllow")
    assert "char-gpiochip rw" in allowed and "/dev/gps0 rw" in allowed
    assert svc["CapabilityBoundingSet"] == ""
    assert svc["ProtectSystem"] == "strict" and svc["ProtectHome"] == "yes"
    assert svc["PrivateTmp"] == "yes" and svc["NoNewPrivileges"] == "yes"
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert svc["SystemCallFilter"] == "@system-service"
    # PrivateDevices would hide /dev/gpiochip*; PrivateUsers would unmap gpio/dialout.
    assert "PrivateDevices" not in svc and "PrivateUsers" not in svc
    assert dict(unit["Unit"])["StartLimitIntervalSec"] == "0"
    assert dict(unit["Install"])["WantedBy"] == "multi-user.target"


def test_hq_unit_parses():
    unit = _unit(UNITS / "checkpoint-hq.service")
    svc = dict(unit["Service"])
    assert svc["ExecStart"].startswith("@CHECKPOINT@ hq run --db %S/checkpoint-hq/")
    assert svc["DynamicUser"] == "yes" and svc["Restart"] == "always"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_pass_systemd_analyze_verify(tmp_path):
    names = ["checkpoint.service", "checkpoint-hq.service"]
    for name in names:
        text = install.render_unit((UNITS / name).read_text(), install.program_path())
        (tmp_path / name).write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", *[str(tmp_path / n) for n in names]],
        capture_output=True,
        text=True,
    )
    # verify exits 0 even for unknown keys or bad values; its warnings name our files.
    ours = [line for line in out.stderr.splitlines() if str(tmp_path) in line]
    assert out.returncode == 0 and not ours, out.stderr


def test_sysusers_file_declares_user_and_groups():
    lines = [
        line.split()
        for line in (UNITS / "checkpoint.sysusers").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ["u", "checkpoint", "-"] == lines[[w[0] for w in lines].index("u")][:3]
    assert ["m", "checkpoint", "gpio"] in lines and ["m", "checkpoint", "dialout"] in lines


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_file_creates_the_user_in_a_scratch_root(tmp_path):
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc" / name).write_text("")
    cmd = ["systemd-sysusers", f"--root={tmp_path}", str(UNITS / "checkpoint.sysusers")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    assert re.search(
        r"^checkpoint:x:\d+:\d+:.*:/var/lib/checkpoint:/usr/sbin/nologin$", passwd, re.M
    )
    group = (tmp_path / "etc/group").read_text()
    assert re.search(r"^gpio:x:\d+:checkpoint$", group, re.M)
    assert re.search(r"^dialout:x:\d+:checkpoint$", group, re.M)
    before = passwd + group
    subprocess.run(cmd, check=True, capture_output=True)  # idempotent
    assert (tmp_path / "etc/passwd").read_text() + (tmp_path / "etc/group").read_text() == before


# -- installer -----------------------------------------------------------------------------


def _pi_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text(
        "# stock\ndtparam=audio=on\n[pi4]\narm_boost=1\n[all]\ndtoverlay=pps-gpio,gpiopin=18\n"
    )
    (root / "boot/firmware/cmdline.txt").write_text(_CMDLINES[0][0])
    return root


def _install(root: Path, **kw) -> tuple[int, list[str]]:
    said: list[str] = []
    n = install.install(root, program=PROGRAM, say=said.append, **kw)
    return n, said


def test_install_into_a_temporary_root_then_second_run_changes_nothing(tmp_path):
    root = _pi_root(tmp_path)
    n, said = _install(root, yes=True)
    unit = (root / "etc/systemd/system/checkpoint.service").read_text()
    assert f"ExecStart={PROGRAM} run --config %E/checkpoint/box.toml" in unit
    assert "@CHECKPOINT@" not in unit
    assert (root / "usr/lib/sysusers.d/checkpoint.conf").read_text() == (
        UNITS / "checkpoint.sysusers"
    ).read_text()
    assert (root / "etc/udev/rules.d/99-checkpoint.rules").is_file()
    assert (root / "etc/chrony/conf.d/checkpoint.conf").is_file()
    assert (root / "etc/checkpoint/box.toml").read_text() == (
        REPO / "examples/box.toml"
    ).read_text()
    assert stat.S_IMODE((root / "etc/checkpoint/box.toml").stat().st_mode) == 0o644
    config_txt = (root / "boot/firmware/config.txt").read_text()
    assert config_txt.startswith("# stock\ndtparam=audio=on\n")
    assert "#dtoverlay=pps-gpio,gpiopin=18  # disabled by checkpoint" in config_txt
    assert config_txt.rstrip().endswith(install.END)
    assert "enable_uart=1" in config_txt
    assert "console=serial0" not in (root / "boot/firmware/cmdline.txt").read_text()
    assert n == 11  # 9 system files + config.txt + cmdline.txt
    assert any("not run (--root" in s and "systemctl enable checkpoint.service" in s for s in said)
    assert not any("running" in s for s in said), "no command runs outside the real root"

    snapshot = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    n2, said2 = _install(root, yes=True)
    assert n2 == 0 and said2[-1] == "nothing to change: already installed"
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == snapshot


def test_install_never_overwrites_an_existing_box_config(tmp_path):
    root = _pi_root(tmp_path)
    cfg = root / "etc/checkpoint/box.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("# the marshal's own\n")
    _, said = _install(root, yes=True)
    assert cfg.read_text() == "# the marshal's own\n"
    assert "kept     /etc/checkpoint/box.toml (exists; yours)" in said


def test_install_asks_before_touching_firmware_and_no_means_no(tmp_path):
    root = _pi_root(tmp_path)
    before = (root / "boot/firmware/config.txt").read_text()
    questions: list[str] = []

    def ask(q: str) -> bool:
        questions.append(q)
        return False

    _, said = _install(root, ask=ask)
    assert questions and "firmware" in questions[0]
    assert (root / "boot/firmware/config.txt").read_text() == before
    diff = "\n".join(said)
    assert "+enable_uart=1" in diff and "\n-console=serial0,115200 console=tty1" in diff
    assert "firmware files left unchanged" in said
    _, said = _install(root, firmware=False)
    assert "firmware files not checked (--no-firmware)" in said


def test_install_skips_firmware_when_not_a_pi(tmp_path):
    _, said = _install(tmp_path / "root", yes=True)
    assert any("/boot/firmware/config.txt: not found" in s for s in said)


def test_install_cli_with_root_and_yes(tmp_path, capsys):
    root = _pi_root(tmp_path)
    argv = ["install", "--root", str(root), "--yes", "--program", PROGRAM]
    assert field_main(argv) == 0
    assert "created  /etc/systemd/system/checkpoint.service" in capsys.readouterr().out
    assert field_main(argv) == 0
    assert "nothing to change: already installed" in capsys.readouterr().out


def test_merge_config_txt_replaces_its_own_block():
    block = install.firmware_block((FW / "config.txt").read_text())
    once = install.merge_config_txt("a=1\n", block)
    assert install.merge_config_txt(once, block) == once
    edited = once.replace("enable_uart=1", "enable_uart=0") + "b=2\n"
    again = install.merge_config_txt(edited, block)
    assert again.count(install.BEGIN) == 1 and "enable_uart=0" not in again and "b=2" in again
    # An overlay on another pin is someone else's: left alone.
    other = install.merge_config_txt("dtoverlay=pps-gpio,gpiopin=4\n", block)
    assert other.startswith("dtoverlay=pps-gpio,gpiopin=4\n")


# -- sd_notify -----------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_notify_sends_ready_watchdog_status_stopping_to_a_real_socket(notify_socket):
    path, sock = notify_socket
    env = {"NOTIFY_SOCKET": path}
    assert notify.ready("box07 at PC3", env=env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=box07 at PC3"
    assert notify.watchdog(env=env)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notify.status("line one\nline two", env=env)
    assert sock.recv(4096) == b"STATUS=line one line two"
    assert notify.stopping(env=env)
    assert sock.recv(4096) == b"STOPPING=1"


def test_notify_never_blocks_on_a_reader_that_does_not_read(notify_socket):
    path, _sock = notify_socket  # bound, never read: its queue fills up
    env = {"NOTIFY_SOCKET": path}
    t0 = time.monotonic()
    sent = [notify.watchdog(env=env) for _ in range(2000)]
    assert time.monotonic() - t0 < 2
    assert sent[0] and not sent[-1]


def test_notify_abstract_namespace_socket():
    name = f"checkpoint-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert notify.ready(env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"READY=1"
    finally:
        sock.close()


def test_notify_outside_systemd_is_a_quiet_no_op(tmp_path):
    assert notify.ready(env={}) is False
    assert notify.watchdog(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_watchdog_interval_from_systemd_environment():
    pid = str(os.getpid())
    assert notify.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 30.0
    assert notify.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert notify.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_interval_s({}) is None


def test_watchdog_pings_only_while_every_check_passes(notify_socket):
    path, sock = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    now = [100.0]
    wd = notify.Watchdog(
        notify.watchdog_interval_s(env), send=lambda: notify.watchdog(env=env), clock=lambda: now[0]
    )
    reader = threading.Thread(target=lambda: None)
    reader.start()
    reader.join()
    bytes_read = [0]
    gpio_ok = [True]
    wd.register("gpio", lambda: None if gpio_ok[0] else "callback thread dead")
    wd.register("serial", wd.progressing(lambda: bytes_read[0], 5, "GPS bytes"))
    wd.register("mqtt", notify.Watchdog.thread_alive(lambda: threading.current_thread(), "paho"))

    assert wd.tick() and sock.recv(64) == b"WATCHDOG=1"
    assert not wd.tick(), "rate-limited to half the period"
    now[0] += 1.0
    assert wd.tick() and sock.recv(64) == b"WATCHDOG=1"
    gpio_ok[0] = False
    now[0] += 1.0
    assert not wd.tick() and wd.failing == {"gpio": "callback thread dead"}
    gpio_ok[0] = True
    now[0] += 6.0  # serial counter stood still for > 5 s
    assert not wd.tick() and "serial" in wd.failing
    bytes_read[0] += 80
    assert wd.tick() and sock.recv(64) == b"WATCHDOG=1"
    wd.register("dead", notify.Watchdog.thread_alive(lambda: reader, "reader"))
    now[0] += 1.0
    assert not wd.tick() and wd.failing["dead"] == "reader thread is not running"
    # The marker: a datagram sent to the same socket now comes next, so no ping was
    # sent by the failing ticks before it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.sendto(b"MARKER", path)
    assert sock.recv(64) == b"MARKER"


def test_watchdog_progress_check_excused_while_port_closed():
    now = [0.0]
    wd = notify.Watchdog(None, clock=lambda: now[0])
    closed = [True]
    check = wd.progressing(lambda: 0, 5, "GPS bytes", unless=lambda: closed[0])
    now[0] = 60
    assert check() is None
    closed[0] = False
    now[0] = 64
    assert check() is None
    now[0] = 66
    assert check() == "no GPS bytes for 6 s"


# -- chrony SOCK refclock ------------------------------------------------------------------


def test_sock_sample_layout_matches_chrony_struct_by_hand():
    sample = chronysock.Sample(realtime_ns=1_713_719_000_123_456_789, offset_ns=-2_500)
    data = chronysock.pack(sample, time_bits=64)
    # struct sock_sample on 64-bit Linux: tv_sec, tv_usec (8 each), double, 4 ints.
    assert len(data) == 40
    sec, usec, offset, pulse, leap, pad, magic = struct.unpack("=qqdiiii", data)
    assert (sec, usec) == (1_713_719_000, 123_456)
    assert offset == pytest.approx((-2_500 + 789) / 1e9, abs=1e-15)
    assert (pulse, leap, pad) == (0, 0, 0)
    assert data[-4:] == struct.pack("=i", 0x534F434B) and magic == 0x534F434B
    assert len(chronysock.pack(sample, time_bits=32)) == 32  # armhf: 32-bit time_t
    back = chronysock.unpack(data, time_bits=64)
    assert back.realtime_ns + back.offset_ns == sample.realtime_ns + sample.offset_ns
    with pytest.raises(ValueError):
        chronysock.pack(chronysock.Sample(0, 0, leap=3))


def test_chrony_socket_delivers_native_samples_to_a_listening_socket(tmp_path):
    path = str(tmp_path / "chrony.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    feeder = chronysock.ChronySocket(path)
    try:
        truth_offset = 1_234_567
        sample = chronysock.measure(lambda mono: mono + 10**18)
        assert sample is not None
        sample = chronysock.measure(lambda mono: None)
        assert sample is None
        s = chronysock.Sample(time.time_ns(), truth_offset)
        assert feeder.send(s)
        data = server.recv(128)
        assert len(data) == struct.calcsize("@lldiiii")
        got = chronysock.unpack(data)
        assert got.realtime_ns + got.offset_ns == s.realtime_ns + s.offset_ns
        assert feeder.sent == 1
    finally:
        feeder.close()
        server.close()


def test_chrony_socket_absent_is_not_an_error(tmp_path):
    feeder = chronysock.ChronySocket(str(tmp_path / "no-chrony.sock"))
    try:
        assert feeder.send(chronysock.Sample(time.time_ns(), 0)) is False
        assert feeder.failed == 1
    finally:
        feeder.close()


def test_measure_pairs_realtime_with_the_midpoint_of_two_monotonic_reads():
    monos = iter([1_000, 3_000])
    sample = chronysock.measure(
        lambda mono: 5_000_000_000 + mono, mono=lambda: next(monos), real=lambda: 4_999_000_000
    )
    assert sample == chronysock.Sample(realtime_ns=4_999_000_000, offset_ns=1_002_000)


# -- u-blox frames ---------------------------------------------------------------------------


def _fletcher(body: bytes) -> bytes:
    # UBX spec, "UBX Checksum": over class, id, length and payload, 8-bit sums.
    ck_a = ck_b = 0
    for b in body:
        ck_a = (ck_a + b) % 256
        ck_b = (ck_b + ck_a) % 256
    return bytes([ck_a, ck_b])


def test_ubx_known_good_frames():
    # Widely published frames: enable ZDA on the current port, and save everything.
    assert gpsconf.cfg_msg_rate(0xF0, 0x08, 1) == bytes.fromhex("B562 0601 0300 F008 01 0320")
    assert gpsconf.cfg_save() == bytes.fromhex("B562 0609 0D00 00000000 FFFF0000 00000000 17 31BF")


def test_ubx_nav5_stationary_frame_by_hand():
    payload = bytes([0x01, 0x00, 0x02]) + bytes(33)  # mask=dyn only, dynModel=2
    body = bytes([0x06, 0x24, 36, 0]) + payload
    # By hand: CK_A = 6+0x24+0x24+1+2 = 0x51 (zeros add nothing);
    # CK_B = 6+42+78+78+79+79+81 + 33*81 = 3116 = 0x2C mod 256.
    assert _fletcher(body) == b"\x51\x2c"
    assert gpsconf.cfg_nav5_stationary() == b"\xb5\x62" + body + b"\x51\x2c"


def test_ubx_tp5_locked_only_frame_by_hand():
    payload = (
        bytes([0, 1, 0, 0])  # tpIdx 0, version 1, reserved
        + (50).to_bytes(2, "little")  # antCableDelay 50 ns
        + bytes(2)  # rfGroupDelay
        + (1_000_000).to_bytes(4, "little")  # period unlocked 1 s
        + (1_000_000).to_bytes(4, "little")  # period locked 1 s
        + bytes(4)  # pulse length unlocked 0: no pulse without a fix
        + (100_000).to_bytes(4, "little")  # pulse length locked 100 ms
        + bytes(4)  # userConfigDelay
        + (0x77).to_bytes(4, "little")  # active|lockGpsFreq|lockedOtherSet|isLength|align|rising
    )
    assert len(payload) == 32
    body = bytes([0x06, 0x31, 32, 0]) + payload
    frame = gpsconf.cfg_tp5_locked_only()
    assert frame[:-2] == b"\xb5\x62" + body
    assert frame[-2:] == _fletcher(body) == bytes.fromhex("4AB6")


class FakeUblox:
    """An in-memory u-blox: answers each valid CFG frame with ACK (or NAK for some ids)."""

    def __init__(self, nak: set[int] = frozenset(), silent: bool = False) -> None:
        self.nak, self.silent = nak, silent
        self.frames: list[bytes] = []
        self.out = bytearray(b"$GPRMC,noise*00\r\n")

    def write(self, data: bytes) -> int:
        assert data[:2] == b"\xb5\x62" and _fletcher(data[2:-2]) == data[-2:]
        self.frames.append(data)
        if not self.silent:
            ack = 0x00 if data[3] in self.nak else 0x01
            body = bytes([0x05, ack, 2, 0, data[2], data[3]])
            # NMEA keeps flowing around the ACK, split across reads.
            self.out += b"$GPGGA,1*00\r\n\xb5\x62" + body + _fletcher(body) + b"$GPZDA*00\r\n"
        return len(data)

    def read(self, n: int) -> bytes:
        n = min(n, 7)
        chunk, self.out[:n] = bytes(self.out[:n]), b""
        return chunk


def test_configure_sends_all_frames_and_reads_acks_among_nmea():
    rx = FakeUblox()
    results = gpsconf.configure(rx, timeout_s=0.5)
    # ZDA on, then GSV GSA GLL VTG off: the output fits the factory 9600 baud
    assert [r.name for r in results] == ["CFG-NAV5", "CFG-TP5"] + ["CFG-MSG"] * 5 + ["CFG-CFG"]
    assert all(r.ok for r in results)
    assert rx.frames == [s.data for s in gpsconf.timing_settings()]


def test_configure_reports_nak_and_silence():
    results = gpsconf.configure(FakeUblox(nak={0x31}), timeout_s=0.5)
    assert [r.outcome for r in results] == ["ack", "nak"] + ["ack"] * 6
    rx = FakeUblox(silent=True)
    results = gpsconf.configure(rx, timeout_s=0.1)
    assert [r.outcome for r in results] == ["no answer", "no answer"] + ["not sent"] * 6
    assert len(rx.frames) == 2


def test_configure_over_a_bytesio_port_writes_frames():
    class Port(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            return b""

    port = Port()
    results = gpsconf.configure(port, timeout_s=0.05)
    assert port.getvalue().startswith(gpsconf.cfg_nav5_stationary())
    assert not any(r.ok for r in results)


def test_configure_through_a_real_pty():
    master, slave = os.openpty()

    class FdPort:
        def write(self, data: bytes) -> int:
            return os.write(slave, data)

        def read(self, n: int) -> bytes:
            ready, _, _ = select.select([slave], [], [], 0.05)
            return os.read(slave, n) if ready else b""

    stop = threading.Event()

    def receiver() -> None:
        # The "receiver" end: reads frames from the pty master, answers ACKs.
        buf = bytearray()
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            buf += os.read(master, 1024)
            while len(buf) >= 8 and buf[:2] == b"\xb5\x62":
                length = buf[4] | buf[5] << 8
                if len(buf) < 8 + length:
                    break
                body = bytes([0x05, 0x01, 2, 0, buf[2], buf[3]])
                os.write(master, b"\xb5\x62" + body + _fletcher(body))
                del buf[: 8 + length]

    import termios
    import tty

    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    t = threading.Thread(target=receiver, daemon=True)
    t.start()
    try:
        results = gpsconf.configure(FdPort(), timeout_s=2)
    finally:
        stop.set()
        t.join(1)
        os.close(master)
        os.close(slave)
    assert [r.outcome for r in results] == ["ack"] * 8


def test_gps_configure_dry_run_prints_frames(capsys, tmp_path):
    assert field_main(["gps", "configure", "--dry-run", "--config", str(tmp_path / "no")]) == 0
    out = capsys.readouterr().out
    assert "would send to /dev/gps0 at 9600 baud" in out
    assert "B5 62 06 01 03 00 F0 08 01 03 20" in out


def test_gps_configure_opens_the_port_through_nmea_open_port(monkeypatch, capsys):
    from checkpoint.box import gps_serial

    rx = FakeUblox()
    rx.close = lambda: None
    opened = []
    monkeypatch.setattr(
        gps_serial, "open_port", lambda url, baud: opened.append((url, baud)) or rx, raising=False
    )
    monkeypatch.setattr("checkpoint.field.doctor.service_state", lambda: "unknown")
    rc = field_main(["gps", "configure", "--port", "loop://", "--baudrate", "38400"])
    assert rc == 0 and opened == [("loop://", 38400)]
    assert "receiver configured for timing" in capsys.readouterr().out


# -- LED and buzzer ------------------------------------------------------------------------


def test_led_patterns_are_distinct_and_as_documented():
    S = indicator.LedState
    assert indicator.schedule(S.READY, 5000) == [(0, True)]
    assert indicator.schedule(S.OFF, 5000) == [(0, False)]
    assert indicator.schedule(S.NO_GPS, 4500) == [
        (0, True),
        (1000, False),
        (2000, True),
        (3000, False),
        (4000, True),
    ]
    assert indicator.schedule(S.NO_BROKER, 600) == [
        (0, True),
        (125, False),
        (250, True),
        (375, False),
        (500, True),
    ]
    assert indicator.schedule(S.FAULT, 3000) == [
        (0, True),
        (150, False),
        (300, True),
        (450, False),
        (1500, True),
        (1650, False),
        (1800, True),
        (1950, False),
    ]
    traces = {s: tuple(indicator.schedule(s, 3000)) for s in S}
    assert len(set(traces.values())) == len(S)
    assert indicator.next_change(S.FAULT, 460) == 1040
    assert indicator.next_change(S.READY, 10) is None


def _status(clock="locked", **inputs):
    return {"clock": clock, "inputs": {n: dict(v) for n, v in inputs.items()}}


def test_led_state_priority_and_blocked_beam_hold():
    S = indicator.LedState
    ch = indicator.Chooser(blocked_after_s=2)
    clear = {"broken": False, "fault": False}
    assert ch.choose(0, _status(beam=clear), True) == S.READY
    assert ch.choose(0, _status(beam=clear), False) == S.NO_BROKER
    assert ch.choose(0, _status("nmea", beam=clear), False) == S.NO_GPS
    assert ch.choose(0, _status("nmea", beam={"fault": True}), False) == S.FAULT
    broken = {"broken": True, "fault": False}
    assert ch.choose(10, _status(beam=broken), True) == S.READY  # a car, for now
    assert ch.choose(11.9, _status(beam=broken), True) == S.READY
    assert ch.choose(12, _status(beam=broken), True) == S.FAULT  # blocked
    assert ch.choose(12.1, _status(beam=clear), True) == S.READY


class _DriverClock:
    """The indicator's clock, remembering the last reading each thread took: a pin
    write is then checked against the pure pattern at the time the driver read, so
    the test asserts what the driver decided, not how late a loaded machine woke it."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def __call__(self) -> float:
        now = time.monotonic()
        self.last[threading.current_thread().name] = now
        return now


class _RecordingPin:
    """A sim-factory pin that logs (driver's clock reading, level) for every write."""

    def __init__(self, pin, clock: _DriverClock) -> None:
        self.pin, self.clock, self.writes = pin, clock, []

    @property
    def function(self):
        return self.pin.function

    @function.setter
    def function(self, value) -> None:
        self.pin.function = value

    @property
    def state(self):
        return self.pin.state

    @state.setter
    def state(self, value) -> None:
        self.writes.append((self.clock.last.get("indicator"), int(value)))
        self.pin.state = value


def test_indicator_drives_led_and_buzzer_pins_on_the_sim_factory():
    from sim.pins import SimFactory

    S = indicator.LedState
    factory = SimFactory()
    try:
        cfg = parse(
            {
                "box": {"id": "b", "checkpoint": "c"},
                "indicator": {"led_pin": "GPIO23", "buzzer_pin": "GPIO24", "chirp_ms": 50},
            }
        ).indicator
        wired = indicator.Indicator.from_factory(factory, cfg)
        assert wired is not None and wired.chirp_ms == 50
        led_pin, buzzer_pin = factory.pin("GPIO23"), factory.pin("GPIO24")
        assert led_pin.function == "output" and buzzer_pin.function == "output"
        clock = _DriverClock()
        led, buzzer = _RecordingPin(led_pin, clock), _RecordingPin(buzzer_pin, clock)
        # A chirp longer than a blink, so a slow first wake still sees it sounding.
        ind = indicator.Indicator(led, buzzer, chirp_ms=250, clock=clock).start()
        ind.show(S.NO_BROKER)
        blink_from = clock.last["MainThread"]
        wait_for(lambda: len(led.writes) >= 6, 10, "off, then three fast blinks")
        ind.chirp()
        chirp_at = clock.last["MainThread"]
        wait_for(lambda: len(buzzer.writes) >= 3, 10, "a chirp, on then off")
        ind.show(S.READY)
        ready_from = clock.last["MainThread"]
        # The marker: the driver has read its clock after the change (and, holding its
        # lock until it waits again, written READY's level before close() gets in).
        wait_for(lambda: clock.last["indicator"] > ready_from, 10, "the driver to see READY")
        ind.close()
    finally:
        factory.close()
    levels = [s for _, s in led.writes]
    # off, then fast blink: on/off every 125 ms, then steady on (READY), then off on close.
    assert levels[:6] == [0, 1, 0, 1, 0, 1], led.writes
    assert levels[-2:] == [1, 0]
    # Each blink write is the pure pattern's level at the moment the driver read.
    blinks = [(t, s) for t, s in led.writes[1:] if t is not None and t < ready_from]
    assert len(blinks) >= 5
    for t, s in blinks:
        assert s == indicator.level_at(S.NO_BROKER, int((t - blink_from) * 1000)), led.writes
    assert [s for _, s in buzzer.writes] == [0, 1, 0]
    # The driver turns the buzzer off only once its clock has passed the chirp's length.
    assert buzzer.writes[2][0] >= chirp_at + 0.25, (chirp_at, buzzer.writes)


def test_indicator_active_low_and_absent_pins():
    from sim.pins import SimFactory

    factory = SimFactory()
    try:
        none = parse({"box": {"id": "b", "checkpoint": "c"}}).indicator
        assert indicator.Indicator.from_factory(factory, none) is None
        pin = factory.pin("GPIO23")
        ind = indicator.Indicator(pin, None, active_low=True).start()
        ind.show(indicator.LedState.READY)
        wait_for(lambda: pin.state == 0, 10, "lit = pulled low")
        ind.chirp()  # no buzzer fitted: nothing happens
        ind.close()
        assert pin.state == 1
    finally:
        factory.close()


# -- config keys ---------------------------------------------------------------------------


def test_config_indicator_and_control_keys():
    base = {"box": {"id": "b", "checkpoint": "c"}}
    cfg = parse(base)
    assert cfg.indicator.led_pin is None and cfg.control.socket == ""
    cfg = parse({**base, "indicator": {"led_pin": "GPIO23"}, "control": {"socket": "/run/x.sock"}})
    assert cfg.indicator.led_pin == "GPIO23" and cfg.control.socket == "/run/x.sock"
    with pytest.raises(ConfigError, match=r"indicator.led_pin: GPIO17 is already used by input"):
        parse({**base, "indicator": {"led_pin": "GPIO17"}})
    with pytest.raises(ConfigError, match=r"indicator.buzzer_pin: GPIO18 is already used by gps"):
        parse({**base, "indicator": {"buzzer_pin": "GPIO18"}})
    with pytest.raises(ConfigError, match=r"buzzer_pin: GPIO23 is already used by indicator.led"):
        parse({**base, "indicator": {"led_pin": "GPIO23", "buzzer_pin": "GPIO23"}})
    with pytest.raises(ConfigError, match=r"control.socket: must be an absolute path"):
        parse({**base, "control": {"socket": "rel.sock"}})
    assert cfg.chrony.socket == chronysock.DEFAULT_PATH
    assert parse({**base, "chrony": {"socket": ""}}).chrony.socket == ""
    with pytest.raises(ConfigError, match=r"chrony.socket: must be an absolute path"):
        parse({**base, "chrony": {"socket": "chrony.sock"}})
    with pytest.raises(ConfigError, match=r"unknown key indicator.led"):
        parse({**base, "indicator": {"led": "GPIO23"}})


# -- control socket ------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path):
    calls: list[tuple[str, int, str]] = []

    def handler(kind: str, seq: int, value: str) -> None:
        if seq == 999:
            raise CommandError("no event with seq 999 in this store")
        calls.append((kind, seq, value))

    path = str(tmp_path / "control.sock")
    srv = control.ControlServer(path, handler).start()
    yield srv, calls
    srv.close()


def test_control_assign_and_void_reach_the_handler(server):
    srv, calls = server
    assert control.assign(srv.path, 17, " 42 ") == {"ok": True}
    assert control.void(srv.path, 18, "photographer") == {"ok": True}
    assert calls == [("assign", 17, "42"), ("void", 18, "photographer")]
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o660


def test_control_handler_refusal_is_the_reply(server):
    srv, calls = server
    reply = control.request(srv.path, {"cmd": "assign", "seq": 999, "car": "7"})
    assert reply == {"ok": False, "error": "no event with seq 999 in this store"}
    assert calls == []


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"cmd": "resend", "seq": 1}, "cmd must be 'assign' or 'void'"),
        ({"cmd": "assign", "seq": 0, "car": "1"}, "seq must be a positive integer"),
        ({"cmd": "assign", "seq": True, "car": "1"}, "seq must be a positive integer"),
        ({"cmd": "assign", "seq": "5", "car": "1"}, "seq must be a positive integer"),
        ({"cmd": "assign", "seq": 5, "car": "x" * 17}, "car must be 1-16 printable"),
        ({"cmd": "assign", "seq": 5, "car": "4\n2"}, "car must be 1-16 printable"),
        ({"cmd": "assign", "seq": 5, "car": 42}, "car must be a string"),
        ({"cmd": "void", "seq": 5, "reason": "  "}, "reason must be 1-200 printable"),
        ({"cmd": "void", "seq": 5, "reason": "r" * 201}, "reason must be 1-200 printable"),
        ({"cmd": "void", "seq": 5, "reason": "x", "by": "me"}, "unknown field by for void"),
        ([1, 2], "request must be a JSON object"),
    ],
)
def test_control_validates_requests(server, payload, error):
    srv, calls = server
    reply = control.request(srv.path, payload)
    assert reply["ok"] is False and error in reply["error"]
    assert calls == []
    with pytest.raises(CommandError, match=re.escape(error)):
        control.validate(payload)


def test_control_rejects_junk_and_oversize_and_survives_a_silent_client(server):
    srv, calls = server
    assert srv.handle_bytes(b"not json\n")["error"].startswith("request is not JSON")
    assert "longer than" in srv.handle_bytes(b"{" + b" " * 5000 + b"}")["error"]
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(srv.path)
    try:
        t0 = time.monotonic()
        assert control.assign(srv.path, 3, "9") == {"ok": True}
        assert time.monotonic() - t0 < 4
    finally:
        silent.close()
    assert calls == [("assign", 3, "9")]


def test_control_replaces_a_stale_socket_but_not_a_live_one(tmp_path):
    path = str(tmp_path / "c.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: a killed daemon's leftover
    srv = control.ControlServer(path, lambda *a: None).start()
    try:
        with pytest.raises(control.ControlError, match="another daemon is serving"):
            control.ControlServer(path, lambda *a: None)
    finally:
        srv.close()
    assert not os.path.exists(path)
    Path(path).write_text("x")
    with pytest.raises(control.ControlError, match="not a socket"):
        control.ControlServer(path, lambda *a: None)


def test_control_client_errors_name_the_fix(tmp_path):
    with pytest.raises(control.ControlError, match="is the daemon running"):
        control.assign(str(tmp_path / "none.sock"), 1, "1")
    with pytest.raises(CommandError):
        control.assign(str(tmp_path / "none.sock"), 1, "")
    with pytest.raises(control.ControlError, match="longer than"):
        control.ControlServer("/tmp/" + "x" * 120, lambda *a: None)


def test_control_socket_path_defaults_beside_the_store():
    cfg = parse({"box": {"id": "b", "checkpoint": "c"}, "store": {"path": "/var/lib/x/box.db"}})
    assert control.socket_path(cfg) == "/var/lib/x/control.sock"
    cfg = parse({"box": {"id": "b", "checkpoint": "c"}, "control": {"socket": "/run/c/ctl.sock"}})
    assert control.socket_path(cfg) == "/run/c/ctl.sock"


def test_assign_and_void_commands_through_the_socket(tmp_path, capsys):
    calls = []
    srv = control.ControlServer(str(tmp_path / "control.sock"), lambda *a: calls.append(a))
    srv.start()
    cfg = tmp_path / "box.toml"
    cfg.write_text(f'[box]\nid = "b"\ncheckpoint = "c"\n[store]\npath = "{tmp_path}/box.db"\n')
    try:
        assert field_main(["assign", "17", "42", "--config", str(cfg)]) == 0
        assert "seq 17 = car 42: queued" in capsys.readouterr().out
        assert field_main(["void", "18", "--reason", "insect", "--config", str(cfg)]) == 0
        assert field_main(["assign", "19", "x" * 20, "--config", str(cfg)]) == 1
        assert "car must be 1-16" in capsys.readouterr().err
    finally:
        srv.close()
    assert calls == [("assign", 17, "42"), ("void", 18, "insect")]
    assert field_main(["void", "18", "--reason", "x", "--config", str(cfg)]) == 1
    assert "no control socket" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        field_main(["assign", "0", "42", "--config", str(cfg)])


# -- the hooks in a running daemon ---------------------------------------------------------


def _daemon_has_field_hooks() -> bool:
    import checkpoint.box.daemon

    return "FieldKit(" in Path(checkpoint.box.daemon.__file__).read_text()


class _Systemd:
    """A NOTIFY_SOCKET read as systemd does: always, every datagram kept."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[bytes] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(256))
            except TimeoutError:
                continue

    def notified(self, timeout: float, want, what: str, detail) -> None:
        wait_for(lambda: any(want(m) for m in list(self.messages)), timeout, what, detail=detail)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(1)
        self.sock.close()


def _marshal_assigns_car_42(ctl: str, sub) -> None:
    """Over the control socket, as `checkpoint assign` does; the box publishes it."""

    # seq 1 exists once stamped: ask until the box has it, as a marshal would.
    def assigned_by_marshal() -> dict | None:
        reply = control.assign(ctl, 1, "42")
        return reply if reply["ok"] else None

    assert wait_for(assigned_by_marshal, 10, "assign accepted") == {"ok": True}
    assert control.void(ctl, 99, "x") == {
        "ok": False,
        "error": "no event with seq 99 in this store",
    }

    def assign_event() -> dict | None:
        events = (json.loads(p) for _, p in sub.payloads("/event"))
        return next((e for e in events if e["type"] == "assign"), None)

    assigned = wait_for(assign_event, 10, "the marshal's assign published")
    assert assigned["ref_seq"] == 1 and assigned["car"] == "42"
    assert assigned["seq"] == 2 and assigned["by"] == "marshal"


@pytest.mark.slow
@pytest.mark.skipif(not _daemon_has_field_hooks(), reason="daemon.py not wired to FieldKit yet")
def test_daemon_notifies_systemd_serves_corrections_and_feeds_chrony(tmp_path, broker, monkeypatch):
    from boxrig import BoxRig, GpsFeeder, truth_now
    from faults import Watcher

    systemd = _Systemd(tmp_path / "notify.sock")
    chrony_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    chrony_sock.bind(str(tmp_path / "chrony.sock"))
    chrony_sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    extra = (
        f'[chrony]\nsocket = "{tmp_path}/chrony.sock"\n'
        '[indicator]\nled_pin = "GPIO23"\nbuzzer_pin = "GPIO24"\n'
    )
    rig = BoxRig(tmp_path, broker.url, extra=extra)
    sub = Watcher(broker.url, ["rally/box07/event"])
    truth = truth_now(ppm=20)
    gps = GpsFeeder(rig, truth)
    try:
        rig.start()
        systemd.notified(10, lambda d: d.startswith(b"READY=1"), "READY=1", rig.log_text)
        systemd.notified(10, lambda d: d == b"WATCHDOG=1", "WATCHDOG=1", rig.log_text)
        gps.start()
        sample = wait_for(
            lambda: chrony_sock.recv(256),
            40,
            "a sample for chrony",
            every=0,
            swallow=(TimeoutError,),
            detail=lambda: rig.log_text()[-2000:],
        )
        m_recv, r_recv = time.monotonic_ns(), time.time_ns()
        s = chronysock.unpack(sample)
        mono_at = m_recv - (r_recv - s.realtime_ns)
        assert abs(s.realtime_ns + s.offset_ns - truth.utc(mono_at)) < 20_000_000
        systemd.notified(5, lambda d: d.startswith(b"STATUS=ready"), "STATUS=ready", rig.log_text)

        t = time.monotonic_ns() + 100_000_000
        rig.pin("GPIO17", t, 0)
        rig.pin("GPIO17", t + 150_000_000, 1)
        ctl = str(tmp_path / "control.sock")
        _marshal_assigns_car_42(ctl, sub)
        gps.stop()
        assert rig.stop() == 0
        systemd.notified(3, lambda d: d == b"STOPPING=1", "STOPPING=1", rig.log_text)
        assert not os.path.exists(ctl)
    finally:
        gps.stop()
        sub.close()
        rig.close()
        systemd.close()
        chrony_sock.close()
