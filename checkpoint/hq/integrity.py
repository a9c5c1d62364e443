"""HQ's evidence against forged and edited records: anchors, conflicts, decisions.

Three records in HQ's database (tables from `hqstore.m003_integrity`), each there so
that `checkpoint verify` can check HQ's copy against something HQ did not make:

* `anchors`   every chain head a box published in its status (`chain`: seq, head,
              optional Ed25519 `sig`), with the box's own `acked_upto` from the same
              status: the box says "I sealed seq N as H" and "HQ acknowledged up to A".
              Not only the last status: a box that stopped leaves its last word here,
              so an event deleted from HQ after the box went offline still contradicts
              an anchor. With the box's public key a signed anchor proves events 1..N
              without trusting HQ.
* `conflicts` every *other* version of an event HQ already held under the same (box,
              store, seq): a forgery sent with a stolen credential, or the real event
              after a forgery got in first. Both are kept; while undecided neither
              counts in the results (`disputed`).
* decisions   an audited HQ correction `keep` (in `corrections`, `detail` = the hash of
              the version kept): which version of a disputed seq counts.

HQ's own corrections are chained like a box's events (`prev`, `hash` over the row's
canonical JSON, genesis `sha256("checkpoint/audit/1")`): an edited or deleted row of the
audit trail breaks it. That chain has no outside anchor; it shows edits made without
re-hashing (see the README's threat model).

The `version_id` of a payload is its seal (`hash`) when it has a well-formed one, else
the SHA-256 of the payload text (events of older box software).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from checkpoint.contracts import MAX_SEQ, is_int
from checkpoint.core import chain
from checkpoint.errors import CommandError

if TYPE_CHECKING:  # the store imports this module to check what it ingests
    from checkpoint.hq.store import HQStore

AUDIT_GENESIS = hashlib.sha256(b"checkpoint/audit/1").hexdigest()
#: The columns of a correction row its seal covers (everything but id, prev, hash).
AUDIT_FIELDS = (
    "at",
    "box",
    "store",
    "ref_seq",
    "action",
    "car",
    "reason",
    "by",
    "source",
    "event_seq",
    "detail",
)

Db = Any  # a sqlite_utils.Database or an sqlite3.Connection: both have execute()


def version_id(payload: str) -> str:
    """The identity of one version of an event: its seal, or the hash of its text."""
    try:
        h = json.loads(payload).get(chain.HASH)
    except (ValueError, AttributeError, RecursionError):
        h = None
    return h if chain.is_hash(h) else hashlib.sha256(payload.encode()).hexdigest()


# -- the audit trail ----------------------------------------------------------------------


def audit_digest(row: Mapping[str, Any], prev: str) -> str:
    """The seal of one correction row chained on `prev`."""
    body = {k: row.get(k) for k in AUDIT_FIELDS}
    body["prev"] = prev
    return hashlib.sha256(chain.canonical(body)).hexdigest()


def seal_correction(row: dict[str, Any], last: str | None) -> dict[str, Any]:
    """`row` with `prev` (the last sealed row's hash, or the genesis) and `hash` set."""
    prev = last or AUDIT_GENESIS
    return {**row, "prev": prev, "hash": audit_digest(row, prev)}


def audit_problem(db: Db) -> tuple[int, str] | None:
    """(id, why) of the first correction row whose seal or link is broken, or None."""
    prev: str | None = None
    cols = ", ".join(AUDIT_FIELDS)
    for row in db.execute(f"SELECT id, prev, hash, {cols} FROM corrections ORDER BY id"):
        rid, rprev, rhash = row[0], row[1], row[2]
        fields = dict(zip(AUDIT_FIELDS, row[3:], strict=True))
        if rhash is None:
            if prev is not None:
                return rid, "a correction after the first sealed one has no seal"
            continue  # written before HQ sealed its audit trail
        expected = prev or AUDIT_GENESIS
        if rprev != expected:
            return rid, "does not follow the row before it: a correction was removed or reordered"
        if audit_digest(fields, rprev) != rhash:
            return rid, "its content does not match its seal: edited after it was written"
        prev = rhash
    return None


# -- anchors ------------------------------------------------------------------------------


def record_anchor(db: Db, box: str, store: str, status: Mapping[str, Any], at: str) -> bool:
    """Keep the chain head of one status (True if HQ had not seen it before)."""
    anchor = status.get("chain")
    if not isinstance(anchor, Mapping):
        return False
    seq, head, sig = anchor.get("seq"), anchor.get("head"), anchor.get("sig")
    if not is_int(seq) or not 1 <= seq <= MAX_SEQ or not chain.is_hash(head):
        return False
    acked = status.get("acked_upto")
    cur = db.execute(
        "INSERT INTO anchors (at, box, store, seq, head, sig, acked_upto, state)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (box, store, seq, head) DO UPDATE SET"
        " acked_upto = max(coalesce(acked_upto, 0), coalesce(excluded.acked_upto, 0)),"
        " sig = coalesce(sig, excluded.sig)",
        (
            at,
            box,
            store,
            seq,
            head,
            sig if isinstance(sig, str) and len(sig) <= 200 else None,
            acked if is_int(acked) and 0 <= acked <= MAX_SEQ else None,
            str(status.get("state"))[:20],
        ),
    )
    return cur.rowcount == 1


def anchors(db: Db) -> list[dict[str, Any]]:
    """Every anchor, by box, store, seq."""
    cur = db.execute(
        "SELECT box, store, seq, head, sig, acked_upto, at FROM anchors ORDER BY box, store, seq"
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def anchor_heads(db: Db, box: str, store: str, seq: int) -> set[str]:
    """The heads boxes published for one seq (normally one)."""
    rows = db.execute(
        "SELECT head FROM anchors WHERE box=? AND store=? AND seq=?", (box, store, seq)
    )
    return {r[0] for r in rows}


# -- conflicts and decisions --------------------------------------------------------------


def conflict_versions(db: Db, box: str, store: str, seq: int) -> set[str]:
    """Version ids of the other versions HQ keeps for one seq."""
    rows = db.execute(
        "SELECT hash FROM conflicts WHERE box=? AND store=? AND seq=?", (box, store, seq)
    )
    return {r[0] for r in rows}


def add_conflict(
    db: Db,
    *,
    box: str,
    store: str,
    seq: int,
    payload: str,
    quarantine: str | None,
    topic: str,
    at: str,
) -> bool:
    """Keep another version of (box, store, seq); False if it was kept already."""
    vid = version_id(payload)
    if vid in conflict_versions(db, box, store, seq):
        return False
    db.execute(
        "INSERT INTO conflicts (at, box, store, seq, hash, quarantine, topic, payload)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (at, box, store, seq, vid, quarantine, topic, payload),
    )
    return True


def disputed(db: Db) -> dict[tuple[str, str, int], str | None]:
    """Seqs with more than one valid version: the version id kept by decision, or None.

    A version quarantined on arrival (a broken seal) disputes nothing: it is kept as
    evidence only. The latest `keep` decision for a seq wins.
    """
    out: dict[tuple[str, str, int], str | None] = {}
    for box, store, seq in db.execute(
        "SELECT DISTINCT box, store, seq FROM conflicts WHERE quarantine IS NULL"
    ):
        out[(box, store, seq)] = None
    for box, store, seq, kept in db.execute(
        "SELECT box, store, ref_seq, detail FROM corrections WHERE action='keep' ORDER BY id"
    ):
        if (box, store, seq) in out:
            out[(box, store, seq)] = kept
    return out


def kept_version(db: Db, box: str, store: str, seq: int) -> str | None:
    """The version of (box, store, seq) HQ decided to keep, if it decided."""
    row = db.execute(
        "SELECT detail FROM corrections WHERE box=? AND store=? AND ref_seq=? AND action='keep'"
        " ORDER BY id DESC LIMIT 1",
        (box, store, seq),
    ).fetchone()
    return row[0] if row else None


def conflict_rows(db: Db) -> list[dict[str, Any]]:
    """Every disputed seq with both versions and the decision (for `hq conflict`)."""
    decided = disputed(db)
    out = []
    for (box, store, seq), kept in sorted(decided.items()):
        first = db.execute(
            "SELECT payload, received_at, quarantine FROM events WHERE box=? AND store=? AND seq=?",
            (box, store, seq),
        ).fetchone()
        versions = []
        if first is not None:
            versions.append(_version(first[0], first[1], first[2], "first"))
        for payload, at, quarantine in db.execute(
            "SELECT payload, at, quarantine FROM conflicts WHERE box=? AND store=? AND seq=?"
            " ORDER BY id",
            (box, store, seq),
        ):
            versions.append(_version(payload, at, quarantine, "later"))
        heads = anchor_heads(db, box, store, seq)
        nxt = db.execute(
            "SELECT payload FROM events WHERE box=? AND store=? AND seq=?", (box, store, seq + 1)
        ).fetchone()
        nxt_prev = _field(nxt[0], chain.PREV) if nxt else None
        for v in versions:
            v["anchored"] = v["id"] in heads  # the box's own status named this one
            v["chained"] = v["id"] == nxt_prev  # the next seq HQ holds follows this one
        out.append({"box": box, "store": store, "seq": seq, "kept": kept, "versions": versions})
    return out


def _version(payload: str, at: str, quarantine: str | None, arrived: str) -> dict[str, Any]:
    try:
        ev = json.loads(payload)
    except ValueError:
        ev = {}
    return {
        "id": version_id(payload),
        "arrived": arrived,
        "at": at,
        "quarantine": quarantine,
        "type": ev.get("type"),
        "utc": ev.get("utc"),
        "payload": payload,
    }


def _field(payload: str, name: str) -> Any:
    try:
        return json.loads(payload).get(name)
    except (ValueError, AttributeError):
        return None


def is_integrity_db(conn: sqlite3.Connection) -> bool:
    """True if the HQ database has the integrity tables (m003 applied)."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {"anchors", "conflicts"} <= names


def decide(
    hq: HQStore,
    box: str,
    seq: int,
    keep: str,
    *,
    by: str,
    reason: str,
    store: str | None = None,
) -> dict[str, Any]:
    """HQ decides which version of a disputed seq counts.

    `keep` is a version id or a unique prefix of one (at least 8 hex digits); the
    decision is a `keep` correction in the audit trail (who, why, which version).
    Raises CommandError when there is no such dispute or the choice is ambiguous.
    """
    by, reason = (by or "").strip(), (reason or "").strip()
    if not by or not reason or len(reason) > 200:
        raise CommandError("a decision needs --by NAME and --reason (1-200 characters)")
    if len(keep) < 8:
        raise CommandError("--keep needs at least 8 hex digits of the version's hash")
    rows = [
        r
        for r in conflict_rows(hq.db)
        if r["box"] == box and r["seq"] == seq and (store is None or r["store"].startswith(store))
    ]
    if not rows:
        raise CommandError(f"box {box!r} seq {seq} has no conflict at HQ")
    if len(rows) > 1:
        raise CommandError(f"box {box!r} seq {seq} is disputed in several stores; add --store")
    row = rows[0]
    matches = [v for v in row["versions"] if v["id"].startswith(keep.lower())]
    if len({v["id"] for v in matches}) != 1:
        ids = ", ".join(v["id"][:16] for v in row["versions"])
        raise CommandError(f"--keep {keep!r} names none or several of the versions ({ids})")
    cid = hq.add_correction(
        box=box,
        store=row["store"],
        ref_seq=seq,
        action="keep",
        source="hq",
        reason=reason,
        by=by,
        detail=matches[0]["id"],
    )
    return {"id": cid, "box": box, "store": row["store"], "seq": seq, "kept": matches[0]["id"]}
