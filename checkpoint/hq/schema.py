"""HQ's database schema: the migrations of `sqlite_utils.Migrations("checkpoint-hq")`.

Each migration is applied once per database and recorded by its function name, so the
names and bodies here never change: a new table or column is a new migration. What
each table holds is in `checkpoint.hq.store`'s docstring.
"""

from __future__ import annotations

import sqlite_utils

MIGRATIONS = sqlite_utils.Migrations("checkpoint-hq")


@MIGRATIONS()
def m001_initial(db: sqlite_utils.Database) -> None:
    """The first schema."""
    _events_and_rejects(db)
    _boxes_and_stores(db)
    _corrections_and_state(db)


def _events_and_rejects(db: sqlite_utils.Database) -> None:
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


def _boxes_and_stores(db: sqlite_utils.Database) -> None:
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


def _corrections_and_state(db: sqlite_utils.Database) -> None:
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
