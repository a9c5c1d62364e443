"""Login for the marshal page and the HQ board: the form, the session cookie (HttpOnly,
SameSite=Strict), the CSRF token on every POST, and the wrong-PIN rate limit and log.

The rules themselves (sessions, the limiter, constant-time comparison) are the pure
`checkpoint.web.auth`; this is their aiohttp half.
"""

from __future__ import annotations

import asyncio
import html
import logging
from string import Template

from aiohttp import web

from checkpoint.web import server
from checkpoint.web.auth import LoginLimiter, Session, Sessions, secret_matches
from checkpoint.web.server import STATIC, json_response

log = logging.getLogger("checkpoint.web")


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
            # Read from `server` at each try: the setting lives there (tests turn it down).
            await asyncio.sleep(server.WRONG_PIN_DELAY_S)
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
