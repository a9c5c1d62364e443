"""systemd's sd_notify protocol, pure stdlib: READY=1, WATCHDOG=1, STATUS=, STOPPING=1.

systemd passes the socket in `$NOTIFY_SOCKET`: a filesystem path, or a name in the
abstract namespace written with a leading ``@`` (sent as a leading NUL byte). Each
message is one AF_UNIX datagram of ``KEY=VALUE`` lines. Outside systemd the variable
is unset and every call here is a no-op returning False, so `checkpoint run` behaves
the same from a terminal.

The unit (systemd/checkpoint.service) sets ``WatchdogSec=``; systemd then passes
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) and kills and restarts the daemon when no
``WATCHDOG=1`` arrives in time. `Watchdog` sends it only while every registered
liveness check passes, so a wedged thread (serial reader, paho loop, GPIO callback
machinery) ends in a restart instead of a box that looks alive and times nothing.
The core thread calls `Watchdog.tick()` from its loop, so a stuck core thread stops
the pings by itself.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("checkpoint.box.notify")

# A check returns None when healthy, or a short reason why not.
Check = Callable[[], str | None]


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        # Abstract namespace: Python wants the leading NUL byte spelled out.
        return "\0" + path[1:]
    return path


def notify(message: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify datagram; True if it was sent, False outside systemd.

    Errors are logged, never raised, and the send never blocks: a daemon must not
    die or stall because its supervisor went away or lags (systemd re-executing
    itself, a test without a listener).
    """
    addr = _address(os.environ if env is None else env)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            # Never wait: a datagram socket whose reader lags (its queue holds only
            # net.unix.max_dgram_qlen messages, often 10) would block the core thread.
            # A dropped WATCHDOG=1 is what a wedged supervisor deserves anyway.
            s.sendto(message.encode(), socket.MSG_DONTWAIT, addr)
    except OSError as e:
        log.debug("sd_notify %r to %r failed: %s", message, addr, e)
        return False
    return True


def ready(status: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd start-up is complete (Type=notify units wait for this)."""
    msg = "READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}"
    return notify(msg, env=env)


def watchdog(*, env: Mapping[str, str] | None = None) -> bool:
    """Feed systemd's watchdog once."""
    return notify("WATCHDOG=1", env=env)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status `systemctl status` shows."""
    return notify(f"STATUS={_one_line(text)}", env=env)


def stopping(*, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a clean shutdown has begun (no watchdog timeout during it)."""
    return notify("STOPPING=1", env=env)


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment.
    return " ".join(str(text).split())


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog period for this process in seconds, None when not enabled.

    `WATCHDOG_PID`, when set, must be our pid: the variables leak into children
    (`checkpoint doctor` run from a unit's ExecStartPost, say) that must not ping.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


@dataclass
class _Registered:
    name: str
    check: Check


class Watchdog:
    """Pings systemd's watchdog only while every registered liveness check passes.

    `tick()` is meant to be called from the daemon's core loop (every turn is fine:
    pings are rate-limited to half the watchdog period). Checks are registered with
    `register(name, check)`; a check returns None when healthy or a reason string.
    The helpers `thread_alive` and `progressing` build the usual checks.

    With no watchdog configured (`interval_s` None, i.e. not under systemd or no
    WatchdogSec=) `tick()` still evaluates the checks, so `failing` can be shown in
    the status, but sends nothing.
    """

    def __init__(
        self,
        interval_s: float | None = None,
        *,
        send: Callable[[], bool] = watchdog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._send = send
        self._clock = clock
        self._checks: list[_Registered] = []
        self._next_ping = 0.0
        self.failing: dict[str, str] = {}
        self.pings = 0
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Watchdog:
        """A watchdog with systemd's period (or disabled outside systemd)."""
        return cls(watchdog_interval_s(env), send=lambda: watchdog(env=env))

    def register(self, name: str, check: Check) -> None:
        """Add a liveness check; all must pass for a ping."""
        with self._lock:
            self._checks.append(_Registered(name, check))

    def evaluate(self) -> dict[str, str]:
        """Run every check; {name: reason} for those failing (a raising check fails)."""
        failing: dict[str, str] = {}
        with self._lock:
            checks = list(self._checks)
        for reg in checks:
            try:
                why = reg.check()
            except Exception as e:  # a broken check must starve the watchdog, not crash
                why = f"check raised {e!r}"
            if why is not None:
                failing[reg.name] = why
        return failing

    def tick(self) -> bool:
        """Evaluate the checks and ping if all pass and a ping is due; True if pinged."""
        failing = self.evaluate()
        if failing != self.failing and failing:
            log.warning(
                "watchdog not fed: %s", "; ".join(f"{k}: {v}" for k, v in sorted(failing.items()))
            )
        self.failing = failing
        if failing or self.interval_s is None:
            return False
        now = self._clock()
        if now < self._next_ping:
            return False
        # Half the period: one late turn of the core loop must not cost a restart.
        self._next_ping = now + self.interval_s / 2
        if self._send():
            self.pings += 1
            return True
        return False

    # -- check builders ---------------------------------------------------------

    @staticmethod
    def thread_alive(get: Callable[[], threading.Thread | None], what: str) -> Check:
        """Healthy while the thread `get()` returns exists and runs."""

        def check() -> str | None:
            t = get()
            if t is None or not t.is_alive():
                return f"{what} thread is not running"
            return None

        return check

    def progressing(
        self,
        counter: Callable[[], int],
        within_s: float,
        what: str,
        *,
        unless: Callable[[], bool] | None = None,
    ) -> Check:
        """Healthy while `counter()` changed within the last `within_s` seconds.

        `unless()` returning True excuses a standing counter (e.g. the serial port is
        closed and the reader is in its reopen loop: no bytes are expected then).
        """
        state = {"value": None, "since": self._clock()}

        def check() -> str | None:
            now = self._clock()
            value = counter()
            if value != state["value"]:
                state["value"], state["since"] = value, now
                return None
            if unless is not None and unless():
                state["since"] = now
                return None
            if now - state["since"] > within_s:
                return f"no {what} for {now - state['since']:.0f} s"
            return None

        return check
