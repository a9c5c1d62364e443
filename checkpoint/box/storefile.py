"""The box store's file: its schema migrations, SQLite errors in words a marshal can act
on, and moving a damaged file aside (pure file handling; `Store` in store.py is the one
owner of the open database).
"""

from __future__ import annotations

import datetime
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database, Migrations

from checkpoint.errors import StoreError

_SQLITE_HEADER = b"SQLite format 3\x00"

# Files SQLite keeps next to the database; moved together so a moved-aside store can
# still be opened (the WAL may hold its last commits).
_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


class StoreCorruptError(StoreError):
    """The database file is damaged or is not a database at all.

    Raised by `Store()` and `Store.check()`; `Store.open_or_replace` catches it and moves
    the file aside.
    """


MIGRATIONS = Migrations("checkpoint-store")

# Names registered below, to recognise a file migrated by a newer checkpoint.
MIGRATION_NAMES: list[str] = []


def _migration(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    MIGRATION_NAMES.append(fn.__name__)
    return MIGRATIONS()(fn)


@_migration
def m001_initial(db: Database) -> None:
    """Create the first schema and this file's store id.

    STRICT tables make SQLite refuse a float or text where an integer time belongs, so a
    bug upstream cannot silently round a tick. Raw tables carry no index beyond their
    rowid: they are append-only on an SD card and nothing queries them yet (a later
    migration adds what a query needs).
    """
    for sql in (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
        """CREATE TABLE edges (
            id INTEGER PRIMARY KEY,
            boot TEXT NOT NULL,
            input TEXT NOT NULL,
            mono_ns INTEGER NOT NULL,
            active INTEGER NOT NULL CHECK (active IN (0, 1))
        ) STRICT""",
        """CREATE TABLE pps (
            id INTEGER PRIMARY KEY,
            boot TEXT NOT NULL,
            mono_ns INTEGER NOT NULL
        ) STRICT""",
        """CREATE TABLE samples (
            id INTEGER PRIMARY KEY,
            boot TEXT NOT NULL,
            mono_ns INTEGER NOT NULL,
            utc_s INTEGER NOT NULL
        ) STRICT""",
        # boot is kept with events too: an event's mono_ns means nothing without it.
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY CHECK (seq >= 1),
            type TEXT NOT NULL,
            ref_seq INTEGER,
            mono_ns INTEGER,
            boot TEXT NOT NULL,
            payload TEXT NOT NULL
        ) STRICT""",
        # passages(): newest passages first, then the corrections that name them.
        "CREATE INDEX events_type_seq ON events (type, seq)",
        "CREATE INDEX events_ref_seq ON events (ref_seq) WHERE ref_seq IS NOT NULL",
        # One row: HQ has durably stored every seq <= upto.
        """CREATE TABLE acks (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            upto INTEGER NOT NULL CHECK (upto >= 0)
        ) STRICT""",
        "INSERT INTO acks (id, upto) VALUES (1, 0)",
    ):
        db.execute(sql)
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('store_id', ?), ('created', ?)",
        [uuid.uuid4().hex, created],
    )


# Per SQLite primary result code: the error class and the message (what to do about it).
_ADVICE: tuple[tuple[tuple[int, ...], type[StoreError], str], ...] = (
    (
        (sqlite3.SQLITE_READONLY,),
        StoreError,
        "database is read-only: {path} ({err}, while {doing}); check the SD card is "
        "mounted read-write and the file and its directory are writable by this user "
        "(a card the kernel remounted read-only after I/O errors needs replacing)",
    ),
    (
        (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB),
        StoreCorruptError,
        "database is corrupt: {path} ({err}, while {doing}); restart the daemon: it "
        "moves the file aside and starts a fresh store",
    ),
    (
        (sqlite3.SQLITE_CANTOPEN,),
        StoreError,
        "cannot open database {path} ({err}); check the directory exists and is "
        "writable by this user",
    ),
    (
        (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED),
        StoreError,
        "database is locked: {path} ({err}, while {doing}); is another checkpoint "
        "daemon using the same store?",
    ),
    (
        (sqlite3.SQLITE_IOERR,),
        StoreError,
        "I/O error: {path} ({err}, while {doing}); the SD card may be failing: "
        "check `dmesg` and replace the card",
    ),
)


def describe(err: sqlite3.Error, path: Path, doing: str) -> StoreError:
    """Turn a sqlite3 exception into a StoreError that tells a marshal what to do."""
    if isinstance(err, sqlite3.ProgrammingError):
        return StoreError(
            f"store {path} used wrongly while {doing} ({err}): a Store may only be used by "
            "the thread that opened it, and not after close(); this is a bug"
        )
    code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        where = path.absolute().parent
        try:
            free = f"{shutil.disk_usage(where).free // 1024} KiB free"
        except OSError:
            free = "free space unknown"
        return StoreError(
            f"disk full: free space on the filesystem holding {where} ({free}); "
            f"nothing was stored while {doing}, retry once space is freed"
        )
    for codes, cls, template in _ADVICE:
        if code in codes:
            return cls(template.format(path=path, err=err, doing=doing))
    return StoreError(f"SQLite error: {path} ({err}, while {doing})")


def not_sqlite(path: Path) -> bool:
    """True for an existing, non-empty file without the SQLite header (SQLite takes an
    empty file for an empty database)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return False
    except OSError as err:
        raise StoreError(f"cannot read {path} ({err}): check the file's permissions") from err
    return bool(head) and head != _SQLITE_HEADER


def move_aside(path: Path) -> Path:
    """Rename a corrupt store (and its side files) to `<name>.corrupt-<UTC timestamp>`."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{target}{s}").exists() for s in ("", *_SIDE_SUFFIXES)):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        for suffix in ("", *_SIDE_SUFFIXES):
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.rename(source, f"{target}{suffix}")
        # The rename must be on disk before a fresh store takes the old name.
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise StoreError(
            f"database is corrupt: {path}, and moving it aside to {target} failed ({err}); "
            "move or delete it by hand"
        ) from err
    return target
