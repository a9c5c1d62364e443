"""Attacks on the web pages, raced as an attacker would: real servers on loopback.

A burst of hundreds of concurrent wrong PINs must see at most the limiter's allowance
checked (per client address, and for all addresses together), and the right PIN must
be refused while the lockout lasts. Malformed bodies and requests get a 400 and no
traceback in the log; a burst of failures is logged once, with a count.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from waits import wait_for
from webrig import PASSWORD, PIN, Client, FakeBox, HQFiller

from checkpoint.web import server as webserver
from checkpoint.web.auth import LoginLimiter
from checkpoint.web.board import BoardServer
from checkpoint.web.marshal import MarshalServer

BURST = 300
T0 = 1_776_000_000 * 10**9


@pytest.fixture
def marshal():
    box = FakeBox()
    s = MarshalServer(
        box.snapshot, box.passages, box.correct, host="127.0.0.1", port=0, pin=PIN, tick_s=0.05
    ).start()
    yield s
    s.stop()


@pytest.fixture
def board(tmp_path):
    hq = HQFiller(tmp_path / "hq.db")
    hq.passage("box01", "PC1", T0)
    s = BoardServer(tmp_path / "hq.db", host="127.0.0.1", port=0, password=PASSWORD).start()
    yield s
    s.stop()
    hq.close()


def _sources(n: int) -> list[str]:
    """`n` loopback source addresses (all of 127/8 is local on Linux), or skip."""
    addrs = [f"127.0.{i // 250}.{i % 250 + 2}" for i in range(n)]
    with socket.socket() as s:
        try:
            s.bind((addrs[-1], 0))
        except OSError:
            pytest.skip("cannot bind loopback source addresses other than 127.0.0.1")
    return addrs


async def _burst(port: int, field: str, guesses: list[tuple[str, str]]) -> list[int]:
    """POST every (source address, secret) at once, as a racing attacker does: each
    request's headers first, on its own connection, and every body only once all
    headers are in, so every handler is waiting for its body at the same time."""

    async def connect(src: str, secret: str):
        body = f"{field}={secret}".encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
        writer.write(
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        await writer.drain()
        return reader, writer, body

    async def finish(reader, writer, body) -> int:
        writer.write(body)
        await writer.drain()
        line = await reader.readline()
        writer.close()
        return int(line.split()[1])

    conns = []
    for i in range(0, len(guesses), 50):  # under the listen backlog
        conns += await asyncio.gather(*(connect(s, p) for s, p in guesses[i : i + 50]))
    # Paces the attacker: a moment for every handler to be awaiting its body, so the
    # bodies race (a late handler only narrows the race; the limit is still asserted).
    await asyncio.sleep(0.3)
    return list(await asyncio.gather(*(finish(*c) for c in conns)))


def _race(server, secret: str, guesses: list[tuple[str, str]]) -> list[int]:
    return asyncio.run(_burst(server.port, "pin", guesses))


@pytest.mark.parametrize("page", ["marshal", "board"])
def test_a_burst_of_wrong_pins_from_one_address_checks_at_most_the_limit(
    page, request, monkeypatch
):
    # The per-try delay is what makes the race wide: keep it, every wrong try waits.
    monkeypatch.setattr(webserver, "WRONG_PIN_DELAY_S", 0.2)
    server = request.getfixturevalue(page)
    secret = PIN if page == "marshal" else PASSWORD
    server.auth.limiter = LoginLimiter(per_client=5, lockout_s=60, global_max=30)
    statuses = _race(server, secret, [("127.0.0.1", f"{i:06d}x") for i in range(BURST)])
    checked = statuses.count(401)
    assert statuses.count(429) == BURST - checked
    assert 1 <= checked <= 5, f"{checked} wrong PINs were checked in one burst"
    # The right PIN is refused during the lockout.
    assert _race(server, secret, [("127.0.0.1", secret)]) == [429]
    assert Client(server.url).login(secret) == 429


@pytest.mark.parametrize("page", ["marshal", "board"])
def test_a_burst_from_many_addresses_hits_the_overall_limit(page, request, monkeypatch):
    monkeypatch.setattr(webserver, "WRONG_PIN_DELAY_S", 0.2)
    server = request.getfixturevalue(page)
    secret = PIN if page == "marshal" else PASSWORD
    srcs = _sources(100)
    server.auth.limiter = LoginLimiter(per_client=5, lockout_s=60, global_max=30)
    guesses = [(srcs[i % len(srcs)], f"{i:06d}y") for i in range(BURST)]
    statuses = _race(server, secret, guesses)
    checked = statuses.count(401)
    assert statuses.count(429) == BURST - checked
    assert 1 <= checked <= 30, f"{checked} wrong PINs were checked in one burst"
    # A fresh address is refused too, even with the right secret.
    fresh = _sources(101)[-1]
    assert _race(server, secret, [(fresh, secret)]) == [429]


def test_the_right_pin_does_not_use_up_the_allowance(marshal, monkeypatch):
    monkeypatch.setattr(webserver, "WRONG_PIN_DELAY_S", 0.0)
    marshal.auth.limiter = LoginLimiter(per_client=3, global_max=5)
    for _ in range(20):
        assert Client(marshal.url).login(PIN) == 303


def test_a_burst_of_failures_is_logged_once_with_a_count(marshal, monkeypatch, caplog):
    monkeypatch.setattr(webserver, "WRONG_PIN_DELAY_S", 0.0)
    marshal.auth.failures.every_s = 0.5
    marshal.auth.limiter = LoginLimiter(per_client=5, lockout_s=60, global_max=30)

    def failures() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.name == "checkpoint.web"]
        return [m for m in lines if "wrong PIN" in m or "refused" in m]

    def counted() -> int:
        # Each summary line: "N more wrong PIN and M logins refused ... from K addresses"
        return sum(int(m.split()[0]) + int(m.split(" and ")[1].split()[0]) for m in failures()[1:])

    with caplog.at_level(logging.WARNING, logger="checkpoint.web"):
        t0 = time.monotonic()
        _race(marshal, PIN, [("127.0.0.1", f"{i:06d}z") for i in range(100)])
        # On a loaded machine the 100 racing tries may span more than one 0.5 s window.
        wait_for(lambda: counted() >= 99, 10.0, "99 tries summed", detail=lambda: caplog.text)
        windows = (time.monotonic() - t0) / 0.5
    lines = failures()
    assert lines[0].startswith(("wrong PIN from 127.0.0.1", "login refused"))
    assert all("more wrong PIN and" in m and "from 1 addresses" in m for m in lines[1:]), lines
    assert counted() == 99  # every try but the first, in summary lines only
    assert len(lines) <= 2 + windows, lines  # one line a window, not one a try


# -- malformed input --------------------------------------------------------------------


def _logged_in(server) -> Client:
    c = Client(server.url)
    assert c.login(PIN) == 303
    return c


def _post_correction(marshal, body: bytes, caplog) -> tuple[int, bytes]:
    """POST `body` as a correction from a logged-in phone; no traceback may be logged."""
    c = _logged_in(marshal)
    with caplog.at_level(logging.DEBUG):
        status, _, text = c.request(
            "POST",
            "/api/correct",
            body,
            {"Content-Type": "application/json", "X-CSRF-Token": c.csrf()},
        )
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    return status, text


def test_deeply_nested_json_is_a_400_without_a_traceback(marshal, caplog):
    status, text = _post_correction(marshal, b"[" * 5000 + b"]" * 5000, caplog)
    assert status == 400 and b"nested too deeply" in text


def test_malformed_http_requests_are_logged_as_one_bounded_line(marshal, caplog):
    host, port = "127.0.0.1", marshal.port
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        for _ in range(30):
            with socket.create_connection((host, port), timeout=5) as s:
                bad = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\x00: " + b"A" * 5000
                s.sendall(bad + b"\r\n\r\n")
                reply = s.recv(200)
                assert reply.split()[1] == b"400"
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and not [r for r in records if r.exc_info or r.exc_text]
    assert len(records) <= 10  # at most 10 a minute; the rest counted, not written
    assert all(len(r.getMessage()) < 400 for r in records)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"\xff\xfe",
        b"[1, 2]",
        b'"assign"',
        b"{}",
        b'{"kind": {}, "seq": 1, "value": "4"}',
        b'{"kind": "assign", "seq": "1", "value": "4"}',
        b'{"kind": "assign", "seq": true, "value": "4"}',
        b'{"kind": "assign", "seq": 1e400, "value": "4"}',
        b'{"kind": "assign", "seq": NaN, "value": "4"}',
        b'{"kind": "assign", "seq": 123456789012345678901234567890, "value": "4"}',
        b'{"kind": "assign", "seq": 1, "value": ["4"]}',
        b'{"kind": "assign", "seq": 1, "value": "' + b"9" * 5000 + b'"}',
        b'{"kind": "void", "seq": 1, "value": "\\ud800"}',
        b'{"kind": "format_card", "seq": 1, "value": "x"}',
    ],
)
def test_malformed_corrections_are_a_4xx_without_a_traceback(marshal, body, caplog):
    status, text = _post_correction(marshal, body, caplog)
    assert 400 <= status < 500, (status, text[:200])
