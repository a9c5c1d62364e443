"""Results → targets met or not, and the Markdown that `python -m bench` prints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bench import clockrun
from bench.common import BROKER_PROFILES

TARGET_P99_MS = 20.0
TARGET_IDLE_CPU = 2.0
TARGET_IDLE_RSS_MB = 60.0
TARGET_DRAIN = 2000
TARGET_LOCK_S = 15.0
TARGET_IDLE_WRITE_KB_S = 2.0
TARGET_REPLAY_X = 10_000
#: One second of capture in 100 µs is what 10,000x replay needs; a passage may cost 10x.
TARGET_PULSE_US = 100.0
TARGET_PASSAGE_US = 1000.0


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _triple(s: dict[str, Any] | None) -> str:
    if not s or not s.get("n"):
        return "—"
    return f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} / {_ms(s['max_ms'])} ms"


def _pair(s: dict[str, Any] | None) -> str:
    if not s or not s.get("n"):
        return "—"
    return f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])}"


def _yes(ok: bool | None) -> str:
    return "—" if ok is None else ("**yes**" if ok else "**no**")


def _table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table: (heading, alignment `---` or `---:`) per column, then the rows."""
    return [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "|".join(a for _, a in columns) + "|",
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]


def _cpu(c: dict[str, float], who: str, digits: int = 0) -> str:
    return f"{c.get(who, 0):.{digits}f} %"


L, R = "---", "---:"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with what was measured and whether it is met (None: not run)."""
    return [
        *_latency_targets(results),
        _idle_target(results),
        *_drain_targets(results),
        *_issue18_targets(results),
        _hqscale_target(results),
    ]


def _row(target: str, measured: str | None, met: bool | None) -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": met}


def _latency_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    lat = _get(results, "latency", "phases")
    out = []
    for label, profile in (("100", "defaults"), ("100 tuned", "tuned")):
        p99 = _get(lat, label, "checkpoint", "edge_to_hq_commit", "p99_ms")
        measured = None if p99 is None else f"{p99:.1f} ms"
        disk_max = _get(lat, label, "checkpoint", "disk_commit", "max_ms")
        if measured is not None and p99 >= TARGET_P99_MS and disk_max is not None:
            # Still a miss, but say whether the disk itself stalled meanwhile: every
            # event waits for its fsync'd commit (bench/latency.py, "disk").
            measured += f" (a bare fsync'd commit on this disk took up to {disk_max:.0f} ms)"
        out.append(
            _row(
                f"edge→HQ commit p99 < {TARGET_P99_MS:g} ms at 100 passages/s "
                f"(synchronous=FULL; Mosquitto {profile})",
                measured,
                None if p99 is None else p99 < TARGET_P99_MS,
            )
        )
    return out


def _idle_target(results: dict[str, Any]) -> dict[str, Any]:
    idle = _get(results, "footprint", "idle")
    cpu = _get(idle, "cpu_percent", "box")
    rss = _get(idle, "memory_mb", "VmHWM")
    return _row(
        f"box daemon idle < {TARGET_IDLE_CPU:g} % of one core, < {TARGET_IDLE_RSS_MB:g} MB RSS",
        None if cpu is None else f"{cpu:.2f} %, peak RSS {rss} MB",
        None if cpu is None else cpu < TARGET_IDLE_CPU and rss < TARGET_IDLE_RSS_MB,
    )


def _drain_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    drains = _get(results, "throughput", "drain") or []
    out = []
    for profile in ("defaults", "tuned"):
        mine = [d for d in drains if d.get("broker") == profile]
        target = f"backlog drain ≥ {TARGET_DRAIN:,} events/s (Mosquitto {profile})"
        if not mine:
            if profile == "defaults":
                out.append(_row(target, None, None))
            continue
        rates = [d["events_per_s"] or 0 for d in mine]
        shown = ", ".join(f"{d['events']:,}: {d['events_per_s'] or 0:,}/s" for d in mine)
        met = all(d["complete"] for d in mine) and min(rates) >= TARGET_DRAIN
        out.append(_row(target, shown, met))
    return out


def _hqscale_target(results: dict[str, Any]) -> dict[str, Any]:
    target = "HQ: 200 boxes × 5 passages/s without a growing lag"
    steps = _get(results, "hqscale", "steps") or []
    big = [
        s
        for s in steps
        if s["boxes"] >= 200 and s["rate_per_box"] == 5.0 and s["broker"] == "defaults"
    ]
    if not big:
        return _row(target, None, None)
    s, lag = big[0], big[0]["lag_ms"]
    return _row(
        target,
        f"{s['hq_commit_per_s']}/s committed, lag p50 {lag['p50']} → "
        f"{lag['p50_last_third']} ms, trend {lag['trend_ms_per_s']} ms/s",
        bool(s["keeps_up"]),
    )


def _issue18_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Time to lock, bound coverage, idle card writes, CPU per pulse and passage, replay."""
    return [
        _lock_target(results),
        _coverage_target(results),
        _write_target(results),
        _cpu_target(results),
        _replay_target(results),
    ]


def _clock_results(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in _get(results, "clock", "results") or [] if isinstance(r, dict)]


def _lock_target(results: dict[str, Any]) -> dict[str, Any]:
    lock = _get(results, "footprint", "lock_wait_s")
    locks = [r.get("lock_after_first_pps_s") for r in _clock_results(results)]
    parts = []
    if lock is not None:
        parts.append(f"daemon {lock:g} s")
    if locks and None not in locks:
        parts.append(f"clock bench max {max(locks):g} s over {len(locks)} profiles")
    met = None
    if parts:
        met = (lock is None or lock <= TARGET_LOCK_S) and (
            not locks or (None not in locks and max(locks) <= TARGET_LOCK_S)
        )
    return _row(
        f"locked ≤ {TARGET_LOCK_S:g} s after the first PPS with a fix",
        ", ".join(parts) or None,
        met,
    )


def _coverage_target(results: dict[str, Any]) -> dict[str, Any]:
    covs = [_get(r, "methods", "checkpoint", "coverage_all") for r in _clock_results(results)]
    if not covs:
        return _row("bound coverage 100 % on every clock profile", None, None)
    shown = "—" if None in covs else f"{100 * min(covs):.2f} %"
    return _row(
        "bound coverage 100 % on every clock profile (short fits after lock included)",
        f"min {shown} over {len(covs)} profiles",
        None not in covs and min(covs) >= 1.0,
    )


def _write_target(results: dict[str, Any]) -> dict[str, Any]:
    w = _get(results, "footprint", "idle", "disk_write_kb_per_s")
    return _row(
        f"idle card writes ≤ {TARGET_IDLE_WRITE_KB_S:g} kB/s",
        None if w is None else f"{w:g} kB/s",
        None if w is None else w <= TARGET_IDLE_WRITE_KB_S,
    )


def _cpu_target(results: dict[str, Any]) -> dict[str, Any]:
    cpu = _get(results, "replay", "cpu") or {}
    pulse, passage = cpu.get("us_per_pulse"), cpu.get("us_per_passage")
    d_pulse = _get(results, "footprint", "cpu_ms_per_pulse")
    d_passage = _get(results, "footprint", "cpu_ms_per_passage")
    daemon = (
        ""
        if d_pulse is None
        else f" (whole daemon: {1e3 * d_pulse:.0f} µs/pulse, {1e3 * d_passage:.0f} µs/passage)"
    )
    return _row(
        f"CPU per PPS pulse ≤ {TARGET_PULSE_US:g} µs, per passage ≤ "
        f"{TARGET_PASSAGE_US:g} µs (timing pipeline)",
        None if pulse is None else f"{pulse:g} µs / {passage} µs{daemon}",
        None if pulse is None else pulse <= TARGET_PULSE_US and (passage or 0) <= TARGET_PASSAGE_US,
    )


def _replay_target(results: dict[str, Any]) -> dict[str, Any]:
    rp = _get(results, "replay", "replay") or {}
    x = rp.get("x_real_time")
    return _row(
        f"replay ≥ {TARGET_REPLAY_X:,}× real time (a day of capture < 10 s)",
        None if x is None else f"{x:,}× ({rp['day_s']} s a day)",
        None if x is None else x >= TARGET_REPLAY_X,
    )


def _spread(per_pass: list[float] | None) -> str:
    if not per_pass or len(per_pass) < 2:
        return ""
    return f"; the passes took {min(per_pass)}–{max(per_pass)} s"


def _core(state: str | None) -> str:
    if state is None:
        return "not recorded"
    if state == "compiled":
        return "compiled (mypyc, `python -m checkpoint.native build`), in replay and daemons"
    return f"the Python source ({state.removeprefix('python: ')})"


def markdown(doc: dict[str, Any]) -> str:
    """The whole report: header, targets, one table per benchmark."""
    meta, res = doc["meta"], doc["results"]
    m = meta["machine"]
    lines = [
        "## Benchmarks"
        + (" (smoke: tiny sizes, proves it runs; figures mean nothing)" if meta["smoke"] else ""),
        "",
        f"- date: {meta['date']}; took {meta['duration_s']:.0f} s",
        f"- machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB; "
        f"Linux {m['kernel']}; Python {m['python']}; SQLite {m['sqlite']}; "
        f"Mosquitto {m['mosquitto']}",
        f"- command: `{meta['command']}` at commit {meta.get('commit', '?')}",
        f"- timing core: {_core(meta.get('core'))}",
        "- other work on the machine meanwhile (cores busy, not this bench): "
        + (", ".join(f"{k} {v['other_cores']}" for k, v in meta.get("load", {}).items()) or "—"),
        "- Mosquitto *defaults*: as installed (what `sim.broker`, the tests and the simulator "
        "run); *tuned*: "
        + ", ".join(f"`{line}`" for line in BROKER_PROFILES["tuned"].splitlines()),
        "",
        "### Targets",
        "",
        *_table(
            [("target", L), ("measured", L), ("met", L)],
            ([t["target"], t["measured"] or "not run", _yes(t["met"])] for t in doc["targets"]),
        ),
    ]
    for name, render in (
        ("latency", _latency),
        ("throughput", _throughput),
        ("footprint", _footprint),
        ("hqscale", _hqscale),
        ("clock", _clock),
        ("replay", _replay),
    ):
        if name not in res:
            continue
        lines.append("")
        section = res[name]
        if isinstance(section, dict) and "error" in section:
            lines += [f"### {name}", "", f"FAILED: {section['error']}"]
        else:
            lines += render(section)
    return "\n".join(lines) + "\n"


def _latency(sec: dict[str, Any]) -> list[str]:
    lines = [
        "### Edge → HQ latency (real daemon → Mosquitto → real HQ; 4 beams, min_break 1 ms)",
        "",
        "p50 / p99 / max. *HQ commit*: edge tick → HQ's ack covering the passage at a bare "
        "subscriber (HQ acks only after its synchronous=FULL commit). *HQ received*: HQ's "
        "`received_at`, before the commit. *At broker*: the box's event at a bare "
        "subscriber. *Naive*: publish in the edge callback, no store, to a bare subscriber. "
        "*Disk*: a bare SQLite commit (WAL, synchronous=FULL) on the box's filesystem "
        "meanwhile, p99 / max: every event waits for such a commit, so a stall of the "
        "disk holds every passage that comes during it.",
        "",
    ]
    rows = []
    for p in sec["phases"].values():
        cp, nv = p["checkpoint"], p["naive"]
        lost = cp["missing"] + nv["missing"]
        rows.append(
            [
                p["rate"],
                p["broker"],
                _triple(cp["edge_to_hq_commit"]),
                _pair(cp["edge_to_hq_received"]),
                _pair(cp["edge_to_event_at_broker"]),
                _disk(cp.get("disk_commit")),
                _triple(nv["edge_to_subscriber"]),
                f"×{p['ratio_p50']} / ×{p['ratio_p99']}",
                _cpu(cp["cpu_percent"], "box", 1) + (f" ({lost} lost)" if lost else ""),
            ]
        )
    lines += _table(
        [
            ("rate /s", R),
            ("Mosquitto", L),
            ("checkpoint: edge → HQ commit", L),
            ("HQ received p50/p99", L),
            ("at broker p50/p99", L),
            ("disk p99 / max", L),
            ("naive: edge → subscriber", L),
            ("ratio p50 / p99", L),
            ("box CPU", R),
        ],
        rows,
    )
    total = sum(p["checkpoint"]["passages"] for p in sec["phases"].values())
    lines.append("")
    lines.append(
        f"Clock {sec.get('clock_at_end')} (waited {sec.get('lock_wait_s')} s for lock, "
        f"min_lock_samples = 10); {total} passages."
    )
    return lines


def _disk(s: dict[str, Any] | None) -> str:
    """The disk probe's p99 / max over a phase ('—' from a run before it existed)."""
    if not s or not s.get("n"):
        return "—"
    return f"{_ms(s['p99_ms'])} / {_ms(s['max_ms'])} ms"


def _throughput(sec: dict[str, Any]) -> list[str]:
    st = sec["step"]
    lines = [
        "### Throughput: one box stepped up (backlog = injected − HQ-acked)",
        "",
        *_table(
            [
                ("rate /s", R),
                ("passages", R),
                ("backlog max", R),
                ("growth in 2nd half", R),
                ("drained after", R),
                ("box CPU", R),
                ("HQ CPU", R),
                ("sustained", L),
            ],
            (
                [
                    s["rate"],
                    s["passages"],
                    s["backlog_max"],
                    s["backlog_growth_2nd_half"],
                    f"{s['drained_after_s']} s",
                    _cpu(s["cpu_percent"], "box"),
                    _cpu(s["cpu_percent"], "hq"),
                    _yes(s["sustained"]),
                ]
                for s in st["steps"]
            ),
        ),
    ]
    best = st["max_sustained_per_s"]
    lines += [
        "",
        f"Highest sustained: **{best}/s**"
        + ("" if st["limit_reached"] else " (the highest step tried; the limit is above it)"),
        "",
        *_drain(sec["drain"]),
    ]
    return lines


def _drain(drains: list[dict[str, Any]]) -> list[str]:
    return [
        "### Backlog drain after a broker outage (pre-filled store → fresh HQ)",
        "",
        *_table(
            [
                ("backlog", R),
                ("Mosquitto", L),
                ("store", R),
                ("start-up to ready", R),
                ("drained in", R),
                ("events/s", R),
                ("box CPU", R),
                ("HQ CPU", R),
                ("broker dropped messages to HQ", L),
            ],
            (
                [
                    f"{d['events']:,}",
                    d["broker"],
                    f"{d['store_mb']} MB",
                    f"{d['startup_to_ready_s']} s",
                    f"{d['drain_s']} s{'' if d['complete'] else ' (incomplete)'}",
                    f"**{d['events_per_s'] or 0:,}**",
                    _cpu(d["cpu_percent"], "box"),
                    _cpu(d["cpu_percent"], "hq"),
                    "yes" if d["broker_dropped"] else "no",
                ]
                for d in drains
            ),
        ),
    ]


def _footprint(sec: dict[str, Any]) -> list[str]:
    idle, load = sec["idle"], sec["load_100_per_s"]
    g = sec["db_growth"]
    kb_passages = g["bytes_per_1000_passages"] / 1e3
    kb_idle = g["bytes_per_1000_idle_s"] / 1e3
    capture_mb = g["capture_mb_per_day_if_enabled"]
    su = sec["startup_s"]
    restarts = ", ".join(f"{x} s" for x in su["restarts"]) or "—"
    return [
        "### Box daemon footprint",
        "",
        "| | CPU (of one core) | VmHWM / VmRSS | written to storage |",
        "|---|---:|---:|---:|",
        f"| idle (PPS + RMC/GGA 1 Hz, clock {sec.get('clock_at_end')}) "
        f"| {idle['cpu_percent']['box']:.2f} % over {idle['cpu_percent']['window_s']:.0f} s "
        f"| {idle['memory_mb'].get('VmHWM')} / {idle['memory_mb'].get('VmRSS')} MB "
        f"| {idle.get('disk_write_kb_per_s', '—')} kB/s ({idle.get('disk_write_mb_per_day', '—')} "
        "MB/day) |",
        f"| 100 passages/s | {load['cpu_percent']['box']:.1f} % "
        f"| {load['memory_mb'].get('VmHWM')} / {load['memory_mb'].get('VmRSS')} MB "
        f"| {load.get('disk_write_kb_per_s', '—')} kB/s |",
        "",
        f"Start-up to first `ready` status at the broker: {su['first_start_new_store']} s "
        f"(new store), restarts {restarts}.",
        "",
        "| database growth | |",
        "|---|---:|",
        f"| per 1,000 passages (event + 2 raw edges) | {kb_passages:.0f} kB |",
        f"| per 1,000 s idle (PPS + clock sample rows) | {kb_idle:.0f} kB |",
        f"| per idle day | {g['idle_mb_per_day']} MB |",
        f"| per day with {g['passages_per_day_assumed']:,} passages | {g['busy_mb_per_day']} MB |",
        f"| per week (same) | {g['week_mb']} MB = {g['week_share_of_16gb_percent']} % of 16 GB |",
        f"| 16 GB full after | {g['days_to_fill_16gb']:,} days |",
        f"| capture file, if `[record] capture` is on | {capture_mb} MB/day |",
    ]


def _hqscale(sec: dict[str, Any]) -> list[str]:
    lines = [
        "### HQ at scale (emulated boxes, each its own MQTT connection, store and seqs)",
        "",
        "Lag = publish → HQ's ack covering the event, at the publisher.",
        "",
    ]
    rows = []
    for s in sec["steps"]:
        lag = s["lag_ms"]
        rows.append(
            [
                f"{s['boxes']} × {s['rate_per_box']:g}/s",
                s["broker"],
                s["offered_per_s"],
                s["hq_commit_per_s"],
                f"{_ms(lag['p50'])} / {_ms(lag['p99'])} / {_ms(lag['max'])} ms",
                f"{_ms(lag['p50_first_third'])} → {_ms(lag['p50_last_third'])} ms",
                f"{lag['trend_ms_per_s']} ms/s",
                _cpu(s["cpu_percent"], "hq"),
                f"{_ms(s['publish_late_p99_ms'])} ms",
                _yes(s["keeps_up"]) + (f" ({s['unacked']} unacked)" if s["unacked"] else ""),
            ]
        )
    lines += _table(
        [
            ("boxes × rate", L),
            ("Mosquitto", L),
            ("offered /s", R),
            ("HQ commits /s", R),
            ("lag p50 / p99 / max", L),
            ("lag p50 first → last third", L),
            ("trend", R),
            ("HQ CPU", R),
            ("emulator late p99", R),
            ("keeps up", L),
        ],
        rows,
    )
    return lines


def _clock(sec: dict[str, Any]) -> list[str]:
    if not sec.get("available"):
        return ["### Clock", "", f"not available: {sec.get('reason')}"]
    lines = [
        "### Clock (bench/clock_bench.py" + (" --quick" if sec.get("quick") else "") + ")",
        "",
        "Immediate stamps, error p99: checkpoint vs the two naive estimators.",
        "",
        "| profile | error p99 |",
        "|---|---|",
    ]
    lines += [f"| {p} | {t} |" for p, t in clockrun.headline(sec)]
    lines += [
        "",
        "<details><summary>full clock tables</summary>",
        "",
        sec["markdown"],
        "",
        "</details>",
    ]
    return lines


def _replay(sec: dict[str, Any]) -> list[str]:
    rp, cpu = sec["replay"], sec["cpu"]
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(rp["events"].items())) or "none"
    return [
        "### Replay and the timing pipeline's CPU (`checkpoint replay`'s code path)",
        "",
        "| | |",
        "|---|---:|",
        f"| capture replayed (u-blox M8 at factory settings + PPS; {kinds}) "
        f"| {rp['capture_s']:,} s, {rp['records']:,} records |",
        f"| CPU (least of {rp.get('runs', 1)} passes{_spread(rp.get('cpu_s_per_pass'))}) "
        f"| {rp['cpu_s']} s = **{rp['x_real_time']:,}× real time**, "
        f"{rp['us_per_record']} µs a record; a day in {rp['day_s']} s |",
        f"| CPU per PPS pulse (with its second of sentences), {cpu.get('idle_s')} s idle "
        f"| {cpu['us_per_pulse']} µs |",
        f"| the same in the first {cpu['span_s']} s after power-up (lock, a young window) "
        f"| {cpu.get('us_per_pulse_first')} µs |",
        f"| CPU per passage ({cpu['passages']} passages, a car every 2 s; median of paired "
        f"replays with and without the edges) | {cpu['us_per_passage']} µs |",
    ]
