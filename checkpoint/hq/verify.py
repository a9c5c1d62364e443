"""`checkpoint verify PATH`: check the hash chains in a box store, an HQ database or
an event export, and name the first broken link.

What is read (never written: databases are opened read-only):

* a box store (SQLite, migration set `checkpoint-store`): its events in row order;
* an HQ database (`checkpoint-hq`): every box's and store's events in key order, and
  each box's last status: a status that says "HQ has everything up to seq N"
  (`store`, `last_seq`, `backlog: 0`) while HQ holds less shows a deleted tail,
  which no chain can show by itself;
* anything else as JSON Lines, one event per line, in file order (`checkpoint hq
  export --format events`, `checkpoint replay`).

With `--keys DIR` (boxes' Ed25519 public keys, DIR/BOX.pub) the signed chain head in
each box's last status at HQ is checked too: a good signature on the head of seq N,
matching HQ's event N, proves events 1..N are the ones the box sealed.

Rows are read in their stored order and the chain checks that order, so swapped rows
show as `reordered`. Exit 0 when every chain verifies, 1 at the first break (or an
unsealed event, which cannot be verified), 2 when the file cannot be read.

The HQ database's own checks (anchors, signed heads, columns, the audit trail,
disputes) are `checkpoint.hq.verify_hq`; the result and its report
`checkpoint.hq.verify_report`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from checkpoint.core import chain
from checkpoint.hq.verify_hq import verify_hq
from checkpoint.hq.verify_report import Result, VerifyError, as_json, payloads, render

__all__ = ["Result", "VerifyError", "as_json", "render", "verify_path"]

_SQLITE_HEADER = b"SQLite format 3\x00"


def _open_ro(path: Path) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.fspath(path.absolute())) + "?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True)
    except sqlite3.Error as err:
        raise VerifyError(f"{path}: cannot open read-only: {err}") from None


def _migration_sets(conn: sqlite3.Connection) -> set[str]:
    try:
        return {r[0] for r in conn.execute("SELECT migration_set FROM _sqlite_migrations")}
    except sqlite3.Error:
        return set()


def _box_store(conn: sqlite3.Connection, path: Path) -> list[dict[str, Any]]:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    store = meta.get("store_id", "?")
    rows = conn.execute("SELECT seq, payload FROM events ORDER BY seq")
    events = []
    for ev in payloads(rows, store):
        # An event that lost its box/store fields still belongs to this file's chain.
        ev.setdefault("box", meta.get("box", "?"))
        ev.setdefault("store", store)
        events.append(ev)
    return events


def _jsonl(path: Path) -> list[Any]:
    events: list[Any] = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    events.append(json.loads(line))
                except ValueError:
                    raise VerifyError(f"{path}: line {n} is not JSON") from None
    except UnicodeDecodeError:
        raise VerifyError(f"{path}: not a database and not UTF-8 JSON Lines") from None
    except OSError as err:
        raise VerifyError(f"{path}: cannot read: {err.strerror}") from None
    return events


def verify_path(path: str | Path, keys: str | Path | None = None) -> Result:
    """Verify the chains in a box store, an HQ database or a JSON Lines export.

    `keys`: a folder of boxes' public keys (BOX.pub) to check signed chain heads
    (HQ databases only: that is where the boxes' status messages are kept).
    """
    key_dir = Path(keys) if keys is not None else None
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError as err:
        raise VerifyError(f"{p}: cannot read: {err.strerror}") from None
    if head != _SQLITE_HEADER:
        return Result(str(p), "event export", chain.verify_report(_jsonl(p)))
    conn = _open_ro(p)
    try:
        sets = _migration_sets(conn)
        if "checkpoint-store" in sets:
            return Result(str(p), "box store", chain.verify_report(_box_store(conn, p)))
        if "checkpoint-hq" in sets:
            return verify_hq(conn, p, key_dir)
        raise VerifyError(f"{p}: an SQLite database, but not a checkpoint box store or HQ database")
    except sqlite3.Error as err:
        raise VerifyError(f"{p}: {err}") from None
    finally:
        conn.close()
