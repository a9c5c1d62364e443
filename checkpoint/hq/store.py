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
The fold itself is `checkpoint.core.corrections` (the box folds the same way);
HQ's ranking and reads are `checkpoint.hq.passages`.

Around this module: the migrations are `checkpoint.hq.schema`, the export rows
`checkpoint.hq.passages`, `hq status`'s summaries `checkpoint.hq.summary`, the sealed
audit trail `checkpoint.hq.audit`. What stays here (~500 lines) is the connection
and one short method per statement the collector and the commands run: splitting it
further would scatter one table's reads and writes over several files.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from checkpoint.contracts import is_int
from checkpoint.errors import CommandError, StoreError
from checkpoint.hq import audit, integrity, summary
from checkpoint.hq import passages as exported
from checkpoint.hq.schema import MIGRATIONS
from checkpoint.hq.summary import BoxSummary

MAX_REJECT_PAYLOAD = 65_536


def iso_now() -> str:
    """HQ's wall clock as ISO 8601 UTC with microseconds (for received_at and audit)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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

    def __enter__(self) -> HQStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        return audit.append(self.db, row)

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
        return summary.summaries(self.db)

    def total_chain_breaks(self) -> int:
        """Chain breaks found in all boxes' chains."""
        return int(self.db.execute("SELECT count(*) FROM chain_breaks").fetchone()[0])

    def total_rejects(self) -> int:
        """All rejects, including those with no box (unparseable topic)."""
        return int(self.db.execute("SELECT count(*) FROM rejects").fetchone()[0])

    # -- export -------------------------------------------------------------------

    def passages(self, checkpoint: str | None = None) -> list[dict[str, Any]]:
        """One row per passage with assignments, voids and restamps applied
        (`checkpoint.hq.passages`: the export's rows, in effective UTC order)."""
        return exported.passages(self.db, checkpoint)

    # -- HQ corrections (CLI) -----------------------------------------------------

    def resolve_passage(self, box: str, seq: int, store: str | None = None) -> str:
        """The store holding passage (box, seq); `store` may be a unique prefix.

        Raises CommandError when there is no such passage or the choice is ambiguous.
        """
        return audit.resolve_passage(self.db, box, seq, store)

    def is_void(self, box: str, store: str, seq: int) -> bool:
        """Whether the passage is void now, by the precedence `passages` applies."""
        return exported.is_void(self.db, box, store, seq)

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
        car, reason, by = audit.check_hq_correction(action, car, reason, by)
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


def ns_to_iso(utc_ns: int | None) -> str:
    """Integer ns → ISO 8601 UTC with milliseconds, for display."""
    if utc_ns is None:
        return ""
    s, ns = divmod(utc_ns, 1_000_000_000)
    t = _dt.datetime.fromtimestamp(s, _dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns // 1_000_000:03d}Z"
