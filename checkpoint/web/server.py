"""aiohttp plumbing shared by the marshal page and the HQ board.

* `ServerThread`: one aiohttp application in its own asyncio loop on its own thread,
  started and stopped from any thread (the daemon's, the CLI's, a test's).
* `Auth`: login form, session cookie (HttpOnly, SameSite=Strict), CSRF token check
  on every POST, wrong-PIN rate limit.
* `SseHub`: server-sent events to every connected browser; a browser too slow to
  keep up is disconnected (it reconnects and gets the full state), never buffered
  without bound.
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
import html
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Self

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from checkpoint.errors import CheckpointError
from checkpoint.web.auth import LoginLimiter, Session, Sessions, secret_matches

log = logging.getLogger("checkpoint.web")

STATIC = Path(__file__).with_name("static")
MAX_BODY = 16 * 1024  # a login or a correction is a few hundred bytes
WRONG_PIN_DELAY_S = 0.5  # per wrong try, on top of the limiter; async, so nobody else waits
KEEPALIVE_S = 15.0  # SSE comment this often, so Wi-Fi NATs and proxies keep the stream
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


# -- login ----------------------------------------------------------------------------


class FailureLog:
    """Failed logins, logged once per burst: the first at once, then one line with the
    counts every `every_s` while they go on, so a flood of guesses cannot flood the
    journal on the SD card. Use only from the server's loop."""

    def __init__(self, label: str, every_s: float = 10.0) -> None:
        self.label, self.every_s = label, every_s
        self.wrong = self.refused = 0
        self._clients: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def note(self, client: str, *, refused: bool) -> None:
        """One wrong PIN (or one try refused by the rate limit) from `client`."""
        if self._timer is None:
            what = "login refused (too many tries)" if refused else f"wrong {self.label}"
            log.warning("%s from %s", what, client[:64])
            self._timer = asyncio.get_running_loop().call_later(self.every_s, self._flush)
            return
        self.refused += refused
        self.wrong += not refused
        if len(self._clients) < 1000:
            self._clients.add(client[:64])

    def _flush(self) -> None:
        if not (self.wrong or self.refused):
            self._timer = None  # quiet: the next failure is logged at once
            return
        log.warning(
            "%d more wrong %s and %d logins refused (too many tries) from %d addresses "
            "in the last %.0f s",
            self.wrong,
            self.label,
            self.refused,
            len(self._clients),
            self.every_s,
        )
        self.wrong = self.refused = 0
        self._clients.clear()
        self._timer = asyncio.get_running_loop().call_later(self.every_s, self._flush)


class Auth:
    """PIN/password login for one application; `secret=None` means nobody can log in."""

    def __init__(
        self,
        secret: str | None,
        *,
        cookie: str,
        title: str,
        label: str = "PIN",
        home: str = "/",
        sessions: Sessions | None = None,
        limiter: LoginLimiter | None = None,
    ) -> None:
        self._secret = secret
        self.cookie, self.title, self.label, self.home = cookie, title, label, home
        self.sessions = sessions or Sessions()
        self.limiter = limiter or LoginLimiter()
        self.failures = FailureLog(label)
        self._template = Template((STATIC / "login.html").read_text(encoding="utf-8"))

    @property
    def enabled(self) -> bool:
        """True when a secret is configured (else POSTs needing a login are refused)."""
        return self._secret is not None

    def session(self, request: web.Request) -> Session | None:
        """The request's live session, if its cookie names one."""
        return self.sessions.get(request.cookies.get(self.cookie))

    def require(self, request: web.Request) -> Session:
        """The session, or HTTP 401 (the page then sends the browser to the login)."""
        s = self.session(request)
        if s is None:
            raise web.HTTPUnauthorized(text="log in first")
        return s

    def require_post(self, request: web.Request) -> Session:
        """A state-changing request: session, same origin and the session's CSRF token.

        The cookie is SameSite=Strict, so a cross-site POST arrives without it; the
        token (only readable by this origin's own script, from `/api/session`) and the
        Origin check also stop a request forged from another page of the same site.
        """
        s = self.require(request)
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="cross-origin request refused")
        token = request.headers.get("X-CSRF-Token", "")
        if not secret_matches(token, s.csrf):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page")
        return s

    def login_page(self, message: str = "", status: int = 200) -> web.Response:
        """The login form (the only HTML made here; every value is escaped)."""
        text = self._template.substitute(
            title=html.escape(self.title),
            label=html.escape(self.label),
            message=html.escape(message),
            hidden="" if message else "hidden",
            # A PIN of digits gets the phone's number pad (gloves, sun), not letters.
            keypad='inputmode="numeric"' if self._secret and self._secret.isdigit() else "",
        )
        return web.Response(text=text, status=status, content_type="text/html")

    async def get_login(self, request: web.Request) -> web.Response:
        """GET /login."""
        if self.session(request) is not None:
            raise web.HTTPSeeOther(self.home)
        if not self.enabled:
            return self.login_page("Logging in is disabled (no password file given).", 403)
        return self.login_page()

    async def post_login(self, request: web.Request) -> web.Response:
        """POST /login: check the PIN, set the session cookie, go to the page."""
        if not self.enabled:
            return self.login_page("Logging in is disabled (no password file given).", 403)
        client = request.remote or "?"
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="cross-origin login refused")
        # Counted as wrong before anything is awaited: concurrent requests cannot all
        # pass the check before the first of them is counted. A right PIN gives it back.
        wait = self.limiter.attempt(client)
        if wait > 0:
            self.failures.note(client, refused=True)
            resp = self.login_page(f"Too many wrong tries: wait {wait:.0f} s.", 429)
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp
        try:
            form = await request.post()
        except ValueError:
            form = {}  # an unreadable form is a wrong PIN (already counted)
        given = form.get("pin")
        if not isinstance(given, str) or not secret_matches(given.strip(), self._secret or ""):
            self.failures.note(client, refused=False)
            await asyncio.sleep(WRONG_PIN_DELAY_S)
            return self.login_page(f"Wrong {self.label}.", 401)
        self.limiter.succeeded(client)
        s = self.sessions.create()
        log.info("login from %s", client)
        resp = web.HTTPSeeOther(self.home)
        resp.set_cookie(self.cookie, s.token, path="/", httponly=True, samesite="Strict")
        raise resp

    async def post_logout(self, request: web.Request) -> web.Response:
        """POST /logout (needs the CSRF token, so another page cannot log you out)."""
        s = self.require_post(request)
        self.sessions.drop(s.token)
        resp = json_response({"ok": True})
        resp.del_cookie(self.cookie, path="/")
        return resp

    def add_routes(self, app: web.Application) -> None:
        """/login (GET, POST) and /logout (POST)."""
        app.router.add_get("/login", self.get_login)
        app.router.add_post("/login", self.post_login)
        app.router.add_post("/logout", self.post_logout)


# -- server-sent events ---------------------------------------------------------------


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
