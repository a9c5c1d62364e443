"""The one way the simulator, the benchmarks and the tests wait: poll a condition until
a deadline, then fail naming it.

Every wait is on a condition with a deadline, never a fixed sleep: a loaded machine
(2 cores, several processes) is slow by seconds, so a sleep either wastes time or is too
short. Each caller says what a timeout is in its own terms (`error`): an AssertionError
in a test, a BenchError in a benchmark, a SimError in a simulated rally.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    pred: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    every: float = 0.02,
    swallow: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
    *,
    error: Callable[[str], BaseException] = AssertionError,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Poll `pred` until it returns something truthy and return that value.

    After `timeout` seconds raise `error(message)`, the message naming `what` (and
    `detail()`, if given, for what the caller saw). Exceptions of the `swallow` types
    count as "not yet" (a page element going stale while it updates) and the last one
    is reported on timeout. `sleep` waits between polls (the simulator's own sleep
    stops at once when the run is aborted).
    """
    deadline = time.monotonic() + timeout
    last_err: BaseException | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except swallow as e:
            last_err = e
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout:g} s waiting for {what}"
            if last_err is not None:
                msg += f" (last error {last_err!r})"
            if detail is not None:
                msg += f"; {detail()}"
            raise error(msg)
        sleep(every)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `port` now (a condition to wait on)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
