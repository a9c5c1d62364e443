"""chrony gets its samples from the daemon running as a non-root user.

chronyd binds its SOCK refclock socket as root before dropping privileges (chrony's
refclock_sock.c / socket.c: a plain bind(), so mode 0755 under systemd's umask 022).
Here a root process binds a real socket the same way, a real non-root process (a
forked child that dropped to user nobody) sends through `ChronySocket`: first EACCES,
logged with its cause; then the commands of the shipped chrony drop-in are run on the
socket, and the same sender's samples arrive.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checkpoint.box import chronysock

DROPIN = Path(__file__).resolve().parent.parent / "systemd" / "chrony-checkpoint.conf"
OFFSET_NS = 1_234_000
REALTIME_NS = 1_796_000_000_123_456_000


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Like /run: root's, traversable by everyone (pytest's tmp_path is 0700).
    d = Path(tempfile.mkdtemp(prefix="checkpoint-run-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def checkpoint_group() -> Iterator[int]:
    """The gid of group `checkpoint` (as sysusers makes it), created for the test if absent."""
    if os.geteuid() != 0:
        pytest.skip("needs root: binds as root like chronyd and drops to another user")
    try:
        yield grp.getgrnam("checkpoint").gr_gid
        return
    except KeyError:
        pass
    if shutil.which("groupadd") is None:
        pytest.skip("no groupadd to create group checkpoint")
    subprocess.run(["groupadd", "--system", "checkpoint"], check=True)
    try:
        yield grp.getgrnam("checkpoint").gr_gid
    finally:
        subprocess.run(["groupdel", "checkpoint"], check=False)


def _bind_like_chronyd(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old = os.umask(0o022)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.settimeout(5)
    return server


def _send_as(user: str, groups: list[int], path: Path) -> dict:
    """Fork; the child drops to `user` (with supplementary `groups`) and sends one sample."""
    pw = pwd.getpwnam(user)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a real process of a non-root user
        code = 1
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            records: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda rec: records.append(f"{rec.levelname} {rec.getMessage()}")
            logger = logging.getLogger("checkpoint.box.chronysock")
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            feeder = chronysock.ChronySocket(str(path))
            ok = feeder.send(chronysock.Sample(REALTIME_NS, OFFSET_NS))
            out = {"ok": ok, "uid": os.geteuid(), "log": records}
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the sender child failed"
    return json.loads(data)


def _apply_dropin(path: Path) -> list[list[str]]:
    """Run the drop-in's ExecStartPost commands as systemd would (root), on `path`."""
    cmds = []
    for line in DROPIN.read_text().splitlines():
        if line.startswith("ExecStartPost="):
            argv = shlex.split(line.split("=", 1)[1].lstrip("-+!@:"))
            argv = [str(path) if a == chronysock.DEFAULT_PATH else a for a in argv]
            subprocess.run(argv, check=True)
            cmds.append(argv)
    return cmds


def test_non_root_sender_gets_eacces_then_samples_arrive_with_the_dropin(run_dir, checkpoint_group):
    path = run_dir / "chrony.checkpoint.sock"
    server = _bind_like_chronyd(path)
    try:
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0

        before = _send_as("nobody", [checkpoint_group], path)
        assert before["uid"] != 0 and before["ok"] is False
        (msg,) = before["log"]
        assert msg.startswith("WARNING ") and "permission denied" in msg
        assert "owned by root:root mode 0755" in msg and "runs as nobody" in msg
        assert "chrony.service.d/checkpoint.conf" in msg

        cmds = _apply_dropin(path)
        assert [c[0].rsplit("/", 1)[-1] for c in cmds] == ["chgrp", "chmod"]
        st = path.stat()
        assert st.st_gid == checkpoint_group and stat.S_IMODE(st.st_mode) == 0o660

        after = _send_as("nobody", [checkpoint_group], path)
        assert after == {"ok": True, "uid": before["uid"], "log": []}
        got = chronysock.unpack(server.recv(64))
        assert got == chronysock.Sample(REALTIME_NS, OFFSET_NS)

        # Not in group checkpoint: still refused (the fix is the group, not 0666).
        assert _send_as("nobody", [], path)["ok"] is False
    finally:
        server.close()


def test_log_names_no_socket_and_stale_socket(tmp_path, caplog):
    path = tmp_path / "chrony.sock"
    caplog.set_level(logging.INFO, logger="checkpoint.box.chronysock")
    feeder = chronysock.ChronySocket(str(path))
    try:
        assert feeder.send(chronysock.Sample(time.time_ns(), 0)) is False
        assert "no such socket: chronyd is not running" in caplog.text
        caplog.clear()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(str(path))
        assert feeder.send(chronysock.Sample(time.time_ns(), 0)) is True
        assert "accepting samples again" in caplog.text
        server.close()  # chronyd gone, its socket file left behind
        caplog.clear()
        assert feeder.send(chronysock.Sample(time.time_ns(), 0)) is False
        assert "nobody listening: chronyd stopped" in caplog.text
    finally:
        feeder.close()


def test_install_ships_the_dropin_and_restarts_a_running_chrony(tmp_path):
    from checkpoint.field import install

    root = tmp_path / "root"
    said: list[str] = []
    install.install(root, program="/opt/checkpoint/bin/checkpoint", say=said.append)
    assert (root / install.CHRONY_DROPIN.lstrip("/")).read_text() == DROPIN.read_text()
    assert any("systemctl try-restart chrony.service" in s for s in said)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_dropin_parses_for_systemd_on_a_chrony_unit(tmp_path):
    # A stand-in for Debian's chrony.service (Type=forking), with the drop-in beside it.
    (tmp_path / "chrony.service").write_text(
        "[Unit]\nDescription=chrony stand-in\n[Service]\nType=forking\n"
        "PIDFile=/run/chrony/chronyd.pid\nExecStart=/bin/true\n"
    )
    dropins = tmp_path / "chrony.service.d"
    dropins.mkdir()

    def verify(text: str) -> str:
        (dropins / "checkpoint.conf").write_text(text)
        out = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / "chrony.service")],
            capture_output=True,
            text=True,
            env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{tmp_path}:"),
        )
        return out.stdout + out.stderr

    assert "checkpoint.conf" not in verify(DROPIN.read_text())
    # The drop-in is really read: a broken prefix is reported against it.
    assert "checkpoint.conf" in verify(DROPIN.read_text().replace("=-+/", "=~~/"))
