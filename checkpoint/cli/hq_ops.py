"""`checkpoint hq assign|void|unvoid|apply|todo|audit`: corrections as an operator types them.

Registered by `hq_cli.add_hq_commands`. A passage is named by control and local time
of day (`--control PC2 --at 10:32:05.12`), by control and car (`--car 12`), or as
before by BOX SEQ. `hq todo` lists what needs doing with the command that does it,
so nobody needs a box id or a seq. Exit codes as `hq`: 2 when what was typed cannot
be right (nothing written), 1 when a file is unreadable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from checkpoint.cli.common import positive_int
from checkpoint.errors import CommandError, ConfigError
from checkpoint.hq import ops as hq_ops
from checkpoint.hq.ops_csv import parse_csv
from checkpoint.hq.store import HQStore

WIDTH = 100  # a printed A4 page in a monospace font


def _store(db: str) -> HQStore:
    return HQStore(db, create=False)


def _fail(err: CommandError) -> int:
    for line in str(err).splitlines():
        print(f"checkpoint hq: error: {line}", file=sys.stderr)
    return 2


def _request(args: argparse.Namespace, action: str) -> hq_ops.Request:
    # argparse fills positionals in order: with --control they hold only the car.
    given = [x for x in (args.box, args.seq, getattr(args, "newcar", None)) if x is not None]
    new_car = None
    if args.control:
        if action == "assign":
            if len(given) != 1:
                raise CommandError("with --control, give exactly one car number: the car to assign")
            new_car = str(given[0])
        elif given:
            raise CommandError(f"with --control, {action} takes no BOX SEQ")
        pick = hq_ops.Pick(
            control=args.control,
            at=args.at,
            car=args.was if action == "assign" else args.car,
        )
    else:
        want = 3 if action == "assign" else 2
        if len(given) != want:
            usage = "BOX SEQ CAR" if action == "assign" else "BOX SEQ"
            raise CommandError(f"say which passage: --control C --at HH:MM:SS, or {usage}")
        try:
            seq = int(given[1])
        except ValueError:
            raise CommandError(f"seq must be a positive integer, got {given[1]!r}") from None
        pick = hq_ops.Pick(box=str(given[0]), seq=seq, store=args.store)
        new_car = str(given[2]) if action == "assign" else None
    return hq_ops.Request(
        pick=pick,
        action=action,
        new_car=new_car,
        reason=getattr(args, "reason", None),
        by=args.by,
        allow_new_car=getattr(args, "new_car", False),
        force=getattr(args, "force", False),
    )


def _correct(args: argparse.Namespace, action: str) -> int:
    try:
        req = _request(args, action)
        with _store(args.db) as store:
            ((_, done),) = hq_ops.apply_rows(store, [("", req)])
    except CommandError as err:
        return _fail(err)
    what = {
        "assign": f"car {done.get('car')}",
        "void": f"void ({done.get('reason')})",
        "unvoid": "unvoided",
    }[action]
    print(f"{done['passage']}: {what} (correction #{done['id']})")
    return 0


def cmd_assign(args: argparse.Namespace) -> int:
    """Give a passage its car: --control C --at HH:MM:SS CAR (or BOX SEQ CAR)."""
    return _correct(args, "assign")


def cmd_void(args: argparse.Namespace) -> int:
    """Void a passage (false trigger): --control C --at T|--car N --reason R (or BOX SEQ)."""
    return _correct(args, "void")


def cmd_unvoid(args: argparse.Namespace) -> int:
    """Undo a void: --control C --at T|--car N (or BOX SEQ); refused if it is not void."""
    return _correct(args, "unvoid")


def cmd_apply(args: argparse.Namespace) -> int:
    """Bulk corrections from a CSV (action,control,at,car,...): all checked, all or none."""
    path = Path(args.csv)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    try:
        reqs = parse_csv(text, str(path))
        if args.by:
            reqs = [(lbl, _with_by(r, args.by)) for lbl, r in reqs]
        with _store(args.db) as store:
            done = hq_ops.apply_rows(store, reqs)
    except CommandError as err:
        print(f"{path}: nothing applied", file=sys.stderr)
        return _fail(err)
    for label, row in done:
        what = row.get("car") or row.get("reason") or "unvoided"
        print(f"{label}: {row['passage']}: {what}")
    print(f"{len(done)} corrections applied from {path}")
    return 0


def _with_by(req: hq_ops.Request, by: str) -> hq_ops.Request:
    from dataclasses import replace

    return req if req.by else replace(req, by=by)


def todo_lines(store: HQStore, db: str) -> list[str]:
    """What HQ still needs a person for: passages with no car, gaps in what boxes sent."""
    rows = store.passages()
    names = hq_ops.places(store)
    out: list[str] = []
    loose = [r for r in rows if not r["car"] and not r["void"]]
    if loose:
        out.append(f"{len(loose)} passages have no car (local time of day):")
    by_cp: dict[str, list[dict[str, Any]]] = {}
    for r in loose:
        by_cp.setdefault(r["checkpoint"], []).append(r)
    for cp, items in sorted(by_cp.items()):
        place = f" {names[cp]}" if cp in names else ""
        out.append(f"  {cp}{place}: {len(items)}")
        for r in items:
            at = hq_ops.local_time(r["utc_ns"])
            out.append(f"    {at}  checkpoint hq assign --db {db} --control {cp} --at {at} CAR")
    gaps = [b for b in store.summaries() if b.missing]
    for b in gaps:
        out.append(f"{b.box}: {b.missing} events not yet at HQ (seq {b.gaps}); HQ asks for them")
    if not out:
        out.append("nothing to do: every passage has a car, nothing is missing")
    return out


def cmd_todo(args: argparse.Namespace) -> int:
    """What needs a person: passages with no car (with the command to fix each), gaps."""
    with _store(args.db) as store:
        lines = todo_lines(store, args.db)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def render_audit(rows: list[dict[str, Any]], width: int = WIDTH) -> str:
    """The audit trail as a table that fits a printed page (`width` characters)."""
    head = ["#", "when (UTC)", "by", "action", "control", "passage", "car", "box/seq", "reason"]
    body = [
        [
            str(r["id"]),
            str(r["at"])[5:19].replace("T", " "),
            str(r["by"])[:10],
            r["action"],
            r["control"],
            r["passage"],
            r["car"],
            f"{r['box']}#{r['seq']}",
            r["reason"],
        ]
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head) - 1)]
    room = max(10, width - sum(widths) - 2 * (len(widths)))
    lines = []
    for cells in [head, *body]:
        left = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))
        reason = cells[-1]
        lines.append(f"{left}  {reason[:room]}".rstrip())
        reason = reason[room:]
        while reason:  # wrap a long reason under its column
            lines.append(f"{' ' * (len(left) + 2)}{reason[:room]}")
            reason = reason[room:]
    if not body:
        lines.append("(no corrections yet)")
    return "\n".join(lines) + "\n"


def cmd_audit(args: argparse.Namespace) -> int:
    """Every correction, oldest first: who, when, what, which passage (control, time)."""
    with _store(args.db) as store:
        rows = hq_ops.audit_rows(store)
    if args.car:
        rows = [r for r in rows if r["car"] == args.car]
    if args.control:
        rows = [r for r in rows if r["control"] == args.control]
    sys.stdout.write(render_audit(rows))
    return 0


def add_ops_commands(sub: argparse._SubParsersAction, db: Any) -> None:
    """Register the correction, bulk, to-do and audit commands under `hq`."""
    for name, fn in (("assign", cmd_assign), ("void", cmd_void), ("unvoid", cmd_unvoid)):
        r = sub.add_parser(name, help=fn.__doc__)
        db(r)
        r.add_argument("box", nargs="?", help="box id (or use --control)")
        r.add_argument("seq", nargs="?", type=positive_int, help="the passage's seq on that box")
        if name == "assign":
            r.add_argument("newcar", nargs="?", metavar="car", help="the car number to assign")
            r.add_argument("--was", metavar="CAR", help="choose the passage carrying this car")
            r.add_argument(
                "--new-car", action="store_true", help="the car is not in the field yet: allow it"
            )
            r.add_argument(
                "--force", action="store_true", help="allow a second passage of a car at a control"
            )
        else:
            r.add_argument("--car", metavar="CAR", help="choose the passage of this car")
        if name == "void":
            r.add_argument("--reason", required=True)
        r.add_argument("--control", metavar="C", help="the control (checkpoint id) of the passage")
        r.add_argument("--at", metavar="HH:MM:SS", help="its local time of day (see hq todo)")
        r.add_argument("--by", metavar="NAME", help="who made the correction (default: hq)")
        r.add_argument("--store", metavar="S", help="store id (prefix) when SEQ is ambiguous")
        r.set_defaults(func=fn)

    r = sub.add_parser("apply", help=cmd_apply.__doc__)
    db(r)
    r.add_argument("csv", metavar="FILE.csv")
    r.add_argument("--by", metavar="NAME", help="who, for rows without a `by` column")
    r.set_defaults(func=cmd_apply)

    r = sub.add_parser("todo", help=cmd_todo.__doc__)
    db(r)
    r.set_defaults(func=cmd_todo)

    r = sub.add_parser("audit", help=cmd_audit.__doc__)
    db(r)
    r.add_argument("--car", help="only corrections giving or naming this car")
    r.add_argument("--control", help="only corrections at this control")
    r.set_defaults(func=cmd_audit)
