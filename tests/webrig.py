"""Helpers for the web tests: a headless Chromium, a tiny HTTP client, an in-process box.

The browser is Debian's `chromium` driven through Debian's `chromedriver` by selenium;
nothing is downloaded at run time. Without them the browser tests skip, unless
CHECKPOINT_REQUIRE_BROWSER=1 (CI sets it through `./dev test`), where they fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from waits import wait_for

from checkpoint import EVENT_SCHEMA
from checkpoint.hq.collector import Ingest
from checkpoint.hq.store import HQStore

CHROMIUM = os.environ.get("CHECKPOINT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHECKPOINT_CHROMEDRIVER", "/usr/bin/chromedriver")
PIN = "246813"
PASSWORD = "hq-board-secret"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def screenshot_dir(tmp: Path) -> Path:
    """docs/screenshots with CHECKPOINT_SCREENSHOTS=1 (to refresh the README's pictures),
    else the test's own folder, so a test run leaves the work tree clean."""
    if os.environ.get("CHECKPOINT_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp


NS = 1_000_000_000


# -- browser -------------------------------------------------------------------------


def require_browser() -> None:
    """Skip (or fail, with CHECKPOINT_REQUIRE_BROWSER=1) when no browser can run here."""
    problems = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("selenium is not installed (pip install -e '.[test]')")
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            problems.append(f"{path} missing (apt-get install {pkg})")
    if not problems:
        return
    why = "browser tests need " + "; ".join(problems)
    if os.environ.get("CHECKPOINT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why} (CHECKPOINT_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(f"{why}; `./dev test` installs them")


def make_driver(tmp: Path, *, width: int, height: int, mobile: bool = False) -> Any:
    """A fresh headless Chromium showing a `width`×`height` viewport (CSS px = PNG px)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp / f"chromium-profile-{time.monotonic_ns()}"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={max(width, 500)},{max(height, 500)}",
    ):
        opts.add_argument(flag)
    # Console messages, so tests can assert the pages ran without script or CSP errors.
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    # Headless windows have a minimum width; the device metrics override gives the
    # exact phone or wall-screen viewport, and the screenshot is exactly that size.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    # A rally in Italy: local time differs from UTC, as on a marshal's phone.
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Europe/Rome"})
    driver.implicitly_wait(0)
    driver._checkpoint_profile = profile  # noqa: SLF001 - removed in quit_driver
    return driver


def quit_driver(driver: Any) -> None:
    """Close the browser and remove its profile."""
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_checkpoint_profile", ""), ignore_errors=True)


@contextlib.contextmanager
def browser(tmp: Path, *, width: int, height: int, mobile: bool = False) -> Iterator[Any]:
    """`make_driver` for a `with` block (or a fixture's yield): quit afterwards."""
    d = make_driver(tmp, width=width, height=height, mobile=mobile)
    try:
        yield d
    finally:
        quit_driver(d)


def wait_page(driver: Any, fn: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `fn(driver)` until truthy; fail with `what` and the page's text. An element
    going stale while the page updates counts as "not yet"."""

    def body() -> str:
        try:
            return "page:\n" + driver.find_element("tag name", "body").text[:2000]
        except Exception:  # noqa: BLE001
            return "page: ?"

    stale = (Exception,)
    return wait_for(lambda: fn(driver), timeout, what, every=0.05, swallow=stale, detail=body)


def css(driver: Any, selector: str) -> list[Any]:
    """The elements matching a CSS selector (empty when none)."""
    return driver.find_elements("css selector", selector)


# Pages re-render tables (the board's boxes every second, results and the office on
# each update), so an element found by one WebDriver call may be gone by the next. These
# read what a test needs in one script, atomically, and return plain data.
_CELLS_JS = """
return Array.from(document.querySelectorAll(arguments[0]),
                  r => Array.from(r.cells || r.children, c => c.innerText.trim()));
"""
_ATTRS_JS = """
return Array.from(document.querySelectorAll(arguments[0]), e => e.getAttribute(arguments[1]));
"""
_CLICK_JS = """
for (const r of document.querySelectorAll(arguments[0])) {
  const hit = Array.from(r.cells || r.children).find(c => c.innerText.trim() === arguments[1]);
  if (hit) { hit.click(); return true; }  // the click bubbles up to the row's listener
}
return false;
"""


def cells(driver: Any, selector: str) -> list[list[str]]:
    """Each element matching `selector` (a table row, a list item) as its cells' texts."""
    return driver.execute_script(_CELLS_JS, selector)


def attrs(driver: Any, selector: str, name: str) -> list[str | None]:
    """Attribute `name` of each element matching `selector`, read at one instant."""
    return driver.execute_script(_ATTRS_JS, selector, name)


def click_row(driver: Any, selector: str, cell: str) -> bool:
    """Click the cell reading exactly `cell` in the first row matching `selector` that
    has one (a table row's cell, a list item's button)."""
    return driver.execute_script(_CLICK_JS, selector, cell)


def console_errors(driver: Any) -> list[str]:
    """Severe console messages since the last call: script errors, CSP violations.

    The login page's own 401/429 responses are logged as failed loads; they are the
    expected answer to a wrong PIN, not a page error.
    """
    return [
        m["message"]
        for m in driver.get_log("browser")
        if m["level"] == "SEVERE" and "status of 401" not in m["message"]
    ]


def login(driver: Any, url: str, secret: str) -> None:
    """Fill the login form at `url`login and submit it."""
    driver.get(url + "login")
    box = driver.find_element("id", "pin")
    box.clear()
    box.send_keys(secret)
    driver.find_element("css selector", "form button[type=submit]").click()


# -- HTTP ----------------------------------------------------------------------------


class Client:
    """A minimal cookie-keeping HTTP client (http.client; redirects are not followed)."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.cookies: dict[str, str] = {}
        self.origin = f"http://{self.host}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        for raw in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Max-Age=0" not in raw and "expires=Thu, 01 Jan 1970" not in raw:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        conn.close()
        return resp.status, resp.headers, data

    def get(self, path: str, **headers: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        return self.request("GET", path, headers=headers)

    def login(self, secret: str) -> int:
        body = f"pin={secret}".encode()
        status, _, _ = self.request(
            "POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        return status

    def csrf(self) -> str:
        status, _, data = self.get("/api/session")
        assert status == 200, data
        return json.loads(data)["csrf"]

    def post_json(
        self, path: str, obj: Any, *, csrf: str | None = None, origin: str | None = None
    ) -> tuple[int, Any]:
        h = {"Content-Type": "application/json"}
        if csrf is not None:
            h["X-CSRF-Token"] = csrf
        if origin is not None:
            h["Origin"] = origin
        status, _, data = self.request("POST", path, json.dumps(obj).encode(), h)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode(errors="replace")


def read_sse(client: Client, path: str, until: Any, timeout: float = 10.0) -> list[tuple[str, Any]]:
    """Read server-sent events from `path` until `until(events)` is true; returns them."""
    conn = http.client.HTTPConnection(client.host, client.port, timeout=timeout)
    h = {"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}
    conn.request("GET", path, headers=h)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events: list[tuple[str, Any]] = []
    name, deadline = None, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = resp.fp.readline().decode()
            if line.startswith("event: "):
                name = line[7:].strip()
            elif line.startswith("data: ") and name:
                events.append((name, json.loads(line[6:])))
                if until(events):
                    return events
    finally:
        conn.close()
    raise AssertionError(f"SSE: condition not met in {timeout} s; got {events}")


# -- an in-process box ---------------------------------------------------------------


def box_status(**over: Any) -> dict[str, Any]:
    """A ready box's status dict (README "Status") plus `link` and `mono_ns`."""
    now = time.monotonic_ns()
    st = {
        "state": "ready",
        "box": "box07",
        "checkpoint": "PC3",
        "store": "ab" * 16,
        "version": "0.1.0",
        "clock": "locked",
        "uncertainty_ns": 1_240,
        "fix": {"accepted": 120, "valid": 120, "last_valid_mono_ns": now - 300_000_000},
        "gps_port": True,
        "pps_pulses": 120,
        "backlog": 0,
        "inflight": 0,
        "last_seq": 0,
        "acked_upto": 0,
        "unstored": 0,
        "inputs": {"beam": {"broken": False, "fault": False, "passages": 0}},
        "alarms": {},
        "bad_commands": 0,
        "link": True,
        "mono_ns": now,
    }
    st.update(over)
    return st


class FakeBox:
    """The daemon as the marshal page sees it: snapshot, recent passages, a correction queue.

    Like the real daemon, corrections are applied by another thread (here a worker
    that takes the queue), the recent tuple is replaced, never mutated, and with an
    `EmulatedBox` (tests/hq_box.py) every event is also published to HQ over MQTT.
    """

    def __init__(self, emu: Any = None, *, box: str = "box07", checkpoint: str = "PC3") -> None:
        self.emu, self.box, self.checkpoint = emu, box, checkpoint
        self.status_over: dict[str, Any] = {"box": box, "checkpoint": checkpoint}
        self.recent: tuple[dict[str, Any], ...] = ()
        self.corrections: list[tuple[str, int, str]] = []
        self._next = 1
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        return box_status(**self.status_over)

    def passages(self) -> tuple[dict[str, Any], ...]:
        return self.recent

    def passage(self, utc_ns: int | None = None, *, clock: str = "locked", unc: int = 1_240) -> int:
        """A car passes: the passage is "stored" and, with an emulated box, published."""
        utc_ns = time.time_ns() if utc_ns is None else utc_ns
        with self._lock:
            if self.emu is not None:
                seq = self.emu.passage(utc_ns, clock=clock, unc=unc)
                self.emu.publish(seq)
                ev = dict(self.emu.events[seq])
            else:
                seq = self._next
                ev = {
                    "schema": EVENT_SCHEMA,
                    "type": "passage",
                    "box": self.box,
                    "checkpoint": self.checkpoint,
                    "seq": seq,
                    "input": "beam",
                    "source": "beam",
                    "utc_ns": utc_ns,
                    "clock": clock,
                    "uncertainty_ns": unc,
                }
            self._next = seq + 1
            self.recent = (*self.recent, {**ev, "void": False})[-50:]
        return seq

    def correct(self, kind: str, seq: int, value: str) -> None:
        """What `BoxDaemon.correction` does, applied at once (the test's core thread)."""
        self.corrections.append((kind, seq, value))
        with self._lock:
            if self.emu is not None:
                n = self.emu.assign(seq, value) if kind == "assign" else self.emu.void(seq, value)
                self.emu.publish(n)
            rows = []
            for r in self.recent:
                if r["seq"] == seq:
                    r = dict(r)  # published rows are never changed in place
                    if kind == "assign":
                        r["car"] = value
                    else:
                        r["void"], r["void_reason"] = True, value
                rows.append(r)
            self.recent = tuple(rows)


# -- HQ database without MQTT ----------------------------------------------------------


class HQFiller:
    """Writes box messages into an HQ database through the collector's own `Ingest`."""

    def __init__(self, db: Path) -> None:
        self.store = HQStore(db)
        self.ingest = Ingest(self.store)
        self.seqs: dict[str, int] = {}
        self.stores: dict[str, str] = {}

    def _handle(self, topic: str, payload: dict[str, Any]) -> None:
        with self.store.transaction():
            self.ingest.handle(topic, json.dumps(payload).encode())
            self.ingest.finish_batch()

    def event(self, box: str, kind: str, checkpoint: str = "PC1", **fields: Any) -> int:
        seq = self.seqs.get(box, 0) + 1
        self.seqs[box] = seq
        store = self.stores.setdefault(box, hashlib.sha256(box.encode()).hexdigest()[:32])
        ev = {
            "schema": EVENT_SCHEMA,
            "type": kind,
            "box": box,
            "checkpoint": checkpoint,
            "store": store,
            "seq": seq,
            **fields,
        }
        self._handle(f"rally/{box}/event", ev)
        return seq

    def passage(self, box: str, checkpoint: str, utc_ns: int, unc: int = 1500) -> int:
        from hq_box import fmt_utc

        return self.event(
            box,
            "passage",
            checkpoint,
            input="beam",
            source="beam",
            mono_ns=utc_ns // 7,
            utc_ns=utc_ns,
            utc=fmt_utc(utc_ns),
            clock="locked",
            uncertainty_ns=unc,
        )

    def status(self, box: str, **fields: Any) -> None:
        st = {"state": "ready", "box": box, "clock": "locked", "uncertainty_ns": 1500}
        st.update(fields)
        self._handle(f"rally/{box}/status", st)

    def close(self) -> None:
        self.store.close()


def web_box_rig(tmp: Path, broker_url: str) -> tuple[Any, int]:
    """A real box daemon (tests/boxrig.py, not started) with its marshal page on a free
    port and `PIN` in a chmod-600 PIN file; returns (rig, port)."""
    import socket

    from boxrig import BoxRig

    pin_file = tmp / "marshal.pin"
    pin_file.write_text(PIN + "\n")
    os.chmod(pin_file, 0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\npin_file = "{pin_file}"\n'
    return BoxRig(tmp, broker_url, extra=web), port
