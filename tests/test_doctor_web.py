"""`checkpoint doctor` asks the marshal page itself, as a marshal's phone would."""

from __future__ import annotations

import socket

from webrig import PIN, FakeBox

from checkpoint.field import doctor_web
from checkpoint.field.doctor import FAIL, OK, diagnose, gather, render
from checkpoint.web.marshal import MarshalServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, port: int):
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    pin.chmod(0o600)
    cfg = tmp_path / "box.toml"
    cfg.write_text(
        '[box]\nid = "b"\ncheckpoint = "c"\n[store]\npath = "b.db"\n'
        '[mqtt]\nbroker = "mqtt://127.0.0.1:9"\n'
        f'[web]\nenabled = true\nhost = "0.0.0.0"\nport = {port}\npin_file = "{pin}"\n'
    )
    return cfg


def test_doctor_finds_the_marshal_page_served(tmp_path):
    box = FakeBox()
    page = MarshalServer(box.snapshot, box.passages, box.correct, port=0, pin=PIN).start()
    try:
        f = gather(str(_config(tmp_path, page.port)), connect_timeout_s=0.3, service=lambda: "x")
    finally:
        page.stop()
    assert f.web == doctor_web.SERVED
    report = diagnose(f)
    assert any(c.name == "web" and c.level == OK for c in report.checks)
    assert f"marshal page served at http://127.0.0.1:{page.port}/" in render(report)


def test_doctor_says_when_the_marshal_page_is_not_served(tmp_path):
    port = _free_port()
    f = gather(str(_config(tmp_path, port)), connect_timeout_s=0.3, service=lambda: "x")
    assert f.web == "nothing listens there"
    report = diagnose(f)
    web = next(c for c in report.checks if c.name == "web")
    assert web.level == FAIL and "marshal page not served" in report.verdict
    # Something else on the port is not the page either.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert doctor_web.probe(f"http://127.0.0.1:{s.getsockname()[1]}/", 0.5) != "served"


def test_a_box_without_the_page_gets_no_web_check(tmp_path):
    cfg = tmp_path / "box.toml"
    cfg.write_text('[box]\nid = "b"\ncheckpoint = "c"\n[mqtt]\nbroker = "mqtt://127.0.0.1:9"\n')
    f = gather(str(cfg), connect_timeout_s=0.3, service=lambda: "x")
    assert f.web == "off" and not any(c.name == "web" for c in diagnose(f).checks)


def test_real_daemon_whose_page_port_is_taken_says_so_in_its_status(broker, tmp_path):
    # The port is held by something else: the daemon runs on (timing first), its
    # retained status names the problem, and doctor finds the page not served.
    import json
    import queue

    from waits import wait_for
    from webrig import web_box_rig

    from checkpoint.mqtt import Link, Message

    rig, port = web_box_rig(tmp_path, broker.url)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    q: queue.Queue = queue.Queue()
    link = Link(broker.url, "webwatch", q.put, subscriptions=[("rally/box07/status", 1)])
    link.start()
    try:
        rig.start()
        seen: list[dict] = []

        def alarm() -> str | None:
            while not q.empty():
                ev = q.get()
                if isinstance(ev, Message) and ev.payload:
                    seen.append(json.loads(ev.payload))
            return next((s["alarms"]["web"] for s in seen if "web" in s.get("alarms", {})), None)

        text = wait_for(alarm, 20, "the daemon's web alarm")
        assert "marshal page not served" in text and "port is in use" in text
        assert rig.alive()
        result = doctor_web.probe(doctor_web.page_url(_cfg_of(rig.config)), 1.0)
        assert result != doctor_web.SERVED
    finally:
        link.stop()
        rig.close()
        squatter.close()


def _cfg_of(path):
    from checkpoint import config

    return config.load(path)
