"""A tiny TCP proxy between one box and the broker, to cut that box's link.

`cut("drop")` closes every connection and refuses new ones (the mobile link is
down: the box sees the connection fail at once); `cut("blackhole")` keeps the
sockets open but passes no bytes (a link that silently stopped: only the MQTT
keepalive notices). `restore()` lets traffic through again; blackholed
connections are closed then, as a dead NAT mapping would be.
"""

from __future__ import annotations

import selectors
import socket
import threading


class LinkProxy:
    """Forwards 127.0.0.1:`port` to `target` until `close()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.mode: str | None = None  # None = passing traffic
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._closing = False
        self.connections = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._run, name="link-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def cut(self, mode: str = "drop") -> None:
        """Stop the link: "drop" closes and refuses, "blackhole" goes silent."""
        with self._lock:
            self.mode = mode
            if mode == "drop":
                self._close_all()

    def restore(self) -> None:
        """Let traffic through again."""
        with self._lock:
            if self.mode == "blackhole":
                self._close_all()
            self.mode = None

    def close(self) -> None:
        self._closing = True
        self._thread.join(timeout=2)
        with self._lock:
            self._close_all()
        self._sel.close()
        self._listener.close()

    def _close_all(self) -> None:
        for s in list(self._peers):
            self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        other = self._peers.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            try:
                self._sel.unregister(x)
            except (KeyError, ValueError):
                pass
            x.close()
            self._peers.pop(x, None)

    def _run(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select(timeout=0.1):
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
        if self.mode is not None:
            self.refused += 1
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ, None)
        self._peers[client], self._peers[upstream] = upstream, client
        self.connections += 1

    def _pump(self, s: socket.socket) -> None:
        other = self._peers.get(s)
        if other is None:
            return
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(s)
            return
        if self.mode == "blackhole":
            return
        try:
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._drop(s)
