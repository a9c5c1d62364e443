"""aiohttp plumbing shared by the marshal page and the HQ board.

* `ServerThread`: one aiohttp application in its own asyncio loop on its own thread,
  started and stopped from any thread (the daemon's, the CLI's, a test's).
* `Auth` (`checkpoint.web.login`): login form, session cookie, CSRF check, rate limit.
* `SseHub` (`checkpoint.web.sse`): server-sent events to every connected browser.
* `Assets`: the static files, read once, served with ETag and gzip (a phone on weak
  Wi-Fi downloads each file once and then revalidates with a 304).
* `security_headers`: a strict Content-Security-Policy (only this server's own
  scripts and styles, no inline script), no framing, no referrer to other sites, no sniffing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import hashlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from checkpoint.errors import CheckpointError
from checkpoint.web.sse import SseHub

log = logging.getLogger("checkpoint.web")

STATIC = Path(__file__).with_name("static")
MAX_BODY = 16 * 1024  # a login or a correction is a few hundred bytes
WRONG_PIN_DELAY_S = 0.5  # per wrong try, on top of the limiter; async, so nobody else waits
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class WebError(CheckpointError):
    """A web page cannot be served (address in use, bad address); the message says why."""


# -- headers and JSON -----------------------------------------------------------------


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Add the security headers to every response, errors included."""
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        resp = exc
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on
    # form POSTs, which the Origin check must refuse.
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("Cache-Control", "no-store")
    if isinstance(resp, web.HTTPException):
        raise resp
    return resp


def json_response(data: Any, status: int = 200) -> web.Response:
    """Compact JSON, never cached."""
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def json_error(status: int, message: str) -> web.Response:
    """`{"error": message}` with an HTTP status; the page shows the message."""
    return json_response({"error": message}, status)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, or an HTTP 400/415 error."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send application/json")
    try:
        data = await request.json()
    except ValueError:  # UnicodeDecodeError too
        raise web.HTTPBadRequest(text="body is not JSON") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="body is nested too deeply") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


# -- static files ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gz: bytes
    etag: str
    content_type: str


_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


class Assets:
    """The files of `static/`, read once at start (they are a few KiB)."""

    def __init__(self, names: list[str]) -> None:
        self._files: dict[str, _Asset] = {}
        for name in names:
            body = (STATIC / name).read_bytes()
            self._files[name] = _Asset(
                body,
                gzip.compress(body, 9, mtime=0),
                '"' + hashlib.sha256(body).hexdigest()[:16] + '"',
                _TYPES[Path(name).suffix],
            )

    def response(self, request: web.Request, name: str) -> web.Response:
        """The file, a 304 if the browser has it, gzipped when the browser accepts it."""
        a = self._files[name]
        headers = {"ETag": a.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
        if request.headers.get("If-None-Match") == a.etag:
            return web.Response(status=304, headers=headers)
        body = a.body
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body, headers["Content-Encoding"] = a.gz, "gzip"
        return web.Response(
            body=body, headers=headers, content_type=a.content_type, charset="utf-8"
        )

    def add_routes(self, app: web.Application, names: list[str]) -> None:
        """Serve `names` at /NAME, plus the icon (also at /favicon.ico, where browsers look)."""
        for name in [*names, "favicon.svg"]:
            app.router.add_get(f"/{name}", self.route(name))
        app.router.add_get("/favicon.ico", self.route("favicon.svg"))

    def route(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A handler serving one file (public: pages hold no data, the API does)."""

        async def handler(request: web.Request) -> web.Response:
            return self.response(request, name)

        return handler


# -- the thread -----------------------------------------------------------------------


class ServerThread:
    """Runs the application `make_app()` builds (inside the loop) on host:port.

    `start()` returns once the port is bound (or raises `WebError`); `port` is then
    the bound port (useful with port 0). `stop()` ends open streams and the thread.
    """

    def __init__(
        self,
        make_app: Callable[[], Awaitable[web.Application]],
        *,
        host: str,
        port: int,
        name: str,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.host, self._port, self.name = host, port, name
        self._make_app, self._on_stop = make_app, on_stop
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start()`)."""
        return self._port

    @property
    def url(self) -> str:
        """http://host:port/ of the running server (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the thread and wait until the server listens."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise WebError(f"{self.name}: server did not start within {timeout_s:.0f} s")
        if isinstance(self._error, OSError):
            why = (
                "the port is in use (another board or program there?); choose another --port"
                if self._error.errno == errno.EADDRINUSE
                else str(self._error.strerror or self._error)
            )
            raise WebError(
                f"{self.name}: cannot listen on {self.host}:{self._port}: {why}"
            ) from self._error
        if self._error is not None:
            raise WebError(f"{self.name}: failed to start: {self._error!r}") from self._error
        log.info("%s listening on %s", self.name, self.url)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and join the thread (safe to call twice or before start)."""
        loop, stopping = self.loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning(
                    "%s: server thread still running %.0f s after stop", self.name, timeout_s
                )

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported to start(), logged otherwise
            if not self._ready.is_set():
                self._error = e
                self._ready.set()
            else:
                log.exception("%s: server thread failed", self.name)
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = await self._make_app()
        # No access log: a phone polling would flood the journal on the SD card.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
            await site.start()
        except OSError as e:
            # Let the site stop what _make_app started (the board's poller), or the
            # closing loop prints "Task was destroyed but it is pending!".
            if self._on_stop is not None:
                await self._on_stop()
            await runner.cleanup()
            self._error = e
            self._ready.set()
            return
        self._port = runner.addresses[0][1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            if self._on_stop is not None:
                await self._on_stop()
            await runner.cleanup()


class _MalformedRequests(logging.Filter):
    """aiohttp logs every malformed HTTP request with a full traceback: anyone on the
    Wi-Fi could fill the box's journal without logging in. Such a record becomes one
    bounded line, at most `per_minute` of them a minute (the rest are counted)."""

    def __init__(self, per_minute: int = 10) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._minute = 0
        self._count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        minute = int(record.created // 60)
        if minute != self._minute:
            self._minute, self._count = minute, 0
        self._count += 1
        if self._count > self.per_minute:
            return False
        who = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "malformed HTTP request from %s refused (400): %s%s"
        last = self._count == self.per_minute
        more = " (further ones this minute are not logged)" if last else ""
        record.args = (str(who)[:64], str(exc)[:200], more)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_MALFORMED = _MalformedRequests()


def new_app() -> web.Application:
    """An application with the shared limits and headers."""
    logging.getLogger("aiohttp.server").addFilter(_MALFORMED)  # once: a filter is a set member
    return web.Application(client_max_size=MAX_BODY, middlewares=[security_headers])


class Site:
    """Lifecycle shared by the marshal page and the HQ board: one `ServerThread`."""

    _thread: ServerThread
    hub: SseHub
    #: The site's background task on the server's loop (the board's poller, the marshal
    #: page's watcher), cancelled by `_on_stop`.
    _task: asyncio.Task[None] | None = None

    async def _on_stop(self) -> None:
        """On the loop, before it stops: end the background task, close every stream."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.hub.close()

    @property
    def port(self) -> int:
        """The bound port (after `start()`; useful with port 0)."""
        return self._thread.port

    @property
    def url(self) -> str:
        """The site's address."""
        return self._thread.url

    def start(self) -> Self:
        """Listen; raises `WebError` if the address cannot be bound."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every stream and stop the thread."""
        self._thread.stop()
