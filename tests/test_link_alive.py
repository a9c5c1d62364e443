"""mqtt.Link says whether paho's network thread runs (the box's watchdog asks it).

A real Mosquitto; no private attribute of paho is read, here or in the watchdog.
"""

from __future__ import annotations

import queue

from checkpoint.mqtt import Connected, Link


def test_the_loop_thread_is_alive_from_start_to_stop(broker):
    events: queue.Queue = queue.Queue()
    link = Link(broker.url, "alive-test", events.put)
    assert link.thread is None and not link.alive  # nothing started yet
    link.start()
    try:
        assert link.alive and link.thread is not None and link.thread.is_alive()
        got = events.get(timeout=10)
        while not isinstance(got, Connected):
            got = events.get(timeout=10)
    finally:
        link.stop()
    # stop() joins paho's thread: it is gone when stop returns.
    assert not link.alive and not link.thread.is_alive()


def test_a_link_to_a_broker_that_is_down_still_has_a_running_loop():
    # paho retries in its thread: the watchdog must not starve a box whose broker is down.
    link = Link("mqtt://127.0.0.1:1", "alive-down", lambda ev: None)
    link.start()
    try:
        assert link.alive and not link.connected
    finally:
        link.stop()
    assert not link.alive
