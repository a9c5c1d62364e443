"""`checkpoint verify` on an HQ database: the chains, and what only HQ can check.

Beyond the boxes' chains: every anchor (chain head) a box published against the event
HQ holds, signed heads against the boxes' public keys, the indexed columns against the
sealed payloads, HQ's own chained audit trail, and disputed seqs (two versions).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from checkpoint.contracts import Rejected, is_int, parse_event
from checkpoint.core import chain, chainsig
from checkpoint.hq import integrity
from checkpoint.hq.verify_report import Result, VerifyError, payloads


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
                by_box[box] = chainsig.load_verify_key(pub.read_bytes())
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
        problem = chainsig.check_signed_head(key, box, store, a)
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


def verify_hq(conn: sqlite3.Connection, p: Path, keys: Path | None) -> Result:
    """Verify HQ database `conn` (read from `p`); `keys`: the boxes' public keys."""
    rows = conn.execute("SELECT box, store, seq, payload FROM events ORDER BY box, store, seq")
    events = list(payloads(rows, "?"))
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
