"""`checkpoint hq entries|event|confirm|sheet` and `hq results` from the event file.

Thin commands over `officestore` (entry list, event file), `office` (identify +
classify) and `posting` (formats). Registered by `hq_cli.add_hq_commands`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from checkpoint.cli.common import write_out
from checkpoint.errors import CheckpointError, CommandError, ConfigError
from checkpoint.hq import office, officestore, posting
from checkpoint.hq.entries import STATUSES, parse_entries, render_entries
from checkpoint.hq.event import parse_event
from checkpoint.hq.results import fmt_seconds
from checkpoint.hq.store import HQStore, iso_now


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path}: not UTF-8 text: {err}") from None


def _open(args: argparse.Namespace) -> HQStore:
    return HQStore(args.db, create=False)


def cmd_entries_import(args: argparse.Namespace) -> int:
    """Import entries.csv (validated first: nothing is stored if any row is wrong)."""
    entries = parse_entries(_read(args.file, "entry list"), args.file)
    with _open(args) as store:
        n = officestore.import_entries(store, entries, by=args.by or "hq")
    print(
        f"{len(entries)} cars in {args.file}: {n['added']} added, {n['changed']} changed, "
        f"{n['unchanged']} unchanged"
    )
    return 0


def cmd_entries_list(args: argparse.Namespace) -> int:
    """Print the entry list in force (status included)."""
    with _open(args) as store:
        entries = officestore.entries_of(store)
    if args.format == "json":
        write_out(json.dumps([e.as_dict() for e in entries], indent=2) + "\n", None)
    elif args.format == "csv":
        write_out(render_entries(entries), None)
    else:
        for e in entries:
            coef = f" coef {e.coefficient}" if e.coefficient is not None else ""
            print(
                f"{e.number:>4}  {e.status:<9} {e.start:<12} {e.klass:<6} {e.year}  "
                f"{e.crew} - {e.car}{coef}"
            )
        if not entries:
            print("(no entry list: checkpoint hq entries import entries.csv)")
    return 0


def cmd_entries_set(args: argparse.Namespace) -> int:
    """Change one car: move its start, withdraw it, mark it retired (audited)."""
    if args.start is None and args.status is None:
        raise CommandError("give --start and/or --status")
    store = _open(args)
    try:
        e = officestore.set_entry(
            store, args.number, start=args.start, status=args.status, by=args.by or "hq"
        )
    except ConfigError as err:
        raise CommandError(str(err)) from None
    finally:
        store.close()
    print(f"car {e.number}: start {e.start}, {e.status}")
    return 0


def cmd_entries_log(args: argparse.Namespace) -> int:
    """The entry list's audit trail: every import and edit, who, when, old → new."""
    with _open(args) as store:
        rows = officestore.entry_changes(store)
    for r in rows:
        what = f" {r['field']}: {r['old']} -> {r['new']}" if r["field"] else f" {r['new'] or ''}"
        print(f"{r['at']}  car {r['number']}  {r['action']} by {r['by']}{what}")
    if not rows:
        print("(no changes)")
    return 0


def cmd_event_load(args: argparse.Namespace) -> int:
    """Validate an event file and put it in force at HQ (kept with every earlier one)."""
    text = _read(args.file, "event file")
    with _open(args) as store:
        ev = officestore.load_event(store, text, args.file, by=args.by or "hq")
    print(
        f"event {ev.name or '(unnamed)'}: {len(ev.controls)} controls, {len(ev.trials)} trials"
        + ("" if ev.scheduled else " (no schedule: cars cannot be identified automatically)")
    )
    return 0


def cmd_event_show(args: argparse.Namespace) -> int:
    """The event in force: controls with their due offsets, trials with their targets."""
    with _open(args) as store:
        ev = officestore.event_of(store)
    if ev is None:
        print("(no event file: checkpoint hq event load EVENT.toml)")
        return 1
    print(f"{ev.name}  date {ev.date or '-'}  time zone {ev.timezone}")
    for c in ev.controls:
        due = fmt_seconds(c.due_ns) if c.due_ns is not None else "-"
        print(f"  control {c.id:<8} {c.kind:<8} due +{due} s  {c.name}")
    for t in ev.trials:
        sec = ", ".join(f"{s} {fmt_seconds(n)} s" for s, n in t.secrets)
        print(
            f"  trial {t.name}: {t.start} -> {t.finish} {fmt_seconds(t.target_ns)} s"
            + (f" (secret: {sec})" if sec else "")
        )
    return 0


def _office(args: argparse.Namespace) -> office.Office:
    event = None
    if getattr(args, "event", None):
        event = parse_event(_read(args.event, "event file"), args.event)
    with _open(args) as store:
        return officestore.load_office(store, final=not getattr(args, "live", False), event=event)


def cmd_confirm(args: argparse.Namespace) -> int:
    """Passages HQ could not identify with confidence, with the likely car."""
    off = _office(args)
    write_out(posting.render_confirm(off.identification.to_confirm()), args.out)
    return 0


def cmd_sheet(args: argparse.Namespace) -> int:
    """One car's sheet: every control, ideal vs actual, deviation, points, car source."""
    off = _office(args)
    car = off.classification.car(args.car)
    if car is None:
        raise CommandError(f"car {args.car} is not on the entry list")
    if args.format == "json":
        write_out(json.dumps(posting.car_doc(car), indent=2) + "\n", args.out)
    else:
        write_out(posting.render_sheet(car), args.out)
    return 0


def render(off: office.Office, fmt: str, issued: str, top: int | None = None) -> str:
    """The classification in one of the posting formats."""
    cls = off.classification
    if fmt == "csv":
        return posting.render_csv(cls)
    if fmt == "json":
        return posting.render_json(cls, issued)
    if fmt == "html":
        return posting.render_html(cls, issued)
    return posting.render_table(cls, issued, top=top)


def cmd_classify(args: argparse.Namespace) -> int:
    """`hq results` without --stages: the full classification from the event and entries."""
    off = _office(args)
    issued = iso_now()[:19].replace("T", " ") + " UTC"
    write_out(render(off, args.format, issued, args.top), args.out)
    return 0


def export_rows(store: HQStore, checkpoint: str | None) -> list[dict[str, Any]]:
    """Export rows, with automatic identification when an event and entries are loaded."""
    rows = store.passages(checkpoint=checkpoint)
    ev = officestore.event_of(store)
    entries = officestore.entries_of(store)
    if ev is None or not entries or not ev.scheduled:
        return rows
    try:
        full = office.build(store.passages(), ev, entries, final=False)
    except CheckpointError as err:
        # The export is the evidence: it never fails because of the rally office.
        print(f"checkpoint hq: warning: no automatic car numbers: {err}", file=sys.stderr)
        return rows
    if checkpoint is not None:
        return [r for r in full.rows if r["checkpoint"] == checkpoint]
    return full.rows


def add_office_commands(sub: Any, db: Any, wrap: Any) -> None:
    """Register entries, event, confirm and sheet on `hq`'s subparsers.

    `db` adds the --db option; `wrap` turns a CommandError into exit 2.
    """
    p = sub.add_parser("entries", help="the entry list: import, list, set, log")
    esub = p.add_subparsers(dest="entries_command", required=True, metavar="ACTION")
    r = esub.add_parser("import", help=cmd_entries_import.__doc__)
    db(r)
    r.add_argument("file", metavar="entries.csv")
    r.add_argument("--by", metavar="NAME", help="who imports (default: hq)")
    r.set_defaults(func=wrap(cmd_entries_import))
    r = esub.add_parser("list", help=cmd_entries_list.__doc__)
    db(r)
    r.add_argument("--format", choices=("table", "csv", "json"), default="table")
    r.set_defaults(func=wrap(cmd_entries_list))
    r = esub.add_parser("set", help=cmd_entries_set.__doc__)
    db(r)
    r.add_argument("number")
    r.add_argument("--start", help="new start: HH:MM[:SS] local, or an ISO instant")
    r.add_argument("--status", choices=STATUSES)
    r.add_argument("--by", metavar="NAME", help="who made the change (default: hq)")
    r.set_defaults(func=wrap(cmd_entries_set))
    r = esub.add_parser("log", help=cmd_entries_log.__doc__)
    db(r)
    r.set_defaults(func=wrap(cmd_entries_log))

    p = sub.add_parser("event", help="the event file: load, show")
    vsub = p.add_subparsers(dest="event_command", required=True, metavar="ACTION")
    r = vsub.add_parser("load", help=cmd_event_load.__doc__)
    db(r)
    r.add_argument("file", metavar="EVENT.toml")
    r.add_argument("--by", metavar="NAME")
    r.set_defaults(func=wrap(cmd_event_load))
    r = vsub.add_parser("show", help=cmd_event_show.__doc__)
    db(r)
    r.set_defaults(func=wrap(cmd_event_show))

    r = sub.add_parser("confirm", help=cmd_confirm.__doc__)
    db(r)
    r.add_argument("--out", metavar="FILE")
    r.set_defaults(func=wrap(cmd_confirm))

    r = sub.add_parser("sheet", help=cmd_sheet.__doc__)
    db(r)
    r.add_argument("car")
    r.add_argument("--format", choices=("table", "json"), default="table")
    r.add_argument("--live", action="store_true", help="no DNF for cars not yet finished")
    r.add_argument("--out", metavar="FILE")
    r.set_defaults(func=wrap(cmd_sheet))
