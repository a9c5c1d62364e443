"""Where the broker is and how a link may reach it: the broker URL and the settings
checks `mqtt.Link` makes before it builds a client (no paho here, so a config check
or a command can name a bad URL without loading the MQTT library).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from checkpoint.errors import LinkError

log = logging.getLogger("checkpoint.mqtt")

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed broker URL; `tls` is True for mqtts://."""

    scheme: str
    host: str
    port: int
    tls: bool


def _redacted(url: str) -> str:
    # Never echo a password into a log or an error message.
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse mqtt://host[:port] (default 1883) or mqtts://host[:port] (default 8883).

    Anything else raises LinkError naming the bad part. Credentials in the URL are
    refused: they are configured separately, so they never end up in logs.
    """
    if not isinstance(url, str) or not url.strip():
        raise LinkError("broker URL is empty; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    shown = _redacted(url)
    try:
        parts = urlsplit(url.strip())
    except ValueError as err:
        raise LinkError(f"broker URL {shown!r} is malformed: {err}") from None
    scheme = parts.scheme.lower()
    if "://" not in url or scheme not in _DEFAULT_PORTS:
        raise LinkError(
            f"broker URL {shown!r}: scheme {parts.scheme or '(none)'!r} is not mqtt or mqtts "
            "(expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT])"
        )
    if "@" in parts.netloc:
        raise LinkError(
            f"broker URL {shown!r}: user info is not allowed in the URL; "
            "configure username and password separately"
        )
    host = parts.hostname or ""
    if not host:
        raise LinkError(f"broker URL {shown!r}: host is missing")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise LinkError(
                f"broker URL {shown!r}: host {host!r} is not a valid IPv6 address"
            ) from None
    elif not _HOSTNAME.match(host):
        raise LinkError(f"broker URL {shown!r}: host {host!r} is not a valid host name")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rsplit(":", 1)[-1]
        raise LinkError(
            f"broker URL {shown!r}: port {port_text!r} is not a number in 1..65535"
        ) from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise LinkError(f"broker URL {shown!r}: port is empty")
        port = _DEFAULT_PORTS[scheme]
    elif not 1 <= port <= 65535:
        raise LinkError(f"broker URL {shown!r}: port {port} is not in 1..65535")
    if parts.path not in ("", "/"):
        raise LinkError(f"broker URL {shown!r}: path {parts.path!r} is not allowed")
    if parts.query or parts.fragment:
        bad = f"?{parts.query}" if parts.query else f"#{parts.fragment}"
        raise LinkError(f"broker URL {shown!r}: {bad!r} is not allowed")
    return BrokerUrl(scheme=scheme, host=host, port=port, tls=scheme == "mqtts")


def is_loopback(host: str) -> bool:
    """localhost or a loopback address: a plain link to it never leaves the machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_session(client_id: str, session_expiry_s: int, keepalive: int) -> None:
    """Raise LinkError for session settings that cannot work."""
    if session_expiry_s < 0:
        raise LinkError(f"session_expiry_s must be >= 0, got {session_expiry_s}")
    if session_expiry_s > 0 and not client_id:
        raise LinkError("a persistent session (session_expiry_s > 0) needs a client_id")
    if keepalive < 1:
        raise LinkError(f"keepalive must be >= 1 s, got {keepalive}")


def check_security(
    broker: BrokerUrl,
    username: str | None,
    password: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
) -> None:
    """Raise LinkError for credentials and TLS files that do not fit together or the URL;
    warn of a plain link to another machine."""
    if password is not None and username is None:
        raise LinkError("an MQTT password was given without a username")
    if ca_file is not None and not broker.tls:
        raise LinkError(
            f"ca_file {ca_file!r} is set but the broker URL is plain mqtt://; use mqtts://"
        )
    if (cert_file is not None or key_file is not None) and not broker.tls:
        raise LinkError("a client certificate needs mqtts://, but the broker URL is mqtt://")
    if key_file is not None and cert_file is None:
        raise LinkError(f"key_file {key_file!r} is set without cert_file")
    if not broker.tls and not is_loopback(broker.host):
        # Once per link, not per reconnect: a reminder, not log spam.
        log.warning(
            "insecure: broker %s:%d is plain mqtt://, passages and credentials travel "
            "unencrypted; use mqtts://",
            broker.host,
            broker.port,
        )
