"""The real daemon tells a marshal when GPS time is refused, and why (status and log).

A receiver that names each second ~50 ms *before* its pulse (a "before" receiver) on
a box configured for "after": the daemon must not lock a second off; its retained
status carries the mismatch and the advice, and its log says the same.
"""

from __future__ import annotations

import threading
import time

import pytest
from boxrig import NS, BoxRig, gga, rmc, truth_now
from faults import Watcher
from waits import wait_for

pytestmark = pytest.mark.slow


def test_a_receiver_naming_the_coming_second_is_refused_with_advice(tmp_path, broker):
    rig = BoxRig(tmp_path, broker.url)
    truth = truth_now(ppm=11)
    stop = threading.Event()

    def receiver() -> None:
        s = truth.utc(time.monotonic_ns()) // NS + 1
        while not stop.is_set():
            tick = truth.tick(s * NS)
            rig.pin("GPIO18", tick, 1)
            rig.pin("GPIO18", tick + 20_000_000, 0)
            arrive = tick + 950_000_000  # names s + 1, 50 ms before its pulse
            if stop.wait(max(0.0, (arrive - time.monotonic_ns()) / NS)):
                return
            rig.nmea(rmc(s + 1) + gga(s + 1))
            s += 1

    watch = Watcher(broker.url, ["rally/+/status"])
    feeder = threading.Thread(target=receiver, daemon=True)
    try:
        rig.start()
        feeder.start()
        seen = watch.wait_status(
            lambda st: st.get("pairing", {}).get("mismatch"), 30, "the pairing mismatch"
        )
        assert seen["clock"] != "locked"
        assert 'gps.convention = "before"' in seen["alarms"]["gps"]
        assert seen["pairing"]["advice"] in seen["alarms"]["gps"]
        wait_for(lambda: "GPS time refused" in rig.log_text(), 5, "the refusal logged")
        assert "GPS time refused: time sentences name a second before its PPS pulse" in (
            rig.log_text()
        )
    finally:
        stop.set()
        feeder.join(timeout=3)
        watch.close()
        rig.close()
