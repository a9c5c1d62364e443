"""A live rally through the shipped broker config: TLS, one user per box, the ACL.

`python -m sim run --broker mqtts://localhost:PW --hq-broker mqtts://localhost:HQ
--credentials DIR` with DIR made by `broker/provision.py`, as a tester rehearses with
the production broker: every box daemon logs in as itself, HQ's collector and the
simulator's monitor both as `hq` on HQ's own listener (at once, each with its own
client id), and every passage arrives once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_security import ShippedBroker, needs_tools, pki, provision  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]
BOX_KILL = ROOT / "sim" / "scenarios" / "box_kill.toml"


@pytest.mark.slow
@needs_tools
def test_a_rally_runs_against_the_shipped_broker_with_tls_and_acls(
    tmp_path: Path,
    pki: Path,  # noqa: F811 - the fixture
) -> None:
    # The box_kill rally without its incident: two boxes, six cars.
    text = BOX_KILL.read_text()
    scenario = tmp_path / "secure.toml"
    text = text[: text.index("[[incidents]]")].replace("box killed", "secured")
    scenario.write_text(text.replace("count = 12", "count = 6"))
    provision("passwd", "--dir", pki, "box01", "box02")
    broker = ShippedBroker(tmp_path / "broker", pki, pki / "acl").start()
    wd = tmp_path / "run"
    try:
        res = subprocess.run(
            [
                *(sys.executable, "-m", "sim", "run", str(scenario), "--json"),
                *("--broker", broker.pw_url, "--hq-broker", broker.hq_url),
                *("--credentials", str(pki), "--workdir", str(wd)),
            ],
            capture_output=True,
            text=True,
            timeout=400,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        log = broker.log()
    finally:
        broker.stop()
    assert res.returncode == 0, res.stderr[-3000:]
    v = json.loads(res.stdout.strip().splitlines()[-1])
    assert v["expected"] > 0 and v["missing"] == 0 and v["false"] == 0 and v["duplicates"] == 0
    # Each client logged in as itself, over TLS; nobody was refused or knocked off.
    for box in ("box01", "box02"):
        assert f" as {box} (" in log and f"u'{box}')" in log, box
    # HQ's collector and the monitor: both user hq, each with its own client id.
    assert "as checkpoint-sim-hq (" in log and "as checkpoint-sim-monitor-" in log
    assert log.count("u'hq')") >= 2
    assert "Not authorized" not in log and "already connected" not in log
    for box in ("box01", "box02"):
        conf = (wd / "boxes" / box / "box.toml").read_text()
        assert f'username = "{box}"' in conf and "ca_file" in conf


def test_credentials_dir_must_exist(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            *(sys.executable, "-m", "sim", "run", str(BOX_KILL)),
            *("--broker", "mqtts://localhost:1", "--credentials", str(tmp_path / "nope")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "--credentials" in res.stderr and "not a folder" in res.stderr


def test_credentials_need_a_broker(tmp_path: Path) -> None:
    res = subprocess.run(
        [*(sys.executable, "-m", "sim", "run", str(BOX_KILL)), "--ca", str(BOX_KILL)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "need --broker" in res.stderr
