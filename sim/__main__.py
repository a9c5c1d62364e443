"""`python -m sim`: simulate a rally and judge it against the exact truth.

    python -m sim run SCENARIO [--broker URL] [--json] [--workdir DIR] [--speed X] [--cars N]
            [--keep] [--hq-broker URL] [--credentials DIR] [--ca FILE] [--user NAME]
            [--password-file F]
        live: a Mosquitto, one real box daemon per box, the HQ collector; verdict at the end
        (with --credentials: against a secured broker such as the shipped broker/ config)
    python -m sim capture SCENARIO --out DIR
        offline: one capture file per box + truth.json, no processes
    python -m sim judge DIR [--json]
        replay DIR's captures through the box pipeline and judge them
    python -m sim check SCENARIO
        validate a scenario file and summarise it

Exit codes: 0 nothing lost, invented or doubled; 1 the verdict failed; 2 the run
could not be made (bad scenario, no broker, a process died).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from checkpoint.errors import CheckpointError, ConfigError
from sim import capture, scenario, secure, verdict
from sim.broker import MosquittoError


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v < 1000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1000, got {text!r}")
    return v


def cmd_run(args: argparse.Namespace) -> int:
    """Run a rally live and print the verdict."""
    from sim.live import LiveRun, Options

    sc = scenario.faster(scenario.first_cars(scenario.load(args.scenario), args.cars), args.speed)
    creds = secure.Credentials.from_args(args)
    if (creds is not None or args.hq_broker) and not args.broker:
        raise ConfigError("--credentials/--ca/--user/--hq-broker need --broker (a secured broker)")
    run = LiveRun(
        sc,
        Options(
            broker=args.broker,
            workdir=args.workdir,
            credentials=creds,
            hq_broker=args.hq_broker,
        ),
    )
    v = None
    try:
        v = run.run()
    finally:
        run.cleanup(keep=args.keep or v is None or not v.ok)
        if v is None:
            print(f"sim: logs and stores kept in {run.workdir}", file=sys.stderr)
    extra: dict[str, Any] = {
        "scenario": sc.name,
        "mode": "live",
        "incidents": run.incident_log,
        "feed_late_ms": run.feed_lateness_ms(),
    }
    if not run.own_workdir or args.keep or not v.ok:
        extra["workdir"] = str(run.workdir)
    _print(v, args.json, f"{sc.name}: live rally, {len(sc.boxes)} boxes", extra)
    return 0 if v.ok else 1


def cmd_capture(args: argparse.Namespace) -> int:
    """Write an offline rally: capture files per box and truth.json."""
    sc = scenario.load(args.scenario)
    truth = capture.write(sc, args.out)
    print(
        f"{args.out}: {len(truth['boxes'])} captures, {len(truth['passages'])} truth passages "
        f"({sc.name}, seed {sc.seed})"
    )
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    """Replay an offline rally's captures and judge them."""
    v = capture.judge(args.dir)
    truth = capture.load_truth(args.dir)
    _print(v, args.json, f"{truth['scenario']}: replay of {args.dir}", {"mode": "replay"})
    return 0 if v.ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a scenario and summarise it."""
    from sim.world import plan

    sc = scenario.load(args.scenario)
    p = plan(sc)
    span = max(x.offset_ns for x in p) / 1e9
    print(f"{args.scenario}: ok: {sc.name!r}, seed {sc.seed}")
    print(f"  {sc.cars.count} cars over {len(sc.controls)} controls, {span:.0f} s of rally")
    for b in sc.boxes:
        rx = b.receiver
        extras = [f"clock {b.clock_ppm:+g} ppm"]
        if b.second_beam_m:
            extras.append(f"second beam {b.second_beam_m:g} m")
        if b.button:
            extras.append("button")
        if rx.cold_start_s:
            extras.append(f"cold start {rx.cold_start_s:g} s")
        if rx.outages:
            extras.append(f"{len(rx.outages)} GPS outage(s)")
        if rx.week_rollover:
            extras.append("week-rollover firmware")
        beam = b.beam
        faults = [
            name
            for name, on in (
                ("insects", beam.insects_per_min > 0),
                ("wheel gaps", beam.wheel_gaps > 0),
                ("chatter", bool(beam.chatter)),
                ("DEAD beam", beam.dead),
                ("misaligned beam", beam.misaligned),
            )
            if on
        ]
        if faults:
            extras.append("beam: " + ", ".join(faults))
        print(
            f"  {b.id} at {b.control}: {rx.name} ({rx.convention} {rx.delay_ms:g} ms), "
            + ", ".join(extras)
        )
    for i in sc.incidents:
        who = f" {i.box}" if i.box else ""
        print(f"  incident {i.kind}{who} at +{i.at_s:g} s for {i.down_s:g} s")
    if sc.marshal_assign:
        print("  marshal assigns car numbers at HQ afterwards")
    return 0


def _print(v: verdict.Verdict, as_json: bool, title: str, extra: dict[str, Any]) -> None:
    if as_json:
        print(verdict.to_json(v, **extra))
        return
    print(verdict.render(v, title))
    late = extra.get("feed_late_ms")
    if late and late["p99"] is not None:
        print(
            f"  feed: car edges left the simulator p50 {late['p50']:.2f} ms, p99 "
            f"{late['p99']:.2f} ms after their tick (the tick is the truth, so this is harmless)"
        )
    if extra.get("incidents"):
        print("  incidents: " + "; ".join(extra["incidents"]))
    if extra.get("workdir"):
        print(f"  work dir kept: {extra['workdir']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help=cmd_run.__doc__)
    r.add_argument("scenario", help="scenario file (TOML)")
    r.add_argument("--broker", metavar="URL", help="use this broker instead of starting one")
    r.add_argument(
        "--hq-broker",
        metavar="URL",
        help="HQ's own listener for the collector and the monitor (shipped config: :8885)",
    )
    secure.add_arguments(r)
    r.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    r.add_argument("--workdir", type=Path, help="keep box stores, logs and HQ's db here")
    r.add_argument(
        "--speed",
        type=_positive,
        default=1.0,
        metavar="X",
        help="run the schedule X times faster (beams and GPS stay real time)",
    )
    r.add_argument(
        "--cars",
        type=int,
        metavar="N",
        help="only the first N cars of the field (./dev demo's quick run)",
    )
    r.add_argument("--keep", action="store_true", help="keep the work directory")
    r.set_defaults(func=cmd_run)

    r = sub.add_parser("capture", help=cmd_capture.__doc__)
    r.add_argument("scenario")
    r.add_argument("--out", required=True, type=Path, metavar="DIR")
    r.set_defaults(func=cmd_capture)

    r = sub.add_parser("judge", help=cmd_judge.__doc__)
    r.add_argument("dir", type=Path)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_judge)

    r = sub.add_parser("check", help=cmd_check.__doc__)
    r.add_argument("scenario")
    r.set_defaults(func=cmd_check)
    return p


def _sigterm(signum: int, _frame: Any) -> None:
    # Turned into KeyboardInterrupt so the run's finally-blocks stop every process.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # The monitor's MQTT link would report every broker outage the scenario makes.
        logging.getLogger("checkpoint.mqtt").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        return args.func(args)
    except (CheckpointError, MosquittoError) as e:
        print(f"sim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sim: interrupted; everything stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
