"""The daemon's control socket: marshal corrections (`checkpoint assign` / `void`) go through it.

The running daemon is the one owner of the store and of the event numbering, so a
correction typed on the box must be *asked of* the daemon, never written into the
database behind its back. The daemon runs a `ControlServer` in a thread on a Unix
stream socket (default: ``control.sock`` beside the store, i.e.
``/var/lib/checkpoint/control.sock``; mode 0660, so root and the ``checkpoint`` group
may use it). Protocol, one request per connection, one JSON object each way,
newline-terminated::

    → {"cmd": "assign", "seq": 17, "car": "42"}
    → {"cmd": "void", "seq": 17, "reason": "photographer"}
    ← {"ok": true}
    ← {"ok": false, "error": "car must be 1-16 printable characters"}

Requests are validated here (schema, types, ranges, lengths) before the handler sees
them; the handler is the daemon's ``correction(kind, ref_seq, value)``, which
enqueues for the core thread and returns. ``ok`` therefore means "accepted and
queued"; the pipeline still refuses a seq the store does not hold (logged), unless
the handler raises `CommandError` first, whose message is then the reply's error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from checkpoint.contracts import MAX_CAR, MAX_REASON, MAX_SEQ, is_int
from checkpoint.errors import CheckpointError, CommandError

log = logging.getLogger("checkpoint.box.control")

Handler = Callable[[str, int, str], None]

MAX_REQUEST = 4096
_CONN_TIMEOUT_S = 2.0
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the NUL


class ControlError(CheckpointError):
    """The control socket cannot be served or reached; the message says why."""


def socket_path(cfg: Any) -> str:
    """The control socket a config names: `[control] socket`, or beside the store."""
    explicit = getattr(getattr(cfg, "control", None), "socket", "")
    return explicit or str(Path(cfg.store).parent / "control.sock")


def validate(request: Any) -> tuple[str, int, str]:
    """A request → (kind, seq, value); raises CommandError naming what is wrong."""
    if not isinstance(request, dict):
        raise CommandError("request must be a JSON object")
    cmd = request.get("cmd")
    if cmd not in ("assign", "void"):
        raise CommandError(f"cmd must be 'assign' or 'void', got {cmd!r}")
    value_key = "car" if cmd == "assign" else "reason"
    unknown = set(request) - {"cmd", "seq", value_key}
    if unknown:
        raise CommandError(f"unknown field {', '.join(sorted(unknown))} for {cmd}")
    seq = request.get("seq")
    if not is_int(seq) or not 1 <= seq <= MAX_SEQ:
        raise CommandError(f"seq must be a positive integer, got {seq!r}")
    value = request.get(value_key)
    if not isinstance(value, str):
        raise CommandError(f"{value_key} must be a string, got {value!r}")
    value = value.strip()
    limit = MAX_CAR if cmd == "assign" else MAX_REASON
    if not 1 <= len(value) <= limit or not value.isprintable():
        raise CommandError(f"{value_key} must be 1-{limit} printable characters, got {value!r}")
    return cmd, seq, value


def _check_path(path: str) -> None:
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ControlError(
            f"control socket path {path!r} is longer than {_SUN_PATH_MAX} bytes; "
            "set [control] socket to a shorter path"
        )


class ControlServer:
    """Serves the control socket in a daemon thread until `close()`.

    `handler(kind, seq, value)` is called on this server's thread for every valid
    request and must only enqueue. A stale socket file left by a killed daemon is
    replaced; a socket someone still listens on is refused (two daemons, one store).
    """

    def __init__(self, path: str, handler: Handler, *, mode: int = 0o660) -> None:
        _check_path(path)
        self.path = path
        self.handler = handler
        self.requests = 0
        self.refused = 0
        self._remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            # Bound with the process umask (022 under systemd: nobody else can write,
            # so nobody else can connect) and only then opened up to the group.
            sock.bind(path)
            os.chmod(path, mode)
            sock.listen(8)
        except OSError as e:
            sock.close()
            raise ControlError(f"cannot serve control socket {path}: {e.strerror}") from None
        self._sock = sock
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    @staticmethod
    def _remove_stale(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise ControlError(f"cannot probe {path}: {e.strerror}") from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        finally:
            probe.close()
        raise ControlError(f"another daemon is serving {path}: is the box started twice?")

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(2)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _serve(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closing:
                    return
                log.exception("control socket accept failed")
                continue
            with conn:
                try:
                    self._one(conn)
                except Exception:  # one bad client must not end the server
                    log.exception("control request failed")

    def _one(self, conn: socket.socket) -> None:
        # A client that connects and says nothing must not block the next one long.
        conn.settimeout(_CONN_TIMEOUT_S)
        data = bytearray()
        try:
            while b"\n" not in data and len(data) <= MAX_REQUEST:
                chunk = conn.recv(MAX_REQUEST + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            self._reply(conn, {"ok": False, "error": "timed out reading the request"})
            return
        reply = self.handle_bytes(bytes(data))
        self._reply(conn, reply)

    def handle_bytes(self, data: bytes) -> dict[str, Any]:
        """One raw request → the reply object (also used directly in tests)."""
        self.requests += 1
        try:
            if len(data) > MAX_REQUEST:
                raise CommandError(f"request longer than {MAX_REQUEST} bytes")
            try:
                request = json.loads(data.split(b"\n", 1)[0] or b"null")
            except (ValueError, UnicodeDecodeError) as e:
                raise CommandError(f"request is not JSON: {e}") from None
            kind, seq, value = validate(request)
            self.handler(kind, seq, value)
        except CommandError as e:
            self.refused += 1
            log.warning("control: refused: %s", e)
            return {"ok": False, "error": str(e)}
        except Exception as e:
            self.refused += 1
            log.exception("control: handler failed")
            return {"ok": False, "error": f"daemon error: {e}"}
        log.info("control: %s seq %d %r queued", kind, seq, value)
        return {"ok": True}

    @staticmethod
    def _reply(conn: socket.socket, reply: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")


# What a marshal should do when the socket cannot be reached, by the kind of failure.
_CONNECT_ADVICE: tuple[tuple[type[OSError], str], ...] = (
    (
        FileNotFoundError,
        "no control socket at {path}: is the daemon running? (systemctl status checkpoint)",
    ),
    (ConnectionRefusedError, "nobody listens on {path}: the daemon is not running"),
    (PermissionError, "permission denied on {path}: run with sudo or join the checkpoint group"),
)


def _connect_failed(path: str, err: OSError) -> str:
    for kind, advice in _CONNECT_ADVICE:
        if isinstance(err, kind):
            return advice.format(path=path)
    return f"cannot connect to {path}: {err.strerror}"


def request(path: str, payload: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon's control socket; its reply, or ControlError."""
    _check_path(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(path)
        except OSError as e:
            raise ControlError(_connect_failed(path, e)) from None
        try:
            s.sendall(json.dumps(payload).encode() + b"\n")
            data = bytearray()
            while b"\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(
                f"the daemon did not answer on {path} within {timeout_s} s"
            ) from None
        except OSError as e:
            raise ControlError(f"control socket {path}: {e.strerror}") from None
    try:
        reply = json.loads(bytes(data).split(b"\n", 1)[0])
    except ValueError:
        raise ControlError(
            f"the daemon's reply on {path} is not JSON: {bytes(data)[:80]!r}"
        ) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f"unexpected reply on {path}: {reply!r}")
    return reply


def assign(path: str, seq: int, car: str) -> dict[str, Any]:
    """Ask the daemon to publish an `assign` (passage `seq` was car `car`)."""
    payload = {"cmd": "assign", "seq": seq, "car": car}
    validate(payload)  # fail fast here with the same words the daemon would use
    return request(path, payload)


def void(path: str, seq: int, reason: str) -> dict[str, Any]:
    """Ask the daemon to publish a `void` (passage `seq` was not a car)."""
    payload = {"cmd": "void", "seq": seq, "reason": reason}
    validate(payload)
    return request(path, payload)
