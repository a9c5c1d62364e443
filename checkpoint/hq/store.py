"""HQ's SQLite store: every box event exactly once, rejects, box status, corrections.

One `HQStore` is one connection. The collector's core thread owns the one writing
connection for events; CLI commands (`hq status`, `hq export`, `hq assign`, ...)
open their own short-lived connections, which WAL lets read while the collector
writes. Every connection runs `synchronous=FULL`: a commit is on disk before HQ
acknowledges it to a box, which is what makes the application-level ack honest.

Tables (schema via `sqlite_utils.Migrations("checkpoint-hq")`):

* `events`    one row per (box, store, seq), the payload exactly as received;
              `quarantine` names why an event that kept seq contiguity must not
              count (absurd time, ill-typed field) - it is then also in `rejects`.
* `rejects`   bad input: (received_at, topic, box, reason, detail, payload).
* `boxes`     one row per box: retained status, current store, duplicate counts.
* `stores`    one row per (box, store): contiguous high-water mark, gaps, resends.
* `corrections` audit trail of assign / void / unvoid / restamp, source hq or box.
* `hq_state`  key/value: collector heartbeat and link state, for `hq status`.
* `chain_breaks` every break of a box's hash chain HQ found (m002): which seq,
              why (`checkpoint.core.chain` reasons), when. `stores.chain_*` hold how far
              each store's chain is verified, so a restarted HQ goes on from there.
* `anchors`   every chain head boxes published in their status (m003).
* `conflicts` every other version of a stored (box, store, seq) (m003); corrections
              gain `prev`/`hash`, HQ's audit trail chained (see checkpoint.hq.integrity).
* `entries`, `entry_changes`, `event_files` the rally office's entry list, its audit
              and the event files loaded (m004, see checkpoint.hq.officestore).
* `status_history` each box's clock state per status message, for the board (m005).

Correction precedence (deterministic, independent of arrival order): for each
passage and each kind (car assignment; void state), an HQ correction overrides
any box correction, the latest HQ correction (by id) wins among HQ ones and the
highest box seq wins among box ones. Of several restamps the highest seq wins.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from checkpoint.contracts import MAX_CAR, MAX_REASON, is_int
from checkpoint.errors import CommandError, StoreError
from checkpoint.hq import integrity

MIGRATIONS = sqlite_utils.Migrations("checkpoint-hq")
MAX_REJECT_PAYLOAD = 65_536

# Fields of an export row, in order: the event's own names, then the corrections.
EXPORT_FIELDS = (
    "box",
    "store",
    "seq",
    "checkpoint",
    "input",
    "source",
    "mono_ns",
    "utc_ns",
    "utc",
    "clock",
    "uncertainty_ns",
    "car",
    "void",
    "void_reason",
    "restamped",
    "orig_utc_ns",
    # Where `car` comes from: "hq" or "marshal" (a person), "auto" (identified by
    # HQ from the schedule, `hq export` with an event loaded), empty without a car.
    "car_source",
)


@MIGRATIONS()
def m001_initial(db: sqlite_utils.Database) -> None:
    """The first schema."""
    db["events"].create(
        {
            "id": int,
            "box": str,
            "store": str,
            "seq": int,
            "type": str,
            "checkpoint": str,
            "utc_ns": int,
            "ref_seq": int,
            "quarantine": str,
            "topic": str,
            "received_at": str,
            "payload": str,
        },
        pk="id",
        not_null={"box", "store", "seq", "type", "payload"},
    )
    db["events"].create_index(["box", "store", "seq"], unique=True)
    db["events"].create_index(["type", "checkpoint"])
    db["rejects"].create(
        {
            "id": int,
            "received_at": str,
            "topic": str,
            "box": str,
            "reason": str,
            "detail": str,
            # BLOB affinity keeps whatever was received: text when it decoded
            # as UTF-8, raw bytes when it did not.
            "payload": bytes,
        },
        pk="id",
        not_null={"received_at", "reason"},
    )
    db["rejects"].create_index(["box"])
    db["boxes"].create(
        {
            "box": str,
            "current_store": str,
            "status_store": str,
            "state": str,
            "status": str,
            "status_at": str,
            "first_seen_at": str,
            "last_event_at": str,
            "duplicates": int,
            "conflicts": int,
            "store_changes": int,
        },
        pk="box",
        defaults={"duplicates": 0, "conflicts": 0, "store_changes": 0},
    )
    db["stores"].create(
        {
            "box": str,
            "store": str,
            "first_seen_at": str,
            "upto": int,
            "max_seq": int,
            "events": int,
            "missing": int,
            "gaps": str,
            "resend_requests": int,
            "last_resend_at": str,
        },
        pk=("box", "store"),
        defaults={"upto": 0, "max_seq": 0, "events": 0, "missing": 0, "resend_requests": 0},
    )
    db["corrections"].create(
        {
            "id": int,
            "at": str,
            "box": str,
            "store": str,
            "ref_seq": int,
            "action": str,
            "car": str,
            "reason": str,
            "by": str,
            "source": str,
            "event_seq": int,
            "detail": str,
        },
        pk="id",
        not_null={"at", "box", "store", "ref_seq", "action", "source"},
    )
    db["corrections"].create_index(["box", "store", "ref_seq"])
    db["hq_state"].create({"key": str, "value": str}, pk="key")


@MIGRATIONS()
def m002_chain(db: sqlite_utils.Database) -> None:
    """Hash-chain verification: progress per store and the breaks found."""
    stores = db["stores"]
    # How far the store's chain is walked (contiguously from seq 1) and the hash the
    # next event's prev must equal (NULL: genesis at 0, re-anchor after unsealed).
    stores.add_column("chain_upto", int, not_null_default=0)
    stores.add_column("chain_head", str)
    stores.add_column("chain_sealed", int, not_null_default=0)
    stores.add_column("chain_unsealed", int, not_null_default=0)
    stores.add_column("chain_breaks", int, not_null_default=0)
    db["chain_breaks"].create(
        {
            "id": int,
            "at": str,
            "box": str,
            "store": str,
            "seq": int,
            "reason": str,
            "detail": str,
        },
        pk="id",
        not_null={"at", "box", "store", "reason"},
    )
    db["chain_breaks"].create_index(["box", "store"])


@MIGRATIONS()
def m003_integrity(db: sqlite_utils.Database) -> None:
    """Anchors and conflicts (see checkpoint.hq.integrity): every chain head a box published,
    and every other version of an event HQ already held under the same seq."""
    db["anchors"].create(
        {
            "id": int,
            "at": str,
            "box": str,
            "store": str,
            "seq": int,
            "head": str,
            "sig": str,
            "acked_upto": int,
            "state": str,
        },
        pk="id",
        not_null={"at", "box", "store", "seq", "head"},
    )
    db["anchors"].create_index(["box", "store", "seq", "head"], unique=True)
    db["conflicts"].create(
        {
            "id": int,
            "at": str,
            "box": str,
            "store": str,
            "seq": int,
            "hash": str,
            "quarantine": str,
            "topic": str,
            "payload": str,
        },
        pk="id",
        not_null={"at", "box", "store", "seq", "payload"},
    )
    db["conflicts"].create_index(["box", "store", "seq"])
    # HQ's own audit trail is chained like a box's events (checkpoint.hq.integrity).
    db["corrections"].add_column("prev", str)
    db["corrections"].add_column("hash", str)


@MIGRATIONS()
def m004_rally_office(db: sqlite_utils.Database) -> None:
    """The rally office (checkpoint.hq.officestore): entry list, its audit, the event file."""
    db["entries"].create(
        {
            "number": str,
            "crew": str,
            "car": str,
            "year": int,
            "class": str,
            "start": str,
            "coefficient": str,
            "status": str,
            "updated_at": str,
        },
        pk="number",
        not_null={"crew", "year", "start", "status"},
    )
    db["entry_changes"].create(
        {
            "id": int,
            "at": str,
            "number": str,
            "action": str,
            "field": str,
            "old": str,
            "new": str,
            "by": str,
        },
        pk="id",
        not_null={"at", "number", "action"},
    )
    db["event_files"].create(
        {"id": int, "at": str, "name": str, "source": str, "text": str, "by": str},
        pk="id",
        not_null={"at", "text"},
    )


@MIGRATIONS()
def m005_status_history(db: sqlite_utils.Database) -> None:
    """Each box's clock state per status message, so the board's clock plot has a
    history after a restart (the `boxes` row keeps only the latest status)."""
    db["status_history"].create(
        {"id": int, "box": str, "at": str, "clock": str, "uncertainty_ns": int},
        pk="id",
        not_null={"box", "at"},
    )
    db["status_history"].create_index(["box", "id"])


def iso_now() -> str:
    """HQ's wall clock as ISO 8601 UTC with microseconds (for received_at and audit)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class BoxSummary:
    """One line of `hq status`: what HQ knows of a box."""

    box: str
    state: str  # online | lost | offline | unknown
    clock: str | None
    uncertainty_ns: int | None
    backlog: int | None
    status_at: str | None
    last_passage_utc_ns: int | None
    current_store: str | None
    stores: int
    events: int
    upto: int
    missing: int
    gaps: str
    resend_requests: int
    duplicates: int
    conflicts: int
    rejects: int
    #: Breaks of the box's hash chain found so far (all its stores).
    chain_breaks: int = 0
    #: "ok" (sealed, no break), "broken", "unsealed" (older box software) or "-" (nothing yet).
    chain: str = "-"


class HQStore:
    """One connection to HQ's database; `create=False` refuses a missing file."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"HQ database {self.path} does not exist (run `checkpoint hq run`)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite_utils.Database(self.path)
            # Readers (CLI) and the collector share the file: wait for a lock
            # instead of failing at once.
            self.db.execute("PRAGMA busy_timeout=10000")
            self._check_ours(create)
            self.db.enable_wal()
            # Per connection, not persistent: FULL makes each commit durable
            # (WAL's default NORMAL can lose the last commits on power loss).
            self.db.execute("PRAGMA synchronous=FULL")
            # Readers open while the collector writes: only touch the schema when
            # it needs it, so a status poll never races the collector for a lock.
            if MIGRATIONS.pending(self.db):
                MIGRATIONS.apply(self.db)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"HQ database {self.path}: {err}") from err

    def _check_ours(self, create: bool) -> None:
        # Migrating someone else's database (a box's store, say) would graft HQ
        # tables onto it; refuse instead.
        names = set(self.db.table_names())
        if not names:
            if create:
                return
            raise StoreError(f"HQ database {self.path} is empty (not initialised yet)")
        if "_sqlite_migrations" in names:
            sets = {r[0] for r in self.db.execute("SELECT migration_set FROM _sqlite_migrations")}
            if MIGRATIONS.name in sets:
                return
        raise StoreError(f"{self.path} is not a checkpoint HQ database")

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction (a savepoint when nested); committed with synchronous=FULL."""
        try:
            with self.db.atomic():
                yield
        except sqlite3.DatabaseError as err:
            raise StoreError(f"HQ database {self.path}: {err}") from err

    # -- events (collector thread) ------------------------------------------------

    def insert_event(
        self,
        *,
        box: str,
        store: str,
        seq: int,
        event: dict[str, Any],
        payload: str,
        topic: str,
        quarantine: str | None,
        received_at: str,
    ) -> str:
        """Store one event once: returns "new", "duplicate" or "conflict".

        A duplicate is counted on the box; a conflict (same key, different
        content) is left to the caller to record as a reject. Nothing is ever
        stored twice or overwritten.
        """
        utc_ns = event.get("utc_ns")
        ref_seq = event.get("ref_seq")
        checkpoint = event.get("checkpoint")
        cur = self.db.execute(
            "INSERT INTO events (box, store, seq, type, checkpoint, utc_ns, ref_seq, quarantine,"
            " topic, received_at, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (box, store, seq) DO NOTHING",
            (
                box,
                store,
                seq,
                str(event.get("type")),
                checkpoint if isinstance(checkpoint, str) else None,
                utc_ns if is_int(utc_ns) else None,
                ref_seq if is_int(ref_seq) else None,
                quarantine,
                topic,
                received_at,
                payload,
            ),
        )
        if cur.rowcount == 1:
            return "new"
        row = self.db.execute(
            "SELECT payload FROM events WHERE box=? AND store=? AND seq=?", (box, store, seq)
        ).fetchone()
        try:
            same = json.loads(row[0]) == event
        except ValueError:  # pragma: no cover - stored payloads parsed when stored
            same = False
        if not same:
            # The same other version again (the box republishing it): a duplicate.
            same = integrity.version_id(payload) in integrity.conflict_versions(
                self.db, box, store, seq
            )
        column = "duplicates" if same else "conflicts"
        self.ensure_box(box, received_at)
        self.db.execute(f"UPDATE boxes SET {column} = {column} + 1 WHERE box=?", (box,))
        return "duplicate" if same else "conflict"

    def add_reject(
        self,
        *,
        topic: str,
        payload: bytes,
        reason: str,
        detail: str = "",
        box: str | None = None,
        received_at: str | None = None,
    ) -> None:
        """Record bad input; payloads over 64 KiB are cut (the detail says so)."""
        if len(payload) > MAX_REJECT_PAYLOAD:
            detail = f"{detail} (payload cut from {len(payload)} bytes)".strip()
            payload = payload[:MAX_REJECT_PAYLOAD]
        try:
            stored: str | bytes = payload.decode("utf-8")
        except UnicodeDecodeError:
            stored = payload
        self.db.execute(
            "INSERT INTO rejects (received_at, topic, box, reason, detail, payload)"
            " VALUES (?,?,?,?,?,?)",
            (received_at or iso_now(), topic, box, reason, detail, stored),
        )

    def ensure_box(self, box: str, at: str) -> None:
        """Create the box's row on first sight."""
        self.db.execute(
            "INSERT INTO boxes (box, first_seen_at) VALUES (?, ?) ON CONFLICT (box) DO NOTHING",
            (box, at),
        )

    def ensure_store(self, box: str, store: str, at: str) -> bool:
        """Create the (box, store) row on first sight; True if it is new."""
        cur = self.db.execute(
            "INSERT INTO stores (box, store, first_seen_at) VALUES (?,?,?)"
            " ON CONFLICT (box, store) DO NOTHING",
            (box, store, at),
        )
        return cur.rowcount == 1

    def note_event(self, box: str, at: str) -> None:
        """Remember when the box last sent an event."""
        self.db.execute("UPDATE boxes SET last_event_at=? WHERE box=?", (at, box))

    def set_current_store(self, box: str, store: str, *, changed: bool) -> None:
        """Record the box's current store (and count a change of store)."""
        self.db.execute(
            "UPDATE boxes SET current_store=?, store_changes = store_changes + ? WHERE box=?",
            (store, 1 if changed else 0, box),
        )

    def record_status(self, box: str, status: dict[str, Any], raw: str, at: str) -> None:
        """Keep the box's latest status message (state is "ready", "lost", "offline", ...)."""
        self.ensure_box(box, at)
        store = status.get("store")
        self.db.execute(
            "UPDATE boxes SET state=?, status=?, status_at=?,"
            " status_store=COALESCE(?, status_store) WHERE box=?",
            (
                str(status.get("state")),
                raw,
                at,
                store if isinstance(store, str) and store else None,
                box,
            ),
        )
        unc = status.get("uncertainty_ns")
        if status.get("state") == "ready" and is_int(unc):
            clock = status.get("clock")
            self.db.execute(
                "INSERT INTO status_history (box, at, clock, uncertainty_ns) VALUES (?,?,?,?)",
                (box, at, clock if isinstance(clock, str) else None, unc),
            )

    def status_history(self, after_id: int = 0, per_box: int = 720) -> list[dict[str, Any]]:
        """Clock history rows with id > `after_id`, at most the latest `per_box` per box."""
        if "status_history" not in self.db.table_names():
            return []  # a database from before m005, opened read-only
        return list(
            self.db.query(
                "SELECT id, box, at, clock, uncertainty_ns FROM ("
                " SELECT *, row_number() OVER (PARTITION BY box ORDER BY id DESC) AS n"
                " FROM status_history WHERE id > ?) WHERE n <= ? ORDER BY id",
                (after_id, per_box),
            )
        )

    def update_store_progress(
        self,
        box: str,
        store: str,
        *,
        upto: int,
        max_seq: int,
        events: int,
        missing: int,
        gaps: str,
    ) -> None:
        """Persist the contiguity state the collector keeps in memory (for `hq status`)."""
        self.db.execute(
            "UPDATE stores SET upto=?, max_seq=?, events=?, missing=?, gaps=?"
            " WHERE box=? AND store=?",
            (upto, max_seq, events, missing, gaps, box, store),
        )

    def note_resend(self, box: str, store: str, at: str) -> None:
        """Count one resend request sent to a box."""
        self.db.execute(
            "UPDATE stores SET resend_requests = resend_requests + 1, last_resend_at=?"
            " WHERE box=? AND store=?",
            (at, box, store),
        )

    def update_chain(
        self,
        box: str,
        store: str,
        *,
        upto: int,
        head: str | None,
        sealed: int,
        unsealed: int,
        breaks: int,
    ) -> None:
        """Persist how far the store's chain is verified (see m002_chain)."""
        self.db.execute(
            "UPDATE stores SET chain_upto=?, chain_head=?, chain_sealed=?, chain_unsealed=?,"
            " chain_breaks=? WHERE box=? AND store=?",
            (upto, head, sealed, unsealed, breaks, box, store),
        )

    def add_chain_break(
        self, *, box: str, store: str, seq: int | None, reason: str, detail: str, at: str
    ) -> None:
        """Record one break of a box's chain."""
        self.db.execute(
            "INSERT INTO chain_breaks (at, box, store, seq, reason, detail) VALUES (?,?,?,?,?,?)",
            (at, box, store, seq, reason, detail),
        )

    def has_chain_break(self, box: str, store: str, seq: int, reason: str) -> bool:
        """True if this break was already recorded (a status repeats its anchor)."""
        row = self.db.execute(
            "SELECT 1 FROM chain_breaks WHERE box=? AND store=? AND seq=? AND reason=? LIMIT 1",
            (box, store, seq, reason),
        ).fetchone()
        return row is not None

    def chain_breaks(self) -> list[dict[str, Any]]:
        """Every chain break found, oldest first."""
        return list(self.db.query("SELECT * FROM chain_breaks ORDER BY id"))

    def event_payloads(
        self, box: str, store: str, lo: int, hi: int, limit: int = 1000
    ) -> list[tuple[int, str]]:
        """`(seq, payload)` of stored events lo <= seq <= hi of one store, ascending."""
        return [
            (int(r[0]), r[1])
            for r in self.db.execute(
                "SELECT seq, payload FROM events WHERE box=? AND store=? AND seq BETWEEN ? AND ?"
                " ORDER BY seq LIMIT ?",
                (box, store, lo, hi, limit),
            )
        ]

    def set_state(self, key: str, value: str) -> None:
        """Set one `hq_state` value (collector heartbeat, link state)."""
        self.db.execute(
            "INSERT INTO hq_state (key, value) VALUES (?,?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def state(self) -> dict[str, str]:
        """All `hq_state` values."""
        return {k: v for k, v in self.db.execute("SELECT key, value FROM hq_state")}

    def add_correction(
        self,
        *,
        box: str,
        store: str,
        ref_seq: int,
        action: str,
        source: str,
        car: str | None = None,
        reason: str | None = None,
        by: str | None = None,
        event_seq: int | None = None,
        detail: str | None = None,
        at: str | None = None,
    ) -> int:
        """Append one row to the audit trail (sealed on the row before); returns its id."""
        row = {
            "at": at or iso_now(),
            "box": box,
            "store": store,
            "ref_seq": ref_seq,
            "action": action,
            "car": car,
            "reason": reason,
            "by": by,
            "source": source,
            "event_seq": event_seq,
            "detail": detail,
        }
        # The seal names the row before: read it and insert under the write lock, or a
        # correction from the CLI and one from the collector could both follow the
        # same row. Inside a caller's transaction, the caller holds it.
        own = not self.db.conn.in_transaction
        if own:
            self.db.execute("BEGIN IMMEDIATE")
        try:
            last = self.db.execute(
                "SELECT hash FROM corrections WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
            row = integrity.seal_correction(row, last[0] if last else None)
            cols = ", ".join(row)
            cur = self.db.execute(
                f"INSERT INTO corrections ({cols}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
        except BaseException:
            if own:
                self.db.conn.rollback()
            raise
        if own:
            self.db.conn.commit()
        return int(cur.lastrowid or 0)

    # -- reads --------------------------------------------------------------------

    def known_stores(self) -> list[dict[str, Any]]:
        """Every (box, store) row."""
        return list(self.db.query("SELECT * FROM stores ORDER BY box, first_seen_at, rowid"))

    def seqs(self, box: str, store: str) -> list[int]:
        """All stored seqs of one store, ascending (to rebuild contiguity at start)."""
        return [
            r[0]
            for r in self.db.execute(
                "SELECT seq FROM events WHERE box=? AND store=? ORDER BY seq", (box, store)
            )
        ]

    def box_rows(self) -> list[dict[str, Any]]:
        """Every box row."""
        return list(self.db.query("SELECT * FROM boxes ORDER BY box"))

    def event_count(self) -> int:
        """Number of stored events (all types, quarantined included)."""
        return int(self.db.execute("SELECT count(*) FROM events").fetchone()[0])

    def events(self, box: str | None = None) -> list[dict[str, Any]]:
        """Stored events as rows (payload still JSON text), in (box, store, seq) order."""
        where, params = ("WHERE box=?", [box]) if box else ("", [])
        return list(self.db.query(f"SELECT * FROM events {where} ORDER BY box, store, seq", params))

    def rejects(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Rejects, newest first."""
        sql = "SELECT * FROM rejects ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return list(self.db.query(sql))

    def corrections(self) -> list[dict[str, Any]]:
        """The audit trail, oldest first."""
        return list(self.db.query("SELECT * FROM corrections ORDER BY id"))

    def summaries(self) -> list[BoxSummary]:
        """What `hq status` and `hq watch` show, one entry per box ever seen."""
        rejects = {
            r[0]: r[1] for r in self.db.execute("SELECT box, count(*) FROM rejects GROUP BY box")
        }
        last_passage = {
            r[0]: r[1]
            for r in self.db.execute(
                "SELECT box, max(utc_ns) FROM events WHERE type='passage' AND quarantine IS NULL"
                " GROUP BY box"
            )
        }
        stores: dict[str, list[dict[str, Any]]] = {}
        for s in self.known_stores():
            stores.setdefault(s["box"], []).append(s)
        out = []
        for b in self.box_rows():
            try:
                st = json.loads(b["status"]) if b["status"] else {}
            except ValueError:
                st = {}
            state = b["state"]
            shown = {"ready": "online", "lost": "lost", "offline": "offline"}.get(
                state or "", "unknown" if state is None else str(state)
            )
            cur = next(
                (s for s in stores.get(b["box"], []) if s["store"] == b["current_store"]), None
            )
            all_stores = stores.get(b["box"], [])
            breaks = sum(s["chain_breaks"] or 0 for s in all_stores)
            if breaks:
                chain = "broken"
            elif any(s["chain_sealed"] for s in all_stores):
                chain = "ok"
            elif any(s["chain_unsealed"] for s in all_stores):
                chain = "unsealed"
            else:
                chain = "-"
            out.append(
                BoxSummary(
                    box=b["box"],
                    state=shown,
                    clock=st.get("clock") if isinstance(st.get("clock"), str) else None,
                    uncertainty_ns=_int_or_none(st.get("uncertainty_ns")),
                    backlog=_int_or_none(st.get("backlog")),
                    status_at=b["status_at"],
                    last_passage_utc_ns=last_passage.get(b["box"]),
                    current_store=b["current_store"],
                    stores=len(all_stores),
                    events=sum(s["events"] or 0 for s in all_stores),
                    upto=cur["upto"] if cur else 0,
                    missing=sum(s["missing"] or 0 for s in all_stores),
                    gaps="; ".join(
                        f"{s['store'][:8]}:{s['gaps']}" if len(all_stores) > 1 else s["gaps"]
                        for s in all_stores
                        if s["gaps"]
                    ),
                    resend_requests=sum(s["resend_requests"] or 0 for s in all_stores),
                    duplicates=b["duplicates"] or 0,
                    conflicts=b["conflicts"] or 0,
                    rejects=rejects.get(b["box"], 0),
                    chain_breaks=breaks,
                    chain=chain,
                )
            )
        return out

    def total_chain_breaks(self) -> int:
        """Chain breaks found in all boxes' chains."""
        return int(self.db.execute("SELECT count(*) FROM chain_breaks").fetchone()[0])

    def total_rejects(self) -> int:
        """All rejects, including those with no box (unparseable topic)."""
        return int(self.db.execute("SELECT count(*) FROM rejects").fetchone()[0])

    # -- export -------------------------------------------------------------------

    def passages(self, checkpoint: str | None = None) -> list[dict[str, Any]]:
        """One row per passage with assignments, voids and restamps applied.

        Quarantined passages are left out (they are in `rejects`). Voided ones
        stay, flagged, so the export is a complete audit. Ordered by effective
        UTC, then box, store, seq.
        """
        sql = (
            "SELECT box, store, seq, payload FROM events"
            " WHERE type='passage' AND quarantine IS NULL"
        )
        params: list[Any] = []
        if checkpoint is not None:
            sql += " AND checkpoint=?"
            params.append(checkpoint)
        # A seq with two valid versions (a forgery and the box's own) counts only as the
        # version HQ decided to keep (checkpoint.hq.integrity); undecided, neither counts.
        disputed = integrity.disputed(self.db)

        def counts(box: str, store: str, seq: int, payload: str) -> bool:
            key = (box, store, seq)
            return key not in disputed or disputed[key] == integrity.version_id(payload)

        rows = [r for r in self.db.execute(sql, params).fetchall() if counts(*r)]
        for (box, store, seq), kept in disputed.items():
            other = self.db.execute(
                "SELECT payload FROM conflicts WHERE box=? AND store=? AND seq=? AND hash=?"
                " AND quarantine IS NULL",
                (box, store, seq, kept),
            ).fetchone()
            ev = json.loads(other[0]) if other else {}
            if ev.get("type") == "passage" and checkpoint in (None, ev.get("checkpoint")):
                rows.append((box, store, seq, other[0]))

        restamps: dict[tuple[str, str, int], dict[str, Any]] = {}
        for box, store, seq, payload in self.db.execute(
            "SELECT box, store, seq, payload FROM events"
            " WHERE type='restamp' AND quarantine IS NULL ORDER BY seq"
        ):
            if not counts(box, store, seq, payload):
                continue
            ev = json.loads(payload)
            restamps[(box, store, ev["ref_seq"])] = ev  # ascending seq: the last one wins
        # Box corrections were made from the version stored first: they count only if
        # that version is the one kept.
        unproven = set()
        for key, kept in disputed.items():
            first = self.db.execute(
                "SELECT payload FROM events WHERE box=? AND store=? AND seq=?", key
            ).fetchone()
            if kept is None or first is None or integrity.version_id(first[0]) != kept:
                unproven.add(key)

        cars: dict[tuple[str, str, int], tuple[tuple[int, int], str, str]] = {}
        voids: dict[tuple[str, str, int], tuple[tuple[int, int], str, str | None]] = {}
        for c in self.corrections():
            key = (c["box"], c["store"], c["ref_seq"])
            if c["source"] == "box" and (c["box"], c["store"], c["event_seq"]) in unproven:
                continue  # made by an event whose seq is disputed
            # HQ (1) beats box (0); within a source the later (id / seq) wins.
            rank = (1, c["id"]) if c["source"] == "hq" else (0, c["event_seq"] or 0)
            if c["action"] == "assign":
                if key not in cars or rank > cars[key][0]:
                    cars[key] = (rank, c["car"], "hq" if rank[0] else "marshal")
            elif c["action"] in ("void", "unvoid"):
                if key not in voids or rank > voids[key][0]:
                    voids[key] = (rank, c["action"], c["reason"])

        out = []
        for box, store, seq, payload in rows:
            ev = json.loads(payload)
            key = (box, store, seq)
            row = {f: ev.get(f) for f in EXPORT_FIELDS[:11]}
            row["box"], row["store"], row["seq"] = box, store, seq
            row["orig_utc_ns"] = ev.get("utc_ns")
            rs = restamps.get(key)
            row["restamped"] = rs is not None
            if rs is not None:
                for f in ("utc_ns", "utc", "clock", "uncertainty_ns"):
                    if f in rs:
                        row[f] = rs[f]
            row["car"] = cars[key][1] if key in cars else None
            row["car_source"] = cars[key][2] if key in cars else None
            v = voids.get(key)
            row["void"] = v is not None and v[1] == "void"
            row["void_reason"] = v[2] if row["void"] else None
            out.append({f: row.get(f) for f in EXPORT_FIELDS})
        out.sort(key=lambda r: (r["utc_ns"], r["box"], r["store"], r["seq"]))
        return out

    # -- HQ corrections (CLI) -----------------------------------------------------

    def resolve_passage(self, box: str, seq: int, store: str | None = None) -> str:
        """The store holding passage (box, seq); `store` may be a unique prefix.

        Raises CommandError when there is no such passage or the choice is ambiguous.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise CommandError(f"seq must be a positive integer, got {seq!r}")
        rows = self.db.execute(
            "SELECT store, type, quarantine FROM events WHERE box=? AND seq=?", (box, seq)
        ).fetchall()
        if store is not None:
            rows = [r for r in rows if r[0].startswith(store)]
        passages = [r for r in rows if r[1] == "passage"]
        where = f"box {box!r}" + (f" store {store!r}" if store else "")
        if not passages:
            if rows:
                kinds = ", ".join(sorted({r[1] for r in rows}))
                raise CommandError(f"{where} seq {seq} is a {kinds} event, not a passage")
            raise CommandError(f"{where} has no event with seq {seq} at HQ")
        if len(passages) > 1:
            names = ", ".join(r[0] for r in passages)
            raise CommandError(f"{where} seq {seq} exists in several stores ({names}); add --store")
        if passages[0][2]:
            raise CommandError(
                f"{where} seq {seq} is quarantined ({passages[0][2]}); see hq rejects"
            )
        return passages[0][0]

    def is_void(self, box: str, store: str, seq: int) -> bool:
        """Whether the passage is void now, by the precedence `passages` applies."""
        rows = self.db.execute(
            "SELECT id, source, event_seq, action FROM corrections"
            " WHERE box=? AND store=? AND ref_seq=? AND action IN ('void', 'unvoid')",
            (box, store, seq),
        ).fetchall()
        last = max(rows, key=lambda r: (1, r[0]) if r[1] == "hq" else (0, r[2] or 0), default=None)
        return last is not None and last[3] == "void"

    def correct(
        self,
        box: str,
        seq: int,
        action: str,
        *,
        car: str | None = None,
        reason: str | None = None,
        by: str | None = None,
        store: str | None = None,
    ) -> dict[str, Any]:
        """An HQ correction (assign / void / unvoid) of one passage, kept in the audit trail."""
        if action not in ("assign", "void", "unvoid"):
            raise CommandError(f"unknown correction {action!r}")
        if action == "assign":
            car = check_car(car)
        if action == "void":
            reason = (reason or "").strip()
            if not reason or len(reason) > MAX_REASON:
                raise CommandError(f"void needs a reason of 1-{MAX_REASON} characters")
        by = (by or "hq").strip() or "hq"
        # No read-then-write transaction: in WAL a read snapshot cannot be
        # upgraded while the collector commits (SQLITE_BUSY without waiting).
        # Events are never deleted, so the passage checked here stays valid.
        full_store = self.resolve_passage(box, seq, store)
        if action == "unvoid" and not self.is_void(box, full_store, seq):
            # An audit row saying "unvoided" for a passage never voided is noise a
            # jury would have to explain away.
            raise CommandError(f"box {box!r} seq {seq} is not void: nothing to undo")
        try:
            cid = self.add_correction(
                box=box,
                store=full_store,
                ref_seq=seq,
                action=action,
                source="hq",
                car=car,
                reason=reason,
                by=by,
            )
        except sqlite3.DatabaseError as err:
            raise StoreError(f"HQ database {self.path}: {err}") from err
        row = self.db.execute("SELECT * FROM corrections WHERE id=?", (cid,))
        cols = [d[0] for d in row.description]
        return dict(zip(cols, row.fetchone(), strict=True))


def check_car(car: object) -> str:
    """A car number: 1-16 printable characters (the box's own rule), else CommandError."""
    text = str(car).strip() if car is not None else ""
    if not (1 <= len(text) <= MAX_CAR) or not text.isprintable():
        raise CommandError(f"car number must be 1-{MAX_CAR} printable characters, got {car!r}")
    return text


def _int_or_none(v: object) -> int | None:
    return v if is_int(v) else None  # type: ignore[return-value]


def ns_to_iso(utc_ns: int | None) -> str:
    """Integer ns → ISO 8601 UTC with milliseconds, for display."""
    if utc_ns is None:
        return ""
    s, ns = divmod(utc_ns, 1_000_000_000)
    t = _dt.datetime.fromtimestamp(s, _dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns // 1_000_000:03d}Z"
