"""The clock estimator table: bench/clock_bench.py, run through its own main().

bench/clock_bench.py belongs to the clock work (issue 3); it is called, never
changed, here. If it is missing or fails, this section says "not available" and
why, and the other benchmarks still run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import REPO

SCRIPT = REPO / "bench" / "clock_bench.py"


def run(work: Path, smoke: bool = False, timeout_s: float = 300) -> dict[str, Any]:
    """`python bench/clock_bench.py [--quick] --json FILE`; its Markdown and figures."""
    if not SCRIPT.exists():
        return {"available": False, "reason": f"{SCRIPT.relative_to(REPO)} is missing"}
    work.mkdir(parents=True, exist_ok=True)
    out = work / "clock.json"
    cmd = [sys.executable, str(SCRIPT), *(["--quick"] if smoke else []), "--json", str(out)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"clock_bench.py ran over {timeout_s:g} s"}
    if res.returncode != 0 or not out.exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return {
            "available": False,
            "reason": f"clock_bench.py exited {res.returncode}: {' / '.join(tail)}",
        }
    try:
        data = json.loads(out.read_text())
    except ValueError as err:
        return {"available": False, "reason": f"clock_bench.py wrote bad JSON: {err}"}
    return {
        "available": True,
        "quick": smoke,
        "markdown": res.stdout.strip(),
        "results": data.get("results", []),
    }


def headline(section: dict[str, Any]) -> list[tuple[str, str]]:
    """(profile, "checkpoint p99 / last-pps p99 / nmea-arrival p99, coverage") per profile."""
    if not section.get("available"):
        return []
    rows = []
    for res in section.get("results", []):
        m = res.get("methods", {})
        try:
            cp, lp, na = m["checkpoint"], m["last-pps"], m["nmea-arrival"]
            text = (
                f"{_us(cp['err_p99_us'])} (coverage {100 * cp['coverage_all']:.1f} %) vs "
                f"last-pps {_us(lp['err_p99_us'])} vs nmea-arrival {_us(na['err_p99_us'])}"
            )
        except (KeyError, TypeError):
            continue
        rows.append((str(res.get("profile")), text))
    return rows


def _us(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1000:
        return f"{x / 1000:.1f} ms"
    return f"{x:.2f} µs"
