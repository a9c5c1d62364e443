"""checkpoint.mqtt against a real Mosquitto (no mocks): acks, reason codes, wills, reconnects."""

from __future__ import annotations

import logging
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from waits import wait_for

from checkpoint.errors import LinkError
from checkpoint.mqtt import (
    BrokerUrl,
    Connected,
    Disconnected,
    Link,
    LinkEvent,
    Message,
    PubAck,
    SubAck,
    parse_broker_url,
)
from sim.broker import Mosquitto, free_port

STATUS = "rally/box07/status"
LOST = b'{"state":"lost"}'
ONLINE = b'{"state":"online"}'


class Recorder:
    """Collects a Link's events (called on paho's thread) for the test thread to wait on."""

    def __init__(self) -> None:
        self.events: list[LinkEvent] = []
        self._cv = threading.Condition()
        self._cursor = 0

    def __call__(self, event: LinkEvent) -> None:
        with self._cv:
            self.events.append(event)
            self._cv.notify_all()

    def next(
        self,
        kind: type,
        where: Callable[[LinkEvent], bool] = lambda e: True,
        timeout: float = 5.0,
    ) -> LinkEvent:
        """The first matching event after the previous match; waits up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for i in range(self._cursor, len(self.events)):
                    event = self.events[i]
                    if isinstance(event, kind) and where(event):
                        self._cursor = i + 1
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {kind.__name__} within {timeout} s; events: {self.events}"
                    )
                self._cv.wait(remaining)

    def all(self, kind: type) -> list[LinkEvent]:
        with self._cv:
            return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def make_link() -> Iterator[Callable[..., tuple[Link, Recorder]]]:
    """Create started Links with a Recorder each; all are stopped after the test."""
    links: list[Link] = []

    def make(url: str, client_id: str, *, start: bool = True, **kwargs: object):
        recorder = Recorder()
        link = Link(url, client_id, recorder, **kwargs)  # type: ignore[arg-type]
        links.append(link)
        if start:
            link.start()
        return link, recorder

    yield make
    for link in links:
        link.stop()


# --- parse_broker_url ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://hq.example.org", BrokerUrl("mqtt", "hq.example.org", 1883, False)),
        ("mqtts://hq.example.org", BrokerUrl("mqtts", "hq.example.org", 8883, True)),
        ("mqtt://127.0.0.1:1884", BrokerUrl("mqtt", "127.0.0.1", 1884, False)),
        ("MQTTS://HQ.Example.org:9999/", BrokerUrl("mqtts", "hq.example.org", 9999, True)),
        ("mqtt://[::1]:1883", BrokerUrl("mqtt", "::1", 1883, False)),
        ("  mqtt://localhost  ", BrokerUrl("mqtt", "localhost", 1883, False)),
    ],
)
def test_parse_broker_url_accepts(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("", "empty"),
        ("http://hq:1883", "scheme 'http'"),
        ("hq.example.org:1883", "scheme"),
        ("hq.example.org", "scheme"),
        ("mqtt://", "host is missing"),
        ("mqtt://:1883", "host is missing"),
        ("mqtt://hq:abc", "port 'abc'"),
        ("mqtt://hq:0", "port 0"),
        ("mqtt://hq:70000", "port '70000'"),
        ("mqtt://hq:", "port is empty"),
        ("mqtt://hq/rally", "path '/rally'"),
        ("mqtt://hq?x=1", "'?x=1'"),
        ("mqtt://hq#frag", "'#frag'"),
        ("mqtt://ho st", "host 'ho st'"),
        ("mqtt://box:s3cret@hq", "user info"),
    ],
)
def test_parse_broker_url_rejects_naming_the_bad_part(url: str, names: str) -> None:
    with pytest.raises(LinkError) as info:
        parse_broker_url(url)
    assert names in str(info.value)
    assert "s3cret" not in str(info.value)


def test_link_rejects_unusable_settings(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="mqtts"):
        Link("mqtt://127.0.0.1", "box", print, ca_file="ca.pem")
    with pytest.raises(LinkError, match="missing.pem"):
        Link("mqtts://127.0.0.1", "box", print, ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(LinkError, match="client_id"):
        Link("mqtt://127.0.0.1", "", print, session_expiry_s=60)
    with pytest.raises(LinkError, match="username"):
        Link("mqtt://127.0.0.1", "box", print, password="x")


def test_plain_mqtt_warns_insecure_once_unless_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="checkpoint.mqtt"):
        Link("mqtt://127.0.0.1:1883", "a", print)
        Link("mqtt://localhost:1883", "b", print)
        assert not caplog.records
        Link("mqtt://hq.example.org", "c", print)
    assert [r.message.split(":")[0] for r in caplog.records] == ["insecure"]


# --- against the broker ------------------------------------------------------------------


def test_qos1_publish_is_acked_and_delivered(broker: Mosquitto, make_link) -> None:
    sub, sub_events = make_link(broker.url, "hq", subscriptions=[("rally/+/passage", 1)])
    sub_events.next(Connected)
    assert sub_events.next(SubAck).ok
    pub, pub_events = make_link(broker.url, "box07")
    pub_events.next(Connected)
    assert pub.connected

    mid = pub.publish("rally/box07/passage", b'{"seq":1}')
    assert isinstance(mid, int)
    ack = pub_events.next(PubAck, lambda e: e.mid == mid)
    assert ack == PubAck(mid=mid, ok=True, reason="Success")
    assert sub_events.next(Message) == Message("rally/box07/passage", b'{"seq":1}', False)


def test_accepted_publish_without_subscribers_is_still_ok(broker: Mosquitto, make_link) -> None:
    # MQTT v5 PUBACK reason 0x10 is a success code, not a refusal.
    pub, events = make_link(broker.url, "box07")
    events.next(Connected)
    mid = pub.publish("rally/box07/passage", b"x")
    assert events.next(PubAck, lambda e: e.mid == mid) == PubAck(
        mid, True, "No matching subscribers"
    )


def test_acl_refusal_arrives_as_failed_puback(broker_factory, make_link, tmp_path) -> None:
    # Under MQTT v3.1.1 Mosquitto acks a denied publish like an accepted one;
    # only the v5 reason code tells them apart.
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite rally/#\n")
    broker = broker_factory(extra_conf=f"acl_file {acl}")
    pub, events = make_link(broker.url, "box07")
    events.next(Connected)

    denied = pub.publish("hq/forbidden", b"x")
    allowed = pub.publish("rally/box07/passage", b"x")
    assert events.next(PubAck, lambda e: e.mid == denied) == PubAck(denied, False, "Not authorized")
    assert events.next(PubAck, lambda e: e.mid == allowed).ok


def test_refused_connect_reports_the_reason(broker_factory, make_link) -> None:
    broker = broker_factory(extra_conf="allow_anonymous false")
    link, events = make_link(broker.url, "box07")
    assert events.next(Disconnected).reason == "Not authorized"
    assert not link.connected
    assert not events.all(Connected)


_DYING_BOX = textwrap.dedent(
    """
    import queue, sys, time
    from checkpoint.mqtt import Connected, Link, PubAck

    events = queue.Queue()
    link = Link(sys.argv[1], "box07", events.put,
                will=("rally/box07/status", b'{"state":"lost"}', True))
    link.start()
    while not isinstance(events.get(timeout=10), Connected):
        pass
    mid = link.publish("rally/box07/status", b'{"state":"online"}', retain=True)
    while True:
        event = events.get(timeout=10)
        if isinstance(event, PubAck) and event.mid == mid:
            break
    print("ready", flush=True)
    time.sleep(60)  # a box that lives until the test kills it
    """
)


def test_will_is_published_retained_when_the_box_dies(broker: Mosquitto, make_link) -> None:
    box = subprocess.Popen(
        [sys.executable, "-c", _DYING_BOX, broker.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([box.stdout], [], [], 15)
        assert ready and box.stdout.readline() == b"ready\n", box.stderr.read1()
        watcher, seen = make_link(broker.url, "hq", subscriptions=[(STATUS, 1)])
        assert seen.next(Message) == Message(STATUS, ONLINE, True)

        box.send_signal(signal.SIGKILL)  # no DISCONNECT: like a power cut
        box.wait(5)
        # Live delivery to an existing subscriber: retain flag off...
        assert seen.next(Message) == Message(STATUS, LOST, False)
    finally:
        box.kill()
        box.wait(5)
        box.stdout.close()
        box.stderr.close()
    # ...but the broker kept it: a new subscriber gets it as retained status.
    late, late_seen = make_link(broker.url, "results", subscriptions=[(STATUS, 1)])
    assert late_seen.next(Message) == Message(STATUS, LOST, True)


def test_clean_stop_does_not_publish_the_will(broker: Mosquitto, make_link) -> None:
    box, events = make_link(broker.url, "box07", will=(STATUS, LOST, True))
    events.next(Connected)
    mid = box.publish(STATUS, ONLINE, retain=True)
    events.next(PubAck, lambda e: e.mid == mid)
    box.stop()
    assert events.next(Disconnected).reason == "Normal disconnection"
    assert not box.connected

    watcher, seen = make_link(broker.url, "hq", subscriptions=[(STATUS, 1)])
    assert seen.next(Message) == Message(STATUS, ONLINE, True)
    # The marker: a message on the same topic published now; a will (even a delayed
    # one) sent at the stop would reach the watcher before it.
    marker, marker_events = make_link(broker.url, "marker")
    marker_events.next(Connected)
    marker.publish(STATUS, b"marker")
    seen.next(Message, lambda m: m.payload == b"marker")
    assert seen.all(Message) == [Message(STATUS, ONLINE, True), Message(STATUS, b"marker", False)]


def test_broker_down_at_start_connects_when_it_comes_up(broker_factory, make_link, caplog) -> None:
    port = free_port()
    caplog.set_level(logging.INFO, logger="checkpoint.mqtt")
    link, events = make_link(f"mqtt://127.0.0.1:{port}", "box07")  # no exception
    # The marker: its first connect has failed (and it goes on retrying).
    wait_for(lambda: f"127.0.0.1:{port} unreachable" in caplog.text, 10, "a failed connect")
    assert not link.connected
    assert link.publish("rally/box07/passage", b"x") is None
    broker_factory(port=port)
    assert events.next(Connected, timeout=6) == Connected(session_present=False)
    assert link.connected
    assert not events.all(Disconnected)  # failed TCP connects are not disconnections


def test_publish_while_disconnected_returns_none(broker: Mosquitto, make_link) -> None:
    link, events = make_link(broker.url, "box07")
    events.next(Connected)
    broker.stop()
    events.next(Disconnected)
    assert not link.connected
    assert link.publish("rally/box07/passage", b"x") is None


def test_broker_restart_reconnects_and_restores_subscriptions(broker: Mosquitto, make_link) -> None:
    sub, sub_events = make_link(broker.url, "hq", subscriptions=[("rally/#", 1)])
    pub, pub_events = make_link(broker.url, "box07")
    sub_events.next(SubAck)
    pub_events.next(Connected)

    broker.restart()  # not persistent: the broker forgets every subscription
    for events in (sub_events, pub_events):
        events.next(Disconnected)
        events.next(Connected, timeout=6)
    assert sub_events.next(SubAck).ok

    mid = pub.publish("rally/box07/passage", b"after restart")
    assert pub_events.next(PubAck, lambda e: e.mid == mid).ok
    assert sub_events.next(Message).payload == b"after restart"


def test_keepalive_detects_dead_link_and_voids_inflight_mid(broker: Mosquitto, make_link) -> None:
    sub, sub_events = make_link(broker.url, "hq", subscriptions=[("rally/#", 1)])
    sub_events.next(SubAck)
    link, events = make_link(broker.url, "box07", keepalive=1)
    events.next(Connected)

    broker.pause()  # TCP stays up, the broker answers nothing
    try:
        mid = link.publish("rally/box07/passage", b"in flight")
        assert mid is not None
        assert events.next(Disconnected, timeout=5).reason == "Keep alive timeout"
    finally:
        broker.resume()
    events.next(Connected, timeout=8)
    # paho would resend the unacked message on the new connection and report
    # its PUBACK under the old mid; Link drops it, the store resends instead.
    # The marker: a message published on the new connection, acked and delivered.
    later = link.publish("rally/box07/passage", b"marker")
    assert events.next(PubAck, lambda e: e.mid == later).ok
    sub_events.next(Message, lambda m: m.payload == b"marker")
    assert not [e for e in events.all(PubAck) if e.mid == mid]
    # The broker may still read the PUBLISH it had buffered, but only once.
    assert [m.payload for m in sub_events.all(Message)].count(b"in flight") <= 1


def test_persistent_session_keeps_messages_while_offline(broker: Mosquitto, make_link) -> None:
    hq_kwargs = {"session_expiry_s": 60, "subscriptions": [("rally/+/passage", 1)]}
    hq, hq_events = make_link(broker.url, "hq", **hq_kwargs)
    assert hq_events.next(Connected) == Connected(session_present=False)
    hq_events.next(SubAck)
    hq.stop()

    box, box_events = make_link(broker.url, "box07")
    box_events.next(Connected)
    mid = box.publish("rally/box07/passage", b"while hq was away")
    # Queued for the offline session: a real subscriber, so plain "Success".
    assert box_events.next(PubAck, lambda e: e.mid == mid).reason == "Success"

    hq2, hq2_events = make_link(broker.url, "hq", **hq_kwargs)
    assert hq2_events.next(Connected) == Connected(session_present=True)
    assert hq2_events.next(Message).payload == b"while hq was away"


def test_publish_from_several_threads(broker: Mosquitto, make_link) -> None:
    sub, sub_events = make_link(broker.url, "hq", subscriptions=[("rally/#", 1)])
    sub_events.next(SubAck)
    pub, pub_events = make_link(broker.url, "box07")
    pub_events.next(Connected)
    mids: list[int | None] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(50):
            mid = pub.publish(f"rally/box07/t{n}", f"{n}:{i}".encode())
            with lock:
                mids.append(mid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert None not in mids and len(set(mids)) == 200
    for mid in mids:
        assert pub_events.next(PubAck, lambda e, m=mid: e.mid == m, timeout=10).ok
    wait_for(lambda: len(sub_events.all(Message)) >= 200, 10, "200 messages delivered")
    payloads = sorted(m.payload for m in sub_events.all(Message))
    assert payloads == sorted(f"{n}:{i}".encode() for n in range(4) for i in range(50))


# --- TLS -------------------------------------------------------------------------------------


def _make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for IP 127.0.0.1 (not for "localhost")."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=ca"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", crt, "-days", "2", "-extfile", ext],
    ]
    for args in run:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca_crt, crt, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mqtts_verifies_certificate_and_host_name(
    broker_factory, make_link, tmp_path, caplog
) -> None:
    ca, crt, key = _make_certs(tmp_path)
    tls_port = free_port()
    broker_factory(extra_conf=f"listener {tls_port} 127.0.0.1\ncertfile {crt}\nkeyfile {key}\n")

    good, good_events = make_link(f"mqtts://127.0.0.1:{tls_port}", "box07", ca_file=str(ca))
    good_events.next(Connected)
    mid = good.publish("rally/box07/passage", b"over tls")
    assert good_events.next(PubAck, lambda e: e.mid == mid).ok

    with caplog.at_level(logging.ERROR, logger="checkpoint.mqtt"):
        # Same server, but the certificate does not name "localhost": refused.
        wrong_name, wrong_events = make_link(
            f"mqtts://localhost:{tls_port}", "box08", ca_file=str(ca)
        )
        # Trusting only the system CAs: refused as well.
        untrusted, untrusted_events = make_link(f"mqtts://127.0.0.1:{tls_port}", "box09")
        # The marker: both handshakes have failed (each failed try is logged).
        wait_for(
            lambda: "mismatch" in caplog.text and "unable to get local issuer" in caplog.text,
            10,
            "both TLS handshakes refused",
        )
    assert not wrong_events.events and not wrong_name.connected
    assert not untrusted_events.events and not untrusted.connected
    errors = " ".join(r.getMessage() for r in caplog.records)
    assert "mismatch" in errors and "'localhost'" in errors  # the reason reaches the log
    assert "unable to get local issuer certificate" in errors
