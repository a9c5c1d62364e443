"""`checkpoint hq serve`: HQ's live timing board in a browser.

`add_serve_command(sub)` registers `serve` on the `hq` subparsers (hq_cli.py calls
it); `main(argv)` runs it on its own (`python -m checkpoint.cli.serve --db ...`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from checkpoint.cli.common import load_stages, port, run
from checkpoint.errors import ConfigError

log = logging.getLogger("checkpoint.web")


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve HQ's live board: boxes, passages, results, per-car view (read-only; corrections
    need --password-file)."""
    from checkpoint.support import setup_logging
    from checkpoint.web.auth import load_secret
    from checkpoint.web.board import BoardServer

    setup_logging(getattr(args, "verbose", False))
    if not Path(args.db).is_file():
        # An empty board "waiting" forever for a mistyped path helps nobody.
        raise ConfigError(
            f"HQ database {args.db} does not exist: give the --db of `checkpoint hq run`"
        )
    stages = load_stages(args.stages) if args.stages else None
    password = load_secret(args.password_file, "--password-file") if args.password_file else None
    server = BoardServer(
        args.db, host=args.host, port=args.port, stages=stages, password=password
    ).start()
    print(f"checkpoint HQ board on {server.url}", flush=True)
    if password is None:
        print("corrections disabled: no --password-file", flush=True)
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        done.wait()
    finally:
        server.stop()
    return 0


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    """Register `serve` on the `hq` subcommand parsers."""
    r = sub.add_parser("serve", help=(cmd_serve.__doc__ or "").split("\n")[0])
    r.add_argument("--db", required=True, metavar="PATH", help="HQ database file (SQLite)")
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    r.add_argument("--port", type=port, default=8090, help="port (default: 8090)")
    r.add_argument("--stages", metavar="FILE", help="stages file (TOML) for the results table")
    r.add_argument(
        "--password-file",
        metavar="F",
        help="file holding the password for corrections (chmod 600; without it: read-only)",
    )
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """`checkpoint hq serve ...` on its own, with `checkpoint`'s exit codes."""
    p = argparse.ArgumentParser(prog="checkpoint hq", description="checkpoint HQ board")
    sub = p.add_subparsers(dest="hq_command", required=True, metavar="SUBCOMMAND")
    add_serve_command(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "serve":
        argv.insert(0, "serve")
    return run(p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
