"""The box's SQLite store: raw inputs, clock samples and the numbered events HQ must receive.

The store is the box's memory of record. Raw inputs (beam edges, PPS ticks, paired clock
samples) are kept exactly as stamped so a day can be replayed; events are kept with the
exact JSON text that is published, so a resend to HQ is byte-identical to the first send.

Threading: a `Store` belongs to ONE thread, the daemon's core thread, for its whole life.
The connection is opened with sqlite3's default `check_same_thread=True`, so use from any
other thread fails loudly (as a `StoreError`) instead of racing. Other processes (the CLI)
may open their own `Store`, preferably with `readonly=True`.

Durability: every connection runs in WAL mode with `synchronous=FULL`. In WAL mode
`synchronous=NORMAL` may lose the last commits on power loss; FULL syncs the WAL on every
commit, so once `record()` returns, its rows survive a pulled plug (as far as the SD card
honours fsync). Both settings are read back after being set and opening fails if they did
not take.

Identity: `store_id` is a random id made in the same transaction that creates the schema,
so it names this *file*: a new SD card or a replaced file is a new store, and HQ (which
deduplicates by box, store id and seq) can never confuse two numbering sequences. The box
and checkpoint names recorded when the file was created stay in the file; if the config
now names another box or checkpoint (the card was moved to another box, or the box to
another control), the store is kept as it is and `moved_warning` says so, for the daemon to
log and show.

Errors: every SQLite failure surfaces as `checkpoint.errors.StoreError` whose message says
what to do; a damaged file raises `StoreCorruptError`, which `Store.open_or_replace` handles
by moving the file aside and starting a fresh store.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from checkpoint.box.batch import Batch, EventRow, batch
from checkpoint.box.storefile import (  # StoreCorruptError: re-exported for callers
    MIGRATION_NAMES,
    MIGRATIONS,
    StoreCorruptError,
    describe,
    move_aside,
    not_sqlite,
)
from checkpoint.contracts import is_int
from checkpoint.core import corrections
from checkpoint.core.chain import is_hash
from checkpoint.errors import StoreError

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

#: How long a write waits for another connection's lock (a CLI reader checkpointing, say)
#: before failing with "database is locked".
BUSY_TIMEOUT_MS = 5000

#: Event types that correct an earlier passage named by their `ref_seq`.
CORRECTION_TYPES = ("restamp", "assign", "void")

_SYNCHRONOUS_FULL = 2


class Store:
    """One SQLite store file, used by one thread. See the module docstring."""

    store_id: str
    path: Path
    box: str
    checkpoint: str
    stored_box: str
    stored_checkpoint: str
    created: str
    readonly: bool

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        box: str,
        checkpoint: str,
        readonly: bool = False,
        immutable: bool = False,
    ) -> None:
        """Open (creating if needed) and migrate the store at `path`.

        `box` and `checkpoint` are the names from the config; they are written into a new
        file and compared with an existing one (see `moved_warning`).

        `readonly=True` (for CLI inspection while the daemon runs) never creates, migrates
        or writes the file; writes then fail with a read-only StoreError.

        `immutable=True` (with `readonly`) opens with SQLite's ``immutable=1``: no locks and
        no -shm file, which is the only way to read a WAL-mode store on read-only media
        when its -shm is gone (a card remounted read-only after a clean shutdown). SQLite
        then ignores any -wal file, so use it only when there is none with content.

        Raises StoreError (StoreCorruptError for a damaged file).
        """
        self.path = Path(path)
        self.box = box
        self.checkpoint = checkpoint
        self.readonly = readonly
        self._db: Database | None = None
        if readonly and not self.path.exists():
            raise StoreError(f"no store at {self.path}: check the path (nothing was created)")
        try:
            if readonly:
                uri = "file:" + urllib.parse.quote(os.fspath(self.path.absolute())) + "?mode=ro"
                conn = sqlite3.connect(uri + ("&immutable=1" if immutable else ""), uri=True)
            else:
                conn = sqlite3.connect(os.fspath(self.path))
        except sqlite3.Error as err:
            raise describe(err, self.path, "opening") from err
        # Plugins could change the connection behind our back; this store wants none.
        self._db = Database(conn, execute_plugins=False)
        try:
            self._configure()
            self._migrate()
            self._load_meta()
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sqlite(self, doing: str) -> Iterator[Database]:
        """Yield the database, translating every sqlite3 error into a StoreError."""
        if self._db is None:
            raise StoreError(f"store {self.path} is closed (while {doing}): this is a bug")
        try:
            yield self._db
        except sqlite3.Error as err:
            raise describe(err, self.path, doing) from err

    def _pragma(self, db: Database, name: str) -> object:
        row = db.execute(f"PRAGMA {name}").fetchone()
        return row[0] if row else None

    def _configure(self) -> None:
        with self._sqlite("configuring the connection") as db:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not self.readonly:
                # Reading the header here is also where a junk file first fails (NOTADB).
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
            applied = self.pragmas()
        # Read back: journal_mode=WAL silently stays 'delete' where WAL cannot work, and a
        # misspelt pragma is silently ignored.
        wanted: dict[str, object] = {"busy_timeout": BUSY_TIMEOUT_MS}
        if not self.readonly:
            wanted |= {"journal_mode": "wal", "synchronous": _SYNCHRONOUS_FULL}
        wrong = [f"{k} is {applied[k]!r}, not {v!r}" for k, v in wanted.items() if applied[k] != v]
        if wrong:
            raise StoreError(
                f"store {self.path}: connection settings did not apply ({'; '.join(wrong)}); "
                "put the store on a local filesystem (ext4 on the SD card)"
            )

    def _migrate(self) -> None:
        with self._sqlite("migrating the schema") as db:
            applied = {m.name for m in MIGRATIONS.applied(db)}
            newer = sorted(applied - set(MIGRATION_NAMES))
            if newer:
                raise StoreError(
                    f"store {self.path} was written by a newer checkpoint (migrations "
                    f"{', '.join(newer)}); upgrade checkpoint or use another store file"
                )
            if not applied and set(db.table_names()) - {MIGRATIONS.migrations_table}:
                raise StoreError(
                    f"{self.path} is an SQLite database but not a checkpoint store; refusing "
                    "to change it: point the store path at another file"
                )
            pending = MIGRATIONS.pending(db)
            if pending and self.readonly:
                raise StoreError(
                    f"store {self.path} needs migrating ({', '.join(m.name for m in pending)})"
                    " but was opened read-only; start the daemon once to migrate it"
                )
            if pending:
                MIGRATIONS.apply(db)

    def _load_meta(self) -> None:
        with self._sqlite("reading the store's identity") as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if "box" not in meta and not self.readonly:
                # First open of a new file: the file remembers who created it.
                with db.atomic():
                    db.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('box', ?), "
                        "('checkpoint', ?)",
                        [self.box, self.checkpoint],
                    )
                meta.setdefault("box", self.box)
                meta.setdefault("checkpoint", self.checkpoint)
        if "store_id" not in meta:
            raise StoreCorruptError(f"store {self.path} has no store_id in meta")
        self.store_id = meta["store_id"]
        self.created = meta.get("created", "")
        self.stored_box = meta.get("box", self.box)
        self.stored_checkpoint = meta.get("checkpoint", self.checkpoint)

    @property
    def moved_warning(self) -> str | None:
        """A warning when the config names another box/checkpoint than the file was made by.

        The store is kept (its id and numbering are the file's); the daemon should log this
        so a marshal can tell a moved card or box from a mistake.
        """
        if (self.stored_box, self.stored_checkpoint) == (self.box, self.checkpoint):
            return None
        return (
            f"store {self.path} (id {self.store_id}) was created by box {self.stored_box!r} "
            f"at checkpoint {self.stored_checkpoint!r}, but this config is box {self.box!r} "
            f"at checkpoint {self.checkpoint!r}: the card or box was moved; keeping the store"
        )

    @classmethod
    def open_or_replace(
        cls, path: str | os.PathLike[str], *, box: str, checkpoint: str
    ) -> tuple[Store, Path | None]:
        """Open the store at `path`; if the file is corrupt, move it aside and start afresh.

        A file that is not a database, or that fails `PRAGMA quick_check`, is renamed to
        `<name>.corrupt-<UTC timestamp>` (with its -wal/-shm/-journal files renamed alongside,
        so it can still be opened for salvage) and a new store (new store_id) is created.
        A file with a valid header is judged by opening it, and closing that connection may
        already have folded its WAL into the file (SQLite does so on close): the commits are
        then in the moved file itself. Events HQ had not acked stay only in the moved file.
        Returns the store and the moved-aside path, or None when nothing was moved.
        Other failures (read-only, disk full, I/O error) raise: moving a file aside would
        not help, and would throw away a good store.

        quick_check reads the whole file, so start-up time grows with the store's size.
        """
        path = Path(path)
        if not_sqlite(path):
            # Decided before SQLite opens it: closing a connection to such a file deletes
            # the -wal and -shm files, which a salvage attempt may want.
            moved = move_aside(path)
            return cls(path, box=box, checkpoint=checkpoint), moved
        try:
            store = cls(path, box=box, checkpoint=checkpoint)
            try:
                store.check()
            except BaseException:
                store.close()
                raise
            return store, None
        except StoreCorruptError:
            pass
        moved = move_aside(path)
        return cls(path, box=box, checkpoint=checkpoint), moved

    def check(self) -> None:
        """Run `PRAGMA quick_check`; raise StoreCorruptError unless it says ok."""
        with self._sqlite("checking the database") as db:
            rows = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            raise StoreCorruptError(
                f"database is corrupt: {self.path} fails quick_check ({'; '.join(rows[:3])}); "
                "restart the daemon: it moves the file aside and starts a fresh store"
            )

    def pragmas(self) -> dict[str, object]:
        """The connection settings that matter for durability, as read back (for doctor)."""
        with self._sqlite("reading settings") as db:
            return {
                "journal_mode": str(self._pragma(db, "journal_mode")).lower(),
                "synchronous": self._pragma(db, "synchronous"),
                "busy_timeout": self._pragma(db, "busy_timeout"),
            }

    @staticmethod
    def boot_id(path: str | os.PathLike[str] = BOOT_ID_PATH) -> str:
        """This OS boot's id, to file with raw rows: CLOCK_MONOTONIC ticks restart per boot.

        Reads Linux's `/proc/sys/kernel/random/boot_id`. Where that does not exist (a
        developer's Mac running the simulator) a random id per call is returned: that treats
        each daemon run as its own boot, which never wrongly compares ticks across boots.
        """
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        return text or f"proc-{uuid.uuid4().hex}"

    # -- writing ------------------------------------------------------------------------

    def record(
        self,
        *,
        boot: str,
        edges: Sequence[tuple[str, int, bool]] = (),
        pps: Sequence[int] = (),
        samples: Sequence[tuple[int, int]] = (),
        events: Sequence[Mapping[str, Any]] = (),
        acked: int | None = None,
    ) -> None:
        """Store one batch in ONE transaction: all of it, or (on any error) none of it.

        `acked`, when given, is recorded as by `set_acked` in the same transaction (the
        daemon folds HQ's acks into its batches instead of a commit per ack).

        `edges` are `(input, mono_ns, active)`, `pps` are tick mono_ns, `samples` are paired
        `(mono_ns, utc_s)`, all of OS boot `boot`. Each event dict needs `seq` (int) and
        `type` (str); `ref_seq` and `mono_ns` (ints) are indexed when present. The event's
        JSON text is stored exactly as it will be published.

        Event seqs must continue `last_seq() + 1` without gaps, else StoreError and nothing
        is written. After a failure (disk full, say) the same batch may be passed again; a
        batch whose events are all already stored with identical payloads (its earlier
        commit succeeded after all) is accepted as a no-op. Malformed input is a bug and
        raises ValueError before anything is written.
        """
        rows = batch(boot, edges, pps, samples, events, acked)
        with self._sqlite("recording a batch") as db, db.atomic():
            last = self._last_seq(db)
            first = rows.first_seq
            if rows.events and first != last + 1:
                if first <= last and self._already_stored(db, rows.events):
                    if acked is not None:
                        self._set_acked(db, acked)
                    return
                raise StoreError(
                    f"event seq {first} does not follow the last stored seq {last}; "
                    "nothing was stored (this is a bug upstream)"
                )
            self._insert(db, rows)

    @classmethod
    def _insert(cls, db: Database, rows: Batch) -> None:
        conn = db.conn
        conn.executemany(
            "INSERT INTO edges (boot, input, mono_ns, active) VALUES (?, ?, ?, ?)", rows.edges
        )
        conn.executemany("INSERT INTO pps (boot, mono_ns) VALUES (?, ?)", rows.pps)
        conn.executemany(
            "INSERT INTO samples (boot, mono_ns, utc_s) VALUES (?, ?, ?)", rows.samples
        )
        conn.executemany(
            "INSERT INTO events (seq, type, ref_seq, mono_ns, boot, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows.events,
        )
        if rows.acked is not None:
            cls._set_acked(db, rows.acked)

    @staticmethod
    def _already_stored(db: Database, event_rows: list[EventRow]) -> bool:
        lo, hi = event_rows[0][0], event_rows[-1][0]
        stored = dict(
            db.execute(
                "SELECT seq, payload FROM events WHERE seq BETWEEN ? AND ?", [lo, hi]
            ).fetchall()
        )
        return all(stored.get(row[0]) == row[5] for row in event_rows)

    def set_acked(self, upto: int) -> None:
        """Remember that HQ durably has every seq <= `upto`.

        Monotone: a lower value than already stored is ignored (acks can arrive out of
        order). Clamped to `last_seq()`: an ack for seqs this file never committed says
        nothing about them (the Outbox raises the alarm for that case).
        """
        if not is_int(upto):
            raise ValueError(f"upto must be an int, got {upto!r}")
        with self._sqlite("recording an HQ ack") as db, db.atomic():
            self._set_acked(db, upto)

    @classmethod
    def _set_acked(cls, db: Database, upto: int) -> None:
        target = min(upto, cls._last_seq(db))
        db.execute("UPDATE acks SET upto = ? WHERE id = 1 AND upto < ?", [target, target])

    # -- reading ------------------------------------------------------------------------

    @staticmethod
    def _last_seq(db: Database) -> int:
        return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def last_seq(self) -> int:
        """The highest stored event seq, 0 when there are none."""
        with self._sqlite("reading the last seq") as db:
            return self._last_seq(db)

    def recent_samples(self, boot: str, limit: int = 600) -> list[tuple[int, int]]:
        """The last `limit` clock samples (mono_ns, utc_s) of this OS boot, oldest first.

        Kernel ticks only compare within one boot; a daemon restarted in the same boot
        reloads them instead of needing a minute of pulses to lock again.
        """
        with self._sqlite("reading clock samples") as db:
            rows = db.execute(
                "SELECT mono_ns, utc_s FROM samples WHERE boot = ? ORDER BY id DESC LIMIT ?",
                [boot, limit],
            ).fetchall()
        return [(int(m), int(u)) for m, u in reversed(rows)]

    def unsettled_passages(self, boot: str) -> list[tuple[int, int, int, str]]:
        """Passages of OS boot `boot` whose latest stamp (restamps applied) is not locked.

        `(seq, mono_ns, uncertainty_ns, clock)`, ascending by seq: what a daemon
        restarted in the same boot must still re-stamp once its clock locks (their
        kernel ticks are comparable only within the boot).
        """
        with self._sqlite("reading passages to re-stamp") as db:
            rows = db.execute(
                "SELECT p.seq, p.mono_ns, COALESCE(("
                "  SELECT r.payload FROM events r WHERE r.type = 'restamp' AND r.ref_seq = p.seq"
                "  ORDER BY r.seq DESC LIMIT 1), p.payload) "
                "FROM events p WHERE p.type = 'passage' AND p.boot = ? ORDER BY p.seq",
                [boot],
            ).fetchall()
        out = []
        for seq, mono_ns, payload in rows:
            stamp = json.loads(payload)
            clock, unc = stamp.get("clock"), stamp.get("uncertainty_ns")
            if clock != "locked" and is_int(mono_ns) and is_int(unc) and isinstance(clock, str):
                out.append((int(seq), int(mono_ns), int(unc), clock))
        return out

    def chain_head(self) -> str | None:
        """The `hash` of the last stored event: where this store's chain continues.

        None when there are no events, or the last one is not sealed (written by
        software before the chain): the pipeline then starts from the genesis, and
        `checkpoint verify` reports the unsealed events. A malformed hash is None too.
        """
        with self._sqlite("reading the chain head") as db:
            row = db.execute("SELECT payload FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            head = json.loads(row[0]).get("hash")
        except (ValueError, AttributeError):
            return None
        return head if is_hash(head) else None

    def acked_upto(self) -> int:
        """The highest seq HQ has acknowledged (with all below it), 0 when none."""
        with self._sqlite("reading the HQ ack") as db:
            return int(db.execute("SELECT upto FROM acks WHERE id = 1").fetchone()[0])

    def event_payloads(self, lo: int, hi: int, limit: int = 500) -> list[tuple[int, str]]:
        """`(seq, payload)` for stored events with lo <= seq <= hi, ascending, at most `limit`."""
        with self._sqlite("reading events") as db:
            rows = db.execute(
                "SELECT seq, payload FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
                [lo, hi, limit],
            ).fetchall()
        return [(int(seq), payload) for seq, payload in rows]

    def passages(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Passage events, ascending by seq, with later corrections applied, for display.

        With `limit`, the newest `limit` passages. Each dict is the passage's payload with
        the corrections whose `ref_seq` names it folded in by `checkpoint.core.corrections`
        (the later seq wins each slot): a `restamp` sets `utc_ns`/`utc`/`clock`/
        `uncertainty_ns`, an `assign` sets `car`, a `void` sets `void` True and
        `void_reason` from its `reason` (`void` is False otherwise); the passage keeps its
        own `seq`, `hash` and other keys. `<type>_by` records the latest correction's `by`
        of each type; `corrections` lists the seqs applied. A correction naming a
        correction rather than a passage is not interpreted here.
        """
        with self._sqlite("reading passages") as db:
            rows = db.execute(
                "SELECT seq, payload FROM events WHERE type = 'passage' ORDER BY seq DESC LIMIT ?",
                [-1 if limit is None else limit],
            ).fetchall()
            if not rows:
                return []
            lo = rows[-1][0]
            marks = ", ".join("?" for _ in CORRECTION_TYPES)
            fixes = db.execute(
                f"SELECT seq, type, ref_seq, payload FROM events WHERE ref_seq >= ? "
                f"AND type IN ({marks}) ORDER BY seq",
                [lo, *CORRECTION_TYPES],
            ).fetchall()
        by_seq: dict[int, dict[str, Any]] = {}
        for seq, payload in reversed(rows):
            passage = json.loads(payload)
            passage.setdefault("void", False)
            passage["corrections"] = []
            by_seq[seq] = passage
        cs = []
        for seq, kind, ref_seq, payload in fixes:
            passage = by_seq.get(ref_seq)
            if passage is None:
                continue
            fields = json.loads(payload)
            cs.append(corrections.Correction(ref_seq, kind, (seq,), fields))
            if "by" in fields:
                passage[f"{kind}_by"] = fields["by"]
            passage["corrections"].append(seq)
        won = corrections.winners(cs)
        return [corrections.apply(p, won.get(seq, {}), fill=False) for seq, p in by_seq.items()]

    def counts(self) -> dict[str, int]:
        """Rows per table, for `status` and `doctor`."""
        with self._sqlite("counting rows") as db:
            return {
                table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("edges", "pps", "samples", "events")
            }

    def close(self) -> None:
        """Close the connection; safe to call twice. The store is unusable afterwards."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.path} id={getattr(self, 'store_id', '?')}>"
