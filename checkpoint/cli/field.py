"""Field commands of `checkpoint`: install, doctor, assign, void, gps configure.

`add_field_commands(subparsers)` registers them on the main parser (cli.py calls it);
each sets `func(args) -> int` like the other commands. Exit codes as everywhere in
`checkpoint`: 0 ok (doctor: READY), 1 the thing checked is bad (doctor: NOT READY, a
refused correction, a receiver that did not acknowledge), 2 usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

from checkpoint.cli.common import positive_int, run, seconds
from checkpoint.errors import ConfigError

DEFAULT_CONFIG = "/etc/checkpoint/box.toml"


def cmd_install(args: argparse.Namespace) -> int:
    """Install the service, udev rules, chrony drop-in and firmware settings (idempotent)."""
    from checkpoint.field.install import install

    install(args.root, yes=args.yes, firmware=not args.no_firmware, program=args.program)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Preflight for the marshal: READY (exit 0) or NOT READY: reasons (exit 1)."""
    import logging

    from checkpoint.field import doctor

    if not getattr(args, "verbose", False):
        # The MQTT link's own warnings (plain mqtt://, reconnects) would drown the report.
        logging.getLogger("checkpoint").setLevel(logging.ERROR)
    return doctor.run(args.config, walk_test_s=args.walk_test, as_json=args.json)


def _socket(config: str) -> str:
    from checkpoint import config as configmod
    from checkpoint.box.control import socket_path

    return socket_path(configmod.load(config))


def _correction_reply(reply: dict, done: str) -> int:
    if reply.get("ok"):
        print(f"{done}: queued; the daemon publishes it to HQ as its own event")
        return 0
    print(f"checkpoint: refused: {reply.get('error')}", file=sys.stderr)
    return 1


def cmd_assign(args: argparse.Namespace) -> int:
    """Say which car a passage was (publishes an `assign` event via the running daemon)."""
    from checkpoint.box import control

    reply = control.assign(_socket(args.config), args.seq, args.car)
    return _correction_reply(reply, f"seq {args.seq} = car {args.car.strip()}")


def cmd_void(args: argparse.Namespace) -> int:
    """Mark a passage as not a car (publishes a `void` event via the running daemon)."""
    from checkpoint.box import control

    reply = control.void(_socket(args.config), args.seq, args.reason)
    return _correction_reply(reply, f"seq {args.seq} void ({args.reason.strip()})")


def cmd_gps_configure(args: argparse.Namespace) -> int:
    """Set a u-blox receiver up for timing: stationary, PPS only when locked, ZDA on, unused
    sentences off (or --baud to keep them at a rate that carries them), saved."""
    from checkpoint.field import doctor, gpsconf

    have_config = Path(args.config).exists()
    port, baud = _port_and_baud(args, have_config)
    new_baud = args.baud
    if new_baud is not None and new_baud not in gpsconf.BAUD_RATES:
        raise ConfigError(f"--baud must be one of {', '.join(map(str, gpsconf.BAUD_RATES))}")
    settings = gpsconf.timing_settings(quiet=new_baud is None)
    if new_baud is not None:
        # The full sentence set stays; the UART moves, then the save is sent (and
        # acknowledged) at the new rate, which proves the receiver is there.
        settings = settings[:-1] + [gpsconf.baud_setting(new_baud)]
    if args.dry_run:
        print(f"would send to {port} at {baud} baud:")
        for s in settings + ([gpsconf.save_setting()] if new_baud else []):
            print(f"  {s.name:<9} {s.why}\n            {gpsconf.hexdump(s.data)}")
        if new_baud is not None:
            print(
                f"then save at {new_baud} baud and set gps.baudrate = {new_baud} in {args.config}"
            )
        return 0
    if doctor.service_state() == "active" and not args.force:
        raise ConfigError(
            "the checkpoint daemon is running and owns the GPS port: "
            "sudo systemctl stop checkpoint first (or --force)"
        )
    results = _send(port, baud, settings, new_baud)
    for r in results:
        print(f"  {r.name:<9} {r.outcome}")
    if all(r.ok or r.outcome == "sent" for r in results):
        print(f"{port}: receiver configured for timing and settings saved")
        if new_baud is not None:
            _set_config_baudrate(args.config, new_baud, have_config)
        return 0
    _say_why(port, baud, new_baud, results)
    return 1


def _port_and_baud(args: argparse.Namespace, have_config: bool) -> tuple[str, int]:
    """--port and --baudrate, else the config's, else /dev/gps0 at 9600."""
    port, baud = args.port, args.baudrate
    if port is None or baud is None:
        cfg_port, cfg_baud = "/dev/gps0", 9600
        if have_config:
            from checkpoint import config as configmod

            cfg = configmod.load(args.config)
            cfg_port, cfg_baud = cfg.gps.port, cfg.gps.baudrate
        port, baud = port or cfg_port, baud or cfg_baud
    return port, baud


def _send(port: str, baud: int, settings: list, new_baud: int | None) -> list:
    """Send the settings (with --baud: the rate change, then the save at the new rate)."""
    from checkpoint.box import gps_serial
    from checkpoint.field import gpsconf

    handle = gps_serial.open_port(port, baud)
    try:
        if new_baud is None:
            results = gpsconf.configure(handle, settings)
        else:
            results = gpsconf.configure(handle, settings[:-1])
            if all(r.ok for r in results):
                # CFG-PRT: its ACK may come at either rate; the save below is the proof.
                handle.write(settings[-1].data)
                flush = getattr(handle, "flush", None)
                if callable(flush):
                    flush()
                results.append(gpsconf.Result(settings[-1].name, "sent"))
            else:
                results.append(gpsconf.Result(settings[-1].name, "not sent"))
    finally:
        handle.close()
    if new_baud is not None and all(r.ok or r.outcome == "sent" for r in results):
        handle = gps_serial.open_port(port, new_baud)
        try:
            results += gpsconf.configure(handle, [gpsconf.save_setting()])
        finally:
            handle.close()
    return results


def _say_why(port: str, baud: int, new_baud: int | None, results: list) -> None:
    """What went wrong, in words a marshal can act on."""
    if (
        new_baud is not None
        and results[-1].outcome == "no answer"
        and results[-2].outcome == "sent"
    ):
        print(
            f"{port}: no answer at {new_baud} baud after the rate change: the receiver may be "
            f"at either rate; run again with --baudrate {new_baud} (gps.baudrate unchanged)",
            file=sys.stderr,
        )
    elif all(r.outcome in ("no answer", "not sent") for r in results):
        print(
            f"{port}: no UBX answer: not a u-blox receiver, or wrong baud rate ({baud}); "
            "set it up with the maker's tool: stationary model, PPS only with a fix, ZDA on, "
            "only RMC GGA ZDA (or a baud rate that carries everything it sends)",
            file=sys.stderr,
        )
    else:
        print(f"{port}: the receiver refused some settings (see above)", file=sys.stderr)


def _set_config_baudrate(path: str, baudrate: int, exists: bool) -> None:
    """Write gps.baudrate into the box config (checked before it replaces the file)."""
    from checkpoint import config as configmod
    from checkpoint.field import gpsconf

    if not exists:
        print(f"no config at {path}: set gps.baudrate = {baudrate} in the box config")
        return
    target = Path(path)
    text = gpsconf.with_baudrate(target.read_text(encoding="utf-8"), baudrate)
    configmod.parse(tomllib.loads(text), str(target))  # a config the daemon rejects is not written
    tmp = target.with_name(target.name + ".new")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    print(f"{path}: gps.baudrate = {baudrate} (restart the checkpoint service)")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"box config ({DEFAULT_CONFIG})")


def add_field_commands(sub: argparse._SubParsersAction) -> None:
    """Register install, doctor, assign, void and gps configure on `checkpoint`'s parser."""
    r = sub.add_parser("install", help=cmd_install.__doc__)
    r.add_argument("--root", default="/", help="install under this folder (default: /)")
    r.add_argument("--yes", action="store_true", help="change firmware files without asking")
    r.add_argument("--no-firmware", action="store_true", help="leave /boot/firmware alone")
    r.add_argument("--program", help=argparse.SUPPRESS)  # the unit's ExecStart (tests, images)
    r.set_defaults(func=cmd_install)

    r = sub.add_parser("doctor", help=cmd_doctor.__doc__)
    _config_arg(r)
    r.add_argument(
        "--walk-test",
        nargs="?",
        type=seconds,
        const=60.0,
        default=None,
        metavar="S",
        help="also wait up to S seconds (default 60) for a passage: walk through the beam",
    )
    r.add_argument("--json", action="store_true", help="machine-readable report")
    r.set_defaults(func=cmd_doctor)

    r = sub.add_parser("assign", help=cmd_assign.__doc__)
    r.add_argument("seq", type=positive_int, help="the passage's seq (checkpoint passages)")
    r.add_argument("car", help="car number, 1-16 characters")
    _config_arg(r)
    r.set_defaults(func=cmd_assign)

    r = sub.add_parser("void", help=cmd_void.__doc__)
    r.add_argument("seq", type=positive_int, help="the passage's seq (checkpoint passages)")
    r.add_argument("--reason", required=True, help="why, 1-200 characters (e.g. 'photographer')")
    _config_arg(r)
    r.set_defaults(func=cmd_void)

    g = sub.add_parser("gps", help="GPS receiver tools")
    gsub = g.add_subparsers(dest="gps_command", required=True, metavar="SUBCOMMAND")
    r = gsub.add_parser("configure", help=cmd_gps_configure.__doc__)
    r.add_argument("--port", help="serial port or pyserial URL (default: the config's gps.port)")
    r.add_argument("--baudrate", type=positive_int, help="default: the config's gps.baudrate")
    r.add_argument(
        "--baud",
        type=positive_int,
        metavar="RATE",
        help="keep every NMEA sentence and move the receiver to RATE baud instead "
        "(writes gps.baudrate to the config)",
    )
    _config_arg(r)
    r.add_argument("--dry-run", action="store_true", help="print the UBX frames, send nothing")
    r.add_argument("--force", action="store_true", help="even while the daemon runs")
    r.set_defaults(func=cmd_gps_configure)


def main(argv: list[str] | None = None) -> int:
    """Run the field commands on their own: `python -m checkpoint.cli.field doctor ...`."""
    parser = argparse.ArgumentParser(prog="checkpoint", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_field_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
