"""Watching a live rally from the broker: box status and published events.

Subscribes to `{prefix}/+/status` (retained: clock state, backlog, last_seq,
acked_upto...) and `{prefix}/+/event` through the project's own MQTT link, so
the progress line and the end-of-rally drain check see what HQ sees.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from checkpoint.contracts import hq_subscriptions
from checkpoint.mqtt import Link, LinkEvent, Message


class Monitor:
    """Latest status per box and the first sighting of every event (wall ns)."""

    def __init__(self, url: str, prefix: str, **link: Any) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self.status: dict[str, dict[str, Any]] = {}
        self.status_wall_ns: dict[str, int] = {}
        self.first_seen_ns: dict[tuple[str, str, int], int] = {}
        self.passages_seen = 0
        self.link = Link(
            url,
            f"checkpoint-sim-monitor-{time.monotonic_ns()}",
            self._on_event,
            subscriptions=hq_subscriptions(prefix),
            **link,  # username, password, ca_file on a secured broker
        )

    def start(self) -> None:
        self.link.start()

    def stop(self) -> None:
        self.link.stop()

    def _on_event(self, ev: LinkEvent) -> None:
        # paho's thread: parse and store, nothing slow.
        if not isinstance(ev, Message):
            return
        parts = ev.topic.split("/")
        if len(parts) < 3:
            return
        box, kind = parts[-2], parts[-1]
        try:
            data = json.loads(ev.payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        now = time.time_ns()
        with self._lock:
            if kind == "status":
                self.status[box] = data
                self.status_wall_ns[box] = now
            elif kind == "event":
                key = (box, str(data.get("store")), data.get("seq"))
                if isinstance(key[2], int) and key not in self.first_seen_ns:
                    self.first_seen_ns[key] = now  # type: ignore[index]
                    if data.get("type") == "passage":
                        self.passages_seen += 1

    def snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        """(latest status per box, wall ns it arrived)."""
        with self._lock:
            return dict(self.status), dict(self.status_wall_ns)
