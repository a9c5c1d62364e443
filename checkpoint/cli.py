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


def check_private(path: str | None, what: str) -> None:
    """Refuse a secret file (password, private key) that group or others can access.

    A box's SD card or HQ's laptop is shared by several accounts and services; a
    readable secret is a stolen identity. The message says what to do, never the content.
    """
    if path is None:
        return
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot read: {e.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{what} {p} is readable by others (mode {oct(mode & 0o777)}): chmod 600")


def check_sign_key(path: str | None) -> None:
    """Refuse to start with a signing key others can read, that is no Ed25519 key, or
    when the optional `cryptography` package is missing (say how to install it)."""
    if path is None:
        return
    from checkpoint import chain

    check_private(path, "integrity.sign_key")
    try:
        chain.load_signing_key(Path(path).read_bytes())
    except OSError as e:
        raise ConfigError(f"integrity.sign_key {path}: cannot read: {e.strerror}") from None
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"integrity.sign_key {path}: {e}") from None


def read_secret(path: str | None, what: str) -> str | None:
    """Read a password file, refusing one that others can read."""
    if path is None:
        return None
    p = Path(path)
    check_private(path, what)
    try:
        return p.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot read: {e.strerror}") from None


# -- commands -----------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run the box daemon until SIGTERM/SIGINT."""
    from checkpoint.daemon import BoxDaemon

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


def _replay_inputs(path: str, head: dict[str, Any]) -> tuple[InputConfig, ...]:
    """Inputs from the capture header, else one default input per name seen."""
    if isinstance(head.get("inputs"), list):
        try:
            return tuple(InputConfig(**i) for i in head["inputs"])
        except TypeError as e:
            raise ConfigError(f"{path}: header inputs are not input settings: {e}") from None
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
    """Every event the daemon would have published for this capture, in order.

    Settings come from `cfg` if given, else from the capture's header, else defaults.
    """
    from checkpoint.timing import Pipeline, params_for

    head, records = capture.read(path)
    # Recorded with a coarse pin factory: the daemon widened every bound by this.
    extra = head.get("tick_uncertainty_ns", 0)
    if not isinstance(extra, int) or isinstance(extra, bool) or extra < 0:
        raise ConfigError(f"{path}: header tick_uncertainty_ns must be an integer >= 0")
    if cfg is not None:
        box, cp, inputs = cfg.box, cfg.checkpoint, cfg.inputs
        convention, clock = cfg.gps.convention, dict(cfg.clock)
    else:
        box, cp = str(head.get("box", "box")), str(head.get("checkpoint", "?"))
        inputs = _replay_inputs(path, head)
        convention = head.get("convention", "after")
        clock = head.get("clock") if isinstance(head.get("clock"), dict) else {}
        if convention not in ("after", "before"):
            raise ConfigError(f"{path}: header convention must be after or before")
    pipe = Pipeline(
        box=box,
        checkpoint=cp,
        store=store,
        inputs=inputs,
        convention=convention,
        clock_params=params_for(convention, clock),
        tick_uncertainty_ns=extra,
    )
    feed = pipe.feed
    for rec in records:
        events = feed(rec)
        if events:  # most records give none
            yield from events
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


def cmd_verify(args: argparse.Namespace) -> int:
    """Check the hash chains of a box store, an HQ database or an event export (JSONL)."""
    from checkpoint import verify

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
    from checkpoint.config_check import check

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

    from checkpoint.field_cli import add_field_commands

    add_field_commands(sub)

    from checkpoint.hq_cli import add_hq_commands

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
