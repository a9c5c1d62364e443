"""HQ's corrections back to the box: `{prefix}/{box}/hqfix` (contract extension, v1).

A marshal should see at the roadside that HQ gave passage #14 car 29 or voided #15.
HQ's corrections live in HQ's database (`corrections`, source "hq"); the collector
publishes, per box, the effective HQ correction of each passage, retained, QoS 1:

    {"v": 1, "fixes": [{"store": S, "seq": N, "car": "29"},
                       {"store": S, "seq": M, "void": "photographer"},
                       {"store": S, "seq": K, "unvoid": true}]}

Retained, so a box that restarts or reconnects has them at once; the whole list
each time (tens of entries per box), so a lost message never leaves a box stale.
The box shows them on the marshal page and never turns them into its own events:
HQ's database is the one owner of HQ's corrections.

`Publisher` (collector side) decides what is due; `parse` (box side) checks a
received document. Pure apart from `Publisher.due` reading HQ's database.
"""

from __future__ import annotations

import json
from typing import Any

from checkpoint.hqstore import HQStore

TOPIC = "hqfix"  # {prefix}/{box}/hqfix
MAX_FIXES = 2000  # per box; a document stays far below any broker's message limit


def topic(prefix: str, box: str) -> str:
    """The topic HQ publishes `box`'s corrections on."""
    return f"{prefix}/{box}/{TOPIC}"


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


def parse(payload: bytes, store_id: str) -> dict[int, dict[str, Any]]:
    """Box side: seq → fix for this store; ValueError for a document that is not one."""
    doc = json.loads(payload)
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("fixes"), list):
        raise ValueError('hqfix needs {"v": 1, "fixes": [...]}')
    out: dict[int, dict[str, Any]] = {}
    for f in doc["fixes"][:MAX_FIXES]:
        if not isinstance(f, dict) or f.get("store") != store_id:
            continue
        seq = f.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            continue
        have = out.setdefault(seq, {})
        if isinstance(f.get("car"), str) and 0 < len(f["car"]) <= 16:
            have["car"] = f["car"]
        if isinstance(f.get("void"), str):
            have["void"] = f["void"][:200]
        elif f.get("unvoid") is True:
            have.pop("void", None)
            have["unvoid"] = True
    return out


def label(fix: dict[str, Any]) -> str:
    """What the marshal page shows for one passage's HQ corrections."""
    bits = []
    if "car" in fix:
        bits.append(f"car {fix['car']}")
    if "void" in fix:
        bits.append(f"void ({fix['void']})")
    elif fix.get("unvoid"):
        bits.append("not void")
    return "HQ: " + ", ".join(bits) if bits else ""
