"""Security: the shipped broker config, TLS, per-box credentials, least privilege, secrets.

A real Mosquitto runs `broker/mosquitto.conf` and `broker/acl` as shipped (only paths
and port numbers substituted, and `user root` when the tests run as root) with a
throwaway CA, server certificate, client certificates and password file made by
`broker/provision.py`, i.e. the operator's own tooling. Clients are
`checkpoint.mqtt.Link`, as in the box and HQ; the last test runs the real daemon.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from boxrig import BoxRig
from waits import listening, wait_for

from checkpoint.config import InputConfig
from checkpoint.core.outbox import MAX_RESEND, Outbox
from checkpoint.core.timing import Pipeline
from checkpoint.errors import CommandError, ConfigError, LinkError
from checkpoint.mqtt import Connected, Disconnected, Link, LinkEvent, Message, PubAck, SubAck
from checkpoint.support import check_private, read_secret
from sim.broker import MosquittoNotInstalled, find_mosquitto, free_port

ROOT = Path(__file__).resolve().parents[1]
BROKER = ROOT / "broker"
PROVISION = [sys.executable, str(BROKER / "provision.py")]
NS = 1_000_000_000


def _missing_tools() -> str | None:
    try:
        find_mosquitto()
    except MosquittoNotInstalled as err:
        return str(err)
    if shutil.which("openssl") is None:
        return "needs the openssl command"
    if shutil.which("mosquitto_passwd") is None and not os.access(
        "/usr/bin/mosquitto_passwd", os.X_OK
    ):
        return "needs mosquitto_passwd (Debian: mosquitto package)"
    return None


needs_tools = pytest.mark.skipif(_missing_tools() is not None, reason=str(_missing_tools()))


# -- the operator's files ----------------------------------------------------------------


def provision(*args: str | Path) -> None:
    res = subprocess.run([*PROVISION, *map(str, args)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/etc/mosquitto/checkpoint as the README's steps make it, plus a rogue CA."""
    if _missing_tools():
        pytest.skip(str(_missing_tools()))
    d = tmp_path_factory.mktemp("pki")
    provision("ca", "--dir", d)
    # Only "localhost": connecting to 127.0.0.1 is then a wrong host name.
    provision("server", "--dir", d, "--name", "localhost")
    provision("passwd", "--dir", d, "hq", "box07", "box08")
    provision("client", "--dir", d, "box07", "box08")
    shutil.copyfile(BROKER / "acl", d / "acl")
    rogue = d / "rogue"
    provision("ca", "--dir", rogue)
    provision("client", "--dir", rogue, "box07")
    provision("server", "--dir", rogue, "--name", "localhost")
    return d


def password(pki: Path, user: str) -> str:
    return (pki / "secrets" / f"{user}.password").read_text().strip()


def render_conf(
    pki: Path, workdir: Path, acl: Path, pw_port: int, cert_port: int, hq_port: int
) -> str:
    """The shipped mosquitto.conf with paths and ports moved into the test's folders."""
    text = (BROKER / "mosquitto.conf").read_text()
    subs = [
        ("acl_file /etc/mosquitto/checkpoint/acl\n", f"acl_file {acl}\n"),  # every listener
        ("/etc/mosquitto/checkpoint/", f"{pki}/"),
        ("persistence_location /var/lib/mosquitto/\n", f"persistence_location {workdir}/\n"),
        ("log_dest file /var/log/mosquitto/mosquitto.log\n", f"log_dest file {workdir}/log\n"),
        # Loopback only: a test broker is never reachable from elsewhere.
        ("listener 8883\n", f"listener {pw_port} 127.0.0.1\n"),
        ("listener 8884\n", f"listener {cert_port} 127.0.0.1\n"),
        ("listener 8885\n", f"listener {hq_port} 127.0.0.1\n"),
    ]
    for old, new in subs:
        assert old in text, f"shipped mosquitto.conf no longer has {old!r}"
        text = text.replace(old, new)
    if os.geteuid() == 0:
        # As root mosquitto drops to user "mosquitto", which cannot read the test's
        # private files; "root" means "do not drop" (in the field it does drop).
        text += "\nuser root\n"
    return text


class ShippedBroker:
    """Mosquitto running the shipped config; `pw_url` / `cert_url` are its listeners."""

    def __init__(self, workdir: Path, pki: Path, acl: Path) -> None:
        self.workdir, self.pki, self.acl = workdir, pki, acl
        self.proc: subprocess.Popen[bytes] | None = None
        self.pw_port = self.cert_port = self.hq_port = 0

    def url(self, port: int, host: str = "localhost") -> str:
        return f"mqtts://{host}:{port}"

    @property
    def pw_url(self) -> str:
        return self.url(self.pw_port)

    @property
    def cert_url(self) -> str:
        return self.url(self.cert_port)

    @property
    def hq_url(self) -> str:
        """HQ's own listener: several HQ clients, each with its own client id."""
        return self.url(self.hq_port)

    def start(self) -> ShippedBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pw_port, self.cert_port, self.hq_port = free_port(), free_port(), free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            render_conf(
                self.pki, self.workdir, self.acl, self.pw_port, self.cert_port, self.hq_port
            )
        )
        out = open(self.workdir / "out", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def running() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            log = self.workdir / "log"
            return (
                log.exists()
                and " running" in log.read_text(errors="replace")
                and all(listening(p) for p in (self.pw_port, self.cert_port, self.hq_port))
            )

        wait_for(running, 10, "the shipped broker to start", every=0.05, detail=self.output)
        return self

    def output(self) -> str:
        return (self.workdir / "out").read_text(errors="replace")

    def log(self) -> str:
        return (self.workdir / "log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def shipped(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> ShippedBroker:
    b = ShippedBroker(tmp_path_factory.mktemp("broker"), pki, pki / "acl").start()
    yield b
    b.stop()


class Client:
    """A `Link` whose events a test reads in order."""

    def __init__(self, url: str, client_id: str, **kw: Any) -> None:
        self.q: queue.Queue[LinkEvent] = queue.Queue()
        self.seen: list[LinkEvent] = []
        self.link = Link(url, client_id, self.q.put, keepalive=5, **kw)
        self.link.start()

    def next(
        self, kind: type, pred: Callable[[Any], bool] = lambda e: True, timeout: float = 10
    ) -> Any:
        deadline = time.monotonic() + timeout
        for ev in self.seen:
            if isinstance(ev, kind) and pred(ev):
                self.seen.remove(ev)
                return ev
        while time.monotonic() < deadline:
            try:
                ev = self.q.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(ev, kind) and pred(ev):
                return ev
            self.seen.append(ev)
        raise AssertionError(f"no {kind.__name__} within {timeout} s; saw {self.seen}")

    def drain(self) -> list[LinkEvent]:
        """Every event `next()` has not taken so far, the queued ones included (no
        waiting: the caller has waited for a marker that comes after them)."""
        while True:
            try:
                self.seen.append(self.q.get_nowait())
            except queue.Empty:
                return self.seen

    def publish(self, topic: str, payload: bytes = b"{}", retain: bool = False) -> PubAck:
        mid = self.link.publish(topic, payload, qos=1, retain=retain)
        assert mid is not None, "not connected"
        return self.next(PubAck, lambda e: e.mid == mid)

    def close(self) -> None:
        self.link.stop()


def _each_refused(caplog, *clients: Client) -> None:
    """The marker that a connection is not coming: each client's own network thread has
    seen a connect attempt end (TLS refused, the broker reset it, or refused it)."""
    ended = ("TLS to", "failed to receive on socket", "refused the connection")

    def all_ended() -> bool:
        records = list(caplog.records)
        return all(
            any(
                r.threadName == f"paho-mqtt-client-{c.link.client_id}"
                and any(e in r.getMessage() for e in ended)
                for r in records
            )
            for c in clients
        )

    wait_for(all_ended, 15, "every connect attempt to fail", detail=lambda: caplog.text[-2000:])


@pytest.fixture
def clients(pki: Path):
    made: list[Client] = []

    def make(url: str, user: str | None, client_id: str | None = None, **kw: Any) -> Client:
        if user is not None:
            kw.setdefault("username", user)
            kw.setdefault("password", password(pki, user))
        kw.setdefault("ca_file", str(pki / "ca.crt"))
        c = Client(url, client_id or f"checkpoint-{user}-{len(made)}", **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- least privilege ---------------------------------------------------------------------


@needs_tools
def test_shipped_files_are_the_ones_the_broker_runs(shipped: ShippedBroker, pki: Path) -> None:
    assert (pki / "acl").read_bytes() == (BROKER / "acl").read_bytes()
    conf = (shipped.workdir / "mosquitto.conf").read_text()
    for directive in (
        "allow_anonymous false",
        "persistence true",
        "require_certificate false",
        "use_identity_as_username true",
        "use_username_as_clientid true",
    ):
        assert directive in conf
    # Secrets come out of provision.py private.
    for f in ("ca.key", "server.key", "passwd", "clients/box07.key", "secrets/box07.password"):
        assert (pki / f).stat().st_mode & 0o077 == 0, f


@needs_tools
def test_a_box_publishes_only_as_itself(shipped: ShippedBroker, clients) -> None:
    box07 = clients(shipped.pw_url, "box07")
    box07.next(Connected)
    for topic in ("rally/box07/event", "rally/box07/status", "rally/box07/hwm"):
        assert box07.publish(topic).ok, topic
    for topic in (
        "rally/box08/event",  # forging another box's passage
        "rally/box08/status",
        "rally/box07/ack",  # acking itself, so it would forget undelivered events
        "rally/box07/cmd",
        "rally/box08/cmd",
        "elsewhere",
    ):
        ack = box07.publish(topic)
        assert not ack.ok and ack.reason == "Not authorized", topic


@needs_tools
def test_a_box_reads_only_its_own_acks_and_commands(shipped: ShippedBroker, clients) -> None:
    hq = clients(shipped.pw_url, "hq")
    hq.next(Connected)
    box07 = clients(shipped.pw_url, "box07", subscriptions=[("rally/box07/cmd", 1)])
    box07.next(SubAck)
    spy = clients(
        shipped.pw_url,
        "box08",
        subscriptions=[
            ("rally/box07/cmd", 1),
            ("rally/box07/ack", 1),
            ("rally/+/event", 1),
            ("rally/box08/cmd", 1),  # its own: where the marker comes
        ],
    )
    spy.next(SubAck)
    cmd = b'{"cmd":"resend","store":"s","from":1,"to":2}'
    assert hq.publish("rally/box07/cmd", cmd).ok
    assert hq.publish("rally/box07/ack", b'{"store":"s","upto":1}', retain=True).ok
    assert box07.publish("rally/box07/event", b'{"seq":1}').ok
    assert box07.next(Message, lambda m: m.topic == "rally/box07/cmd").payload == cmd
    # The other box saw nothing of it: not the command, not the ack, not the event. The
    # marker, a command for box08 published after them all, reaches it; nothing before.
    assert hq.publish("rally/box08/cmd", b"marker").ok
    spy.next(Message, lambda m: m.topic == "rally/box08/cmd")
    assert [m.payload for m in spy.drain() if isinstance(m, Message)] == [], spy.seen


@needs_tools
def test_hq_reads_all_and_writes_only_acks_and_commands(shipped: ShippedBroker, clients) -> None:
    hq = clients(shipped.pw_url, "hq", subscriptions=[("rally/+/event", 1), ("rally/+/status", 1)])
    assert hq.next(SubAck).ok
    for box in ("box07", "box08"):
        b = clients(shipped.pw_url, box)
        b.next(Connected)
        assert b.publish(f"rally/{box}/event", box.encode()).ok
        assert b.publish(f"rally/{box}/status", b'{"state":"ready"}').ok
    for box in ("box07", "box08"):
        want = (f"rally/{box}/event", box.encode())
        hq.next(Message, lambda m, want=want: (m.topic, m.payload) == want)
    assert hq.publish("rally/box08/ack", b'{"store":"s","upto":0}').ok
    assert hq.publish("rally/box08/cmd", b"{}").ok
    for topic in ("rally/box07/event", "rally/box07/status", "rally/box07/hwm"):
        ack = hq.publish(topic)
        assert not ack.ok and ack.reason == "Not authorized", topic


@needs_tools
def test_wrong_or_no_credentials_are_refused(shipped: ShippedBroker, clients, pki) -> None:
    wrong = clients(shipped.pw_url, "box07", password=password(pki, "box08"))
    anonymous = clients(shipped.pw_url, None, client_id="anon")
    for c in (wrong, anonymous):
        refused = c.next(Disconnected)
        assert "Not authorized" in refused.reason or "password" in refused.reason
        assert not c.link.connected


@needs_tools
def test_a_box_cannot_take_over_another_box_session(shipped: ShippedBroker, clients) -> None:
    box07 = clients(shipped.pw_url, "box07", client_id="checkpoint-box07")
    box07.next(Connected)
    # box08 asks for box07's client id: the broker names every session after its
    # user (use_username_as_clientid), so box07 is not kicked off.
    intruder = clients(shipped.pw_url, "box08", client_id="checkpoint-box07")
    intruder.next(Connected)
    # The intruder has its CONNACK, so a take-over would have happened; the marker is a
    # PUBACK on box07's link after that, and no disconnection came before it.
    assert box07.publish("rally/box07/event").ok and box07.link.connected
    assert not [e for e in box07.drain() if isinstance(e, Disconnected)]


@needs_tools
def test_several_hq_clients_connect_at_once_on_hq_listener(shipped: ShippedBroker, clients) -> None:
    # The collector and a read-only tool, both user "hq", each with its own client id:
    # neither knocks the other off (on 8883 the id would be forced to "hq" for both).
    subs = [("rally/+/status", 1)]
    collector = clients(shipped.hq_url, "hq", client_id="checkpoint-hq-main", subscriptions=subs)
    watcher = clients(shipped.hq_url, "hq", client_id="checkpoint-hq-watch", subscriptions=subs)
    for c in (collector, watcher):
        assert c.next(SubAck).ok
    box = clients(shipped.pw_url, "box07")
    box.next(Connected)
    assert box.publish("rally/box07/status", b'{"state":"ready"}').ok
    for c in (collector, watcher):
        c.next(Message, lambda m: m.topic == "rally/box07/status")  # the marker
        assert not [e for e in c.drain() if isinstance(e, Disconnected)]
        assert c.link.connected
    # The same ACL holds there: HQ cannot publish an event.
    assert not collector.publish("rally/box07/event").ok
    assert collector.publish("rally/box07/ack", b'{"store":"s","upto":0}').ok


@needs_tools
def test_a_box_cannot_log_in_on_hq_listener(shipped: ShippedBroker, clients) -> None:
    # A box's credentials do not exist there, so a stolen one cannot pick a client id.
    intruder = clients(shipped.hq_url, "box07", client_id="checkpoint-hq-main")
    refused = intruder.next(Disconnected)
    assert "Not authorized" in refused.reason or "password" in refused.reason


# -- TLS ---------------------------------------------------------------------------------


@needs_tools
def test_tls_refuses_wrong_host_unknown_ca_and_plain_tcp(
    shipped: ShippedBroker, clients, pki, caplog
) -> None:

    with caplog.at_level(logging.ERROR, logger="checkpoint.mqtt"):
        # The certificate names "localhost" only; 127.0.0.1 is another name.
        wrong_host = clients(shipped.url(shipped.pw_port, "127.0.0.1"), "box07")
        unknown_ca = clients(shipped.pw_url, "box07", ca_file=str(pki / "rogue" / "ca.crt"))
        system_ca = clients(shipped.pw_url, "box07", ca_file=None)
        _each_refused(caplog, wrong_host, unknown_ca, system_ca)
    for c in (wrong_host, unknown_ca, system_ca):
        assert not c.link.connected and not [e for e in c.drain() if isinstance(e, Connected)]
    errors = " ".join(r.getMessage() for r in caplog.records)
    assert "IP address mismatch" in errors or "mismatch" in errors
    assert "certificate verify failed" in errors
    # A plain client cannot talk to a TLS listener at all.
    with caplog.at_level(logging.DEBUG, logger="checkpoint.mqtt"):
        plain = Client(f"mqtt://127.0.0.1:{shipped.pw_port}", "plain", username="box07")
        _each_refused(caplog, plain)
    assert not plain.link.connected
    plain.close()


@needs_tools
def test_client_certificate_login_uses_the_cn_as_box_id(
    shipped: ShippedBroker, clients, pki, caplog
):
    def cert(box: str, d: Path = pki) -> dict[str, str]:
        return {
            "cert_file": str(d / "clients" / f"{box}.crt"),
            "key_file": str(d / "clients" / f"{box}.key"),
        }

    box07 = clients(shipped.cert_url, None, client_id="c07", **cert("box07"))
    box07.next(Connected)
    assert box07.publish("rally/box07/event").ok
    forged = box07.publish("rally/box08/event")
    assert not forged.ok and forged.reason == "Not authorized"
    # No certificate, or one from another CA: no connection.
    with caplog.at_level(logging.DEBUG, logger="checkpoint.mqtt"):
        bare = clients(shipped.cert_url, "box07")
        rogue = clients(shipped.cert_url, None, client_id="r07", **cert("box07", pki / "rogue"))
        _each_refused(caplog, bare, rogue)
    assert not bare.link.connected and not rogue.link.connected


def test_link_wants_tls_for_a_client_certificate(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="mqtts"):
        Link("mqtt://127.0.0.1", "b", print, cert_file="c.pem")
    with pytest.raises(LinkError, match="without cert_file"):
        Link("mqtts://127.0.0.1", "b", print, key_file="k.pem")
    with pytest.raises(LinkError, match="TLS setup failed"):
        Link("mqtts://127.0.0.1", "b", print, cert_file=str(tmp_path / "missing.pem"))


# -- secrets -----------------------------------------------------------------------------


def test_secret_files_others_can_read_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2-very-secret\n")
    for mode in (0o644, 0o640, 0o604):
        os.chmod(secret, mode)
        with pytest.raises(ConfigError, match="readable by others") as err:
            read_secret(str(secret), "mqtt.password_file")
        assert "hunter2" not in str(err.value)
        with pytest.raises(ConfigError, match="chmod 600"):
            check_private(str(secret), "mqtt.key_file")
    os.chmod(secret, 0o600)
    assert read_secret(str(secret), "x") == "hunter2-very-secret"
    check_private(str(secret), "mqtt.key_file")
    check_private(None, "mqtt.key_file")


@needs_tools
def test_box_refuses_to_start_with_a_readable_key(tmp_path: Path, pki: Path) -> None:
    key = tmp_path / "box07.key"
    shutil.copyfile(pki / "clients" / "box07.key", key)
    os.chmod(key, 0o644)
    cfg = tmp_path / "box.toml"
    cfg.write_text(
        f"""[box]
id = "box07"
checkpoint = "PC3"
[store]
path = "box.db"
[mqtt]
broker = "mqtts://localhost:8884"
ca_file = "{pki / "ca.crt"}"
cert_file = "{pki / "clients" / "box07.crt"}"
key_file = "{key}"
"""
    )
    res = subprocess.run(
        [sys.executable, "-m", "checkpoint", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    assert "mqtt.key_file" in res.stderr and "readable by others" in res.stderr
    assert "BEGIN" not in res.stderr and not (tmp_path / "box.db").exists()


@needs_tools
def test_daemon_refused_by_acl_raises_alarm_keeps_event_and_never_shows_password(
    tmp_path: Path, pki: Path, clients
) -> None:
    # An operator's typo in the ACL: the box may report status but not publish events.
    acl = tmp_path / "acl-typo"
    shipped_acl = (BROKER / "acl").read_text()
    assert "pattern write rally/%u/event\n" in shipped_acl
    acl.write_text(shipped_acl.replace("rally/%u/event\n", "rally/%u/events\n"))
    broker = ShippedBroker(tmp_path / "broker", pki, acl).start()
    secret = password(pki, "box07")
    pw_file = tmp_path / "box07.password"
    pw_file.write_text(secret + "\n")
    os.chmod(pw_file, 0o600)
    watcher = clients(broker.pw_url, "hq", subscriptions=[("rally/box07/status", 1)])
    watcher.next(SubAck)
    rig = BoxRig(
        tmp_path,
        broker.pw_url,
        mqtt_extra=(
            f'username = "box07"\npassword_file = "{pw_file}"\nca_file = "{pki / "ca.crt"}"\n'
        ),
    )
    statuses: list[bytes] = []
    try:
        rig.start()
        watcher.next(Message, lambda m: m.topic.endswith("/status"), timeout=15)
        t = time.monotonic_ns() + 200_000_000
        rig.pin("GPIO17", t, 0)  # active-low beam broken ...
        rig.pin("GPIO17", t + 150_000_000, 1)  # ... and clear: one passage

        def refused_and_kept(m: Message) -> bool:
            statuses.append(m.payload)
            st = json.loads(m.payload)
            return st.get("backlog", 0) >= 1 and "Not authorized" in json.dumps(st.get("alarms"))

        alarmed = json.loads(watcher.next(Message, refused_and_kept, timeout=20).payload)
        assert alarmed["acked_upto"] == 0 and alarmed["last_seq"] >= 1
    finally:
        rig.stop()
        rig.close()
        broker.stop()
    # The refused event is still in the box's store, not acknowledged.
    conn = sqlite3.connect(rig.store_path)
    try:
        assert conn.execute("SELECT count(*) FROM events WHERE type='passage'").fetchone()[0] == 1
        assert conn.execute("SELECT upto FROM acks").fetchone()[0] == 0
    finally:
        conn.close()
    log = rig.log_text()
    assert "Not authorized" in log
    # The password is in no log line and no status message.
    assert secret not in log and secret not in broker.log()
    assert all(secret.encode() not in s for s in statuses)


# -- commands are untrusted input ----------------------------------------------------------


def test_resend_requests_are_clamped_to_what_the_store_has() -> None:
    box = Outbox(store_id="s1", max_inflight=8)
    box.load(last_seq=50, acked_upto=10)
    box.connected(0)
    # Beyond the last seq, negative, reversed, huge: clamped or nothing.
    assert box.resend(-5, 3) == 3
    assert box.resend(40, 10**18) == 11
    assert box.resend(30, 20) == 0
    assert box.resend(60, 70) == 0
    assert box.resend(1, 10**9) <= MAX_RESEND
    sent = box.next_to_send(1)
    assert sent and max(sent) <= 50 and min(sent) >= 1
    # An ack for another store, or beyond what the store holds, moves nothing it should not.
    assert not box.hq_ack("other-store", 50)
    assert box.hq_ack("s1", 10**12) and box.acked_upto == 50 and box.alarm is not None


def test_marshal_corrections_are_validated() -> None:
    pipe = Pipeline(
        box="box07", checkpoint="PC3", store="s1", inputs=[InputConfig(name="beam", pin="GPIO17")]
    )
    pipe.issue("passage", {"input": "beam"})
    for bad in ("", " ", "x" * 17, "4\n2", "\x00"):
        with pytest.raises(CommandError):
            pipe.assign(1, bad)
    for ref in (0, 2, -1, 10**9, "1", True):
        with pytest.raises(CommandError):
            pipe.assign(ref, "42")  # type: ignore[arg-type]
    with pytest.raises(CommandError):
        pipe.void(1, "r" * 201)
    assert pipe.next_seq == 2  # nothing refused took a seq


def test_config_keeps_credentials_out_of_the_url_and_tls_files_with_tls(tmp_path: Path) -> None:
    from checkpoint import config

    base = '[box]\nid = "box07"\ncheckpoint = "PC3"\n[mqtt]\n'
    cases = [
        ('broker = "mqtts://box07:hunter2@hq.example:8883"\n', "must not hold credentials"),
        ('broker = "mqtt://hq.example"\ncert_file = "c.pem"\n', "mqtt.cert_file: needs a TLS"),
        ('broker = "mqtts://hq.example"\nkey_file = "k.pem"\n', "without mqtt.cert_file"),
    ]
    for text, message in cases:
        p = tmp_path / "box.toml"
        p.write_text(base + text)
        with pytest.raises(ConfigError, match=message) as err:
            config.load(p)
        assert "hunter2" not in str(err.value)
    p.write_text(base + 'broker = "mqtts://hq.example"\ncert_file = "c.pem"\nkey_file = "k.pem"\n')
    cfg = config.load(p)
    assert (cfg.mqtt.cert_file, cfg.mqtt.key_file) == ("c.pem", "k.pem")
