"""A TCP proxy on loopback in front of the broker, to cut or silence one client's link.

Used by the simulator's link-cut incidents and by the reliability tests: it forwards
real MQTT bytes and decides only *when* the link breaks, and how.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class LinkProxy:
    """A TCP proxy on 127.0.0.1 in front of `target`, with three kinds of trouble.

    * `drop()`: every connection is closed at once (RST) and new ones are refused, as when
      the cellular modem loses its bearer; `restore()` lets connections through again.
    * `blackhole(new="pass" | "hang")`: the current connections go silent both ways; no
      byte is passed, nothing is closed, nothing errors (a dead NAT mapping: a half-open
      connection only a keep-alive can notice). The broker side may close its half; the
      client is not told. New connections pass through (`new="pass"`, the default: the
      next connection gets a fresh mapping) or are accepted and silenced too ("hang").
    * `restore()` closes silenced connections (they are dead in reality) and passes
      traffic again.

    `accepts` lists the monotonic time of every accepted connection, so a test can see
    when a client noticed a dead link and reconnected.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.mode = "pass"  # pass | drop | blackhole
        self._new_mode = "pass"
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._peer: dict[socket.socket, socket.socket | None] = {}
        self._silent: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False
        self.accepts: list[int] = []
        self.refused = 0
        self.bytes_passed = 0
        self.bytes_swallowed = 0
        self._thread = threading.Thread(target=self._run, name="link-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The broker URL to give the client: mqtt://127.0.0.1:PORT."""
        return f"mqtt://127.0.0.1:{self.port}"

    def drop(self) -> None:
        """Close every connection now (RST) and refuse new ones until `restore()`."""
        with self._lock:
            self.mode = "drop"
            for s in list(self._peer):
                self._close(s, reset=True)

    def cut(self, mode: str = "drop") -> None:
        """The simulator's incident: "drop" (see `drop`) or "blackhole" (see `blackhole`)."""
        if mode == "drop":
            self.drop()
        elif mode == "blackhole":
            self.blackhole()
        else:
            raise ValueError(f"link cut mode must be drop or blackhole, got {mode!r}")

    def blackhole(self, new: str = "pass") -> None:
        """Silence the current connections; new ones `pass` or `hang` (see class doc)."""
        if new not in ("pass", "hang"):
            raise ValueError(new)
        with self._lock:
            self.mode = "blackhole"
            self._new_mode = new
            self._silent.update(self._peer)

    def restore(self) -> None:
        """Pass traffic again; silenced connections are closed (they died in reality)."""
        with self._lock:
            for s in list(self._silent):
                self._close(s, reset=True)
            self._silent.clear()
            self.mode = "pass"
            self._new_mode = "pass"

    def close(self) -> None:
        """Stop the proxy and close every socket."""
        self._closing = True
        self._thread.join(timeout=2)
        with self._lock:
            for s in list(self._peer):
                self._close(s)
        self._sel.close()
        self._listener.close()

    # -- internals (proxy thread, under the lock) -----------------------------------------

    def _close(self, s: socket.socket, reset: bool = False) -> None:
        other = self._peer.pop(s, None)
        self._silent.discard(s)
        for x in (s, other):
            if x is None:
                continue
            self._peer.pop(x, None)
            self._silent.discard(x)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(x)
            if reset:
                # SO_LINGER 0: close sends RST, like a modem dropping the bearer.
                with contextlib.suppress(OSError):
                    x.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            x.close()

    def _run(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select(timeout=0.05):
                with self._lock:
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._pump(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        if self.mode == "drop":
            self.refused += 1
            client.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            client.close()
            return
        self.accepts.append(time.monotonic_ns())
        client.setblocking(False)
        if self.mode == "blackhole" and self._new_mode == "hang":
            # Accepted, then nothing: the CONNECT goes nowhere.
            self._peer[client] = None
            self._silent.add(client)
            self._sel.register(client, selectors.EVENT_READ, None)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream.setblocking(False)
        for s in (client, upstream):
            self._sel.register(s, selectors.EVENT_READ, None)
        self._peer[client], self._peer[upstream] = upstream, client

    def _pump(self, s: socket.socket) -> None:
        if s not in self._peer:
            return
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if s in self._silent:
            self.bytes_swallowed += len(data)
            if not data:
                # One side closed: forget it without telling the other side.
                other = self._peer.pop(s, None)
                self._silent.discard(s)
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(s)
                s.close()
                if other is not None:
                    self._peer[other] = None
            return
        other = self._peer.get(s)
        if not data or other is None:
            self._close(s)
            return
        try:
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)
            self.bytes_passed += len(data)
        except OSError:
            self._close(s)
