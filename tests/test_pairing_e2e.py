"""The real daemon tells a marshal when GPS time is refused, and why (status and log).

A receiver that names each second ~50 ms *before* its pulse (a "before" receiver) on
a box configured for "after": the daemon must not lock a second off; its retained
status carries the mismatch and the advice, and its log says the same.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest
from boxrig import NS, BoxRig, Truth, gga, rmc

from checkpoint.mqtt import Link, Message

pytestmark = pytest.mark.slow


def test_a_receiver_naming_the_coming_second_is_refused_with_advice(tmp_path, broker):
    rig = BoxRig(tmp_path, broker.url)
    truth = Truth(ppm=11)
    stop = threading.Event()

    def receiver() -> None:
        s = truth.utc(time.monotonic_ns()) // NS + 1
        while not stop.is_set():
            tick = truth.mono(s * NS)
            rig.pin("GPIO18", tick, 1)
            rig.pin("GPIO18", tick + 20_000_000, 0)
            arrive = tick + 950_000_000  # names s + 1, 50 ms before its pulse
            if stop.wait(max(0.0, (arrive - time.monotonic_ns()) / NS)):
                return
            rig.nmea(rmc(s + 1) + gga(s + 1))
            s += 1

    q: queue.Queue = queue.Queue()
    link = Link(broker.url, "mismatch-watch", q.put, subscriptions=[("rally/+/status", 1)])
    feeder = threading.Thread(target=receiver, daemon=True)
    try:
        rig.start()
        link.start()
        feeder.start()
        seen = None
        deadline = time.monotonic() + 30
        while seen is None and time.monotonic() < deadline:
            try:
                ev = q.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(ev, Message):
                st = json.loads(ev.payload)
                if st.get("pairing", {}).get("mismatch"):
                    seen = st
        assert seen is not None, rig.log_text()[-2000:]
        assert seen["clock"] != "locked"
        assert 'gps.convention = "before"' in seen["alarms"]["gps"]
        assert seen["pairing"]["advice"] in seen["alarms"]["gps"]
        deadline = time.monotonic() + 5
        while "GPS time refused" not in rig.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "GPS time refused: time sentences name a second before its PPS pulse" in (
            rig.log_text()
        )
    finally:
        stop.set()
        feeder.join(timeout=3)
        link.stop()
        rig.close()
