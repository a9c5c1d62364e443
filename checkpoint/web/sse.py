"""Server-sent events to every connected browser (the marshal page's and the board's updates).

A browser too slow to keep up is disconnected (it reconnects and gets the full state),
never buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

KEEPALIVE_S = 15.0  # SSE comment this often, so Wi-Fi NATs and proxies keep the stream


def sse_frame(event: str, data: Any) -> bytes:
    """One SSE message; `data` is JSON-encoded on one line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Client:
    def __init__(self) -> None:
        self.q: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        self.overflow = False


class SseHub:
    """Browsers listening for updates. Use only from the server's loop."""

    def __init__(self, max_clients: int = 32) -> None:
        self.max_clients = max_clients
        self._clients: set[_Client] = set()

    def __len__(self) -> int:
        return len(self._clients)

    def publish(self, frame: bytes) -> None:
        """Queue one frame for every browser; a browser whose queue is full is dropped."""
        for c in list(self._clients):
            try:
                c.q.put_nowait(frame)
            except asyncio.QueueFull:
                c.overflow = True  # it missed a delta: it must reconnect for full state
                self._clients.discard(c)
                with contextlib.suppress(asyncio.QueueFull):
                    c.q.put_nowait(None)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        for c in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                c.q.put_nowait(None)
        self._clients.clear()

    async def stream(self, request: web.Request, initial: bytes) -> web.StreamResponse:
        """Serve one browser: `initial` (full state) first, then every published frame."""
        if len(self._clients) >= self.max_clients:
            raise web.HTTPServiceUnavailable(
                text="too many open pages", headers={"Retry-After": "5"}
            )
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        client = _Client()
        self._clients.add(client)
        try:
            # retry: how soon the browser reconnects after the stream ends.
            await resp.write(b"retry: 2000\n\n" + initial)
            while True:
                try:
                    frame = await asyncio.wait_for(client.q.get(), KEEPALIVE_S)
                except TimeoutError:
                    frame = b": keepalive\n\n"
                if frame is None:
                    break
                await resp.write(frame)
        except (ConnectionResetError, ConnectionError):
            pass  # the browser went away
        finally:
            self._clients.discard(client)
        return resp
