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
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from checkpoint import chain
from checkpoint.errors import CheckpointError

_SQLITE_HEADER = b"SQLite format 3\x00"


class VerifyError(CheckpointError):
    """The file cannot be read as a box store, an HQ database or an event export."""


@dataclass(slots=True)
class Result:
    """What `checkpoint verify` found in one file."""

    path: str
    kind: str  # "box store" | "HQ database" | "event export"
    report: chain.Report
    #: Breaks found by comparing with anchors outside the chain (a box's status at HQ).
    anchored: list[chain.Break] = field(default_factory=list)
    #: Signed chain heads that verified: (box, store, seq).
    signed: list[tuple[str, str, int]] = field(default_factory=list)
    #: Things worth saying that are not breaks (a box without a signed head, ...).
    notes: list[str] = field(default_factory=list)

    @property
    def breaks(self) -> list[chain.Break]:
        """Every break: one per store at most from the chains, then the anchored ones."""
        return self.report.breaks + self.anchored

    @property
    def ok(self) -> bool:
        """True when every chain verifies."""
        return not self.breaks


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


def _payloads(rows: Iterator[tuple[Any, ...]], where: str) -> Iterator[dict[str, Any]]:
    for row in rows:
        text = row[-1]
        try:
            ev = json.loads(text)
        except (TypeError, ValueError):
            ev = None
        if not isinstance(ev, dict):
            # Keep its place: the chain reports the row as malformed (or as a gap).
            ev = {"seq": None, "box": row[0] if len(row) > 2 else "?", "store": where}
        yield ev


def _box_store(conn: sqlite3.Connection, path: Path) -> list[dict[str, Any]]:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    store = meta.get("store_id", "?")
    rows = conn.execute("SELECT seq, payload FROM events ORDER BY seq")
    events = []
    for ev in _payloads(rows, store):
        # An event that lost its box/store fields still belongs to this file's chain.
        ev.setdefault("box", meta.get("box", "?"))
        ev.setdefault("store", store)
        events.append(ev)
    return events


def _signature(
    result: Result,
    found: list[chain.Break],
    keys: Path,
    box: str,
    store: str,
    anchor: dict[str, Any],
    matches: bool,
) -> None:
    """Check one box's signed chain head against DIR/BOX.pub (see `verify_path`)."""
    pub = keys / f"{box}.pub"
    if "sig" not in anchor:
        result.notes.append(f"{box}: its last status carries no signed chain head")
        return
    try:
        key = chain.load_verify_key(pub.read_bytes())
    except OSError:
        result.notes.append(f"{box}: no public key {pub}; its signed head is not checked")
        return
    except (ValueError, RuntimeError) as err:
        raise VerifyError(f"{pub}: {err}") from None
    problem = chain.check_signed_head(key, box, store, anchor)
    if problem is not None:
        found.append(chain.Break(box, store, anchor.get("seq"), "badsig", problem))
    elif matches:
        result.signed.append((box, store, anchor["seq"]))


def _hq_anchors(
    conn: sqlite3.Connection, result: Result, keys: Path | None = None
) -> list[chain.Break]:
    """What a box's own last status says that HQ's events contradict: a cut tail
    (`last_seq` with `backlog: 0`) or another event under its chain head's seq."""
    found: list[chain.Break] = []
    report = result.report
    last = {(s.box, s.store): s.last_seq or 0 for s in report.stores}
    for box, status in conn.execute("SELECT box, status FROM boxes WHERE status IS NOT NULL"):
        try:
            st = json.loads(status)
        except ValueError:
            continue
        store, seq, backlog = st.get("store"), st.get("last_seq"), st.get("backlog")
        if not isinstance(store, str):
            continue
        anchor = st.get("chain")
        if isinstance(anchor, dict) and chain.is_hash(anchor.get("head")):
            row = conn.execute(
                "SELECT payload FROM events WHERE box=? AND store=? AND seq=?",
                (box, store, anchor.get("seq")),
            ).fetchone()
            ours = _hash_of(row[0]) if row else None
            if keys is not None:
                _signature(result, found, keys, box, store, anchor, ours == anchor["head"])
            if row is not None and ours != anchor["head"]:
                found.append(
                    chain.Break(
                        box,
                        store,
                        anchor.get("seq"),
                        "forked",
                        f"the box's last status gives its chain head at seq {anchor.get('seq')} "
                        f"as {anchor['head'][:16]}..., the database's event has "
                        f"{str(ours)[:16]}...",
                    )
                )
        if not isinstance(seq, int) or backlog != 0:
            continue
        have = last.get((box, store), 0)
        if seq > have:
            found.append(
                chain.Break(
                    box,
                    store,
                    have + 1,
                    "deleted",
                    f"the box's last status says HQ holds every seq up to {seq}, "
                    f"but the database ends at seq {have}: seq {have + 1}..{seq} missing",
                )
            )
    return found


def _hash_of(payload: str) -> str | None:
    try:
        h = json.loads(payload).get(chain.HASH)
    except (ValueError, AttributeError):
        return None
    return h if isinstance(h, str) else None


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
            rows = conn.execute(
                "SELECT box, store, seq, payload FROM events ORDER BY box, store, seq"
            )
            result = Result(str(p), "HQ database", chain.verify_report(_payloads(rows, "?")))
            result.anchored = _hq_anchors(conn, result, key_dir)
            return result
        raise VerifyError(f"{p}: an SQLite database, but not a checkpoint box store or HQ database")
    except sqlite3.Error as err:
        raise VerifyError(f"{p}: {err}") from None
    finally:
        conn.close()


def render(result: Result) -> str:
    """The human-readable report `checkpoint verify` prints."""
    lines = [f"{result.path}: {result.kind}"]
    for s in result.report.stores:
        span = f"seq {s.first_seq}..{s.last_seq}" if s.first_seq is not None else "no seq"
        state = f"BROKEN at seq {s.breaks[0].seq}" if s.breaks else "ok"
        head = f", head {s.head[:16]}" if s.head and not s.breaks else ""
        lines.append(
            f"  {s.box} store {s.store}: {s.events} events ({span}), "
            f"{s.sealed} sealed, {s.unsealed} unsealed: {state}{head}"
        )
    for box, store, seq in result.signed:
        lines.append(
            f"  {box} store {store}: signed chain head at seq {seq} verified: "
            f"events 1..{seq} are the ones the box sealed"
        )
    lines += [f"  note: {n}" for n in result.notes]
    first = result.breaks[0] if result.breaks else None
    if first is None:
        n = len(result.report.stores)
        lines.append(
            f"OK: {n} chain{'s' if n != 1 else ''}, {result.report.events} events verified"
        )
    else:
        more = len(result.breaks) - 1
        lines.append(f"BROKEN: {first}" + (f" (and {more} more)" if more else ""))
    return "\n".join(lines) + "\n"


def as_json(result: Result) -> dict[str, Any]:
    """The report as a JSON-able dict (`checkpoint verify --json`)."""
    return {
        "path": result.path,
        "kind": result.kind,
        "ok": result.ok,
        "events": result.report.events,
        "stores": [
            {k: v for k, v in asdict(s).items() if k != "breaks"} for s in result.report.stores
        ],
        "breaks": [asdict(b) for b in result.breaks],
        "signed": [{"box": b, "store": s, "seq": n} for b, s, n in result.signed],
        "notes": result.notes,
    }
