"""Attacks on the records, end to end: the real daemon, the shipped broker, the real HQ.

The box (`python -m checkpoint run`, signing its chain head with `[integrity]
sign_key`) publishes through Mosquitto running `broker/` as shipped (TLS, passwords,
ACL) to the real HQ collector. Then, as an attacker would:

* an insider edits HQ's database after the box has stopped: deletes its last event,
  edits a passage and re-hashes the chain after it (the anchors too), flips the
  `quarantine` or `type` column; `checkpoint verify` fails each time, and `--keys`
  proves the box's events without trusting HQ;
* a thief with box07's password publishes a correctly sealed forged passage under the
  next seq before the box does: the box does not skip that seq, publishes its own,
  and HQ keeps both, reports a `conflict` and counts neither until an official
  decides (audited).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from boxrig import BoxRig
from faults import box_events, fast_inputs, send_passage
from test_chain import ed25519_pair
from test_security import ShippedBroker, needs_tools, password, pki  # noqa: F401 - fixture
from waits import wait_for

from checkpoint.core import chain
from checkpoint.hq import integrity
from checkpoint.hq.collector import Collector
from checkpoint.hq.store import HQStore
from checkpoint.mqtt import Link

PIN = "GPIO17"


class Rally:
    """One box07 daemon and one HQ collector on a shipped broker of their own."""

    def __init__(self, tmp: Path, pki: Path) -> None:  # noqa: F811 - the fixture's value
        self.tmp, self.pki = tmp, pki
        self.broker = ShippedBroker(tmp / "broker", pki, pki / "acl").start()
        keys = tmp / "keys"
        keys.mkdir()
        self.keys = keys
        priv, _pub = ed25519_pair(keys, "box07")
        self.sign_key = tmp / "box07-sign.key"
        shutil.move(priv, self.sign_key)  # the public half stays in keys/ for verify
        pw = tmp / "box07.password"
        pw.write_text(password(pki, "box07") + "\n")
        os.chmod(pw, 0o600)
        self.rig = BoxRig(
            tmp,
            self.broker.pw_url,
            inputs=fast_inputs(("beam", PIN)),
            redeliver_after_s=2,
            mqtt_extra=(
                f'username = "box07"\npassword_file = "{pw}"\nca_file = "{pki / "ca.crt"}"\n'
            ),
            extra=f'[integrity]\nsign_key = "{self.sign_key}"\n',
        )
        self.db = tmp / "hq.db"
        self.hq = Collector(
            self.broker.pw_url,
            self.db,
            username="hq",
            password=password(pki, "hq"),
            ca_file=str(pki / "ca.crt"),
            gap_wait_s=0.5,
            heartbeat_s=0.5,
        )

    def start(self) -> Rally:
        self.hq.start()
        wait_for(self.hq.subscribed.is_set, 10, "HQ subscribed")
        self.rig.start()
        return self

    def passages(self, n: int) -> None:
        for _ in range(n):
            assert send_passage(self.rig, PIN) is not None
            time.sleep(0.02)  # paces the cars: 50 a second

    def status(self) -> dict:
        """The box's latest status as HQ recorded it."""
        with closing(HQStore(self.db, create=False)) as s:
            row = s.db.execute("SELECT status FROM boxes WHERE box='box07'").fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def close(self) -> None:
        self.rig.close()
        self.hq.stop()
        self.broker.stop()


@pytest.fixture
def rally(tmp_path: Path, pki: Path):  # noqa: F811 - pytest fixture
    pytest.importorskip("cryptography")
    r = Rally(tmp_path, pki)
    yield r
    r.close()


def verify(db: Path, *keys: Path) -> tuple[int, str]:
    args = [sys.executable, "-m", "checkpoint", "verify", str(db)]
    if keys:
        args[4:4] = ["--keys", str(keys[0])]
    res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return res.returncode, res.stdout + res.stderr


def copy(db: Path, name: str) -> Path:
    out = db.with_name(name)
    src = sqlite3.connect(db)
    dst = sqlite3.connect(out)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return out


def sql(db: Path, *statements: tuple[str, tuple]) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for text, params in statements:
            conn.execute(text, params)
    conn.close()


def rows(db: Path, query: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


# -- the insider -----------------------------------------------------------------------------


@needs_tools
def test_edits_of_hq_database_after_the_box_stopped_fail_verify(rally: Rally) -> None:
    rally.start()
    rally.passages(5)
    wait_for(lambda: rally.status().get("acked_upto") == 5, 20, "HQ's ack of 5 at the box")
    assert rally.rig.stop() == 0
    wait_for(lambda: rally.status().get("state") == "offline", 10, "the box's offline status")
    rally.hq.stop()
    st = rally.status()
    # The real daemon's status carries its signed chain head; its last word too.
    head = box_events(rally.rig.store_path)[-1]["hash"]
    assert st["chain"]["seq"] == 5 and st["chain"]["head"] == head and st["chain"]["sig"]
    assert st["acked_upto"] == 5 and st["backlog"] == 0
    # HQ kept every distinct anchor, not only the last status.
    anchors = rows(rally.db, "SELECT seq, head, sig FROM anchors WHERE box='box07' ORDER BY seq")
    assert anchors[-1][:2] == (5, head) and all(a[2] for a in anchors)

    code, out = verify(rally.db, rally.keys)
    assert code == 0 and "signed chain head at seq 5 verified" in out, out

    # 1. Truncated: the box's last event deleted after the box went offline.
    cut = copy(rally.db, "cut.db")
    sql(cut, ("DELETE FROM events WHERE box='box07' AND seq=5", ()))
    code, out = verify(cut)
    assert code == 1 and "seq 5: deleted" in out, out

    # 2. A passage edited and every hash after it recomputed: the chain alone is whole,
    # the box's anchors are not.
    rehashed = copy(rally.db, "rehashed.db")
    _rehash(rehashed, from_seq=3, anchors_too=False)
    code, out = verify(rehashed)
    assert code == 1 and "forked" in out, out
    # ... and with the anchors rewritten to match, only the box's signature tells.
    full = copy(rally.db, "full.db")
    _rehash(full, from_seq=3, anchors_too=True)
    code, out = verify(full, rally.keys)
    assert code == 1 and "badsig" in out, out

    # 2b. A sealed event appended under the next seq (a thief after the box stopped, or
    # an insider): the chain holds, no anchor covers it, --keys says so.
    extra = copy(rally.db, "extra.db")
    last = json.loads(rows(extra, "SELECT payload FROM events WHERE seq=5")[0][0])
    forged = chain.seal({**last, "seq": 6, "utc_ns": last["utc_ns"] + 10**9}, last["hash"])
    sql(
        extra,
        (
            "INSERT INTO events (box, store, seq, type, checkpoint, utc_ns, payload)"
            " VALUES (?,?,?,?,?,?,?)",
            ("box07", last["store"], 6, "passage", "PC3", forged["utc_ns"], json.dumps(forged)),
        ),
    )
    code, out = verify(extra, rally.keys)
    assert "seq 6..6 are not covered by a signed chain head" in out, out

    # 3. Columns that change the results, outside the payload.
    for column, value in (("quarantine", "bad_time"), ("type", "heartbeat")):
        flipped = copy(rally.db, f"{column}.db")
        sql(flipped, (f"UPDATE events SET {column}=? WHERE box='box07' AND seq=2", (value,)))
        code, out = verify(flipped)
        assert code == 1 and f"seq 2: edited: column {column}" in out, out


def _rehash(db: Path, from_seq: int, anchors_too: bool) -> None:
    """Move one passage by a second and re-seal everything after it, as an insider with
    the database and this project's source would; optionally the anchors too."""
    evs = [json.loads(p) for (p,) in rows(db, "SELECT payload FROM events ORDER BY seq")]
    prev = evs[from_seq - 2]["hash"]
    new: dict[str, str] = {}
    stmts = []
    for ev in evs[from_seq - 1 :]:
        if ev["seq"] == from_seq:
            ev["utc_ns"] -= 10**9
        old = ev["hash"]
        ev = chain.seal(ev, prev)
        prev = new[old] = ev["hash"]
        stmts.append(
            (
                "UPDATE events SET payload=?, utc_ns=? WHERE seq=?",
                (json.dumps(ev, separators=(",", ":")), ev.get("utc_ns"), ev["seq"]),
            )
        )
    if anchors_too:
        for old, fresh in new.items():
            stmts.append(("UPDATE anchors SET head=? WHERE head=?", (fresh, old)))
        (status,) = rows(db, "SELECT status FROM boxes WHERE box='box07'")[0]
        st = json.loads(status)
        st["chain"]["head"] = new.get(st["chain"]["head"], st["chain"]["head"])
        stmts.append(("UPDATE boxes SET status=? WHERE box='box07'", (json.dumps(st),)))
    sql(db, *stmts)


# -- the thief -------------------------------------------------------------------------------


def _thief_publishes_seq_3(rally: Rally, creds: Path, real: list[dict]) -> dict:
    """The thief reads box07's ack (allowed to box07) for the head to chain on, and
    publishes seq 3: a passage a minute earlier, correctly sealed. Returns it."""
    heads: list[dict] = []
    thief = Link(
        rally.broker.pw_url,
        "thief",
        lambda ev: heads.append(json.loads(ev.payload)) if hasattr(ev, "payload") else None,
        username="box07",
        password=password(creds, "box07"),
        ca_file=str(creds / "ca.crt"),
        subscriptions=[("rally/box07/ack", 1)],
    )
    thief.start()
    try:
        wait_for(lambda: heads and heads[-1].get("upto") == 2, 10, "the retained ack")
        forged = {k: v for k, v in real[1].items() if k not in ("prev", "hash")}
        forged.update(seq=3, utc_ns=real[1]["utc_ns"] - 60 * 10**9)
        forged = chain.seal(forged, heads[-1]["head"])
        assert thief.publish("rally/box07/event", json.dumps(forged).encode(), qos=1)
        wait_for(lambda: rows(rally.db, "SELECT 1 FROM events WHERE seq=3"), 10, "forgery at HQ")
    finally:
        thief.stop()
    return forged


def _hq_conflict(db: Path, *args: str) -> subprocess.CompletedProcess:
    """`checkpoint hq conflict --db DB ARGS...` as an official runs it."""
    return subprocess.run(
        [sys.executable, "-m", "checkpoint", "hq", "conflict", "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_tools
def test_a_forged_event_with_a_stolen_credential_becomes_a_conflict(rally: Rally, pki) -> None:  # noqa: F811
    rally.start()
    rally.passages(2)
    wait_for(lambda: rally.status().get("acked_upto") == 2, 20, "HQ's ack of 2 at the box")
    real = box_events(rally.rig.store_path)
    store = real[0]["store"]

    forged = _thief_publishes_seq_3(rally, pki, real)

    # The box hears HQ acknowledge a seq it never numbered: an alarm, not a skip.
    wait_for(lambda: "conflict" in rally.status().get("alarms", {}), 20, "the box's alarm")
    rally.passages(2)  # the box's own seq 3 and 4
    wait_for(lambda: rally.status().get("acked_upto") == 4, 30, "HQ's ack of 4 at the box")
    mine = box_events(rally.rig.store_path)
    assert [e["type"] for e in mine] == ["passage"] * 4  # nothing skipped
    assert mine[2]["prev"] == real[1]["hash"]

    with closing(HQStore(rally.db, create=False)) as s:
        [dispute] = integrity.conflict_rows(s.db)
        reasons = {b["reason"] for b in s.chain_breaks()}
        exported = {(p["seq"], p["utc_ns"]) for p in s.passages()}
    assert (dispute["box"], dispute["store"], dispute["seq"]) == ("box07", store, 3)
    assert dispute["kept"] is None
    ids = {v["id"] for v in dispute["versions"]}
    assert ids == {forged["hash"], mine[2]["hash"]}
    assert "conflict" in reasons and "deleted" not in reasons
    # Neither version of seq 3 counts until an official decides; the rest do.
    assert exported == {(e["seq"], e["utc_ns"]) for e in mine if e["seq"] != 3}
    code, out = verify(rally.db)
    assert code == 1 and "seq 3: conflict" in out, out

    res = _hq_conflict(rally.db)
    assert "UNDECIDED" in res.stdout and "the next seq follows it" in res.stdout, res.stdout
    res = _hq_conflict(
        rally.db,
        *("box07", "3", "--keep", mine[2]["hash"][:12]),
        *("--by", "chief timekeeper", "--reason", "box07's SD card and its signed head"),
    )
    assert res.returncode == 0, res.stderr
    with closing(HQStore(rally.db, create=False)) as s:
        exported = {(p["seq"], p["utc_ns"]) for p in s.passages()}
        [decision] = [c for c in s.corrections() if c["action"] == "keep"]
    assert exported == {(e["seq"], e["utc_ns"]) for e in mine}
    assert decision["by"] == "chief timekeeper" and decision["detail"] == mine[2]["hash"]
    code, out = verify(rally.db, rally.keys)
    assert code == 0, out
    # An insider marking the forgery as broken (quarantined) to end the dispute quietly.
    flipped = copy(rally.db, "flipped.db")
    sql(flipped, ("UPDATE conflicts SET quarantine='chain_hash'", ()))
    code, out = verify(flipped)
    assert code == 1 and "seq 3: edited: a kept conflicting version" in out, out
