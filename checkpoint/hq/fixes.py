"""HQ's side of the hqfix topic: the documents HQ publishes for each box, and when.

The topic's contract (name, shape, parsing) is `checkpoint.hqfix`, which the box
reads too; this half needs HQ's store, so it lives in HQ's room.
"""

from __future__ import annotations

import json
from typing import Any

from checkpoint.hq.store import HQStore
from checkpoint.hqfix import MAX_FIXES, topic


def documents(store: HQStore) -> dict[str, dict[str, Any]]:
    """Per box, the effective HQ correction of every passage HQ corrected."""
    latest: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for c in store.db.execute(
        "SELECT id, box, store, ref_seq, action, car, reason FROM corrections"
        " WHERE source='hq' ORDER BY id"
    ):
        _id, box, st, seq, action, car, reason = c
        kind = "car" if action == "assign" else "void"
        fix: dict[str, Any] = {"store": st, "seq": seq}
        if action == "assign":
            fix["car"] = car
        elif action == "void":
            fix["void"] = reason or "void"
        else:
            fix["unvoid"] = True
        latest[(box, st, seq, kind)] = fix  # ascending id: the last one wins
    out: dict[str, dict[str, Any]] = {}
    for (box, _st, _seq, _kind), fix in latest.items():
        doc = out.setdefault(box, {"v": 1, "fixes": []})
        doc["fixes"].append(fix)
    for doc in out.values():
        doc["fixes"] = doc["fixes"][-MAX_FIXES:]
    return out


class Publisher:
    """What the collector must (re)publish: only documents that changed since sent."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._mark: int | None = None
        self._sent: dict[str, bytes] = {}

    def forget(self) -> None:
        """After a (re)connect: a broker without persistence lost the retained copies."""
        self._mark = None
        self._sent.clear()

    def due(self, store: HQStore) -> list[tuple[str, str, bytes]]:
        """(box, topic, payload) for every box whose corrections changed."""
        row = store.db.execute("SELECT max(id) FROM corrections WHERE source='hq'").fetchone()
        mark = row[0] or 0
        if mark == self._mark:
            return []
        self._mark = mark
        out = []
        for box, doc in sorted(documents(store).items()):
            payload = json.dumps(doc, separators=(",", ":")).encode()
            if self._sent.get(box) != payload:
                out.append((box, topic(self.prefix, box), payload))
        return out

    def sent(self, box: str, payload: bytes) -> None:
        """Record a document the link accepted."""
        self._sent[box] = payload
