"""The rally office's share of HQ's database: the entry list and the event file.

Tables (created by `hqstore.m004_rally_office`):

* `entries`       one row per car, as imported and edited since (status: entered,
                  withdrawn, retired).
* `entry_changes` the audit trail: every import, every field changed, by whom, when,
                  old and new value. Nothing is ever deleted from it.
* `event_files`   every event file loaded (its text as loaded); the latest is in force.

Each function takes an open `HQStore` and commits its own transaction.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from checkpoint.errors import CommandError, ConfigError
from checkpoint.hq.entries import Entry, check_number, edit
from checkpoint.hq.event import Event, parse_event
from checkpoint.hq.office import Office, build
from checkpoint.hq.store import HQStore, iso_now


def _row(e: Entry, at: str) -> dict[str, Any]:
    return {
        "number": e.number,
        "crew": e.crew,
        "car": e.car,
        "year": e.year,
        "class": e.klass,
        "start": e.start,
        "coefficient": None if e.coefficient is None else str(e.coefficient),
        "status": e.status,
        "updated_at": at,
    }


def _entry(r: dict[str, Any]) -> Entry:
    coef = r.get("coefficient")
    return Entry(
        number=r["number"],
        crew=r["crew"],
        car=r["car"] or "",
        year=int(r["year"]),
        klass=r["class"] or "",
        start=r["start"],
        coefficient=Decimal(coef) if coef else None,
        status=r["status"],
    )


def _audit(
    store: HQStore, at: str, number: str, action: str, by: str, field: str = "", old: Any = None,
    new: Any = None,
) -> None:  # fmt: skip
    store.db.execute(
        "INSERT INTO entry_changes (at, number, action, field, old, new, by)"
        " VALUES (?,?,?,?,?,?,?)",
        (at, number, action, field or None, _text(old), _text(new), by),
    )


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


FIELDS = ("crew", "car", "year", "class", "start", "coefficient", "status")


def import_entries(store: HQStore, entries: list[Entry], by: str = "hq") -> dict[str, int]:
    """Import an entry list: new cars added, changed fields updated, each change audited.

    A car missing from a later import is left as it is (withdraw it explicitly):
    an import never deletes. Returns counts of added, changed and unchanged cars.
    """
    at = iso_now()
    counts = {"added": 0, "changed": 0, "unchanged": 0}
    current = {e.number: e for e in entries_of(store)}
    with store.transaction():
        for e in entries:
            old = current.get(e.number)
            if old is None:
                store.db["entries"].insert(_row(e, at))
                _audit(store, at, e.number, "import", by, new=e.start)
                counts["added"] += 1
                continue
            e = Entry(**{**_fields(e), "status": old.status})  # an import keeps the status
            before, after = _row(old, at), _row(e, at)
            diffs = [f for f in FIELDS if before[f] != after[f]]
            if not diffs:
                counts["unchanged"] += 1
                continue
            store.db["entries"].update(e.number, {f: after[f] for f in diffs} | {"updated_at": at})
            for f in diffs:
                _audit(store, at, e.number, "import", by, f, before[f], after[f])
            counts["changed"] += 1
    return counts


def _fields(e: Entry) -> dict[str, Any]:
    return {f: getattr(e, f) for f in Entry.__slots__}  # type: ignore[attr-defined]


def set_entry(
    store: HQStore, number: str, *, start: str | None = None, status: str | None = None,
    by: str = "hq",
) -> Entry:  # fmt: skip
    """Move a car's start or change its status (withdrawn, retired, entered); audited."""
    number = check_number(number)
    current = {e.number: e for e in entries_of(store)}
    if number not in current:
        raise CommandError(f"car {number} is not on the entry list")
    old = current[number]
    new = edit(old, start=start, status=status)
    at = iso_now()
    before, after = _row(old, at), _row(new, at)
    diffs = [f for f in FIELDS if before[f] != after[f]]
    with store.transaction():
        if diffs:
            store.db["entries"].update(number, {f: after[f] for f in diffs} | {"updated_at": at})
        for f in diffs:
            _audit(store, at, number, "edit", by, f, before[f], after[f])
    return new


def entries_of(store: HQStore) -> list[Entry]:
    """The entry list in force, in car-number order."""
    if "entries" not in store.db.table_names():
        return []
    rows = [_entry(r) for r in store.db.query("SELECT * FROM entries")]
    return sorted(rows, key=lambda e: (0, int(e.number)) if e.number.isdigit() else (1, 0))


def entry_changes(store: HQStore) -> list[dict[str, Any]]:
    """The entry list's audit trail, oldest first."""
    return list(store.db.query("SELECT * FROM entry_changes ORDER BY id"))


def load_event(store: HQStore, text: str, source: str, by: str = "hq") -> Event:
    """Validate and keep an event file; it is in force from now on."""
    event = parse_event(text, source)
    with store.transaction():
        store.db["event_files"].insert(
            {"at": iso_now(), "name": event.name, "source": source, "text": text, "by": by}
        )
    return event


def event_of(store: HQStore) -> Event | None:
    """The event file in force (the latest loaded), or None."""
    if "event_files" not in store.db.table_names():
        return None
    row = store.db.execute(
        "SELECT text, source FROM event_files ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else parse_event(row[0], row[1] or "<event>")


def load_office(store: HQStore, *, final: bool = True, event: Event | None = None) -> Office:
    """Build the office from HQ's database; ConfigError when it is not set up."""
    event = event or event_of(store)
    if event is None:
        raise ConfigError("no event file at HQ: run `checkpoint hq event load EVENT.toml`")
    entries = entries_of(store)
    if not entries:
        raise ConfigError("no entry list at HQ: run `checkpoint hq entries import entries.csv`")
    return build(store.passages(), event, entries, final=final)
