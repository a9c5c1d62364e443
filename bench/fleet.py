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
from dataclasses import dataclass, field
from typing import Any

from bench.common import BenchError, pct, wait_until
from bench.rig import passage_event
from checkpoint.contracts import CMD, LOST, Topics, event_bytes, message_bytes
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
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
    return ap.parse_args(argv)


def _connect(args: argparse.Namespace, names: list[str], acks: Acks) -> dict[str, Link]:
    """One link per box, connected and subscribed (BenchError after a minute)."""
    creds = secure.Credentials.from_args(args)
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
    wait_until(
        lambda: all(k.connected for k in links.values()) and acks.all_subscribed.is_set(),
        60,
        "every box to connect and subscribe",
        0.05,
    )
    return links


@dataclass
class _Run:
    """What the boxes published: per box the publish ticks (seq = index + 1)."""

    t0: int
    per_box: int
    published: dict[str, list[int]]
    late: list[int] = field(default_factory=list)
    refused: int = 0
    end: int = 0


def _publish(args: argparse.Namespace, links: dict[str, Link], stores: dict[str, str]) -> _Run:
    """Each box's passages at `--rate`, the boxes spread evenly over each period."""
    names = list(links)
    period = NS / args.rate
    run = _Run(
        t0=time.monotonic_ns() + NS // 5,
        per_box=max(1, round(args.rate * args.seconds)),
        published={b: [] for b in names},
    )
    utc0 = 1_776_000_000 * NS
    topics = {b: Topics(args.prefix, b).event for b in names}
    for s in range(run.per_box):
        for i, b in enumerate(names):
            due = run.t0 + int(s * period + i * period / len(names))
            now = time.monotonic_ns()
            if due > now:
                time.sleep((due - now) / NS)
            ev = passage_event(
                box=b, store=stores[b], seq=s + 1, mono_ns=due, utc_ns=utc0 + due % (10**6 * NS)
            )
            ev["checkpoint"] = "PC9"
            data = event_bytes(ev)
            t_pub = time.monotonic_ns()
            if links[b].publish(topics[b], data, qos=1) is None:
                run.refused += 1
            run.published[b].append(t_pub)
            run.late.append(t_pub - due)
    run.end = time.monotonic_ns()
    return run


def _acks_by_box(acks: Acks, names: list[str]) -> tuple[dict[str, list[tuple[int, int]]], int]:
    """Per box (arrival tick, upto) of each ack; and how many resend commands came."""
    per_box: dict[str, list[tuple[int, int]]] = {b: [] for b in names}
    cmds = 0
    for t, topic, payload in list(acks.raw):
        box = topic.split("/")[-2]
        if box not in per_box:
            continue
        if topic.endswith(f"/{CMD}"):
            cmds += 1
            continue
        per_box[box].append((t, int(json.loads(payload).get("upto", 0))))
    return per_box, cmds


def _lags(
    run: _Run, per_box_acks: dict[str, list[tuple[int, int]]]
) -> tuple[list[tuple[float, float]], int]:
    """(publish time since t0 in s, lag in ms) of each acked event; and the unacked count."""
    lags: list[tuple[float, float]] = []
    unacked = 0
    for b, published in run.published.items():
        times, highs, high = [], [], 0
        for t, upto in sorted(per_box_acks[b]):
            if upto > high:
                high = upto
                times.append(t)
                highs.append(upto)
        for seq, t_pub in enumerate(published, start=1):
            i = bisect.bisect_left(highs, seq)
            if i == len(times):
                unacked += 1
                continue
            lags.append((round((t_pub - run.t0) / NS, 4), round((times[i] - t_pub) / 1e6, 3)))
    return lags, unacked


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = [f"fleet{args.first + i:03d}" for i in range(args.boxes)]
    stores = {b: uuid.uuid4().hex for b in names}
    acks = Acks(len(names))
    try:
        links = _connect(args, names, acks)
    except BenchError as e:
        print(e, file=sys.stderr)
        return 1
    for b, link in links.items():
        status = {"state": "ready", "box": b, "checkpoint": "PC9", "store": stores[b]}
        link.publish(Topics(args.prefix, b).status, message_bytes(status), qos=1, retain=True)
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1
    run = _publish(args, links, stores)

    def acked_all() -> bool:
        per_box, _ = _acks_by_box(acks, names)
        return all(max((u for _, u in per_box[b]), default=0) >= run.per_box for b in names)

    # Not every ack may come: the report counts the ones missing.
    with contextlib.suppress(BenchError):
        wait_until(acked_all, args.wait, "acks", 0.1)
    per_box_acks, cmds = _acks_by_box(acks, names)
    lags, unacked = _lags(run, per_box_acks)
    result: dict[str, Any] = {
        "boxes": len(names),
        "published": sum(len(v) for v in run.published.values()),
        "refused": run.refused,
        "unacked": unacked,
        "resend_commands": cmds,
        "publish_seconds": round((run.end - run.t0) / NS, 3),
        "late_p50_ms": round((pct(run.late, 50) or 0) / 1e6, 3),
        "late_p99_ms": round((pct(run.late, 99) or 0) / 1e6, 3),
        "late_max_ms": round(max(run.late, default=0) / 1e6, 3),
        "lags": lags,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    for link in links.values():
        link.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
