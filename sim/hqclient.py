"""The simulator's side of timing HQ: its collector process, export, and the marshal.

HQ is run and read exactly as an operator would: `checkpoint hq run` as a process,
`checkpoint hq export --format jsonl` for the passages (restamps, assignments and
voids applied). The receive times (for latency) and the marshal's car assignments
go through HQ's own library (`checkpoint.hq.store`), one connection, short-lived.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from checkpoint.errors import CheckpointError
from checkpoint.hq.store import HQStore
from sim.procs import Child


def run_args(broker: str, db: Path, prefix: str | None = None, *extra: str) -> list[str]:
    """`checkpoint` arguments that start the HQ collector (the simulator, the benches and
    the fault tests all start it this one way); no `prefix`: HQ's default topic prefix."""
    args = ["hq", "run", "--broker", broker, "--db", str(db)]
    if prefix is not None:
        args += ["--prefix", prefix]
    return [*args, *extra]


def collector(db: Path, broker: str, prefix: str, log: Path, extra: list[str] = ()) -> Child:
    """The HQ collector as a child process (not started); `extra`: more `hq run` options."""
    return Child("hq", run_args(broker, db, prefix, *extra), log)


def _hq(*argv: str) -> str:
    """Run `checkpoint hq ARGV...` as an operator would; its stdout, or CheckpointError."""
    res = subprocess.run(
        [sys.executable, "-m", "checkpoint", "hq", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise CheckpointError(
            f"hq {argv[0]} failed ({res.returncode}): {res.stderr.strip()[-500:]}"
        )
    return res.stdout


def office_setup(db: Path, event: Path, entries: Path) -> str:
    """Load the event file and import the entry list, as the organiser does."""
    return _hq("event", "load", "--db", str(db), str(event)) + _hq(
        "entries", "import", "--db", str(db), str(entries)
    )


def results_top(db: Path, n: int) -> str:
    """The top of the classification, as `checkpoint hq results --top N` prints it."""
    return _hq("results", "--db", str(db), "--top", str(n))


def export(db: Path) -> list[dict[str, Any]]:
    """HQ's passages, one row each, as `checkpoint hq export --format jsonl` prints them."""
    res = subprocess.run(
        [sys.executable, "-m", "checkpoint", "hq", "export", "--db", str(db), "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise CheckpointError(f"hq export failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def _iso_ns(text: str) -> int | None:
    try:
        t = _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC)
    except (TypeError, ValueError):
        return None
    return int(t.timestamp()) * 10**9 + t.microsecond * 1000


def received(db: Path) -> dict[tuple[str, str, int], int]:
    """(box, store, seq) → HQ's wall clock (ns) when it received the event."""
    if not db.exists():
        return {}
    store = HQStore(db, create=False)
    try:
        out = {}
        for r in store.events():
            ns = _iso_ns(r.get("received_at") or "")
            if ns is not None:
                out[(r["box"], r["store"], r["seq"])] = ns
        return out
    finally:
        store.close()


def event_count(db: Path) -> int | None:
    """Events HQ has stored so far (None before its database exists)."""
    if not db.exists():
        return None
    try:
        store = HQStore(db, create=False)
    except CheckpointError:
        return None
    try:
        return store.event_count()
    finally:
        store.close()


def assign(db: Path, cars: Iterable[tuple[str, str, int, str]]) -> int:
    """The marshal assigns car numbers: (box, store, seq, car) each. Returns how many."""
    store = HQStore(db, create=False)
    n = 0
    try:
        for box, st, seq, car in cars:
            store.correct(box, seq, "assign", car=car, by="sim-marshal", store=st)
            n += 1
    finally:
        store.close()
    return n
