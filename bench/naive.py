"""The naive box: publish in the edge callback, no store, no clock model.

    CHECKPOINT_SIM_FEED=SOCKET python -m bench.naive --broker URL [--prefix naive]

What most Pi timers do: the gpiozero callback publishes the passage at once (QoS 1,
through the same `checkpoint.mqtt.Link` the daemon uses, so the MQTT client is not
what differs). Edges come through the same `checkpoint.box.edges.EdgeSource` and
`checkpoint-sim` pin factory as the daemon's, so the comparison isolates what the
daemon adds: the queue to the core thread, the SQLite commit with synchronous=FULL,
the outbox, and HQ's own commit and ack.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import threading

from bench.rig import BEAM_PINS
from checkpoint.box.edges import EdgeSource
from checkpoint.config import InputConfig
from checkpoint.contracts import Topics
from checkpoint.mqtt import Connected, Link, LinkEvent
from sim.waits import wait_for


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--broker", required=True)
    ap.add_argument("--prefix", default="naive")
    ap.add_argument("--box", default="naive01")
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    topics = Topics(args.prefix, args.box)
    topic, status = topics.event, topics.status

    def on_link(ev: LinkEvent) -> None:
        if isinstance(ev, Connected):  # (re)connected: say so, as a box would
            link.publish(status, b'{"state":"ready"}', qos=1, retain=True)

    link = Link(args.broker, f"bench-naive-{args.box}", on_link)
    link.start()
    try:
        wait_for(lambda: link.connected, 15, "the broker", 0.01, error=TimeoutError)
    except TimeoutError:
        return 1
    seq = itertools.count(1)

    def on_edge(name: str, mono_ns: int, active: bool, *_more: object) -> None:
        if active:  # the beam was broken: publish right here, in the callback
            payload = {"type": "passage", "input": name, "mono_ns": mono_ns, "seq": next(seq)}
            link.publish(topic, json.dumps(payload).encode(), qos=1)

    inputs = [
        InputConfig(name=f"beam{i + 1}", pin=pin, max_edges_per_s=100_000)
        for i, pin in enumerate(BEAM_PINS)
    ]
    edges = EdgeSource(
        inputs,
        pps_pin="GPIO18",
        pps_edge="rising",
        on_edge=on_edge,
        on_pps=lambda mono_ns: None,
        pin_factory="checkpoint-sim",
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        edges.close()
        link.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
