"""Bad input: what the world throws at a box must not stop it timing.

* NMEA garbage through the daemon's real pty: real receiver logs (the shared corpus, with
  its binary UBX frames) cut at random and mixed with random bytes, overlong lines,
  NULs and bit flips, at serial speed and above. The daemon keeps publishing passages,
  and once a sane receiver speaks, it locks and stamps true time.
* Malformed MQTT on the box's cmd, ack and hwm topics: not JSON, binary, wrong types,
  impossible ranges, other stores, huge numbers, deep nesting. Ignored, counted in the
  status (`bad_commands`), and passages keep flowing.
* A chattering beam at several kHz: the daemon's memory stays bounded (VmRSS) and a
  passage on another input still gets through.
* System clock steps while locked (CLOCK_REALTIME jumping hours, days, to 1970, to far
  future): tested on the pipeline with records, as the daemon feeds it (the real system
  clock of a test machine is not ours to step). No crash, and no stamp whose error is
  outside its stated bound unless it is flagged `unsynced` with an unknown bound.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import pytest
from boxrig import NS, BoxRig, GpsFeeder, gga, rmc, truth_now
from corpusline import CORPUS
from faults import (
    MS,
    Watcher,
    box_events,
    fast_inputs,
    passage_keys,
    report,
    rss_kb,
    send_passage,
    send_raw,
)
from waits import wait_for

from checkpoint.config import InputConfig
from checkpoint.core.clock import UNKNOWN_UNCERTAINTY_NS, ClockParams
from checkpoint.core.timing import Pipeline
from checkpoint.mqtt import Link
from sim.gps import sentence

pytestmark = pytest.mark.slow

TOPICS = ["rally/box07/status", "rally/box07/event"]


def _events_of(watch: Watcher) -> list[dict]:
    return [json.loads(p) for _, p in watch.payloads("/event")]


# -- NMEA fuzz through the pty ------------------------------------------------------------


def _mangle(rng: random.Random, chunk: bytes) -> bytes:
    """One of the ways a serial line goes wrong."""
    r = rng.random()
    if r < 0.25:
        return chunk  # real receiver output, as logged
    if r < 0.45:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    if r < 0.60:
        b = bytearray(chunk)
        for _ in range(max(1, len(b) // 50)):
            if b:
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if r < 0.70:
        return chunk[: rng.randint(0, len(chunk))]  # cut mid-sentence
    if r < 0.80:
        return b"$GPRMC," + b"9" * rng.randint(100, 5000) + b"\r\n"  # overlong
    if r < 0.88:
        return b"\0" * rng.randint(1, 64) + b"\r\r\n\n"
    if r < 0.94:
        # Valid checksums around absurd fields.
        body = rng.choice(
            [
                "GPRMC,999999.00,A,9999.0,N,99999.0,W,0.0,0.0,999999,,,A",
                "GPRMC,235960.00,A,3251.0,N,11716.0,W,0.0,0.0,310299,,,A",
                "GPGGA,120000.00,,,,,9,99,99.9,-99999.0,M,,M,,",
                "GPZDA,120000.00,99,99,9999,00,00",
                "GPRMC,120000.00,A,3251.0,N,11716.0,W,1e308,nan,010180,,,A",
            ]
        )
        return sentence(body).encode()
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(500, 4000)))


def _corpus_bytes() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("*.log"))]


class _Fuzzer:
    """A receiver spewing garbage on the pty: random slices of the corpus' logs, mangled."""

    def __init__(self, master: int, rng: random.Random) -> None:
        self.master, self.rng = master, rng
        self.logs = _corpus_bytes()
        self.fed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spew, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _spew(self) -> None:
        rng = self.rng
        while not self._stop.is_set():
            log = rng.choice(self.logs)
            at = rng.randrange(len(log))
            chunk = _mangle(rng, log[at : at + rng.randint(1, 600)])
            try:
                os.write(self.master, chunk)
            except OSError:
                return
            self.fed += len(chunk)
            time.sleep(0.002)  # paces the spewing receiver


def _passage_after_a_sane_receiver_locks(rig: BoxRig, watch: Watcher, truth) -> tuple[int, dict]:
    """A sane receiver now: PPS and sentences from the truth. The box must lock and
    stamp true time, whatever the garbage taught it before. Returns (tick, event)."""
    os.write(rig.master, b"\r\n")
    gps = GpsFeeder(rig, truth)
    gps.start()
    try:
        watch.wait_status(lambda s: s.get("clock") == "locked", 60, "lock after the fuzz")
        m = time.monotonic_ns() + NS // 4
        rig.pin("GPIO17", m, 0)
        rig.pin("GPIO17", m + 150 * MS, 1)
        ev = wait_for(
            lambda: next((e for e in _events_of(watch) if e.get("mono_ns") == m), None),
            20,
            "the passage after lock",
        )
    finally:
        gps.stop()
    return m, ev


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"NMEA corpus not found at {CORPUS}")
def test_nmea_garbage_on_the_pty_then_a_sane_receiver_locks(tmp_path, broker):
    watch = Watcher(broker.url, TOPICS)
    rig = BoxRig(tmp_path, broker.url)
    truth = truth_now(ppm=20)
    fuzzer = _Fuzzer(rig.master, random.Random(20260425))
    try:
        rig.start()
        fuzzer.start()
        # Passages go on while the GPS line spews garbage.
        t0 = time.monotonic_ns() + NS // 4
        during = []
        for i in range(5):
            m = t0 + i * 1_200_000_000
            rig.pin("GPIO17", m, 0)
            rig.pin("GPIO17", m + 150 * MS, 1)
            during.append(m)
        time.sleep(1.0)  # the fault's schedule: garbage goes on a second after the cars
        fuzzer.stop()
        assert rig.alive(), rig.log_text()[-2000:]
        wait_for(lambda: len(_events_of(watch)) >= 5, 20, "passages during the fuzz")
        st = watch.wait_status(lambda s: True, 5, "a status")
        rejects = st["fix"]
        m, ev = _passage_after_a_sane_receiver_locks(rig, watch, truth)
    finally:
        fuzzer.stop()
        watch.close()
        rig.close()
    assert [e["mono_ns"] for e in _events_of(watch) if e["type"] == "passage"][:5] == during
    assert ev["clock"] == "locked"
    err = ev["utc_ns"] - truth.utc(m)
    assert abs(err) <= ev["uncertainty_ns"] and abs(err) < 100_000, err
    report(
        "nmea_fuzz",
        {"bytes_fed": fuzzer.fed, "parser": rejects, "locked_error_ns": err},
    )


# -- malformed MQTT ---------------------------------------------------------------------


def _bad_messages(store: str) -> list[tuple[str, bytes]]:
    """Malformed commands, acks and hwms for box07 (its current store is `store`)."""
    cmd, ack, hwm = "rally/box07/cmd", "rally/box07/ack", "rally/box07/hwm"
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        (cmd, b"not json"),
        (cmd, b"\xff\xfe\x00binary\x80"),
        (cmd, b"[1, 2, 3]"),
        (cmd, b'"resend"'),
        (cmd, deep),
        (cmd, b"{" + b" " * 1_000_000 + b"}"),  # 1 MB, valid, no cmd
        (cmd, json.dumps({"cmd": "format_card"}).encode()),
        (cmd, json.dumps({"cmd": "x" * 100_000}).encode()),  # logged truncated
        (cmd, json.dumps({"cmd": "resend", "store": store, "from": "1", "to": 3}).encode()),
        (cmd, json.dumps({"cmd": "resend", "store": store, "from": True, "to": 3}).encode()),
        (cmd, json.dumps({"cmd": "resend", "store": store, "from": 1.5, "to": 3}).encode()),
        (cmd, json.dumps({"cmd": "resend", "store": store, "from": 3, "to": 1}).encode()),
        (cmd, json.dumps({"cmd": "resend", "store": store, "from": -5, "to": 0}).encode()),
        (cmd, json.dumps({"cmd": "resend", "store": store, "from": 1, "to": 10**18}).encode()),
        (cmd, json.dumps({"cmd": "resend", "store": "other", "from": 1, "to": 2}).encode()),
        (cmd, json.dumps({"cmd": "resend", "from": 1, "to": 2}).encode()),
        (ack, b"garbage"),
        (ack, b"\x00\x01\x02"),
        (ack, json.dumps({"store": store, "upto": "3"}).encode()),
        (ack, json.dumps({"store": store, "upto": -1}).encode()),
        (ack, json.dumps({"store": store, "upto": None}).encode()),
        (ack, json.dumps({"store": 5, "upto": 3}).encode()),
        (ack, json.dumps({"store": store, "upto": 10**15}).encode()),
        (ack, json.dumps([store, 3]).encode()),
        (hwm, b"{]"),
        (hwm, json.dumps({"store": store, "last_seq": "x"}).encode()),
        (hwm, json.dumps({"store": store, "last_seq": 10**15}).encode()),
    ]


def test_malformed_commands_and_acks_are_ignored_counted_and_harmless(tmp_path, broker):
    watch = Watcher(broker.url, TOPICS)
    rig = BoxRig(tmp_path, broker.url, inputs=fast_inputs(("beam", "GPIO17")))
    sender = Link(broker.url, "evil-hq", lambda ev: None)
    sender.start()
    wait_for(lambda: sender.connected, 10, "sender connected")
    try:
        rig.start()
        first = [("beam", send_passage(rig, "GPIO17")) for _ in range(3)]
        st = watch.wait_status(lambda s: s.get("last_seq") == 3, 20, "3 events")
        store = st["store"]
        ack = "rally/box07/ack"
        bad = _bad_messages(store)
        for topic, payload in bad:
            assert sender.publish(topic, payload, qos=1) is not None
        # Harmless but not for us: an ack of another store (an old card's) is ignored
        # without counting; so is a cleared retained message.
        sender.publish(ack, json.dumps({"store": "0" * 32, "upto": 99}).encode(), qos=1)
        sender.publish(ack, b"", qos=1)
        st = watch.wait_status(
            lambda s: s.get("bad_commands", 0) >= len(bad), 20, "all bad messages counted"
        )
        later = [("beam", send_passage(rig, "GPIO17")) for _ in range(3)]
        st = watch.wait_status(lambda s: s.get("last_seq") == 6, 20, "3 more events")
        # The marker: a status published after those events, so after anything the bad
        # messages could still have done.
        st = watch.wait_status(lambda s: True, 5, "a status")
        assert rig.alive()
    finally:
        sender.stop()
        watch.close()
        rig.close()
    longest = max(len(line) for line in rig.log_text().splitlines())
    assert longest < 1000, f"a {longest}-character log line"
    assert st["bad_commands"] == len(bad)
    assert st["skipped_seqs"] == 0 and "seq" in st["alarms"]  # the huge ack: refused, loudly
    assert st["acked_upto"] == 0  # no bogus ack was taken
    events = box_events(rig.store_path)
    assert passage_keys(events) == first + later
    published = {e["seq"] for e in _events_of(watch)}
    assert published == {1, 2, 3, 4, 5, 6}
    report("bad_mqtt", {"bad_messages": len(bad), "counted": st["bad_commands"]})


# -- chattering beam ---------------------------------------------------------------------


def _chatter(rig: BoxRig, pin: str, hz: int, seconds: float, stop: threading.Event) -> int:
    """Toggle `pin` at `hz` edges/s for `seconds` (ticks in the past), in 10 ms batches."""
    sent = 0
    level = 0
    end = time.monotonic() + seconds
    step = NS // hz
    while time.monotonic() < end and not stop.is_set():
        now = time.monotonic_ns()
        n = hz // 100
        lines = []
        for i in range(n):
            level ^= 1
            t = now - 10 * MS + i * step
            lines.append(json.dumps({"pin": pin, "mono_ns": t, "state": level}))
        if send_raw(rig, ("\n".join(lines) + "\n").encode()):
            sent += n
        time.sleep(0.01)  # paces the chattering wire: one batch every 10 ms
    return sent


def _chattering(tmp_path: Path, broker_url: str, *, hz: int, seconds: float) -> dict:
    inputs = '[[inputs]]\nname = "beam"\npin = "GPIO17"\n\n' + fast_inputs(("gate", "GPIO27"))
    watch = Watcher(broker_url, TOPICS)
    rig = BoxRig(tmp_path, broker_url, inputs=inputs)
    stop = threading.Event()
    rss: list[int] = []
    gate_sent: list[int] = []
    try:
        rig.start()
        wait_for(lambda: rig.alive() and rss_kb(rig.pid) > 0, 5, "daemon up")
        # The baseline once the daemon runs in full: its first status is out.
        watch.wait_status(lambda s: True, 10, "the daemon's first status", since=0)
        rss.append(rss_kb(rig.pid))
        result: dict = {}
        chatter = threading.Thread(
            target=lambda: result.update(edges=_chatter(rig, "GPIO17", hz, seconds, stop)),
            daemon=True,
        )
        chatter.start()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            lead = send_passage(rig, "GPIO27")
            if lead is not None:
                gate_sent.append(lead)
            time.sleep(0.5)  # paces the other input's cars: one every 0.5 s
            rss.append(rss_kb(rig.pid))
        chatter.join(10)
        st = watch.wait_status(lambda s: "input:beam" in s.get("alarms", {}), 15, "chatter alarm")
        wait_for(
            lambda: (
                {e["mono_ns"] for e in _events_of(watch) if e.get("input") == "gate"}
                >= set(gate_sent)
            ),
            30,
            "every gate passage published",
        )
        assert rig.alive()
    finally:
        stop.set()
        watch.close()
        rig.close()
    growth = max(rss) - rss[0]
    # Bounded: the rate limiter holds O(1) per input, the queue drains; a leak at several
    # thousand edges a second would show as megabytes within seconds.
    assert growth < 30_000, f"RSS grew {growth} KiB: {rss}"
    return {
        "chatter_hz": hz,
        "seconds": seconds,
        "edges_sent": result.get("edges", 0),
        "rss_kb_start": rss[0],
        "rss_kb_max": max(rss),
        "rss_kb_growth": growth,
        "other_input_passages": len(gate_sent),
        "other_input_lost": 0,
        "alarm": st["alarms"]["input:beam"],
    }


def test_chattering_beam_memory_bounded_other_input_unharmed(tmp_path, broker):
    report("chatter", _chattering(tmp_path, broker.url, hz=5000, seconds=6))


@pytest.mark.soak
def test_soak_chattering_beam_for_a_minute(tmp_path, broker):
    report("chatter_soak", _chattering(tmp_path, broker.url, hz=5000, seconds=60))


# -- system clock steps (pipeline level) -----------------------------------------------------

UTC0 = 1_776_000_000 * NS
PPM = 30


def _utc(mono: int) -> int:
    d = mono - 10 * NS
    return UTC0 + d - d * PPM // 1_000_000


def _mono(utc: int) -> int:
    return 10 * NS + (utc - UTC0) * 1_000_000 // (1_000_000 - PPM)


#: How the system clock is stepped under the box: hours, a day, to 1970, to the far
#: future and back, a few seconds, not at all, 30 years.
_STEPS = [
    3600 * NS,
    -86_400 * NS,
    -UTC0,  # back to 1970
    2**62,  # far future
    -(2**62),
    7 * NS,
    -7 * NS,
    0,
    10**9 * 86_400 * 365 * 30,
]


def _stepping_day(rng: random.Random) -> list[dict]:
    """300 s of capture records: GPS from second 20 to 150 only, a sysclock reading every
    5 s stepped by one of `_STEPS`, a passage every 3 s; in tick order."""
    records: list[dict] = []
    gps = range(20, 150)  # seconds with GPS: none before (cold start), none after (lost)
    for k in range(300):
        tick = _mono(UTC0 + k * NS)
        if k in gps:
            records.append({"type": "pps", "mono_ns": tick + rng.randint(-1000, 1000)})
            text = rmc(UTC0 // NS + k) + gga(UTC0 // NS + k)
            for i, line in enumerate(text.split("\r\n")[:2]):
                records.append({"type": "nmea", "mono_ns": tick + 80 * MS + i * MS, "line": line})
        if k % 5 == 0:
            m = tick + 333 * MS
            records.append(
                {"type": "sysclock", "mono_ns": m, "realtime_ns": _utc(m) + rng.choice(_STEPS)}
            )
        if k % 3 == 1 and k > 5:
            m = tick + rng.randint(0, NS - 1)
            records += [
                {"type": "edge", "mono_ns": m, "input": "beam", "active": True},
                {"type": "edge", "mono_ns": m + 200 * MS, "input": "beam", "active": False},
            ]
    records.sort(key=lambda r: r["mono_ns"])
    return records


def test_system_clock_steps_never_yield_a_wrong_trusted_stamp():
    """CLOCK_REALTIME jumps around while the GPS is locked, then while it is lost: the
    daemon's `sysclock` records carry the jumps into the pipeline exactly as it reads
    them (time.time_ns() paired with time.monotonic_ns())."""
    rng = random.Random(11)
    pipe = Pipeline(
        box="box07",
        checkpoint="PC3",
        store="s1",
        inputs=[InputConfig(name="beam", pin="GPIO17")],
        # A short holdover, so the run also reaches "no GPS at all" (unsynced).
        clock_params=ClockParams(holdover_max_ns=60 * NS),
    )
    records = _stepping_day(rng)
    events: list[dict] = []
    for r in records:
        events += pipe.feed(r)
    events += pipe.flush()
    passages = {e["seq"]: e for e in events if e["type"] == "passage"}
    stamps = list(passages.values()) + [e for e in events if e["type"] == "restamp"]
    assert len(passages) > 50
    wrong = []
    for e in stamps:
        mono = e["mono_ns"] if e["type"] == "passage" else passages[e["ref_seq"]]["mono_ns"]
        err = e["utc_ns"] - _utc(mono)
        if abs(err) > e["uncertainty_ns"]:
            wrong.append((e["seq"], e["clock"], err, e["uncertainty_ns"]))
        if e["clock"] == "unsynced":
            # The system clock is never trusted: its bound says "unknown".
            assert e["uncertainty_ns"] >= UNKNOWN_UNCERTAINTY_NS // 2, e
    assert not wrong, wrong[:5]
    locked = [e for e in stamps if e["clock"] == "locked"]
    assert locked and max(abs(e["utc_ns"] - _utc(e["mono_ns"])) for e in locked if "mono_ns" in e)
    report(
        "clock_steps",
        {
            "stamps": len(stamps),
            "by_clock": {
                c: sum(1 for e in stamps if e["clock"] == c)
                for c in {"locked", "holdover", "nmea", "unsynced"}
            },
            "wrong_trusted": 0,
        },
    )
