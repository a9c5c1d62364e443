"""The benchmarks still run (they are not timed tests: no figure is checked here).

`python -m bench --smoke` runs everything tiny in CI after the tests; these tests
only run two small pieces through the real command line and check the shape of
what it writes, so a broken benchmark shows up in `./dev test` too.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import common, footprint, report  # noqa: E402
from sim.waits import wait_for  # noqa: E402


def test_percentiles_and_slope():
    assert common.pct([], 50) is None
    assert common.pct([5], 99) == 5
    assert common.pct([1, 2, 3, 4, 5], 50) == 3
    assert common.pct(list(range(101)), 99) == pytest.approx(99)
    s = common.summary_ms([1_000_000, 2_000_000, 3_000_000])
    assert s["n"] == 3 and s["p50_ms"] == 2.0 and s["max_ms"] == 3.0
    assert common.slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2)
    assert common.iso_to_ns("2024-04-21T17:03:20.123456Z") == 1_713_719_000_123_456_000


def test_db_growth_is_measured_with_the_real_store(tmp_path):
    g = footprint.db_growth(tmp_path, passages=300, seconds=3000)
    assert set(g) >= {
        "bytes_per_1000_passages",
        "bytes_per_1000_idle_s",
        "idle_mb_per_day",
        "busy_mb_per_day",
        "week_mb",
        "week_share_of_16gb_percent",
        "days_to_fill_16gb",
        "capture_mb_per_day_if_enabled",
    }
    # A passage is at least its JSON payload (~300 bytes); a second at least two ticks.
    assert g["bytes_per_1000_passages"] > 300_000
    assert g["bytes_per_1000_idle_s"] > 16_000


@pytest.mark.slow
def test_smoke_cli_writes_json_and_markdown(tmp_path, broker_factory):
    # broker_factory: fails (or skips, by the suite's rule) when Mosquitto is missing.
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "hqscale,clock", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert set(doc) == {"meta", "targets", "results"}
    meta = doc["meta"]
    assert meta["smoke"] is True and meta["date"].endswith("Z")
    assert {"cores", "cpu_model", "python"} <= set(meta["machine"])
    assert set(doc["results"]) == {"hqscale", "clock"}
    step = doc["results"]["hqscale"]["steps"][0]
    assert {"boxes", "offered_per_s", "hq_commit_per_s", "lag_ms", "keeps_up"} <= set(step)
    assert step["published"] > 0 and step["unacked"] == 0
    assert {"p50", "p99", "max", "trend_ms_per_s"} <= set(step["lag_ms"])
    clock = doc["results"]["clock"]
    assert "available" in clock  # "not available" is a valid outcome, never a failure
    assert [t["target"] for t in doc["targets"]]
    md = (out / "results.md").read_text()
    assert md.startswith("## Benchmarks") and meta["machine"]["cpu_model"] in md
    assert "### HQ at scale" in md
    assert md.strip() == res.stdout.strip()


def test_disk_probe_times_fsynced_commits_per_window(tmp_path):
    t0 = time.monotonic_ns()
    probe = common.DiskProbe(tmp_path / "probe.db", period_s=0.01).start()
    try:
        wait_for(lambda: len(probe.commits) >= 3, 10, "three probe commits")
    finally:
        probe.stop()
    t1 = time.monotonic_ns()
    got = probe.window(t0, t1)
    assert got["n"] >= 3 and got["max_ms"] >= got["p50_ms"] > 0
    assert 0 <= got["stalls_20ms"] <= got["n"]
    assert probe.window(t1 + 1, t1 + 2)["n"] == 0  # nothing overlaps a later window
    db = sqlite3.connect(tmp_path / "probe.db")
    try:  # the box's durability settings, or the probe would measure another thing
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def _latency_section(p99_ms: float, disk_max_ms: float) -> dict:
    s = {"n": 1500, "p50_ms": 7.0, "p99_ms": p99_ms, "max_ms": 300.0, "mean_ms": 9.0}
    cp = {
        "passages": 1500,
        "missing": 0,
        "edge_to_hq_commit": s,
        "edge_to_hq_received": s,
        "edge_to_event_at_broker": s,
        "disk_commit": {**s, "p99_ms": 2.0, "max_ms": disk_max_ms, "stalls_20ms": 3},
        "cpu_percent": {"box": 25.0},
    }
    naive = {"missing": 0, "edge_to_subscriber": s}
    phase = {"rate": 100, "broker": "tuned", "checkpoint": cp, "naive": naive}
    phase |= {"ratio_p50": 6.0, "ratio_p99": 8.0}
    return {"latency": {"phases": {"100 tuned": phase}, "clock_at_end": "locked"}}


def test_report_says_when_the_disk_stalled_beside_a_missed_latency_target():
    missed = report.targets(_latency_section(201.0, 298.0))[1]
    assert missed["met"] is False
    assert missed["measured"] == "201.0 ms (a bare fsync'd commit on this disk took up to 298 ms)"
    met = report.targets(_latency_section(9.0, 298.0))[1]
    assert met["met"] is True and met["measured"] == "9.0 ms"
    md = report._latency(_latency_section(9.0, 298.0)["latency"])
    assert "| 2.0 / 298 ms |" in "\n".join(md)


def test_report_renders_sections_that_did_not_run():
    doc = {
        "meta": {
            "date": "2026-01-01T00:00:00Z",
            "machine": common.machine_info(),
            "command": "python -m bench",
            "smoke": False,
            "duration_s": 1.0,
        },
        "targets": report.targets({}),
        "results": {"latency": {"error": "BenchError: boom"}},
    }
    md = report.markdown(doc)
    assert "FAILED: BenchError: boom" in md
    assert all(t["met"] is None for t in doc["targets"])


def test_replay_bench_runs_the_replay_path_and_reports_beside_its_targets(tmp_path):
    from bench import replay

    sec = replay.run(tmp_path, smoke=True)
    rp, cpu = sec["replay"], sec["cpu"]
    assert rp["capture_s"] == replay.SMOKE_S and rp["records"] > 5 * replay.SMOKE_S
    assert rp["events"].get("passage", 0) > 0 and rp["x_real_time"] > 0
    assert cpu["pulses"] > 200 and cpu["us_per_pulse"] > 0 and cpu["passages"] > 0
    rows = {t["target"]: t for t in report.targets({"replay": sec})}
    replay_row = next(t for name, t in rows.items() if name.startswith("replay ≥"))
    assert replay_row["measured"] and replay_row["met"] is not None
    md = report.markdown(
        {
            "meta": {
                "date": "2026-01-01T00:00:00Z",
                "machine": common.machine_info(),
                "command": "python -m bench --only replay",
                "smoke": True,
                "duration_s": 1.0,
            },
            "targets": report.targets({"replay": sec}),
            "results": {"replay": sec},
        }
    )
    assert "### Replay" in md and "× real time" in md
