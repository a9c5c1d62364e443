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

from checkpoint.contracts import HQFIX, MAX_CAR, MAX_REASON, Topics, is_int

TOPIC = HQFIX  # {prefix}/{box}/hqfix
MAX_FIXES = 2000  # per box; a document stays far below any broker's message limit


def topic(prefix: str, box: str) -> str:
    """The topic HQ publishes `box`'s corrections on."""
    return Topics(prefix, box).hqfix


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
        if not is_int(seq) or seq < 1:
            continue
        have = out.setdefault(seq, {})
        if isinstance(f.get("car"), str) and 0 < len(f["car"]) <= MAX_CAR:
            have["car"] = f["car"]
        if isinstance(f.get("void"), str):
            have["void"] = f["void"][:MAX_REASON]
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
