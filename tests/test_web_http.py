"""The marshal page and HQ board over real HTTP (no browser): login, limits, CSRF, SSE.

Servers run in their own threads on free loopback ports, exactly as the box and
`checkpoint hq serve` run them.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from waits import wait_for
from webrig import PASSWORD, PIN, Client, FakeBox, HQFiller, read_sse

from checkpoint.hq.results import parse_stages
from checkpoint.hq.store import HQStore
from checkpoint.web import server as webserver
from checkpoint.web.auth import LoginLimiter
from checkpoint.web.board import BoardServer
from checkpoint.web.marshal import MarshalServer
from checkpoint.web.server import WebError

T0 = 1_776_000_000 * 10**9
STATIC = Path(webserver.__file__).with_name("static")


@pytest.fixture(autouse=True)
def _no_wrong_pin_delay(monkeypatch):
    monkeypatch.setattr(webserver, "WRONG_PIN_DELAY_S", 0.0)


@pytest.fixture
def box():
    return FakeBox()


@pytest.fixture
def marshal(box):
    s = MarshalServer(
        box.snapshot, box.passages, box.correct, host="127.0.0.1", port=0, pin=PIN, tick_s=0.05
    ).start()
    yield s
    s.stop()


def logged_in(server) -> Client:
    c = Client(server.url)
    assert c.login(PIN if isinstance(server, MarshalServer) else PASSWORD) == 303
    return c


# -- marshal: access ----------------------------------------------------------------------


def test_everything_but_the_login_needs_the_pin(marshal):
    c = Client(marshal.url)
    status, headers, _ = c.get("/")
    assert status == 303 and headers["Location"] == "/login"
    for path in ("/api/session", "/api/events"):
        assert c.get(path)[0] == 401
    assert c.post_json("/api/correct", {"kind": "assign", "seq": 1, "value": "4"})[0] == 401
    status, headers, body = c.get("/login")
    assert status == 200 and b'type="password"' in body
    assert c.get("/marshal.js")[0] == 200  # code, no data: public


def test_login_sets_a_strict_httponly_cookie_and_wrong_pins_are_refused(marshal):
    c = Client(marshal.url)
    status, _, body = c.request(
        "POST", "/login", b"pin=000000", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 401 and b"Wrong PIN." in body and not c.cookies
    status, headers, _ = c.request(
        "POST",
        "/login",
        f"pin={PIN}".encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("checkpoint_marshal=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert c.get("/")[0] == 200
    # Logging out needs the CSRF token and ends the session.
    assert c.post_json("/logout", {})[0] == 403
    assert c.post_json("/logout", {}, csrf=c.csrf())[0] == 200
    assert c.get("/api/session")[0] == 401


def test_wrong_pins_are_rate_limited_per_client(marshal):
    marshal.auth.limiter = LoginLimiter(per_client=3, lockout_s=30)
    c = Client(marshal.url)
    for _ in range(3):
        assert c.login("111111") == 401
    status, headers, body = c.request(
        "POST",
        "/login",
        f"pin={PIN}".encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 429 and b"Too many wrong tries" in body  # even the right PIN, now
    assert 1 <= int(headers["Retry-After"]) <= 31
    assert not c.cookies


def test_security_headers_and_no_outside_resources(marshal):
    c = logged_in(marshal)
    _, headers, _ = c.get("/")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    # Offline from the internet: no asset names another host, no inline script.
    for f in STATIC.iterdir():
        text = f.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), f.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), f.name
        # DOM built with textContent only: data can never become markup.
        assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write", text)


def test_assets_are_small_gzipped_and_revalidated(marshal):
    c = Client(marshal.url)
    total = 0
    for name in ("marshal.js", "common.js", "style.css"):
        status, headers, body = c.get(f"/{name}", **{"Accept-Encoding": "gzip"})
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body) == (STATIC / name).read_bytes()
        total += len(body)
        status, _, body = c.get(f"/{name}", **{"If-None-Match": headers["ETag"]})
        assert status == 304 and body == b""
    assert total < 12_000, f"{total} bytes for a phone on weak Wi-Fi"


# -- marshal: data and corrections --------------------------------------------------------


def test_sse_sends_full_state_then_only_what_changed(marshal, box):
    box.passage(T0 + 10**9)
    c = logged_in(marshal)
    events = read_sse(c, "/api/events", lambda ev: len(ev) >= 2)
    (n1, status), (n2, passages) = events[:2]
    assert n1 == "status" and status["ready"] and status["box"] == "box07"
    assert n2 == "passages" and passages["full"] and [r["seq"] for r in passages["rows"]] == [1]
    assert passages["rows"][0]["utc"] == "13:20:01.00"

    def after(ev):
        return any(n == "passages" and not d.get("full") for n, d in ev)

    changed: list[bool] = []

    def change_once_streaming(ev) -> bool:
        # The changes come once this stream has sent its full state, so they are deltas.
        if not changed and any(n == "passages" for n, _ in ev):
            changed.append(True)
            box.passage(T0 + 5 * 10**9)
            box.correct("assign", 1, "42")
        return after(ev) and _has_car(ev)

    events = read_sse(c, "/api/events", change_once_streaming)
    deltas = [d for n, d in events if n == "passages" and not d.get("full")]
    for d in deltas:
        assert all(len(json.dumps(r)) < 160 for r in d["rows"])  # tiny payloads
    seqs = [r["seq"] for d in deltas for r in d["rows"]]
    assert 2 in seqs and seqs.count(1) == 1  # row 1 only again when it changed


def _has_car(events):
    return any(n == "passages" and any(r.get("car") == "42" for r in d["rows"]) for n, d in events)


def test_corrections_are_validated_and_csrf_protected(marshal, box):
    box.passage(T0)
    c = logged_in(marshal)
    csrf = c.csrf()
    # The marker: the server's stream shows the passage, so its tick has seen it.
    read_sse(c, "/api/events", lambda ev: any(n == "passages" and d["rows"] for n, d in ev))
    ok = {"kind": "assign", "seq": 1, "value": " 42 "}
    assert c.post_json("/api/correct", ok)[0] == 403  # no token
    assert c.post_json("/api/correct", ok, csrf="x" * 43)[0] == 403  # wrong token
    origin = "http://evil.example"
    assert c.post_json("/api/correct", ok, csrf=csrf, origin=origin)[0] == 403
    status, _, _ = c.request("POST", "/api/correct", b"kind=assign", {"X-CSRF-Token": csrf})
    assert status == 415  # JSON only: a form post from elsewhere cannot even be shaped right
    for bad, why in (
        ({"kind": "assign", "seq": 1, "value": ""}, "car number"),
        ({"kind": "assign", "seq": 1, "value": "X" * 17}, "car number"),
        ({"kind": "assign", "seq": 1, "value": "4\n2"}, "car number"),
        ({"kind": "void", "seq": 1, "value": "r" * 201}, "reason"),
        ({"kind": "assign", "seq": 0, "value": "4"}, "seq"),
        ({"kind": "assign", "seq": "1; drop", "value": "4"}, "seq"),
        ({"kind": "assign", "seq": 9, "value": "4"}, "not one of the recent passages"),
        ({"kind": "unvoid", "seq": 1, "value": "x"}, "kind"),
    ):
        status, data = c.post_json("/api/correct", bad, csrf=csrf)
        assert status == 400 and why in data["error"], (bad, data)
    assert box.corrections == []
    assert c.post_json("/api/correct", ok, csrf=csrf, origin=c.origin) == (202, {"ok": True})
    status, _ = c.post_json(
        "/api/correct", {"kind": "void", "seq": 1, "value": "insect"}, csrf=csrf
    )
    assert status == 202
    assert box.corrections == [("assign", 1, "42"), ("void", 1, "insect")]
    status, _, _ = c.request(
        "POST",
        "/api/correct",
        b"{" * 20_000,
        {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    )
    assert status == 413  # bodies are capped


def test_a_taken_port_is_a_clear_error(box):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = MarshalServer(
            box.snapshot, box.passages, box.correct, host="127.0.0.1", port=port, pin=PIN
        )
        with pytest.raises(WebError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.start()
        server.stop()


def test_a_failing_snapshot_does_not_end_updates(box):
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] % 2:
            raise RuntimeError("half-built snapshot")
        return box.snapshot()

    s = MarshalServer(
        flaky, box.passages, box.correct, host="127.0.0.1", port=0, pin=PIN, tick_s=0.02
    )
    try:
        s.start()
        wait_for(lambda: calls["n"] > 4, 10, "the server to poll on past failing snapshots")
    finally:
        s.stop()


# -- board --------------------------------------------------------------------------------

STAGES = '[[stage]]\nname = "S1"\nstart = "PC1"\nfinish = "PC2"\ntarget_s = 120\n'


@pytest.fixture
def hqdb(tmp_path):
    db = tmp_path / "hq.db"
    hq = HQFiller(db)
    s1 = hq.passage("box01", "PC1", T0)
    hq.passage("box02", "PC2", T0 + 120_370_000_000)
    hq.event("box01", "assign", "PC1", ref_seq=s1, car="42", by="marshal")
    hq.status("box01", checkpoint="PC1")
    yield db, hq
    hq.close()


@pytest.fixture
def board(hqdb):
    s = BoardServer(
        hqdb[0],
        host="127.0.0.1",
        port=0,
        stages=parse_stages(STAGES),
        password=PASSWORD,
        poll_s=0.1,
    ).start()
    yield s
    s.stop()


def test_board_is_readable_without_login_and_corrections_need_one(board, hqdb):
    db, hq = hqdb
    c = Client(board.url)
    assert c.get("/")[0] == 200
    status, _, data = c.get("/api/session")
    assert json.loads(data) == {"logged_in": False, "csrf": None, "can_correct": True}
    events = read_sse(c, "/api/events", lambda ev: ev[-1][0] == "ready")
    names = [n for n, _ in events]
    assert names == [
        "hq", "checkpoints", "boxes", "results", "feed", "todo", "audit", "history", "ready"
    ]  # fmt: skip
    feed = dict(events)["feed"]
    assert [(f["box"], f["seq"], f["car"]) for f in feed] == [("box02", 1, ""), ("box01", 1, "42")]
    body = {"box": "box02", "seq": 1, "action": "assign", "car": "42"}
    assert c.post_json("/api/correct", body)[0] == 401
    status, _, data = c.get("/api/car?car=42")
    assert status == 200 and [p["cp"] for p in json.loads(data)["passages"]] == ["PC1"]
    assert c.get("/api/car?car=")[0] == 400

    c = logged_in(board)
    csrf = c.csrf()
    assert c.post_json("/api/correct", body)[0] == 403
    status, data = c.post_json("/api/correct", body, csrf=csrf)
    assert status == 200 and data["correction"]["by"] == "hq-board"
    status, data = c.post_json(
        "/api/correct", {"box": "box02", "seq": 7, "action": "assign", "car": "1"}, csrf=csrf
    )
    assert status == 400 and "no event with seq 7" in data["error"]
    status, data = c.post_json(
        "/api/correct", {"box": "box02", "seq": 1, "action": "void", "reason": ""}, csrf=csrf
    )
    assert status == 400 and "reason" in data["error"]
    # The correction reaches results at once (the board pokes its poller).
    events = read_sse(
        c,
        "/api/events",
        lambda ev: any(n == "results" and d["cars"] and d["cars"][0]["total"] == 37 for n, d in ev),
    )
    with closing(HQStore(db, create=False)) as store:
        rows = [(p["box"], p["car"]) for p in store.passages()]
        assert rows == [("box01", "42"), ("box02", "42")]


def test_board_without_password_refuses_every_login(hqdb):
    s = BoardServer(hqdb[0], host="127.0.0.1", port=0).start()
    try:
        c = Client(s.url)
        status, _, body = c.get("/login")
        assert status == 403 and b"disabled" in body
        assert c.login(PASSWORD) == 403
        data = json.loads(c.get("/api/session")[2])
        assert data["can_correct"] is False
        events = read_sse(c, "/api/events", lambda ev: ev[-1][0] == "ready")
        assert dict(events)["results"]["enabled"] is False
    finally:
        s.stop()


def test_hq_serve_command_serves_until_sigterm(hqdb, tmp_path):
    db, _ = hqdb
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    os.chmod(pw, 0o600)
    stages = tmp_path / "stages.toml"
    stages.write_text(STAGES)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "checkpoint.cli.serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--stages",
            str(stages),
            "--password-file",
            str(pw),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stdout.read()
        c = Client(f"http://127.0.0.1:{port}/")
        assert c.login(PASSWORD) == 303
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    os.chmod(pw, 0o644)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkpoint.cli.serve",
            "--db",
            str(db),
            "--password-file",
            str(pw),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and "readable by others" in bad.stderr


# -- the box hook ------------------------------------------------------------------------


class HookDaemon:
    """What `start_marshal` needs of `BoxDaemon`."""

    def __init__(self, box: FakeBox) -> None:
        self.snapshot = box.snapshot()
        self.recent = box.passages()
        self.correction = box.correct
        self.alarms: dict[str, str] = {}


def _web_cfg(tmp_path, port, *, enabled=True, mode=0o600):
    from types import SimpleNamespace

    pin = tmp_path / "marshal.pin"
    pin.write_text(PIN + "\n")
    os.chmod(pin, mode)
    web = SimpleNamespace(enabled=enabled, host="127.0.0.1", port=port, pin_file=str(pin))
    return SimpleNamespace(web=web)


def test_box_hook_serves_the_daemons_data_and_survives_a_taken_port(tmp_path, box):
    from checkpoint.errors import ConfigError
    from checkpoint.web.boxhook import marshal_pin, start_marshal

    assert marshal_pin(_web_cfg(tmp_path, 0, enabled=False)) is None
    with pytest.raises(ConfigError, match="readable by others"):
        marshal_pin(_web_cfg(tmp_path, 0, mode=0o640))
    cfg = _web_cfg(tmp_path, 0)
    box.passage(T0)
    daemon = HookDaemon(box)
    page = start_marshal(cfg, daemon, marshal_pin(cfg))
    try:
        c = logged_in(page)
        events = read_sse(c, "/api/events", lambda ev: len(ev) >= 2)
        assert [r["seq"] for r in events[1][1]["rows"]] == [1]
        status, _ = c.post_json(
            "/api/correct", {"kind": "assign", "seq": 1, "value": "8"}, csrf=c.csrf()
        )
        assert status == 202 and box.corrections == [("assign", 1, "8")]
        # A second page on the same port cannot listen: no page, an alarm, no exception.
        other = HookDaemon(box)
        assert start_marshal(_web_cfg(tmp_path, page.port), other, PIN) is None
        assert "marshal page not served" in other.alarms["web"]
    finally:
        page.stop()


def test_web_config_keys():
    from checkpoint import config

    if "web" not in getattr(config.Config, "__dataclass_fields__", {}):
        pytest.skip("[web] not in config.py yet (patch in the web package's report)")
    base = {"box": {"id": "box07", "checkpoint": "PC3"}}
    cfg = config.parse(base)
    assert (cfg.web.enabled, cfg.web.host, cfg.web.port, cfg.web.pin_file) == (
        False,
        "127.0.0.1",
        8080,
        "",
    )
    on = {"enabled": True, "host": "0.0.0.0", "port": 80, "pin_file": "/etc/checkpoint/pin"}
    assert config.parse({**base, "web": on}).web.host == "0.0.0.0"
    for bad, key in (
        ({"enabled": True}, "web.pin_file"),
        ({"pin_file": "pin"}, "web.pin_file"),
        ({"port": 70000}, "web.port"),
        ({"enabled": "yes"}, "web.enabled"),
        ({"colour": "red"}, "web.colour"),
    ):
        with pytest.raises(config.ConfigError, match=key):
            config.parse({**base, "web": bad})
