"""The MQTT link: a thin paho-mqtt wrapper speaking MQTT v5, reporting `LinkEvent`s.

This is the only module that imports paho. paho runs its network loop in its own
thread and calls back from there; every callback here only turns what happened
into a small immutable `LinkEvent` and hands it to `on_event` (the daemon puts it
on the core thread's queue). No database work happens on paho's thread.

Delivery contract, which the outbox relies on:

* `publish()` returns the packet id (`mid`) or None. None means "not sent now,
  keep it in the store": we never let paho queue box events in its own memory
  while offline, because that memory dies with the process; the store is the queue.
* A QoS 1 publish is answered by at most one `PubAck(mid, ok, reason)`; if its
  connection ends first, a `Disconnected` follows instead, and every mid not yet
  acknowledged when the consumer handles it is void: resend from the store.
  (paho would otherwise resend such messages itself after reconnecting; `Link`
  drops them, see `_on_connect`.) This ordering holds when `publish()` is called
  by the thread that consumes the events, as the daemon's core thread does.
* `ok` comes from the MQTT v5 reason code: a broker that refuses a publish (ACL)
  still answers with a PUBACK, and only its reason code says "Not authorized".
* A QoS 0 publish yields `PubAck(ok=True)` when it was written to the socket
  (paho's semantics); nothing acknowledges its arrival.
* mids are 16-bit and reused by paho, and restart at 1 in every `Link`: they
  identify a publish only until its PubAck or the next Disconnected.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from checkpoint.brokerurl import BrokerUrl, check_security, check_session, parse_broker_url
from checkpoint.errors import LinkError

__all__ = [  # BrokerUrl and parse_broker_url: re-exported, callers import them from here
    "BrokerUrl",
    "Connected",
    "Disconnected",
    "Link",
    "LinkEvent",
    "Message",
    "PubAck",
    "SubAck",
    "parse_broker_url",
]

log = logging.getLogger("checkpoint.mqtt")
_paho_log = logging.getLogger("checkpoint.mqtt.paho")
_PAHO_SOCKET_NOISE = ("Client is not connected", "failed to receive on socket", "timeout on socket")

# Reconnect back-off: quick enough that a broker restart costs a second, capped so
# a box on a dead mobile link still retries every few seconds.
_RECONNECT_MIN_S = 0.5
_RECONNECT_MAX_S = 8


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    # paho leaves Nagle on: a small PUBLISH then waits for the previous segment's
    # delayed ACK (~20-40 ms on Linux), which is most of a passage's latency.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # TLS-wrapped or non-TCP sockets
        pass


# --- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The broker accepted the connection (CONNACK success); subscriptions are being made.

    `session_present` is True when a persistent session (session_expiry_s > 0)
    survived, so messages queued for us while offline will follow.
    """

    session_present: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended (or a connect was refused: `reason` then says why).

    Every QoS 1 mid published before this and not yet PubAck'd is void.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class PubAck:
    """The broker answered publish `mid`; `ok` is False when its reason code is a failure."""

    mid: int
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Message:
    """A message on a subscribed topic; `retain` is True when it is a stored retained one."""

    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class SubAck:
    """The broker answered a SUBSCRIBE; `reasons` has one entry per topic filter."""

    mid: int
    ok: bool
    reasons: tuple[str, ...]


LinkEvent = Connected | Disconnected | PubAck | Message | SubAck


# --- the link -----------------------------------------------------------------------


class Link:
    """One MQTT v5 client connection that reconnects by itself and reports `LinkEvent`s.

    `on_event` is called on paho's network thread: it must be quick and must not
    block on anything that thread provides (put the event on a queue).
    `will` is (topic, payload, retain), published at QoS 1 by the broker when the
    link dies without a clean `stop()`. `session_expiry_s > 0` asks for a persistent
    session (clean_start=False), so the broker queues QoS 1 messages for us while we
    are offline; a stable `client_id` is then required. `max_queued` caps paho's own
    buffer of unacknowledged messages (0: no cap); publish returns None beyond it.
    `cert_file` (and `key_file`, unless the key is in the same PEM) is a client
    certificate for brokers that authenticate clients by certificate (mqtts:// only).
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        on_event: Callable[[LinkEvent], None],
        *,
        will: tuple[str, bytes, bool] | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        keepalive: int = 15,
        session_expiry_s: int = 0,
        subscriptions: Sequence[tuple[str, int]] = (),
        max_queued: int = 0,
    ) -> None:
        self.broker = parse_broker_url(url)
        check_session(client_id, session_expiry_s, keepalive)
        check_security(self.broker, username, password, ca_file, cert_file, key_file)
        self.client_id = client_id
        self._on_event = on_event
        self._keepalive = keepalive
        self._session_expiry_s = session_expiry_s
        self._subscriptions = [(topic, int(qos)) for topic, qos in subscriptions]
        # Written on paho's thread, read by publishers: a bool store is atomic.
        self._connected = False
        self._refused: str | None = None
        self._unreachable_logged = False
        self._stopping = False
        self._started = False
        self._start_lock = threading.Lock()

        client = self._new_client(will, username, password, ca_file, cert_file, key_file)
        client.max_queued_messages_set(max_queued)
        client.on_socket_open = _no_delay
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._thread: threading.Thread | None = None

    def _new_client(
        self,
        will: tuple[str, bytes, bool] | None,
        username: str | None,
        password: str | None,
        ca_file: str | None,
        cert_file: str | None,
        key_file: str | None,
    ) -> paho.Client:
        """A paho v5 client with this link's identity, will and TLS, callbacks not yet set."""
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.on_log = self._on_log
        # Floats work: paho only does arithmetic with the delays.
        client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        if username is not None:
            client.username_pw_set(username, password)
        if will is not None:
            topic, payload, retain = will
            client.will_set(topic, payload, qos=1, retain=retain)
        if self.broker.tls:
            try:
                # PROTOCOL_TLS_CLIENT: certificate and host name are both verified.
                client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
            except (OSError, ssl.SSLError, ValueError) as err:
                raise LinkError(
                    f"TLS setup failed (ca_file {ca_file!r}, cert_file {cert_file!r}, "
                    f"key_file {key_file!r}): {err}"
                ) from err
        return client

    # -- control (any thread) ------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; a broker that is down is not an error.

        paho retries with back-off (0.5 s doubling to 8 s) and `Connected` is
        reported when the broker answers.
        """
        with self._start_lock:
            if self._started:
                return
            self._started = True
        self._stopping = False
        properties = None
        if self._session_expiry_s > 0:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry_s
        self._client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=self._keepalive,
            clean_start=self._session_expiry_s == 0,
            properties=properties,
        )
        before = set(threading.enumerate())
        self._client.loop_start()
        # paho keeps its loop thread private; the one thread loop_start just started is
        # it (named after the client, which tells it from any other starting meanwhile).
        started = [t for t in threading.enumerate() if t not in before]
        self._thread = next(
            (t for t in started if t.name.startswith("paho-mqtt-client")),
            started[0] if len(started) == 1 else None,
        )

    def stop(self) -> None:
        """Disconnect cleanly (the broker does not publish the will) and end paho's thread."""
        with self._start_lock:
            if not self._started:
                return
            self._started = False
        self._stopping = True
        # The DISCONNECT goes out on paho's thread, which then reports
        # `Disconnected` like any other end of a connection.
        self._client.disconnect()
        self._client.loop_stop()
        self._connected = False

    @property
    def thread(self) -> threading.Thread | None:
        """paho's network thread since `start()` (None before it), for a watchdog."""
        return self._thread

    @property
    def alive(self) -> bool:
        """True while paho's network thread runs: false before `start()`, after `stop()`,
        and if the thread died (no message would ever be sent or received again)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True between `Connected` and `Disconnected`."""
        return self._connected

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> int | None:
        """Send one message now; return its mid, or None if it could not be sent now.

        Safe to call from any thread: paho guards its message table and packet
        queue with its own locks and wakes its loop through a socket pair.
        """
        if not self._connected:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return info.mid
        # NO_CONN: the link dropped after the check above. paho keeps the message
        # for a resend, but `_on_connect` discards it: the store will resend.
        # QUEUE_SIZE: `max_queued` reached.
        log.debug("publish to %s not sent: %s", topic, paho.error_string(info.rc))
        return None

    # -- paho callbacks (paho's network thread) -------------------------------------

    def _on_log(self, client: paho.Client, userdata: Any, level: int, buf: str) -> None:
        py_level = paho.LOGGING_LEVEL.get(level, logging.DEBUG)
        if self._stopping or buf.startswith(_PAHO_SOCKET_NOISE):
            # paho logs at ERROR every failed retry while the broker is away and
            # the socket it closed itself after our DISCONNECT; this module
            # already reports each outage once, at the right level.
            py_level = logging.DEBUG
        _paho_log.log(py_level, "%s: %s", self.client_id, buf)

    def _emit(self, event: LinkEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            # paho re-raises callback exceptions, which would end its network
            # thread and leave the link dead without a word.
            log.exception("on_event failed for %r", event)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            log.error(
                "broker %s:%d refused the connection: %s",
                self.broker.host,
                self.broker.port,
                reason_code,
            )
            return
        # paho resends unacknowledged QoS>0 messages of the previous connection
        # right after this callback. Drop them: the outbox resends from the store
        # after `Disconnected`, and paho's copies would arrive as duplicates whose
        # PUBACKs carry mids the outbox has already forgotten. Done before
        # `_connected` is set, so no publish of this connection can be dropped.
        dropped = client.drop_out_messages()
        if dropped:
            log.debug("dropped %d unacknowledged messages of the previous connection", len(dropped))
        self._refused = None
        self._unreachable_logged = False
        self._connected = True
        log.info(
            "connected to %s:%d (session present: %s)",
            self.broker.host,
            self.broker.port,
            flags.session_present,
        )
        self._emit(Connected(session_present=bool(flags.session_present)))
        # Subscribe on every connect: with a clean start the broker forgot them,
        # and renewing them in a persistent session is harmless.
        if self._subscriptions:
            client.subscribe(self._subscriptions)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # TCP/TLS connect failed (broker down, DNS, certificate): paho retries.
        # paho passes no error, but calls us inside its `except OSError` block,
        # so the exception is still the one being handled.
        err = sys.exception()
        if isinstance(err, ssl.SSLError):
            # A certificate problem is a configuration error, not an outage:
            # say so on every attempt, the marshal has to fix it.
            log.error("TLS to %s:%d failed: %s", self.broker.host, self.broker.port, err)
        elif not self._unreachable_logged:
            self._unreachable_logged = True
            log.info(
                "broker %s:%d unreachable (%s), retrying",
                self.broker.host,
                self.broker.port,
                err or "connect failed",
            )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected, self._connected = self._connected, False
        refused, self._refused = self._refused, None
        # paho can report one loss twice (keepalive check, then the loop's error);
        # report each connection's end once, and each refused connect.
        if not was_connected and refused is None:
            return
        reason = refused or str(reason_code)
        if was_connected:
            level = logging.INFO if self._stopping else logging.WARNING
            log.log(
                level, "disconnected from %s:%d: %s", self.broker.host, self.broker.port, reason
            )
        self._emit(Disconnected(reason=reason))

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # paho calls this for the PUBACK of QoS 1 (reason code read under v5)
        # and when a QoS 0 packet has been written.
        self._emit(PubAck(mid=mid, ok=not reason_code.is_failure, reason=str(reason_code)))

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("subscription refused by broker: %s", ", ".join(failed))
        self._emit(
            SubAck(
                mid=mid,
                ok=not failed,
                reasons=tuple(str(rc) for rc in reason_codes),
            )
        )

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("dropped a message whose topic is not UTF-8")
            return
        self._emit(
            Message(topic=topic, payload=bytes(message.payload), retain=bool(message.retain))
        )
