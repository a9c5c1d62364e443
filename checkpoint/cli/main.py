"""`checkpoint` command line: each command a thin wrapper around the library.

Exit codes: 0 ok, 1 the thing checked is bad (config check, replay of a broken
capture), 2 usage errors (argparse's own).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from checkpoint import __version__
from checkpoint import config as configmod
from checkpoint.box.replay import replay_events
from checkpoint.cli.common import run
from checkpoint.errors import ConfigError
from checkpoint.support import check_private, check_sign_key, read_secret, setup_logging

log = logging.getLogger("checkpoint")


# -- commands -----------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run the box daemon until SIGTERM/SIGINT."""
    from checkpoint.box.daemon import BoxDaemon

    setup_logging(args.verbose)
    cfg = configmod.load(args.config)
    # A client key others can read is refused like a password file (checked here,
    # before the daemon opens anything, so the box does not start half-configured).
    check_private(cfg.mqtt.key_file, "mqtt.key_file")
    if cfg.mqtt.cert_file and not cfg.mqtt.key_file:
        check_private(cfg.mqtt.cert_file, "mqtt.cert_file (holds the private key)")
    check_sign_key(cfg.integrity.sign_key)
    pin = None
    if cfg.web.enabled:
        from checkpoint.web.boxhook import marshal_pin

        pin = marshal_pin(cfg)  # a missing or readable PIN file stops us here
    daemon = BoxDaemon(cfg, password=read_secret(cfg.mqtt.password_file, "mqtt.password_file"))

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    page = None
    if pin is not None:
        from checkpoint.web.boxhook import start_marshal

        page = start_marshal(cfg, daemon, pin)  # None (and an alarm) if it cannot listen
    try:
        daemon.run()
    finally:
        if page is not None:
            page.stop()
    return 0


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
    from checkpoint.box.store import Store

    if args.db:
        path, box, cp = args.db, "", ""
    else:
        cfg = configmod.load(args.config)
        path, box, cp = cfg.store, cfg.box, cfg.checkpoint
    if not Path(path).exists():
        raise ConfigError(f"{path}: no store there")
    with Store(path, box=box, checkpoint=cp, readonly=True) as store:
        rows = store.passages(limit=args.limit)
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


def cmd_verify(args: argparse.Namespace) -> int:
    """Check the hash chains of a box store, an HQ database or an event export (JSONL)."""
    from checkpoint.hq import verify

    try:
        result = verify.verify_path(args.path, keys=args.keys)
    except verify.VerifyError as e:
        print(f"checkpoint: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(verify.as_json(result), indent=2))
    else:
        sys.stdout.write(verify.render(result))
    return 0 if result.ok else 1


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a config file and the files it names; list every problem at once."""
    from checkpoint.field.config_check import check

    cfg, problems = check(args.file)
    if problems or cfg is None:
        for line in problems:
            print(f"checkpoint: error: {line}", file=sys.stderr)
        n = len(problems)
        print(f"{args.file}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
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

    r = sub.add_parser("verify", help=cmd_verify.__doc__)
    r.add_argument("path", help="box store, HQ database, or JSON Lines of events")
    r.add_argument("--json", action="store_true", help="machine-readable report")
    r.add_argument(
        "--keys",
        metavar="DIR",
        help="boxes' Ed25519 public keys (DIR/BOX.pub): check their signed chain heads",
    )
    r.set_defaults(func=cmd_verify)

    c = sub.add_parser("config", help="config file tools")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    r = csub.add_parser("check", help=cmd_config_check.__doc__)
    r.add_argument("file")
    r.set_defaults(func=cmd_config_check)

    from checkpoint.cli.field import add_field_commands

    add_field_commands(sub)

    from checkpoint.cli.hq import add_hq_commands

    add_hq_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)
