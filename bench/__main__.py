"""Run the benchmarks: `python -m bench [--smoke] [--only NAME,...] [--out DIR]`.

Benchmarks (names for --only): latency, throughput, footprint, hqscale, clock, replay.
Prints a Markdown report and writes DIR/results.json and DIR/results.md (DIR
defaults to out/bench). `--smoke` runs tiny sizes (the whole thing well under a
minute): CI runs it only to prove the benchmarks still run; its figures mean nothing.

Everything runs on this machine against real processes: Mosquitto on loopback, the
box daemon (`python -m checkpoint run`), the HQ collector (`checkpoint hq run`). The
machine is shared and noisy; compare the figures of one run with each other.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import clockrun, footprint, hqscale, latency, replay, report, throughput
from bench.common import MachineLoad, git_version, machine_info, now_iso
from checkpoint import native

BENCHMARKS: dict[str, Callable[[Path, bool], dict[str, Any]]] = {
    "latency": latency.run,
    "throughput": throughput.run,
    "footprint": footprint.run,
    "hqscale": hqscale.run,
    "clock": clockrun.run,
    "replay": replay.run,
}


def _names(text: str | None) -> list[str]:
    if not text:
        return list(BENCHMARKS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(
            f"bench: unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})"
        )
    return names


def _run(
    names: list[str], work: Path, smoke: bool
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Run each benchmark, noting how busy the machine was: (results, load, failed)."""
    results: dict[str, Any] = {}
    load: dict[str, Any] = {}
    failed = []
    for name in names:
        t0 = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        machine = MachineLoad().start()
        try:
            results[name] = BENCHMARKS[name](work / name, smoke)
        except Exception as err:  # noqa: BLE001 - report it and run the others
            traceback.print_exc()
            results[name] = {"error": f"{type(err).__name__}: {err}"}
            failed.append(name)
        load[name] = {"seconds": round(time.monotonic() - t0, 1), **machine.stop()}
        print(
            f"bench: {name} took {load[name]['seconds']:.0f} s; machine busy "
            f"{load[name]['busy_cores']} cores, of which other work {load[name]['other_cores']}",
            file=sys.stderr,
            flush=True,
        )
    return results, load, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs (< 60 s)")
    ap.add_argument("--only", metavar="NAME,...", help=f"subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--out", metavar="DIR", default="out/bench", help="default: out/bench")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, dbs)")
    args = ap.parse_args(argv)
    names = _names(args.only)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The links of the bench's own subscribers report broker restarts; that is expected.
    logging.getLogger("checkpoint.mqtt").setLevel(logging.ERROR)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths must stay short (108 bytes): work in /tmp, not under --out.
    work = Path(tempfile.mkdtemp(prefix="checkpoint-bench-"))
    command = "python -m bench" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    started = time.monotonic()
    meta = {
        "date": now_iso(),
        "machine": machine_info(),
        "command": command,
        "commit": git_version(),
        "smoke": args.smoke,
        "benchmarks": names,
        # The bench's replays and the daemons it starts load the same build (same
        # environment, same build/native): "compiled", or why the Python source ran.
        "core": native.state,
    }
    results, load, failed = _run(names, work, args.smoke)
    meta["load"] = load
    meta["duration_s"] = round(time.monotonic() - started, 1)
    doc = {"meta": meta, "targets": report.targets(results), "results": results}
    text = report.markdown(doc)
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / "results.md").write_text(text)
    print(text)
    print(f"bench: wrote {out_dir / 'results.json'} and {out_dir / 'results.md'}", file=sys.stderr)
    if failed or args.keep:
        print(f"bench: work directory kept: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"bench: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
