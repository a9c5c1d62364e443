"""`checkpoint` command line: each command a thin wrapper around the library.

Exit codes: 0 ok, 1 the thing checked is bad (config check, replay of a broken
capture), 2 usage errors (argparse's own).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from checkpoint import __version__, capture
from checkpoint import config as configmod
from checkpoint.config import Config, InputConfig
from checkpoint.errors import CheckpointError, ConfigError

log = logging.getLogger("checkpoint")

_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class _JournalFormatter(logging.Formatter):
    """Prefix `<N>` so journald files each line under its syslog priority."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelname, 6)}>{super().format(record)}"


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def read_secret(path: str | None, what: str) -> str | None:
    """Read a password file, refusing one that others can read."""
    if path is None:
        return None
    p = Path(path)
    try:
        mode = p.stat().st_mode
        if mode & 0o077:
            raise ConfigError(
                f"{what} {p} is readable by others (mode {oct(mode & 0o777)}): chmod 600"
            )
        return p.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot read: {e.strerror}") from None


# -- commands -----------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run the box daemon until SIGTERM/SIGINT."""
    from checkpoint.daemon import BoxDaemon

    setup_logging(args.verbose)
    cfg = configmod.load(args.config)
    daemon = BoxDaemon(cfg, password=read_secret(cfg.mqtt.password_file, "mqtt.password_file"))

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.run()
    return 0


def _replay_inputs(path: str) -> tuple[InputConfig, ...]:
    _, records = capture.read(path)
    names: dict[str, None] = {}
    for rec in records:
        if rec["type"] == "edge":
            names.setdefault(rec["input"])
    return tuple(
        InputConfig(name=n, pin=f"capture:{n}", source="manual" if "button" in n else "beam")
        for n in names
    )


def replay_events(
    path: str, cfg: Config | None = None, *, store: str = "replay"
) -> Iterator[dict[str, Any]]:
    """Every event the daemon would have published for this capture, in order."""
    from checkpoint.timing import Pipeline, params_for

    head, records = capture.read(path)
    inputs = cfg.inputs if cfg is not None else _replay_inputs(path)
    pipe = Pipeline(
        box=cfg.box if cfg else str(head.get("box", "box")),
        checkpoint=cfg.checkpoint if cfg else str(head.get("checkpoint", "?")),
        store=store,
        inputs=inputs,
        convention=cfg.gps.convention if cfg else "after",
        clock_params=params_for(cfg.gps.convention, dict(cfg.clock)) if cfg else None,
    )
    for rec in records:
        yield from pipe.feed(rec)
    yield from pipe.flush()


def cmd_replay(args: argparse.Namespace) -> int:
    """Run a capture through the detector and clock offline; one JSON event per line."""
    setup_logging(args.verbose)
    cfg = configmod.load(args.config) if args.config else None
    out = sys.stdout
    for ev in replay_events(args.capture, cfg, store=args.store):
        out.write(json.dumps(ev, separators=(",", ":")) + "\n")
    return 0


def cmd_passages(args: argparse.Namespace) -> int:
    """List the passages a box's store holds (corrections applied)."""
    from checkpoint.store import Store

    if args.db:
        path, box, cp = args.db, "", ""
    else:
        cfg = configmod.load(args.config)
        path, box, cp = cfg.store, cfg.box, cfg.checkpoint
    if not Path(path).exists():
        raise ConfigError(f"{path}: no store there")
    store = Store(path, box=box, checkpoint=cp, readonly=True)
    try:
        rows = store.passages(limit=args.limit)
    finally:
        store.close()
    if args.json:
        for r in rows:
            print(json.dumps(r, separators=(",", ":")))
        return 0
    print(f"{'seq':>6}  {'input':<8} {'utc':<31} {'clock':<9} {'±µs':>10}  car   void")
    for r in rows:
        unc = r.get("uncertainty_ns")
        unc_s = f"{unc / 1000:.1f}" if isinstance(unc, int) else "?"
        print(
            f"{r['seq']:>6}  {r.get('input', ''):<8} {r.get('utc', ''):<31} "
            f"{r.get('clock', ''):<9} {unc_s:>10}  {r.get('car') or '':<5} "
            f"{'VOID ' + str(r.get('void_reason') or '') if r.get('void') else ''}"
        )
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a config file; say what is wrong and where."""
    cfg = configmod.load(args.file)
    print(
        f"{args.file}: ok: box {cfg.box} at {cfg.checkpoint}, "
        f"{len(cfg.inputs)} input(s), broker {cfg.mqtt.broker}, store {cfg.store}"
    )
    return 0


# -- parser -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="checkpoint", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"checkpoint {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help=cmd_run.__doc__)
    r.add_argument("--config", required=True, help="box config (TOML)")
    r.set_defaults(func=cmd_run)

    r = sub.add_parser("replay", help=cmd_replay.__doc__)
    r.add_argument("capture", help="capture file (JSON Lines, checkpoint-capture v1)")
    r.add_argument("--config", help="box config for inputs and GPS convention (default: defaults)")
    r.add_argument("--store", default="replay", help="store id to put in events (default: replay)")
    r.set_defaults(func=cmd_replay)

    r = sub.add_parser("passages", help=cmd_passages.__doc__)
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="box config naming the store")
    src.add_argument("--db", help="store database file")
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--json", action="store_true", help="one JSON object per line")
    r.set_defaults(func=cmd_passages)

    c = sub.add_parser("config", help="config file tools")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    r = csub.add_parser("check", help=cmd_config_check.__doc__)
    r.add_argument("file")
    r.set_defaults(func=cmd_config_check)

    try:
        from checkpoint.hq_cli import add_hq_commands
    except ImportError:  # HQ not installed in this build
        pass
    else:
        add_hq_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CheckpointError as e:
        print(f"checkpoint: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
