"""Who may use a page: secret files, constant-time checks, sessions, wrong-PIN limits.

Pure apart from reading the secret file: the clock is injectable so the rate limit and
session expiry are tested without sleeping. Nothing here logs a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from checkpoint.errors import ConfigError
from checkpoint.support import read_secret

#: Shortest accepted PIN/password. Six digits against the limiter below (at most
#: `LoginLimiter.global_max` wrong tries a minute from all clients together) is
#: over a month of guessing; four digits would fall within one rally day.
MIN_SECRET = 6
SESSION_TTL_S = 12 * 3600  # a rally day; idle longer than this logs the phone out
MAX_SESSIONS = 64  # a few phones per box, a few screens at HQ; oldest evicted beyond


def load_secret(path: str, what: str) -> str:
    """Read a PIN/password file, refusing a missing, readable-by-others or too short one.

    The file holds the secret on its first line (surrounding blanks ignored). It must
    not be readable by group or others (chmod 600), like the MQTT password file.
    """
    if not path:
        raise ConfigError(f"{what} is required when the web page is enabled")
    secret = read_secret(path, what) or ""
    secret = secret.splitlines()[0].strip() if secret else ""
    if len(secret) < MIN_SECRET:
        raise ConfigError(
            f"{what} {path}: the PIN/password must be at least {MIN_SECRET} characters "
            "(anyone on the marshal Wi-Fi can try guessing it)"
        )
    return secret


def secret_matches(given: str, expected: str) -> bool:
    """True if `given` equals `expected`, in time independent of where they differ.

    Both are hashed first so `compare_digest` compares equal-length digests: the time
    taken reveals neither a matching prefix nor the secret's length.
    """
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


@dataclass
class Session:
    """One logged-in browser: the cookie's token and the token its POSTs must carry."""

    token: str
    csrf: str
    created: float
    last_used: float


class Sessions:
    """In-memory sessions (a restart logs everyone out, which is fine for a PIN page)."""

    def __init__(
        self,
        *,
        ttl_s: float = SESSION_TTL_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_sessions, self.clock = ttl_s, max_sessions, clock
        self._by_token: OrderedDict[str, Session] = OrderedDict()

    def create(self) -> Session:
        """A new session with fresh random tokens; evicts the least recently used beyond max."""
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        self._by_token[s.token] = s
        while len(self._by_token) > self.max_sessions:
            self._by_token.popitem(last=False)
        return s

    def get(self, token: str | None) -> Session | None:
        """The live session for a cookie value, or None (unknown or idle too long)."""
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None:
            return None
        now = self.clock()
        if now - s.last_used > self.ttl_s:
            del self._by_token[token]
            return None
        s.last_used = now
        self._by_token.move_to_end(token)
        return s

    def drop(self, token: str | None) -> None:
        """Log a session out (unknown tokens are ignored)."""
        if token:
            self._by_token.pop(token, None)

    def __len__(self) -> int:
        return len(self._by_token)


@dataclass
class _Client:
    failures: list[float]
    locked_until: float = 0.0
    lockouts: int = 0


class LoginLimiter:
    """Slows PIN guessing: per client address, and for all clients together.

    A client with `per_client` wrong tries within `window_s` is refused for
    `lockout_s`, doubled at each further lockout up to `max_lockout_s`. Because a
    device on the Wi-Fi can change its address at will, all clients together may also
    fail at most `global_max` times per `window_s`; beyond that every login is refused
    until the window moves on. Already logged-in phones are not affected by either.
    """

    def __init__(
        self,
        *,
        per_client: int = 5,
        window_s: float = 60.0,
        lockout_s: float = 60.0,
        max_lockout_s: float = 900.0,
        global_max: int = 30,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client, self.window_s = per_client, window_s
        self.lockout_s, self.max_lockout_s = lockout_s, max_lockout_s
        self.global_max, self.max_clients, self.clock = global_max, max_clients, clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._all: list[float] = []

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may try now."""
        now = self.clock()
        self._all = [t for t in self._all if now - t < self.window_s]
        wait = 0.0
        if len(self._all) >= self.global_max:
            wait = self._all[0] + self.window_s - now
        c = self._clients.get(client)
        if c is not None and c.locked_until > now:
            wait = max(wait, c.locked_until - now)
        return max(0.0, wait)

    def attempt(self, client: str) -> float:
        """Admit one login try from `client` and count it as wrong at once; returns 0.

        Returns the seconds to wait instead when `client` (or everybody) is over the
        limit, counting nothing. Call it before anything is awaited: the check and the
        count are one step, so a burst of concurrent requests cannot all pass the check
        before any of them is counted. A right PIN then calls `succeeded`, which gives
        the try back.
        """
        wait = self.retry_after(client)
        if wait <= 0:
            self.failed(client)
        return wait

    def failed(self, client: str) -> None:
        """Count one wrong PIN from `client`."""
        now = self.clock()
        self._all.append(now)
        c = self._clients.get(client)
        if c is None:
            c = self._clients[client] = _Client([])
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)  # bounded memory under a spoofing flood
        self._clients.move_to_end(client)
        c.failures = [t for t in c.failures if now - t < self.window_s] + [now]
        if len(c.failures) >= self.per_client:
            c.locked_until = now + min(self.lockout_s * 2**c.lockouts, self.max_lockout_s)
            c.lockouts += 1
            c.failures = []

    def succeeded(self, client: str) -> None:
        """A right PIN (after `attempt`): give its try back and forget the client's record."""
        if self._all:
            self._all.pop()  # the try `attempt` counted; the order of the others is kept
        self._clients.pop(client, None)
