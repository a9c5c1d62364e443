"""Digest of replaying captures: every event, and the clock's status and a stamp every
97 records (the bounds the box publishes between events), hashed per capture.

Run as a script (`python tests/replaydigest.py CAPTURE...`), so each run is a fresh
process: CHECKPOINT_PURE / CHECKPOINT_NATIVE_DIR decide which build of the core it loads,
and its first output line says which one did.
"""

from __future__ import annotations

import hashlib
import json
import sys

from checkpoint import native
from checkpoint.box.replay import open_replay


def digest(path: str) -> tuple[int, str]:
    """(events, sha256 of events, statuses and stamps) of one capture's replay."""
    h = hashlib.sha256()
    n = 0
    pipe, recs = open_replay(path)
    for i, rec in enumerate(recs):
        for ev in pipe.feed(rec):
            h.update(json.dumps(ev, sort_keys=True).encode())
            n += 1
        if i % 97 == 0 and pipe.now_ns is not None:
            st = pipe.clock.status(pipe.now_ns)
            h.update(json.dumps(st, sort_keys=True, default=str).encode())
            h.update(repr(pipe.clock.stamp(pipe.now_ns - 300_000_000, pipe.now_ns)).encode())
    for ev in pipe.flush():
        h.update(json.dumps(ev, sort_keys=True).encode())
        n += 1
    h.update(repr(pipe.transitions).encode())
    return n, h.hexdigest()


if __name__ == "__main__":
    print(native.state)
    for p in sys.argv[1:]:
        events, hexd = digest(p)
        print(p, events, hexd)
