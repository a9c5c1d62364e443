"""Many emulated boxes in one process, publishing valid passage events to HQ.

    python -m bench.fleet --broker URL --boxes N --first K --rate 5 --seconds S --out FILE
        [--credentials DIR | --ca FILE]   (a secured broker: see sim/secure.py)

Each box is one `checkpoint.mqtt.Link` (its own MQTT connection and client id) with
its own store id and contiguous seqs from 1; it publishes its retained `ready` status
(naming the store) and then `checkpoint/event/1` passage events at `rate` a second,
QoS 1, the boxes' schedules spread evenly over the period. Each box subscribes to its
own `ack` and `cmd` topics, as a real box does. The process prints `READY` once every box is
connected, waits for `GO` on stdin, publishes, waits for HQ to ack everything (or a
timeout), and writes per-event lags as JSON to `--out`:

    lag = arrival of the first HQ ack covering (box, seq) - the publish call,

both CLOCK_MONOTONIC in this process.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import sys
import threading
import time
import uuid
from typing import Any

from bench.common import BenchError, pct, wait_until
from bench.rig import passage_event
from checkpoint.contracts import ACK, CMD, LOST, Topics, event_bytes, message_bytes
from checkpoint.mqtt import Link, LinkEvent, Message, SubAck
from sim import secure

NS = 1_000_000_000


class Acks:
    """Arrival times of HQ acks and commands (paho's threads append, the main thread reads)."""

    def __init__(self, boxes: int) -> None:
        self.raw: list[tuple[int, str, bytes]] = []
        self._boxes = boxes
        self._subacks = 0
        self._lock = threading.Lock()
        self.all_subscribed = threading.Event()

    def on_event(self, ev: LinkEvent) -> None:
        t = time.monotonic_ns()
        if isinstance(ev, Message):
            self.raw.append((t, ev.topic, ev.payload))
        elif isinstance(ev, SubAck) and ev.ok:
            with self._lock:
                self._subacks += 1
                if self._subacks >= self._boxes:
                    self.all_subscribed.set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--broker", required=True)
    ap.add_argument("--prefix", default="rally")
    ap.add_argument("--boxes", type=int, required=True)
    ap.add_argument("--first", type=int, default=0, help="number of the first box")
    ap.add_argument("--rate", type=float, default=5.0, help="passages per second per box")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--wait", type=float, default=30.0, help="max seconds to wait for acks")
    ap.add_argument("--out", required=True)
    secure.add_arguments(ap)  # a secured broker: DIR/secrets/fleetNNN.password per box
    args = ap.parse_args(argv)
    creds = secure.Credentials.from_args(args)

    names = [f"fleet{args.first + i:03d}" for i in range(args.boxes)]
    mine = set(names)
    stores = {b: uuid.uuid4().hex for b in names}
    acks = Acks(len(names))
    # Like a real box, each emulated box subscribes to its own ack and cmd topics only,
    # so the broker fans HQ's acks out exactly as in the field.
    links = {
        b: Link(
            args.broker,
            f"bench-{b}",
            acks.on_event,
            will=(Topics(args.prefix, b).status, LOST, True),
            subscriptions=[(Topics(args.prefix, b).ack, 1), (Topics(args.prefix, b).cmd, 1)],
            **(creds.box_link(b) if creds else {}),
        )
        for b in names
    }
    for link in links.values():
        link.start()
    try:
        wait_until(
            lambda: all(k.connected for k in links.values()) and acks.all_subscribed.is_set(),
            60,
            "every box to connect and subscribe",
            0.05,
        )
    except BenchError as e:
        print(e, file=sys.stderr)
        return 1
    for b, link in links.items():
        status = {"state": "ready", "box": b, "checkpoint": "PC9", "store": stores[b]}
        link.publish(Topics(args.prefix, b).status, message_bytes(status), qos=1, retain=True)
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1

    period = NS / args.rate
    per_box = max(1, round(args.rate * args.seconds))
    t0 = time.monotonic_ns() + NS // 5
    utc0 = 1_776_000_000 * NS
    published: dict[str, list[int]] = {b: [] for b in names}
    late: list[int] = []
    refused = 0
    topics = {b: Topics(args.prefix, b).event for b in names}
    for s in range(per_box):
        for i, b in enumerate(names):
            due = t0 + int(s * period + i * period / len(names))
            now = time.monotonic_ns()
            if due > now:
                time.sleep((due - now) / NS)
            seq = s + 1
            mono = due
            ev = passage_event(
                box=b, store=stores[b], seq=seq, mono_ns=mono, utc_ns=utc0 + mono % (10**6 * NS)
            )
            ev["checkpoint"] = "PC9"
            data = event_bytes(ev)
            t_pub = time.monotonic_ns()
            if links[b].publish(topics[b], data, qos=1) is None:
                refused += 1
            published[b].append(t_pub)
            late.append(t_pub - due)
    end_pub = time.monotonic_ns()

    def highest() -> dict[str, int]:
        up: dict[str, int] = {}
        for _t, topic, payload in list(acks.raw):
            box = topic.split("/")[-2]
            if box in mine and topic.endswith(f"/{ACK}"):
                up[box] = max(up.get(box, 0), int(json.loads(payload).get("upto", 0)))
        return up

    # Not every ack may come: the report counts the ones missing.
    with contextlib.suppress(BenchError):
        wait_until(
            lambda: all(highest().get(b, 0) >= per_box for b in names), args.wait, "acks", 0.1
        )

    per_box_acks: dict[str, list[tuple[int, int]]] = {b: [] for b in names}
    cmds = 0
    for t, topic, payload in list(acks.raw):
        box = topic.split("/")[-2]
        if box not in mine:
            continue
        if topic.endswith(f"/{CMD}"):
            cmds += 1
            continue
        per_box_acks[box].append((t, int(json.loads(payload).get("upto", 0))))
    lags: list[tuple[float, float]] = []  # (publish time since t0 in s, lag in ms)
    unacked = 0
    for b in names:
        times, highs, high = [], [], 0
        for t, upto in sorted(per_box_acks[b]):
            if upto > high:
                high = upto
                times.append(t)
                highs.append(upto)
        for seq, t_pub in enumerate(published[b], start=1):
            i = bisect.bisect_left(highs, seq)
            if i == len(times):
                unacked += 1
                continue
            lags.append((round((t_pub - t0) / NS, 4), round((times[i] - t_pub) / 1e6, 3)))
    result: dict[str, Any] = {
        "boxes": len(names),
        "published": sum(len(v) for v in published.values()),
        "refused": refused,
        "unacked": unacked,
        "resend_commands": cmds,
        "publish_seconds": round((end_pub - t0) / NS, 3),
        "late_p50_ms": round((pct(late, 50) or 0) / 1e6, 3),
        "late_p99_ms": round((pct(late, 99) or 0) / 1e6, 3),
        "late_max_ms": round(max(late, default=0) / 1e6, 3),
        "lags": lags,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    for link in links.values():
        link.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
