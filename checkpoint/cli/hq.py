"""`checkpoint hq ...`: HQ's commands, each a thin wrapper around the library.

`add_hq_commands(subparsers)` registers `hq` on the main `checkpoint` parser; every
subcommand sets `func(args) -> int`. `main(argv)` runs the same commands on its
own (`python -m checkpoint.cli.hq run ...`), with the exit codes of `checkpoint`:
0 ok, 1 the thing worked on is bad (database, stages file), 2 usage errors
(argparse's own, and a correction or broker URL that cannot be right).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from checkpoint.cli.common import load_stages, positive_float, positive_int, run, write_out
from checkpoint.cli.conflict import add_conflict_command
from checkpoint.cli.hq_ops import add_ops_commands
from checkpoint.cli.office import add_office_commands, cmd_classify, export_rows
from checkpoint.cli.serve import add_serve_command
from checkpoint.contracts import DEFAULT_PREFIX
from checkpoint.errors import CommandError, LinkError
from checkpoint.hq import ops as hq_ops
from checkpoint.hq import results as resultsmod
from checkpoint.hq import results_sheets, status_text
from checkpoint.hq.localtime import local_date, local_time
from checkpoint.hq.passages import EXPORT_FIELDS
from checkpoint.hq.store import HQStore
from checkpoint.support import check_private, read_secret, setup_logging

log = logging.getLogger("checkpoint.hq.collector")

_Handler = Callable[[argparse.Namespace], int]


def _usage_errors(fn: _Handler) -> _Handler:
    """Turn a CommandError/LinkError (a request that cannot be right) into exit 2."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (CommandError, LinkError) as err:
            print(f"checkpoint hq: error: {err}", file=sys.stderr)
            return 2

    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper


# -- commands -----------------------------------------------------------------------


@_usage_errors
def cmd_run(args: argparse.Namespace) -> int:
    """Run the HQ collector until SIGTERM/SIGINT: store, ack and repair box events."""
    from checkpoint.hq.collector import Collector

    setup_logging(args.verbose)
    if args.password_file and not args.user:
        raise CommandError("--password-file needs --user")
    if args.key and not args.cert:
        raise CommandError("--key needs --cert")
    check_private(args.key or args.cert, "--key" if args.key else "--cert (holds the private key)")
    collector = Collector(
        args.broker,
        args.db,
        prefix=args.prefix,
        username=args.user,
        password=read_secret(args.password_file, "--password-file"),
        ca_file=args.ca,
        cert_file=args.cert,
        key_file=args.key,
        client_id=args.client_id,
        gap_wait_s=args.gap_wait,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        collector.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    collector.run()
    return 0


def render_status(store: HQStore, *, colour: bool = False, now: float | None = None) -> str:
    """The status table `hq status` prints and `hq watch` refreshes."""
    return status_text.render(store, colour=colour, now=now)


def cmd_status(args: argparse.Namespace) -> int:
    """Print every box HQ knows: online/lost, clock, last passage, backlog, gaps, counts."""
    with HQStore(args.db, create=False) as store:
        if args.json:
            doc = status_text.status_json(store)
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            sys.stdout.write(render_status(store, colour=sys.stdout.isatty()))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Live status view, refreshed every second; q or Ctrl-C quits."""
    store = HQStore(args.db, create=False)
    tty_in = sys.stdin.isatty()
    old_attrs = None
    if tty_in:
        import termios
        import tty

        old_attrs = termios.tcgetattr(sys.stdin)
        tty.setcbreak(sys.stdin.fileno())  # single keys, no Enter needed
    try:
        n = 0
        while True:
            text = render_status(store, colour=sys.stdout.isatty())
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n(q or Ctrl-C quits)\n")
            sys.stdout.flush()
            n += 1
            if args.count and n >= args.count:
                return 0
            if tty_in:
                ready, _, _ = select.select([sys.stdin], [], [], args.interval)
                if ready and sys.stdin.read(1).lower() == "q":
                    return 0
            else:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if old_attrs is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old_attrs)
        store.close()


LOCAL_FIELDS = ("local_date", "local_time")


def export_text(rows: list[dict[str, Any]], fmt: str) -> str:
    """Export rows as CSV (booleans true/false, None empty) or JSON Lines."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    buf = io.StringIO()
    # Extension columns after the contract's: the local date and time of day a
    # spreadsheet shows as a time (utc_ns has 19 digits, a spreadsheet keeps 15).
    w = csv.DictWriter(buf, fieldnames=(*EXPORT_FIELDS, *LOCAL_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        out = {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in r.items()}
        out["local_date"] = local_date(r.get("utc_ns"))
        out["local_time"] = local_time(r.get("utc_ns"), digits=3)
        w.writerow(out)
    return buf.getvalue()


def cmd_export(args: argparse.Namespace) -> int:
    """Export one row per passage, with assignments, voids and restamps applied.

    `--format events` instead writes every stored event exactly as the box sent it
    (JSON Lines, by box, store, seq): the evidence `checkpoint verify` checks.
    """
    with HQStore(args.db, create=False) as store:
        if args.format == "events":
            text = "".join(
                r["payload"] + "\n"
                for r in store.events()
                if args.checkpoint is None or r["checkpoint"] == args.checkpoint
            )
        else:
            text = export_text(export_rows(store, args.checkpoint), args.format)
    write_out(text, args.out)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """Results: the classification from the event file and entry list loaded at HQ
    (or --event), or the stage results of a --stages file (lowest points wins)."""
    if args.stages is None:
        if args.format in ("wide", "long"):
            raise CommandError(f"--format {args.format} needs --stages STAGES.toml")
        return cmd_classify(args)
    if args.format == "html":
        raise CommandError("--format html needs the event file, not --stages")
    path = args.stages
    stages = load_stages(path)
    with HQStore(args.db, create=False) as store:
        rows = store.passages()
        # A mistyped control id would rank every car MISSING and still exit 0.
        unseen = hq_ops.unseen_controls(
            [c for s in stages.stages for c in (s.start, s.finish)], hq_ops.controls_known(store)
        )
    for line in unseen:
        print(
            f"checkpoint hq: {'warning' if args.allow_unseen else 'error'}: {path}: {line}",
            file=sys.stderr,
        )
    if unseen and not args.allow_unseen:
        print("(--allow-unseen if a control's box has not reported yet)", file=sys.stderr)
        return 1
    res = resultsmod.compute(rows, stages)
    render = {
        "table": results_sheets.render_text,
        "csv": resultsmod.render_csv,
        "json": resultsmod.render_json,
        "wide": results_sheets.render_wide,
        "long": results_sheets.render_long,
    }[args.format]
    write_out(render(res), args.out)
    return 0


def cmd_rejects(args: argparse.Namespace) -> int:
    """List rejected input, newest first: when, topic, reason, detail, payload."""
    with HQStore(args.db, create=False) as store:
        rows = store.rejects(limit=args.limit)
    for r in rows:
        p = r["payload"]
        text = p.decode("utf-8", "replace") if isinstance(p, bytes) else (p or "")
        print(f"{r['received_at']}  {r['topic']}  {r['reason']}: {r['detail']}")
        print(f"    {text[:200]!r}")
    if not rows:
        print("(no rejects)")
    return 0


# -- parser -------------------------------------------------------------------------


def _db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, metavar="PATH", help="HQ database file (SQLite)")


def add_hq_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `hq` and its subcommands on the main parser's subparsers."""
    hq = subparsers.add_parser("hq", help="timing HQ: collector, status, export, results")
    sub = hq.add_subparsers(dest="hq_command", required=True, metavar="SUBCOMMAND")
    _add_collector_commands(sub)
    _add_output_commands(sub)
    add_office_commands(sub, _db, _usage_errors)

    # assign / void / unvoid by control and time or car, bulk apply, todo, audit.
    add_ops_commands(sub, _db)

    r = sub.add_parser("rejects", help=cmd_rejects.__doc__)
    _db(r)
    r.add_argument("--limit", type=positive_int, default=50)
    r.set_defaults(func=cmd_rejects)

    add_conflict_command(sub)

    # The live board (checkpoint/web); aiohttp is only imported when it runs.
    add_serve_command(sub)


def _add_collector_commands(sub: argparse._SubParsersAction) -> None:
    """run, status, watch."""
    r = sub.add_parser("run", help=cmd_run.__doc__)
    r.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST:PORT or mqtts://")
    _db(r)
    r.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default: {DEFAULT_PREFIX})"
    )
    r.add_argument("--user", help="MQTT user name")
    r.add_argument("--password-file", metavar="FILE", help="file holding the MQTT password")
    r.add_argument("--ca", metavar="CA", help="CA certificate file for mqtts://")
    r.add_argument("--cert", metavar="PEM", help="client certificate (certificate login)")
    r.add_argument("--key", metavar="PEM", help="private key of --cert (chmod 600)")
    r.add_argument("--client-id", help="MQTT client id (default: derived from --db path)")
    r.add_argument(
        "--gap-wait",
        type=positive_float,
        default=3.0,
        metavar="S",
        help="seconds a gap stays open before HQ asks the box to resend (default: 3)",
    )
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(func=cmd_run)

    r = sub.add_parser("status", help=cmd_status.__doc__)
    _db(r)
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=cmd_status)

    r = sub.add_parser("watch", help=cmd_watch.__doc__)
    _db(r)
    r.add_argument("--interval", type=positive_float, default=1.0, help=argparse.SUPPRESS)
    r.add_argument("--count", type=positive_int, default=None, help=argparse.SUPPRESS)
    r.set_defaults(func=cmd_watch)


def _add_output_commands(sub: argparse._SubParsersAction) -> None:
    """export and results."""
    r = sub.add_parser("export", help=cmd_export.__doc__)
    _db(r)
    r.add_argument(
        "--format",
        choices=("csv", "jsonl", "events"),
        default="csv",
        help="passages as csv/jsonl, or every raw event as received (events, JSONL)",
    )
    r.add_argument("--checkpoint", metavar="X", help="only passages at this checkpoint")
    r.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    r.set_defaults(func=cmd_export)

    r = sub.add_parser("results", help=cmd_results.__doc__)
    _db(r)
    r.add_argument("--stages", metavar="STAGES.toml", help="stage results from this file")
    r.add_argument("--event", metavar="EVENT.toml", help="use this event file, not HQ's")
    r.add_argument(
        "--format",
        choices=("table", "csv", "json", "html", "wide", "long"),
        default="table",
        help="table (fits a printed page), csv/json (exact ns), html (the classification); "
        "with --stages also wide (spreadsheet: a row per car, a column per trial) and long "
        "(a row per car and trial, local times)",
    )
    r.add_argument("--top", type=positive_int, metavar="N", help="table: only the first N")
    r.add_argument("--live", action="store_true", help="no DNF for cars not yet finished")
    r.add_argument(
        "--allow-unseen",
        action="store_true",
        help="go on when the stages file names a control HQ has not seen yet",
    )
    r.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    r.set_defaults(func=_usage_errors(cmd_results))


def main(argv: list[str] | None = None) -> int:
    """`checkpoint hq ...` on its own: same commands, same exit codes.

    `argv` may start with "hq" (as under `checkpoint`) or directly with the
    subcommand (`python -m checkpoint.cli.hq run --broker ...`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "hq":
        argv.insert(0, "hq")
    p = argparse.ArgumentParser(prog="checkpoint", description="checkpoint HQ commands")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_hq_commands(sub)
    return run(p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
