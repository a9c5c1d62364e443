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

from checkpoint.contracts import Rejected, is_int, parse_event
from checkpoint.core import chain
from checkpoint.errors import CheckpointError
from checkpoint.hq import integrity

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


def _signed(
    result: Result,
    found: list[chain.Break],
    keys: Path,
    anchors: list[dict[str, Any]],
    held: dict[tuple[str, str, int], str | None],
) -> None:
    """Check every anchor's signature against DIR/BOX.pub (see `verify_path`)."""
    proven: dict[tuple[str, str], int] = {}
    by_box: dict[str, Any] = {}
    for a in anchors:
        box, store, seq = a["box"], a["store"], a["seq"]
        if box not in by_box:
            pub = keys / f"{box}.pub"
            try:
                by_box[box] = chain.load_verify_key(pub.read_bytes())
            except OSError:
                by_box[box] = None
                result.notes.append(f"{box}: no public key {pub}; its signed heads are not checked")
            except (ValueError, RuntimeError) as err:
                raise VerifyError(f"{pub}: {err}") from None
        key = by_box[box]
        if key is None:
            continue
        if not a.get("sig"):
            continue
        problem = chain.check_signed_head(key, box, store, a)
        if problem is not None:
            found.append(chain.Break(box, store, seq, "badsig", problem))
        elif held.get((box, store, seq)) == a["head"]:
            proven[(box, store)] = max(proven.get((box, store), 0), seq)
    last = {(s.box, s.store): s.last_seq or 0 for s in result.report.stores}
    for (box, store), seq in sorted(proven.items()):
        result.signed.append((box, store, seq))
        if last.get((box, store), 0) > seq:
            result.notes.append(
                f"{box} store {store}: seq {seq + 1}..{last[(box, store)]} are not covered "
                "by a signed chain head (the box never signed them: not proven to be its own)"
            )
    for box, key in by_box.items():
        if key is not None and not any(b == box for b, _s in proven):
            result.notes.append(f"{box}: no signed chain head matches HQ's events")


def _anchor_rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every anchor HQ kept (m003), plus each box's last status (older databases)."""
    rows: list[dict[str, Any]] = []
    if integrity.is_integrity_db(conn):
        rows = integrity.anchors(conn)
    seen = {(a["box"], a["store"], a["seq"], a["head"]) for a in rows}
    for box, status in conn.execute("SELECT box, status FROM boxes WHERE status IS NOT NULL"):
        try:
            st = json.loads(status)
        except ValueError:
            continue
        store, anchor = st.get("store"), st.get("chain")
        if not isinstance(store, str):
            continue
        acked = st.get("acked_upto") if st.get("backlog") == 0 else None
        if not isinstance(acked, int) and st.get("backlog") == 0:
            acked = st.get("last_seq")  # "HQ has everything up to last_seq"
        if isinstance(anchor, dict) and chain.is_hash(anchor.get("head")):
            key = (box, store, anchor.get("seq"), anchor["head"])
            if key not in seen and isinstance(anchor.get("seq"), int):
                seen.add(key)
                rows.append({"box": box, "store": store, **anchor, "acked_upto": acked})
                continue
        if isinstance(acked, int):
            rows.append(
                {"box": box, "store": store, "seq": None, "head": None, "acked_upto": acked}
            )
    return rows


def _hq_anchors(
    conn: sqlite3.Connection,
    result: Result,
    held: dict[tuple[str, str, int], str | None],
    keys: Path | None = None,
) -> list[chain.Break]:
    """What the boxes' own statuses say that HQ's events contradict: another event
    under a chain head's seq (`forked`), or fewer events than a box was told HQ had
    (`deleted`: a cut tail, which no chain shows by itself)."""
    found: list[chain.Break] = []
    last = {(s.box, s.store): s.last_seq or 0 for s in result.report.stores}
    anchors = _anchor_rows(conn)
    acked: dict[tuple[str, str], int] = {}
    forked: set[tuple[str, str]] = set()
    for a in anchors:
        box, store, seq, head = a["box"], a["store"], a["seq"], a["head"]
        if isinstance(a.get("acked_upto"), int):
            acked[(box, store)] = max(acked.get((box, store), 0), a["acked_upto"])
        if seq is None or (box, store, seq) not in held or (box, store) in forked:
            continue
        ours = held[(box, store, seq)]
        if ours != head:
            forked.add((box, store))
            found.append(
                chain.Break(
                    box,
                    store,
                    seq,
                    "forked",
                    f"the box published its chain head at seq {seq} as {head[:16]}..., "
                    f"the database's event has {str(ours)[:16]}...",
                )
            )
    for (box, store), upto in sorted(acked.items()):
        have = last.get((box, store), 0)
        if upto > have:
            found.append(
                chain.Break(
                    box,
                    store,
                    have + 1,
                    "deleted",
                    f"the box was told HQ holds every seq up to {upto}, "
                    f"but the database ends at seq {have}: seq {have + 1}..{upto} missing",
                )
            )
    if keys is not None:
        _signed(result, found, keys, [a for a in anchors if a["seq"] is not None], held)
    return found


def _columns(conn: sqlite3.Connection) -> list[chain.Break]:
    """Columns of HQ's events that change results must say what the sealed payload
    says: the indexed copies (`type`, `checkpoint`, `utc_ns`, `ref_seq`, key) and
    `quarantine`, which HQ derives from the payload alone (checkpoint.contracts.parse_event)."""
    found: list[chain.Break] = []
    for row in conn.execute(
        "SELECT box, store, seq, type, checkpoint, utc_ns, ref_seq, quarantine, payload"
        " FROM events ORDER BY box, store, seq"
    ):
        box, store, seq, payload = row[0], row[1], row[2], row[8]
        try:
            p = parse_event(box, payload.encode())
        except (Rejected, AttributeError) as err:
            found.append(chain.Break(box, store, seq, "edited", f"payload not an event: {err}"))
            continue
        ev = p.event
        want = {
            "box": box,
            "store": ev.get("store"),
            "seq": ev.get("seq"),
            "type": str(ev.get("type")),
            "checkpoint": ev["checkpoint"] if isinstance(ev.get("checkpoint"), str) else None,
            "utc_ns": ev["utc_ns"] if is_int(ev.get("utc_ns")) else None,
            "ref_seq": ev["ref_seq"] if is_int(ev.get("ref_seq")) else None,
            "quarantine": p.quarantine,
        }
        have = dict(
            zip(
                ("box", "store", "seq", "type", "checkpoint", "utc_ns", "ref_seq", "quarantine"),
                row[:8],
                strict=True,
            )
        )
        diff = [k for k in want if want[k] != have[k]]
        if diff:
            k = diff[0]
            why = f"column {k} is {have[k]!r} but the sealed payload makes it {want[k]!r}"
            found.append(chain.Break(box, store, seq, "edited", why))
    return found


def _conflict_columns(conn: sqlite3.Connection) -> list[chain.Break]:
    """A kept other version must say what its payload says: its key, its version id and
    its `quarantine` (a quarantined version disputes nothing, so flipping it would
    quietly end a dispute)."""
    if not integrity.is_integrity_db(conn):
        return []
    found = []
    for box, store, seq, vid, quarantine, payload in conn.execute(
        "SELECT box, store, seq, hash, quarantine, payload FROM conflicts ORDER BY id"
    ):
        try:
            p = parse_event(box, payload.encode())
            ok = (p.event["store"], p.event["seq"], p.quarantine) == (store, seq, quarantine)
        except (Rejected, AttributeError):
            ok = False
        if not ok or integrity.version_id(payload) != vid:
            why = "a kept conflicting version's columns do not match its payload"
            found.append(chain.Break(box, store, seq, "edited", why))
    return found


def _audit(conn: sqlite3.Connection) -> list[chain.Break]:
    """HQ's audit trail: its own chain, and every box correction backed by its event."""
    found: list[chain.Break] = []
    cols = {r[1] for r in conn.execute("PRAGMA table_info(corrections)")}
    if "hash" in cols:
        problem = integrity.audit_problem(conn)
        if problem is not None:
            found.append(
                chain.Break(
                    "HQ", "corrections", problem[0], "edited", f"row {problem[0]}: {problem[1]}"
                )
            )
    for cid, box, store, ref, action, car, event_seq in conn.execute(
        "SELECT id, box, store, ref_seq, action, car, event_seq FROM corrections"
        " WHERE source='box' ORDER BY id"
    ):
        row = conn.execute(
            "SELECT payload FROM events WHERE box=? AND store=? AND seq=?", (box, store, event_seq)
        ).fetchone()
        ev = json.loads(row[0]) if row else {}
        ok = ev.get("type") == action and ev.get("ref_seq") == ref
        if ok and action == "assign":
            ok = isinstance(ev.get("car"), str) and ev["car"].strip() == car
        if not ok:
            found.append(
                chain.Break(
                    box,
                    store,
                    event_seq,
                    "edited",
                    f"correction {cid} ({action} of seq {ref}) is not what the box's event "
                    f"seq {event_seq} says",
                )
            )
    return found


def _disputes(conn: sqlite3.Connection, events: list[dict[str, Any]]) -> list[chain.Break]:
    """Apply HQ's conflicts to the events read (in place): a decided seq is checked as
    the version kept; an undecided one as the version the next seq chains to, and is
    itself a `conflict` break until HQ decides."""
    if not integrity.is_integrity_db(conn):
        return []
    found = []
    index = {(e.get("box"), e.get("store"), e.get("seq")): i for i, e in enumerate(events)}
    for row in integrity.conflict_rows(conn):
        box, store, seq = row["box"], row["store"], row["seq"]
        valid = [v for v in row["versions"] if v["quarantine"] is None]
        chosen = next((v for v in valid if v["id"] == row["kept"]), None)
        if chosen is None:
            chosen = next((v for v in valid if v["chained"]), None)
            found.append(
                chain.Break(
                    box,
                    store,
                    seq,
                    "conflict",
                    f"{len(row['versions'])} versions of seq {seq} "
                    f"({', '.join(v['id'][:12] for v in row['versions'])}), not decided: "
                    "checkpoint hq conflict",
                )
            )
        if chosen is not None and (box, store, seq) in index:
            events[index[(box, store, seq)]] = json.loads(chosen["payload"])
    return found


def _verify_hq(conn: sqlite3.Connection, p: Path, keys: Path | None) -> Result:
    rows = conn.execute("SELECT box, store, seq, payload FROM events ORDER BY box, store, seq")
    events = list(_payloads(rows, "?"))
    disputes = _disputes(conn, events)
    result = Result(str(p), "HQ database", chain.verify_report(events))
    held = {
        (e.get("box"), e.get("store"), e.get("seq")): e.get(chain.HASH)
        for e in events
        if isinstance(e.get("seq"), int)
    }
    result.anchored = disputes + _columns(conn) + _conflict_columns(conn) + _audit(conn)
    result.anchored += _hq_anchors(conn, result, held, keys)
    return result


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
            return _verify_hq(conn, p, key_dir)
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
        # Every other finding too: an edited column and the anchor it contradicts are
        # separate evidence, and the official needs all of it.
        lines += [f"  also: {b}" for b in result.breaks[1:50]]
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
